"""The community database's devices and gates, kept by the ingest on both engines: a
registration (`gatehouse provision`'s retained status) lists a gateway's devices and gates and
is the whole list; device.online/offline events set each device's state, the latest event
winning even when a backlog delivers them out of order."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from edge.cli import main
from edge.events import EventFactory
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, wait_until


def registration(gateway: str, devices: list[dict[str, object]], gates: list[dict[str, object]]) -> bytes:
    return json.dumps(
        {"state": "provisioned", "site": SITE, "gateway": gateway, "devices": devices, "gates": gates}
    ).encode()


def test_registrations_and_device_events_keep_the_devices_and_gates(
    shared_broker: TestBroker, publisher: mqtt.Client, db_url: str
) -> None:
    gateway = f"gw-reg-{uuid.uuid4().hex[:6]}"
    topics = Topics(SITE, gateway)
    factory = EventFactory(SITE, gateway)
    db = open_database(db_url)

    def devices() -> dict[str, tuple[str | None, str | None]]:
        rows = db.query(
            "SELECT id, kind, state FROM devices WHERE site_id = ? AND gateway_id = ?", (SITE, gateway)
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    def gates() -> dict[str, tuple[str, str]]:
        rows = db.query(
            "SELECT id, name, kind FROM gates WHERE site_id = ? AND gateway_id = ?", (SITE, gateway)
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    first = registration(
        gateway,
        [{"id": "north-barrier", "kind": "modbus_gate"}, {"id": "east-reader", "kind": "osdp"}, {"id": 7}],
        [{"id": f"{gateway}-north", "kind": "vehicle", "name": "North gate"}],
    )
    noon = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    offline_late = factory.make(
        "device.offline", {"kind": "osdp", "reason": "unplugged"}, device="east-reader"
    )
    online_early = factory.make("device.online", {"kind": "osdp"}, device="east-reader")
    offline_late = offline_late.model_copy(update={"ts": noon + timedelta(minutes=5), "seq": 2})
    online_early = online_early.model_copy(update={"ts": noon, "seq": 1})
    try:
        with IngestWorker(
            db_url, shared_broker.mqtt_config(), name=f"reg-{gateway}", session_expiry_s=0
        ) as worker:
            wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
            publisher.publish(topics.status, first, qos=1, retain=True).wait_for_publish(5)
            wait_until(lambda: len(devices()) == 2 and len(gates()) == 1, 10, "the registration stored")
            assert devices() == {"north-barrier": ("modbus_gate", None), "east-reader": ("osdp", None)}
            assert gates() == {f"{gateway}-north": ("North gate", "vehicle")}

            # the later event first (the backlog drains by class), then the earlier one
            for event in (offline_late, online_early):
                publisher.publish(topics.event(event.type), event.model_dump_json(), qos=1).wait_for_publish(
                    5
                )
            stored = "SELECT count(*) FROM events WHERE gateway_id = ?"
            wait_until(lambda: db.query(stored, (gateway,)) == [(2,)], 10, "both device events stored")
            assert devices()["east-reader"] == ("osdp", "offline"), "the latest event wins"

            online = json.dumps({"state": "online", "site": SITE, "gateway": gateway}).encode()
            publisher.publish(topics.status, online, qos=1, retain=True).wait_for_publish(5)
            state = "SELECT state FROM gateways WHERE site_id = ? AND id = ?"
            wait_until(lambda: db.query(state, (SITE, gateway)) == [("online",)], 10, "the online status")
            assert set(devices()) == {"north-barrier", "east-reader"}, "a status without a list keeps it"

            second = registration(gateway, [{"id": "north-barrier", "kind": "modbus_gate"}], [])
            publisher.publish(topics.status, second, qos=1, retain=True).wait_for_publish(5)
            wait_until(lambda: set(devices()) == {"north-barrier"}, 10, "the removed reader gone")
            assert gates() == {}
    finally:
        publisher.publish(topics.status, b"", qos=1, retain=True).wait_for_publish(5)
        db.close()


def test_a_gateways_state_is_dated_from_its_change_not_its_last_status(
    shared_broker: TestBroker,
    publisher: mqtt.Client,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`admin gateway list` says since when a gateway is in its state: online since it connected
    (its status says when), offline since it went, however many statuses came in between (a
    heartbeat every 30 s, the retained offline status an ingest receives each time it starts)."""
    gateway = f"gw-since-{uuid.uuid4().hex[:6]}"
    topics = Topics(SITE, gateway)
    db = open_database(db_url)

    def since() -> str | None:
        row = db.one("SELECT state, state_since FROM gateways WHERE site_id = ? AND id = ?", (SITE, gateway))
        return f"{row[0]} {row[1]}" if row else None

    def last_status() -> tuple[str, str] | None:
        """(the status stored, when it came): other tests' retained statuses come in as well."""
        row = db.one("SELECT status, status_at FROM gateways WHERE site_id = ? AND id = ?", (SITE, gateway))
        return (str(row[0]), str(row[1])) if row else None

    def status(document: dict[str, object]) -> None:
        publisher.publish(topics.status, json.dumps(document), qos=1, retain=True).wait_for_publish(5)

    connected = "2026-11-26T01:02:03.000Z"
    online = {"state": "online", "connected_since": connected, "devices": [{"id": "east-lock"}]}
    try:
        with IngestWorker(
            db_url, shared_broker.mqtt_config(), name=f"since-{gateway}", session_expiry_s=0
        ) as worker:
            wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
            status(online)
            wait_until(lambda: since() == f"online {connected}", 10, "online since it connected")
            status({**online, "uptime_s": 30})
            wait_until(lambda: "uptime_s" in (last_status() or ("", ""))[0], 10, "the heartbeat")
            assert since() == f"online {connected}"
            status({"state": "offline", "reason": "lost"})
            wait_until(lambda: since() is not None and since().startswith("offline "), 10, "offline")
            went = since()
            received = last_status()
        with IngestWorker(db_url, shared_broker.mqtt_config(), name=f"since2-{gateway}", session_expiry_s=0):
            wait_until(lambda: last_status() != received, 10, "the retained offline status again")
            assert since() == went, "a restarted ingest does not move the date"
        capsys.readouterr()
        assert main(["admin", "--db", db_url, "gateway", "list", "--tz", "UTC"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if f" {gateway} " in line)
        day, clock = went.split()[1][:10], went.split()[1][11:19]
        assert row.split()[2:5] == ["offline", day, clock]
        assert row.endswith("unknown while the gateway is not online"), (
            "its devices' last states are old news"
        )
    finally:
        publisher.publish(topics.status, b"", qos=1, retain=True).wait_for_publish(5)
        db.close()
