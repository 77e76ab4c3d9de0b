"""A blocklisted plate at the lane: denied, and its alert raised while the same plate read is
handled (so well within a second), then published ahead of a 100,000-event backlog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.base import PlateRead
from drivers.sim.population import Population
from edge.allowlist import AllowList
from edge.events import EventFactory
from edge.store import Store
from sync.broker import Mosquitto, free_port
from sync.uplink import Uplink
from tests.integration.scenarios.conftest import GATEWAY, SITE, compound, events, present, running
from tests.support.pty import eventually
from tests.support.sync_helpers import EventTap, produce_fast
from tests.unit.rules.conftest import Clock

pytestmark = pytest.mark.broker

BACKLOG = 100_000


def test_blocklisted_plate_alert_goes_ahead_of_the_backlog(tmp_path: Path):
    port = free_port()
    config = compound(
        tmp_path,
        extra=f"mqtt: {{host: 127.0.0.1, port: {port}, batch_size: 100, max_rate_msgs_s: 100}}\n",
    )
    clock = Clock()
    plate = Population(seed=7, residents=40, province="津").blocklisted_plate
    with Store(config.store_path, synchronous="normal", events=EventFactory(SITE, GATEWAY)) as store:
        AllowList(store, config.site.salt, clock=clock).block("plate", plate, reason="reported stolen")
        produce_fast(store, EventFactory(SITE, GATEWAY), BACKLOG, chunk=2000)

    async def scenario(arrivals: EventTap) -> None:
        async with running(config, clock) as gateway:
            uplink = Uplink(gateway.store, config.mqtt, site=SITE, gateway=GATEWAY)
            uplink.start()
            try:
                await eventually(lambda: arrivals.count() > 1000, 30, "the backlog to start draining")
                (alert,) = await present(
                    gateway,
                    PlateRead("cam-in", plate, 0.95, "blue", frames=4),
                    lambda: events(gateway, "alert.raised"),
                    "the blocklist alert",
                )
                (denied,) = events(gateway, "access.denied")
                assert (denied.payload.reason, alert.payload.kind, alert.payload.severity) == (
                    "blocklisted",
                    "plate.blocklisted",
                    "critical",
                )
                assert alert.seq == denied.seq + 1, "raised right after the decision, nothing in between"
                record = gateway.alerts.find(alert.payload.alert_id)
                assert record is not None and record.raised_ms == int(clock() * 1000)
                position = await eventually(
                    lambda: arrivals.position("alert.raised"), 30, "the alert at the broker"
                )
                assert position < BACKLOG - 10_000, "the alert did not wait for the backlog"
                assert gateway.store.backlog().count > 10_000, "the backlog was still draining"
            finally:
                await asyncio.to_thread(uplink.stop)

    with Mosquitto(tmp_path / "mosquitto", port=port):
        arrivals = EventTap(port, GATEWAY, SITE)
        try:
            asyncio.run(scenario(arrivals))
        finally:
            arrivals.close()
