"""ensure_broker: the configured broker, else a local one, else a mosquitto it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.store import Store
from sync import broker as broker_module
from sync.broker import answers, ensure_broker, free_port
from sync.config import MqttConfig
from sync.db import open_database
from sync.ingest import IngestWorker, local_ingest
from sync.uplink import Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, produce, wait_until

pytestmark = pytest.mark.broker


def test_configured_broker_is_used_as_is() -> None:
    config = MqttConfig(host="broker.example", port=8883)
    with ensure_broker(config) as handle:
        assert handle.kind == "configured" and handle.config is config


def test_local_broker_when_it_answers(shared_broker: TestBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "LOCAL_PORT", shared_broker.port)
    with ensure_broker() as handle:
        assert handle.kind == "local" and handle.config.port == shared_broker.port


def test_starts_mosquitto_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "LOCAL_PORT", free_port())
    with ensure_broker() as handle:
        assert handle.kind == "mosquitto" and handle.shared_subscriptions
        port = handle.config.port
        assert answers("127.0.0.1", port)
    assert not answers("127.0.0.1", port)


@pytest.mark.parametrize("without_mosquitto", [False, True], ids=["mosquitto", "amqtt"])
def test_local_ingest_for_the_demo(
    monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path, without_mosquitto: bool
) -> None:
    """Nothing answers locally: the demo's community side starts mosquitto, or on a machine
    without it the embedded amqtt broker (MQTT 3.1.1, no shared subscriptions), and receives
    every event either way."""
    monkeypatch.setattr(broker_module, "LOCAL_PORT", free_port())
    if without_mosquitto:
        monkeypatch.setattr(broker_module, "find_mosquitto", lambda: None)
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    handle, worker = local_ingest(db_url)
    try:
        assert handle.kind == ("amqtt" if without_mosquitto else "mosquitto")
        assert handle.shared_subscriptions is not without_mosquitto
        wait_until(worker.connected.is_set, 20, "the ingest worker")
        made = produce(store, EventFactory(SITE, "gw-demo"), 5, "access.granted")
        with Uplink(store, handle.config, site=SITE, gateway="gw-demo") as uplink:
            assert uplink.wait_synced(30)
        db = open_database(db_url)
        wait_until(lambda: len(db.event_ids()) == 5, 20, "the events in the community database")
        assert set(db.event_ids()) == {str(e.id) for e in made}
        db.close()
    finally:
        worker.stop()
        handle.close()


def test_the_demos_ingest_takes_nothing_from_ingest_workers_on_the_same_broker(
    shared_broker: TestBroker, monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path
) -> None:
    """The local mosquitto may already serve the community's ingest workers: the demo's
    community database gets every demo event, and the workers' group all of theirs."""
    monkeypatch.setattr(broker_module, "LOCAL_PORT", shared_broker.port)
    production_url = f"sqlite:///{tmp_path / 'production.db'}"
    demo_url = f"sqlite:///{tmp_path / 'demo.db'}"
    config = shared_broker.mqtt_config()
    with IngestWorker(production_url, config, name="production", session_expiry_s=0) as production:
        handle, demo = local_ingest(demo_url)
        try:
            wait_until(lambda: production.connected.is_set() and demo.connected.is_set(), 20, "both")
            made = produce(store, EventFactory(SITE, "gw-shared"), 40, "access.granted")
            with Uplink(store, handle.config, site=SITE, gateway="gw-shared") as uplink:
                assert uplink.wait_synced(30)
            for url in (demo_url, production_url):
                db = open_database(url)
                wait_until(lambda db=db: len(db.event_ids()) >= 40, 20, f"every event in {url}")
                assert sorted(db.event_ids()) == sorted(str(e.id) for e in made)
                db.close()
        finally:
            demo.stop()
            handle.close()
