"""A live alert is not stuck behind a backlog of telemetry."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.events import EventFactory
from edge.store import Store
from sync.topics import Topics
from sync.uplink import Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, produce, produce_fast, wait_until

pytestmark = pytest.mark.broker


def test_alert_overtakes_the_backlog(shared_broker: TestBroker, store: Store) -> None:
    gateway = "gw-prio"
    factory = EventFactory(SITE, gateway)
    produce_fast(store, factory, 5000)
    produce(store, factory, 5, "access.granted")
    arrivals: list[str] = []
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        with lock:
            arrivals.extend(item["type"] for item in (body if isinstance(body, list) else [body]))

    client.on_message = on_message
    client.connect("127.0.0.1", shared_broker.port)
    client.subscribe(f"{Topics(SITE, gateway).base}/events/#", qos=1)
    client.loop_start()
    try:
        config = shared_broker.mqtt_config(batch_size=10, max_rate_msgs_s=100)
        with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
            wait_until(lambda: len(arrivals) > 500, 20, "the drain to get going")
            produce(store, factory, 1, "alert.raised")
            wait_until(lambda: "alert.raised" in arrivals, 20, "the alert")
            assert uplink.wait_synced(60)
        wait_until(lambda: len(arrivals) >= 5006, 20, "everything")
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        order = list(arrivals)
    # access decisions went first, the alert came long before the end of the backlog
    assert order[:5] == ["access.granted"] * 5
    assert order.index("alert.raised") < len(order) - 1000


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
    sizes: list[int] = []
    events: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        sizes.append(len(message.payload))
        events.extend(item["id"] for item in json.loads(message.payload))

    client.on_message = on_message
    client.connect("127.0.0.1", shared_broker.port)
    client.subscribe(f"{Topics(SITE, gateway).base}/events/#", qos=1)
    client.loop_start()
    try:
        with Uplink(store, shared_broker.mqtt_config(batch_size=12), site=SITE, gateway=gateway) as uplink:
            assert uplink.wait_synced(20)
        wait_until(lambda: len(events) >= 12, 10, "every event")
    finally:
        client.disconnect()
        client.loop_stop()
    assert len(set(events)) == 12
    assert len(sizes) > 1 and max(sizes) <= MAX_MESSAGE_BYTES
