"""The whole loop through a real mosquitto: outbox → uplink → broker → ingest → database, and
signed commands back down."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import AuthFailed
from edge.events import EventFactory
from edge.store import Store
from sync import commands
from sync import mqtt as mqttc
from sync.commands import Command, ErrorCode
from sync.db import open_database
from sync.downlink import Downlink
from sync.ingest import IngestWorker
from sync.topics import Topics
from sync.uplink import Uplink, sync_status
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import GATEWAY, KEY, SITE, produce, wait_until

pytestmark = pytest.mark.broker


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Command] = []

    async def execute(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        return {"opened": getattr(command.args, "gate", None)}


def test_events_reach_the_database_once(
    shared_broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    backlog = produce(store, factory, 1200)
    config = shared_broker.mqtt_config(batch_size=50, max_rate_msgs_s=2000)
    with IngestWorker(db_url, config, name="flow", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        with Uplink(store, config, site=SITE, gateway=GATEWAY, version="test") as uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            live = produce(store, factory, 3, "alert.raised") + produce(store, factory, 3, "access.granted")
            assert uplink.wait_synced(30)
            expected = {str(e.id) for e in backlog + live}
            db = open_database(db_url)
            wait_until(lambda: len(db.event_ids()) >= len(expected), 30, "every event in the database")
            assert sorted(db.event_ids()) == sorted(expected)
            assert db.seq_gaps(SITE, GATEWAY) == []
            state = db.one("SELECT state, status FROM gateways WHERE id = ?", (GATEWAY,))
            assert state is not None and state[0] == "online"
            row = db.one("SELECT type, payload FROM events WHERE id = ?", (str(live[0].id),))
            assert row is not None and row[0] == "alert.raised"
            assert json.loads(row[1])["kind"] == "gate.forced_open"
            db.close()
            assert uplink.metrics.acked == len(expected)
    status = sync_status(store)
    assert status["backlog"] == 0 and status["acked"] == len(expected)
    assert status["state"] == "offline"


def test_status_is_retained_with_metrics_and_offline_on_stop(
    shared_broker: TestBroker, store: Store, factory: EventFactory
) -> None:
    produce(store, factory, 10)
    topics = Topics(SITE, "gw-status")
    config = shared_broker.mqtt_config()
    with Uplink(store, config, site=SITE, gateway="gw-status", version="9.9") as uplink:
        wait_until(uplink.connected.is_set, 10, "the uplink to connect")
        seen = read_retained(shared_broker, topics.status)
        assert seen["state"] == "online" and seen["version"] == "9.9"
        assert {"backlog", "sent", "acked", "resent", "last_puback"} <= set(seen)
    assert read_retained(shared_broker, topics.status)["state"] == "offline"


def read_retained(broker: TestBroker, topic: str) -> dict[str, Any]:
    got: list[bytes] = []
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        assert arrived.wait(10), f"no retained message on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return dict(json.loads(got[-1]))


def test_tls_with_client_certificate(
    shared_broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path
) -> None:
    produce(store, factory, 20)
    config = shared_broker.tls_config()
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    with IngestWorker(db_url, config, name="tls", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker over TLS")
        with Uplink(store, config, site=SITE, gateway="gw-tls") as uplink:
            wait_until(uplink.connected.is_set, 10, "a TLS connection")
            assert uplink.wait_synced(20)


def test_rogue_client_certificate_is_a_failed_connect(shared_broker: TestBroker) -> None:
    session = mqttc.Session()
    config = shared_broker.tls_config(rogue=True, connect_timeout_s=3)
    client = mqttc.new_client(config, "gw-rogue", clean=True)
    client.on_connect = session.on_connect
    client.on_disconnect = session.on_disconnect
    with pytest.raises((mqttc.MqttError, AuthFailed)):
        mqttc.connect(
            client, config, clean=True, session_expiry_s=0, connack=session.connack, outcome=session.outcome
        )


def test_no_connack_is_a_failed_connect(broker: TestBroker) -> None:
    broker.freeze()
    session = mqttc.Session()
    config = broker.mqtt_config(connect_timeout_s=1)
    client = mqttc.new_client(config, "gw-frozen", clean=True)
    client.on_connect = session.on_connect
    client.on_disconnect = session.on_disconnect
    with pytest.raises(mqttc.MqttError, match="no CONNACK"):
        mqttc.connect(
            client, config, clean=True, session_expiry_s=0, connack=session.connack, outcome=session.outcome
        )
    broker.thaw()


class Operator:
    """A command sender with its own client, collecting replies."""

    def __init__(self, broker: TestBroker, protocol: int, reply_filter: str) -> None:
        self.replies: list[tuple[str, dict[str, Any], bytes | None]] = []
        self.arrived = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(reply_filter, qos=1)
        self.client.loop_start()

    def _on_message(self, c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(getattr(message, "properties", None), "CorrelationData", None)
        with self.arrived:
            self.replies.append((message.topic, json.loads(message.payload), correlation))
            self.arrived.notify_all()

    def send(
        self,
        topic: str,
        document: dict[str, Any],
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        self.client.publish(topic, json.dumps(document), qos=1, properties=properties).wait_for_publish(10)

    def wait(self, count: int, timeout: float = 10) -> list[tuple[str, dict[str, Any], bytes | None]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.replies) >= count, timeout), self.replies
            return list(self.replies)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_commands_mqtt5_reply_with_correlation_data(shared_broker: TestBroker, store: Store) -> None:
    gateway = "gw-cmd5"
    topics = Topics(SITE, gateway)
    recorder = Recorder()
    downlink = Downlink(store, recorder, site=SITE, gateway=gateway, key=KEY)
    operator = Operator(shared_broker, mqtt.MQTTv5, "operator/replies/#")
    try:
        with Uplink(
            store, shared_broker.mqtt_config(), site=SITE, gateway=gateway, downlink=downlink
        ) as uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            good = commands.build("open_gate", {"gate": "north-in"}, site=SITE, gateway=gateway, key=KEY)
            bad = commands.build("open_gate", {"gate": "north-in"}, site=SITE, gateway=gateway, key="ff" * 32)
            operator.send(topics.cmd("open_gate"), good, "operator/replies/1", b"corr-1")
            operator.send(topics.cmd("open_gate"), bad, "operator/replies/2", b"corr-2")
            replies = {topic: (body, corr) for topic, body, corr in operator.wait(2)}
        ok, corr = replies["operator/replies/1"]
        assert ok["ok"] and ok["id"] == good["id"] and corr == b"corr-1"
        refused, corr = replies["operator/replies/2"]
        assert refused["error"]["code"] == ErrorCode.BAD_SIGNATURE and corr == b"corr-2"
        assert len(recorder.calls) == 1
    finally:
        operator.close()


def test_a_reply_made_while_disconnected_goes_out_on_the_next_connection(
    shared_broker: TestBroker, store: Store
) -> None:
    """Replies are handed to the uplink's thread, the only one that uses the connection; one
    made while there is no connection waits for the next."""
    operator = Operator(shared_broker, mqtt.MQTTv5, "operator/replies/#")
    uplink = Uplink(store, shared_broker.mqtt_config(), site=SITE, gateway="gw-late-reply")
    try:
        uplink.publish_reply("operator/replies/late", b'{"ok": true}', b"corr-late")
        with uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            [(topic, body, correlation)] = operator.wait(1)
        assert (topic, body, correlation) == ("operator/replies/late", {"ok": True}, b"corr-late")
    finally:
        operator.close()


def test_commands_mqtt311_reply_topic(shared_broker: TestBroker, store: Store) -> None:
    gateway = "gw-cmd3"
    topics = Topics(SITE, gateway)
    recorder = Recorder()
    downlink = Downlink(store, recorder, site=SITE, gateway=gateway, key=KEY)
    operator = Operator(shared_broker, mqtt.MQTTv311, f"{topics.base}/cmd/+/reply")
    config = shared_broker.mqtt_config(protocol="3.1.1")
    try:
        with Uplink(store, config, site=SITE, gateway=gateway, downlink=downlink) as uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            document = commands.build("alert.ack", {"alert_id": "a1"}, site=SITE, gateway=gateway, key=KEY)
            operator.send(topics.cmd("alert.ack"), document)
            operator.send(topics.cmd("alert.ack"), document)
            replies = operator.wait(2)
        assert [topic for topic, _, _ in replies] == [topics.reply("alert.ack")] * 2
        codes = sorted(str(body.get("error", {}).get("code", "ok")) for _, body, _ in replies)
        assert codes == ["ok", "replayed"]
        assert len(recorder.calls) == 1
    finally:
        operator.close()


def test_command_queued_while_offline_runs_only_if_not_expired(
    shared_broker: TestBroker, store: Store
) -> None:
    import time

    gateway = "gw-queued"
    topics = Topics(SITE, gateway)
    config = shared_broker.mqtt_config()
    recorder = Recorder()
    with Uplink(
        store,
        config,
        site=SITE,
        gateway=gateway,
        downlink=Downlink(store, recorder, site=SITE, gateway=gateway, key=KEY),
    ) as uplink:
        wait_until(uplink.connected.is_set, 10, "the first connection (creates the session)")
    operator = Operator(shared_broker, mqtt.MQTTv5, "operator/queued/#")
    try:
        short = commands.build("open_gate", {"gate": "late"}, site=SITE, gateway=gateway, key=KEY, ttl_s=1)
        long = commands.build("open_gate", {"gate": "fine"}, site=SITE, gateway=gateway, key=KEY, ttl_s=120)
        operator.send(topics.cmd("open_gate"), short, "operator/queued/short")
        operator.send(topics.cmd("open_gate"), long, "operator/queued/long")
        time.sleep(1.5)
        downlink = Downlink(store, recorder, site=SITE, gateway=gateway, key=KEY)
        with Uplink(store, config, site=SITE, gateway=gateway, downlink=downlink):
            replies = {topic: body for topic, body, _ in operator.wait(2)}
        assert replies["operator/queued/short"]["error"]["code"] == ErrorCode.EXPIRED
        assert replies["operator/queued/long"]["ok"]
        assert [c.args.gate for c in recorder.calls] == ["fine"]
    finally:
        operator.close()
