"""How the uplink records what the broker acknowledged: a high-water mark per priority class for
a drained backlog, never past a row that was not delivered, and never past a row another process
(the CLI) appended behind the gateway's back."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.events import EventFactory, Priority
from edge.store import Store
from sync import uplink as uplink_module
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.uplink import Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import GATEWAY, SITE, produce, wait_until

pytestmark = pytest.mark.broker

TELEMETRY = int(Priority.TELEMETRY)


def telemetry_stamped(store: Store) -> int:
    """Telemetry rows marked synced one by one (rather than by their class's mark)."""
    row = store.read().execute(
        "SELECT count(*) FROM outbox WHERE synced_ms IS NOT NULL AND priority = ?", (TELEMETRY,)
    )
    return int(row.fetchone()[0])


def test_a_drained_backlog_is_recorded_as_a_mark(
    shared_broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    backlog = produce(store, factory, 1500)
    config = shared_broker.mqtt_config(batch_size=50, max_rate_msgs_s=5000)
    with IngestWorker(db_url, config, name="marks", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            alerts = produce(store, factory, 3, "alert.raised")
            assert uplink.wait_synced(30)
        db = open_database(db_url)
        expected = {str(e.id) for e in backlog + alerts}
        wait_until(lambda: set(db.event_ids()) >= expected, 30, "every event in the database")
        db.close()
    assert store.sync_marks()[TELEMETRY] >= backlog[-1].seq
    assert telemetry_stamped(store) == 0
    assert store.backlog().count == 0


def test_rows_appended_by_another_process_are_sent(
    shared_broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path
) -> None:
    """The CLI appends to the same file through a store of its own: the gateway's uplink hears of
    those rows from no commit listener. Whether the gateway then stays quiet or goes on
    committing its own rows, they are sent, and no mark passes over them unsent."""
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    config = shared_broker.mqtt_config(batch_size=50, max_rate_msgs_s=5000)
    db = open_database(db_url)
    with IngestWorker(db_url, config, name="foreign", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
            wait_until(uplink.connected.is_set, 10, "the uplink to connect")
            own = produce(store, factory, 5)
            assert uplink.wait_synced(10)
            with Store(store.path, synchronous="normal") as cli:
                quiet = produce(cli, factory, 2) + produce(cli, factory, 1, "alert.raised")
            wait_until(
                lambda: {str(e.id) for e in quiet} <= set(db.event_ids()), 15, "the quiet case delivered"
            )
            with Store(store.path, synchronous="normal") as cli:
                behind = produce(cli, factory, 3)
            own += produce(store, factory, 20)
            assert uplink.wait_synced(15)
        expected = {str(e.id) for e in own + quiet + behind}
        wait_until(lambda: set(db.event_ids()) >= expected, 30, "every event in the database")
    db.close()
    assert store.backlog().count == 0


def test_refused_rows_hold_the_mark_until_delivered(
    broker: TestBroker, store: Store, factory: EventFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nobody subscribed an MQTT 5 broker answers 0x10: nothing was delivered, so nothing
    may count as synced; once an ingest subscribes, everything arrives."""
    monkeypatch.setattr(uplink_module, "NO_SUBSCRIBERS_RETRY_S", 0.3)
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    backlog = produce(store, factory, 400)
    config = broker.mqtt_config(batch_size=50, max_rate_msgs_s=5000)
    with Uplink(store, config, site=SITE, gateway=GATEWAY) as uplink:
        wait_until(lambda: uplink.metrics.nacked >= len(backlog), 20, "the broker to refuse the backlog")
        assert store.sync_marks().get(TELEMETRY, 0) == 0
        assert store.backlog().count == len(backlog)
        with IngestWorker(db_url, config, name="late", session_expiry_s=0) as worker:
            wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
            assert uplink.wait_synced(30)
            db = open_database(db_url)
            expected = {str(e.id) for e in backlog}
            wait_until(lambda: set(db.event_ids()) >= expected, 30, "every event in the database")
            db.close()
    assert store.sync_marks()[TELEMETRY] >= backlog[-1].seq
