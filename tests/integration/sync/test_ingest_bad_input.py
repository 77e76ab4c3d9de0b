"""The ingest under bad input, with a real broker and both engines: a message the database
refuses is put aside in rejected_messages and acknowledged, the messages around it are stored,
and a dropped PostgreSQL connection is opened again."""

from __future__ import annotations

import json
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from edge.events import EventFactory
from sync.db import Database, open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, wait_until


def occupancy(factory: EventFactory, **changes: Any) -> dict[str, Any]:
    event = factory.make("occupancy.sample", {"zone": "court", "count": 3}, device="cam-1")
    return {**json.loads(event.model_dump_json()), **changes}


def rejected(db: Database, gateway: str) -> list[str]:
    return [
        row[0]
        for row in db.query("SELECT reason FROM rejected_messages WHERE topic LIKE ?", (f"%{gateway}%",))
    ]


def test_what_the_database_refuses_is_put_aside_and_the_rest_is_stored(
    shared_broker: TestBroker, publisher: mqtt.Client, db_url: str
) -> None:
    gateway = f"gw-bad-{uuid.uuid4().hex[:6]}"
    factory = EventFactory(SITE, gateway)
    topics = Topics(SITE, gateway)
    events = topics.event("occupancy.sample")
    far_future = occupancy(factory, ts="9999-12-31T23:59:59.000-14:00")
    seq_too_big = occupancy(factory, seq=2**63)
    surrogate = occupancy(factory, payload={"zone": "\ud800", "count": 1})
    naive_ts = occupancy(factory, ts="2026-05-01T08:00:00")
    good = [occupancy(factory, seq=n) for n in range(1, 5)]
    poison: list[bytes] = [
        json.dumps(far_future).encode(),
        json.dumps(seq_too_big).encode(),
        json.dumps(surrogate).encode(),
        json.dumps(naive_ts).encode(),
        b'{"id": ' + b"9" * 5000 + b"}",
        b"[" * 50_000 + b"]" * 50_000,
        json.dumps(occupancy(factory, payload={"zone": "court", "count": float("nan")})).encode(),
    ]
    with IngestWorker(
        db_url, shared_broker.mqtt_config(), name=f"bad-{gateway}", session_expiry_s=0
    ) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        publisher.publish(events, json.dumps(good[0]), qos=1).wait_for_publish(5)
        for payload in poison:
            publisher.publish(events, payload, qos=1).wait_for_publish(5)
        # one refused event inside a batch of good ones
        batch = [good[1], occupancy(factory, seq=2**63), good[2]]
        publisher.publish(events, json.dumps(batch), qos=1).wait_for_publish(5)
        publisher.publish(topics.status, b"5", qos=1, retain=True).wait_for_publish(5)
        publisher.publish(events, json.dumps(good[3]), qos=1).wait_for_publish(5)
        db = open_database(db_url)
        try:
            wait_until(
                lambda: len(rejected(db, gateway)) >= len(poison) + 2, 20, "every bad message put aside"
            )
            wait_until(
                lambda: {str(e["id"]) for e in good} <= set(db.event_ids()), 20, "the good events stored"
            )
            stored = {row[0] for row in db.query("SELECT id FROM events WHERE gateway_id = ?", (gateway,))}
            assert stored == {str(e["id"]) for e in good}
            reasons = rejected(db, gateway)
            assert len(reasons) == len(poison) + 2, reasons
            assert any("not a JSON value" in r for r in reasons), reasons
            assert any("status is not a JSON object" in r for r in reasons), reasons
            assert any("timezone" in r for r in reasons), reasons
            assert worker.connected.is_set(), "the worker reconnected: a bad message was sent again"
            assert (worker.stats.inserted, worker.stats.rejected) == (len(good), len(poison) + 2)
        finally:
            publisher.publish(topics.status, b"", qos=1, retain=True).wait_for_publish(5)
            db.close()


@pytest.mark.postgres
def test_the_ingest_opens_a_dropped_postgresql_connection_again(
    shared_broker: TestBroker, publisher: mqtt.Client, pg_url: str
) -> None:
    gateway = f"gw-drop-{uuid.uuid4().hex[:6]}"
    factory = EventFactory(SITE, gateway)
    events = Topics(SITE, gateway).event("occupancy.sample")
    before, after = occupancy(factory, seq=1), occupancy(factory, seq=2)
    db = open_database(pg_url)
    try:
        with IngestWorker(
            pg_url, shared_broker.mqtt_config(), name=f"drop-{gateway}", session_expiry_s=0
        ) as worker:
            wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
            publisher.publish(events, json.dumps(before), qos=1).wait_for_publish(5)
            wait_until(lambda: str(before["id"]) in db.event_ids(), 10, "the first event stored")
            with psycopg.connect(pg_url, autocommit=True) as admin:
                dropped = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            assert dropped is not None and dropped[0] >= 1
            db.close()
            publisher.publish(events, json.dumps(after), qos=1).wait_for_publish(5)
            db = open_database(pg_url)
            wait_until(lambda: str(after["id"]) in db.event_ids(), 20, "the event after the drop stored")
    finally:
        db.close()
