"""Faults with a real broker. Each test ends with the ingest database holding exactly the
events the gateway's store committed: none lost, none twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.store import Store
from sync.db import Database, open_database
from sync.ingest import IngestWorker
from sync.uplink import Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import (
    GATEWAY,
    SITE,
    outbox_ids,
    produce_fast,
    spawn,
    stop_child,
    wait_for_line,
    wait_until,
)

pytestmark = pytest.mark.broker
HERE = Path(__file__).resolve().parent


def count(db: Database) -> int:
    row = db.one("SELECT count(*) FROM events")
    return int(row[0]) if row else 0


def assert_exactly(db: Database, expected: set[str], timeout: float = 60) -> None:
    wait_until(
        lambda: count(db) >= len(expected),
        timeout,
        f"{len(expected)} events in the database (it holds {count(db)})",
    )
    ids = db.event_ids()
    assert len(ids) == len(set(ids))
    assert set(ids) == expected, (len(set(ids) - expected), len(expected - set(ids)))


def test_broker_restarted_mid_drain(
    broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # mosquitto 2.0.11 restores MQTT 3.1.1 sessions across its restart, not MQTT 5 ones: the
    # ingest worker keeps its queued messages with 3.1.1. Its shared subscription comes back
    # only when it subscribes again, and a gateway that reconnects first publishes to nobody:
    # under MQTT 5 it learns so from the PUBACK (0x10 no matching subscribers) and sends again.
    uplink_config = broker.mqtt_config(
        batch_size=20, max_rate_msgs_s=150, reconnect_min_s=0.2, reconnect_max_s=1
    )
    config = broker.mqtt_config(
        protocol="3.1.1", batch_size=20, max_rate_msgs_s=150, reconnect_min_s=0.2, reconnect_max_s=1
    )
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    produce_fast(store, factory, 12_000)
    db = open_database(db_url)
    caplog.set_level("INFO", logger="sync.ingest")
    with IngestWorker(db_url, config, name="restart") as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker")
        with Uplink(store, uplink_config, site=SITE, gateway=GATEWAY) as uplink:
            wait_until(lambda: count(db) >= 2000, 30, "the drain to get going")
            broker.restart()
            wait_until(lambda: uplink.metrics.connects >= 2, 30, "the uplink to reconnect")
            assert uplink.wait_synced(90)
        assert_exactly(db, outbox_ids(store.path), 60)
        assert worker.stats.inserted == len(outbox_ids(store.path))
    db.close()
    said = [r.getMessage() for r in caplog.records if r.name == "sync.ingest"]
    assert sum("ingest-restart: lost the broker" in line for line in said) == 1, said
    assert sum("ingest-restart: connected to" in line for line in said) == 2, "the loss and the return"


def test_gateway_killed_mid_drain_and_restarted(broker: TestBroker, tmp_path: Path) -> None:
    store_path = tmp_path / "gateway" / "gatehouse.db"
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    db = open_database(db_url)
    with IngestWorker(db_url, broker.mqtt_config(), name="killed-gw") as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker")
        child = spawn(HERE / "gateway_proc.py", str(store_path), str(broker.port), "8000", "100")
        try:
            wait_for_line(child, b"connected", 20)
            wait_until(lambda: count(db) >= 1500, 60, "the drain to get going")
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            stop_child(child)
        produced = outbox_ids(store_path)
        assert count(db) < len(produced), "the gateway was killed after it had drained everything"
        again = spawn(HERE / "gateway_proc.py", str(store_path), str(broker.port), "0", "2000")
        try:
            wait_for_line(again, b"synced", 90)
        finally:
            stop_child(again)
        assert_exactly(db, produced)
    db.close()


def test_broker_frozen_longer_than_keepalive(
    broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path
) -> None:
    config = broker.mqtt_config(
        keepalive_s=5,
        connect_timeout_s=2,
        batch_size=20,
        max_rate_msgs_s=150,
        reconnect_min_s=0.2,
        reconnect_max_s=1,
    )
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    produce_fast(store, factory, 8000)
    db = open_database(db_url)
    with IngestWorker(db_url, config, name="frozen") as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker")
        with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
            wait_until(lambda: count(db) >= 1500, 30, "the drain to get going")
            broker.freeze()
            try:
                wait_until(lambda: not uplink.connected.is_set(), 20, "the uplink to notice the dead broker")
            finally:
                broker.thaw()
            assert uplink.wait_synced(90)
            assert uplink.metrics.connects >= 2
        assert_exactly(db, outbox_ids(store.path))
    db.close()


@pytest.mark.postgres
def test_ingest_worker_killed_mid_stream(
    broker: TestBroker, store: Store, factory: EventFactory, pg_url: str
) -> None:
    db = open_database(pg_url)
    db.execute("DELETE FROM events")
    workers = {name: spawn(HERE / "ingest_proc.py", pg_url, str(broker.port), name) for name in ("w1", "w2")}
    try:
        for process in workers.values():
            wait_for_line(process, b"ready", 20)
        produce_fast(store, factory, 10_000)
        config = broker.mqtt_config(batch_size=10, max_rate_msgs_s=150)
        with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
            wait_until(lambda: count(db) >= 2000, 60, "both workers to be busy")
            workers["w2"].send_signal(signal.SIGKILL)
            workers["w2"].wait(10)
            time.sleep(0.5)
            workers["w2"] = spawn(HERE / "ingest_proc.py", pg_url, str(broker.port), "w2")
            wait_for_line(workers["w2"], b"ready", 20)
            assert uplink.wait_synced(90)
        assert_exactly(db, outbox_ids(store.path))
    finally:
        for process in workers.values():
            stop_child(process)
        db.close()
