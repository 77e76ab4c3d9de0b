"""A live alert is not stuck behind a backlog of telemetry, nor behind a slow commit."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from edge.events import EventFactory
from edge.store import Store
from sync.uplink import Uplink, sync_status
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, EventTap, produce, produce_fast, wait_until

pytestmark = pytest.mark.broker


def test_alert_overtakes_the_backlog(shared_broker: TestBroker, store: Store) -> None:
    gateway = "gw-prio"
    factory = EventFactory(SITE, gateway)
    produce_fast(store, factory, 5000)
    produce(store, factory, 5, "access.granted")
    with EventTap(shared_broker.port, gateway) as tap:
        config = shared_broker.mqtt_config(batch_size=10, max_rate_msgs_s=100)
        with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
            wait_until(lambda: tap.count() > 500, 20, "the drain to get going")
            produce(store, factory, 1, "alert.raised")
            wait_until(lambda: tap.position("alert.raised") is not None, 20, "the alert")
            assert uplink.wait_synced(60)
        wait_until(lambda: tap.count() >= 5006, 20, "everything")
        order = [e["type"] for e in tap.events()]
    # access decisions went first, the alert came long before the end of the backlog
    assert order[:5] == ["access.granted"] * 5
    assert order.index("alert.raised") < len(order) - 1000


def test_a_class_of_interleaved_types_goes_out_as_one_type_per_message(
    shared_broker: TestBroker, store: Store
) -> None:
    gateway = "gw-mixed"
    factory = EventFactory(SITE, gateway)
    made = []
    for index in range(95):
        run = 40 <= index < 60
        if index % 7 == 3 and not run:
            made += produce(store, factory, 1, "alert.raised")
        if index % 3 == 0 or run:
            event = factory.make("device.health", {"metrics": {"cpu": index}}, device="cam-1")
        else:
            event = factory.make("occupancy.sample", {"zone": "court", "count": index}, device="cam-1")
        made.append(store.append(event))
    with EventTap(shared_broker.port, gateway) as tap:
        with Uplink(store, shared_broker.mqtt_config(batch_size=10), site=SITE, gateway=gateway) as uplink:
            assert uplink.wait_synced(20)
        wait_until(lambda: tap.count() >= len(made), 10, "every event")
        events = tap.events()
        messages = tap.messages()
    assert sorted(e["id"] for e in events) == sorted(str(e.id) for e in made)
    for topic, types in messages:
        assert len(types) <= 10
        assert set(types) == {topic.rsplit("/", 1)[1]}
    # twenty rows of one type in a row fill a batch; batches of interleaved types go out split
    assert ["device.health"] * 10 in [types for _, types in messages]
    for kind in ("device.health", "occupancy.sample"):
        seqs = [e["seq"] for e in events if e["type"] == kind]
        assert seqs == sorted(seqs)


def test_large_events_are_split_into_messages_under_the_limit(
    shared_broker: TestBroker, store: Store
) -> None:
    from sync.uplink import MAX_MESSAGE_BYTES

    gateway = "gw-large"
    factory = EventFactory(SITE, gateway)
    for index in range(12):
        store.append(
            factory.make(
                "alert.raised",
                {"alert_id": f"a{index}", "kind": "big", "key": f"k{index}", "message": "x" * 60_000},
            )
        )
    with EventTap(shared_broker.port, gateway) as tap:
        with Uplink(store, shared_broker.mqtt_config(batch_size=12), site=SITE, gateway=gateway) as uplink:
            assert uplink.wait_synced(20)
        wait_until(lambda: tap.count() >= 12, 10, "every event")
        events = [e["id"] for e in tap.events()]
        sizes = tap.sizes()
    assert len(set(events)) == 12
    assert len(sizes) > 1 and max(sizes) <= MAX_MESSAGE_BYTES


def test_a_slow_commit_does_not_hold_up_delivery(shared_broker: TestBroker, store: Store) -> None:
    """The store's writer is held (as by an SD card's slow fsync, or a retention purge) while
    the uplink drains and reports its status every 0.1 s: nothing can be recorded, yet every
    event reaches the broker. Once the writer is free, the marks and the status report land."""
    gateway = "gw-slow-commit"
    factory = EventFactory(SITE, gateway)
    produce_fast(store, factory, 2000)
    release = threading.Event()
    holding = threading.Event()

    def hold(conn: Any) -> None:
        holding.set()
        release.wait(30)

    holder = threading.Thread(target=store.write, args=(hold,))
    holder.start()
    try:
        assert holding.wait(10)
        with EventTap(shared_broker.port, gateway) as tap:
            config = shared_broker.mqtt_config(batch_size=10, max_rate_msgs_s=100, status_interval_s=0.1)
            with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
                wait_until(lambda: tap.count() >= 2000, 20, "every event, with the writer held")
                assert store.backlog().count == 2000
                assert holder.is_alive()
                release.set()
                assert uplink.wait_synced(20)
            assert len({e["id"] for e in tap.events()}) == 2000
    finally:
        release.set()
        holder.join(10)
    status = sync_status(store)
    assert status["backlog"] == 0 and status["acked"] == 2000 and status["state"] == "offline"


def test_counting_the_backlog_does_not_hold_up_a_live_alert(shared_broker: TestBroker, store: Store) -> None:
    """Each status report carries the backlog's size, and counting a day of backlog on a Pi's
    SD card takes a while. Here the count takes as long as the test wants: a live alert still
    goes out while it runs, and the report follows once it is done."""
    gateway = "gw-slow-count"
    factory = EventFactory(SITE, gateway)
    produce_fast(store, factory, 200)
    counting = threading.Event()
    release = threading.Event()
    count_backlog = store.backlog

    def slow_count() -> Any:
        counting.set()
        release.wait(30)
        return count_backlog()

    store.backlog = slow_count  # type: ignore[method-assign]
    try:
        with EventTap(shared_broker.port, gateway) as tap:
            config = shared_broker.mqtt_config(status_interval_s=0.1)
            with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
                assert counting.wait(10)
                produce(store, factory, 1, "alert.raised")
                wait_until(lambda: tap.position("alert.raised") is not None, 20, "the alert, mid-count")
                assert not release.is_set()
                release.set()
                wait_until(lambda: sync_status(store)["state"] == "online", 10, "the status report")
                assert uplink.wait_synced(20)
                wait_until(lambda: uplink.metrics.acked == 201, 10, "every acknowledgement")
    finally:
        release.set()
    status = sync_status(store)
    assert status["acked"] == 201 and status["backlog"] == 0
