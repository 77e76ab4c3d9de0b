"""Fixtures for the sync integration tests: real mosquitto brokers, a fresh PostgreSQL
database per run, stores, ingest workers and child processes."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from edge.events import EventFactory
from edge.store import Store
from tests.support.mosquitto import TestBroker, start_broker
from tests.support.sync_helpers import GATEWAY, SITE

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    """One broker for the tests that do not stop or freeze it."""
    broker = start_broker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TestBroker]:
    """A broker of the test's own, to stop, restart or freeze."""
    started = start_broker(tmp_path / "mosquitto")
    yield started
    started.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    import psycopg

    name = f"gatehouse_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        raise RuntimeError(
            f"PostgreSQL is not answering at 127.0.0.1:5432 ({err}); install and start it "
            "(apt-get install postgresql; CI's .ci/run does this)"
        ) from err
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gateway" / "gatehouse.db", synchronous="normal") as opened:
        yield opened


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory(SITE, GATEWAY)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh community database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'community.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def publisher(shared_broker: TestBroker) -> Iterator[mqtt.Client]:
    """A plain MQTT 5 client on the shared broker, publishing as a gateway would."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", shared_broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()
