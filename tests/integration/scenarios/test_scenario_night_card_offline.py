"""A resident's card at night with the broker down: granted from the local store at once, and in
the community database once the broker is back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.base import CardPresented
from drivers.sim.population import Population
from edge.allowlist import AllowList
from sync.broker import Mosquitto, free_port
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.uplink import Uplink
from tests.integration.scenarios.conftest import GATEWAY, SITE, compound, events, present, running
from tests.support.pty import eventually
from tests.unit.rules.conftest import Clock

pytestmark = pytest.mark.broker

NIGHT = Clock(datetime(2026, 11, 24, 18, 40, tzinfo=UTC).timestamp())  # 02:40 in Tianjin


def test_resident_card_at_night_with_the_broker_down(tmp_path: Path):
    port = free_port()
    config = compound(
        tmp_path,
        extra=f"mqtt: {{host: 127.0.0.1, port: {port}, reconnect_min_s: 0.2, reconnect_max_s: 0.5}}\n",
    )
    people = Population(seed=7, residents=40, province="津")
    resident = people.residents[3]
    db_url = f"sqlite:///{tmp_path / 'community.db'}"

    async def scenario() -> None:
        async with running(config, NIGHT) as gateway:
            allow = AllowList(gateway.store, config.site.salt, clock=NIGHT)
            allow.add_resident(resident.person, household=resident.household, building=resident.building)
            allow.add_credential(resident.card, resident.person)
            uplink = Uplink(gateway.store, config.mqtt, site=SITE, gateway=GATEWAY)
            uplink.start()
            try:
                reader = gateway.drivers["reader-in"]
                lane = gateway.drivers["lane-in"]
                seen = CardPresented("reader-in", resident.card, "card", "wiegand26")
                (granted,) = await present(
                    gateway, seen, lambda: events(gateway, "access.granted"), "the decision"
                )
                assert granted.payload.reason == "resident"
                assert granted.payload.household == resident.household
                assert not uplink.connected.is_set(), "the broker is down"
                await eventually(lambda: reader.feedback == [True], what="the reader's green LED")
                await eventually(lambda: lane.opens == 1, what="the barrier to open")
                assert gateway.store.backlog().count >= 1
                with (
                    Mosquitto(tmp_path / "mosquitto", port=port) as broker,
                    IngestWorker(db_url, broker.mqtt_config(), name="night") as worker,
                ):
                    await eventually(worker.connected.is_set, 15, "the ingest to connect")
                    await eventually(uplink.connected.is_set, 15, "the uplink to reconnect")
                    db = open_database(db_url)
                    try:
                        await eventually(
                            lambda: str(granted.id) in db.event_ids(), 20, "the grant in the database"
                        )
                    finally:
                        db.close()
            finally:
                await asyncio.to_thread(uplink.stop)

    asyncio.run(scenario())
