"""A broker that takes the connection but will not take what the uplink sends, each case with a
mosquitto configured for it: an ACL that denies the events, limits on the size of a packet or
a message, a client id taken over, a broker that stops answering."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.events import EventFactory
from edge.store import Store
from sync import mqtt as mqttc
from sync import uplink as uplink_module
from sync.ingest import IngestWorker
from sync.uplink import Uplink, sync_status
from tests.support.mosquitto import TestBroker, start_broker
from tests.support.sync_helpers import GATEWAY, SITE, EventTap, produce, wait_until

pytestmark = pytest.mark.broker

DENY_EVENTS = "topic read gatehouse/v1/+/+/cmd/#\ntopic readwrite gatehouse/v1/+/+/status\n"
"""anonymous clients may publish their status and read commands, not publish events"""


@pytest.fixture
def denying_broker(tmp_path: Path) -> Iterator[TestBroker]:
    """mosquitto with an ACL that denies publishing events. With `max_queued_messages 0` (what
    docs/sync.md asks of a production broker) mosquitto 2.0.11 also closes the connection after
    each denied publish."""
    acl = tmp_path / "acl"
    acl.write_text(DENY_EVENTS)
    started = start_broker(tmp_path / "mosquitto", extra=(f"acl_file {acl}",))
    yield started
    started.stop()


def test_a_broker_that_drops_the_connection_at_once_is_not_hammered(
    denying_broker: TestBroker, store: Store, factory: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection ends right after the first publish: each reconnect waits its backoff,
    and since no connection holds, the backoff keeps growing."""
    attempts: list[int] = []

    def recorded(attempt: int, low: float, high: float, rng: random.Random) -> float:
        attempts.append(attempt)
        return 0.05

    monkeypatch.setattr(mqttc, "backoff_delay", recorded)
    produce(store, factory, 200)
    config = denying_broker.mqtt_config(batch_size=10)
    with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
        wait_until(lambda: uplink.metrics.connects >= 5, 20, "the uplink to be dropped a few times")
    assert attempts[:4] == [0, 1, 2, 3]
    assert store.backlog().count == 200


def test_a_refused_class_waits_for_its_retry(
    broker: TestBroker, store: Store, factory: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody subscribed: the broker answers 0x10 to the first window of the backlog. The rest of
    the backlog is not pushed through to be refused as well; the class waits for its retry."""
    monkeypatch.setattr(uplink_module, "NO_SUBSCRIBERS_RETRY_S", 60.0)
    produce(store, factory, 2000)
    config = broker.mqtt_config(batch_size=10, inflight_window=4, max_rate_msgs_s=1000)
    with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
        metrics = uplink.metrics
        wait_until(lambda: 0 < metrics.sent == metrics.nacked, 10, "the first refusals")
        refused = metrics.sent
        time.sleep(0.5)
        assert metrics.sent == refused < 2000
    assert store.backlog().count == 2000


def test_batches_fit_the_brokers_maximum_packet_size(
    tmp_path: Path, store: Store, factory: EventFactory
) -> None:
    """mosquitto's max_packet_size (announced in the MQTT 5 CONNACK) below a batch of 1000 events:
    a larger packet would get the uplink disconnected, every time it sent it again."""
    limit = 65_536
    broker = start_broker(tmp_path / "mosquitto", extra=(f"max_packet_size {limit}",))
    try:
        produce(store, factory, 3000)
        with EventTap(broker.port, GATEWAY) as tap:
            config = broker.mqtt_config(batch_size=1000, reconnect_min_s=0.2, reconnect_max_s=1)
            with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
                assert uplink.wait_synced(20)
                assert uplink.metrics.connects == 1
            wait_until(lambda: tap.count() >= 3000, 10, "every event at the subscriber")
            sizes = tap.sizes()
    finally:
        broker.stop()
    topic_and_header = len(f"gatehouse/v1/{SITE}/{GATEWAY}/events/occupancy.sample") + 16
    assert len(sizes) > 3 and max(sizes) <= limit - topic_and_header


def test_a_broker_whose_packets_are_too_small_for_the_largest_event_is_named(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    broker = start_broker(tmp_path / "mosquitto", extra=("max_packet_size 16384",))
    try:
        config = broker.mqtt_config()
        with (
            caplog.at_level(logging.ERROR, logger="sync.uplink"),
            Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink,
        ):
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
    finally:
        broker.stop()
    (said,) = [r.getMessage() for r in caplog.records if "max_packet_size" in r.getMessage()]
    assert "at most 16384 bytes" in said and "at least 256 KiB" in said


def test_a_silent_broker_is_given_up_after_one_and_a_half_keepalives(
    broker: TestBroker, store: Store, factory: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen broker (SIGSTOP: the kernel still takes the bytes, nothing answers) is what a
    pulled cable looks like. paho's keepalive gives up only after two keepalives without a
    packet; the uplink gives up after 1.5, as MQTT has the broker do."""
    produce(store, factory, 2000)
    config = broker.mqtt_config(keepalive_s=5, batch_size=10, max_rate_msgs_s=20, reconnect_min_s=0.2)
    caplog.set_level(logging.WARNING, logger="sync.uplink")
    with EventTap(broker.port, GATEWAY), Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
        wait_until(lambda: uplink.metrics.acked > 0, 10, "the drain to get going")
        broker.freeze()
        try:
            wait_until(lambda: not uplink.connected.is_set(), 20, "the uplink to give up the connection")
        finally:
            broker.thaw()
        assert uplink.wait_synced(30)
    assert any("nothing from the broker in 7.5 s" in record.getMessage() for record in caplog.records)


def test_the_store_says_offline_while_the_broker_is_gone(
    broker: TestBroker, store: Store, factory: EventFactory
) -> None:
    """`gatehouse status` reads the uplink's state from the store: it must not go on saying
    "online" through an outage, when no status report can be published."""
    config = broker.mqtt_config(reconnect_min_s=0.2, reconnect_max_s=1)
    with Uplink(store, config, site=SITE, gateway=GATEWAY):
        wait_until(lambda: sync_status(store)["state"] == "online", 10, "the online report")
        broker.stop()
        wait_until(lambda: sync_status(store)["state"] == "offline", 10, "the store to say offline")
        recorded = json.loads(store.kv_get(uplink_module.STATUS_KV) or "{}")
        assert recorded["reason"].startswith("connection lost") and recorded["connected_since"] is None
        broker.start()
        wait_until(lambda: sync_status(store)["state"] == "online", 20, "the online report again")


def test_the_store_says_why_the_broker_refuses_the_uplink(
    tmp_path: Path, store: Store, factory: EventFactory
) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text("gw-1:not-a-hash-anything-matches\n")
    broker = start_broker(
        tmp_path / "mosquitto", extra=("allow_anonymous false", f"password_file {passwords}")
    )
    try:
        config = broker.mqtt_config(username="gw-1", password="wrong", reconnect_min_s=0.2, reconnect_max_s=1)
        with Uplink(store, config, site=SITE, gateway=GATEWAY):
            wait_until(lambda: sync_status(store)["state"] == "offline", 10, "the store to say offline")
            recorded = json.loads(store.kv_get(uplink_module.STATUS_KV) or "{}")
    finally:
        broker.stop()
    assert "refused the credentials" in recorded["reason"]


def test_ingest_workers_that_take_each_others_client_id_are_not_hammered(
    broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ingest services given the same name: each connect takes the other's client id over and
    the broker drops the other. A lost connection waits its backoff, as the uplink's does, rather
    than reconnect at once and have the two throw each other out hundreds of times a second."""
    connects: list[float] = []
    real_connect = mqttc.connect

    def counted(*args: Any, **kwargs: Any) -> None:
        connects.append(time.monotonic())
        real_connect(*args, **kwargs)

    monkeypatch.setattr(mqttc, "connect", counted)
    config = broker.mqtt_config(reconnect_min_s=0.2, reconnect_max_s=1)
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    with IngestWorker(db_url, config, name="twin"), IngestWorker(db_url, config, name="twin"):
        time.sleep(3)
    assert 2 < len(connects) < 40
