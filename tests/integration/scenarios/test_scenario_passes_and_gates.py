"""Visitor passes used up, tailgating through a lane, and a fire lane blocked for ten minutes,
on the simulated compound with a clock the test moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.base import CardPresented, PlateRead, VehiclePassage, ZoneSample
from drivers.sim.population import Population
from edge.allowlist import AllowList
from tests.integration.scenarios.conftest import compound, events, present, running
from tests.support.pty import eventually
from tests.unit.rules.conftest import Clock

HOUR = 3600


def test_a_visitor_pass_used_beyond_its_entries_is_denied(tmp_path: Path):
    config = compound(tmp_path)
    clock = Clock()
    visitor = Population(seed=7, residents=40, province="津").visitors[0]

    async def scenario() -> None:
        async with running(config, clock) as gateway:
            allow = AllowList(gateway.store, config.site.salt, clock=clock)
            pass_id = allow.issue_pass(
                token=visitor.token,
                holder=visitor.name,
                host="household-0007",
                valid_until_ms=int((clock() + 2 * HOUR) * 1000),
                max_entries=2,
                gates=["north-in", "north-out"],
            )
            reader = gateway.drivers["reader-in"]
            for attempt in range(1, 4):
                await present(
                    gateway,
                    CardPresented("reader-in", visitor.token, "qr"),
                    lambda n=attempt: len(events(gateway, "access.*")) == n,
                    f"decision {attempt}",
                )
                clock.advance(600)
            decisions = [(e.type, e.payload.reason, e.payload.pass_id) for e in events(gateway, "access.*")]
            assert decisions == [
                ("access.granted", "pass", pass_id),
                ("access.granted", "pass", pass_id),
                ("access.denied", "exhausted", pass_id),
            ]
            assert "all 2 entries used" in events(gateway, "access.denied")[0].payload.detail
            await eventually(lambda: reader.feedback == [True, True, False], what="green, green, red")
            assert visitor.token not in gateway.store.events(limit=100)[0].model_dump_json()

    asyncio.run(scenario())


def test_tailgating_is_more_loop_passages_than_grants(tmp_path: Path):
    config = compound(tmp_path)
    clock = Clock()
    resident = next(r for r in Population(seed=7, residents=40, province="津").residents if r.plate)

    async def scenario() -> None:
        async with running(config, clock) as gateway:
            AllowList(gateway.store, config.site.salt, clock=clock).add_plate(
                resident.plate or "", resident.person
            )
            lane = gateway.drivers["lane-in"]
            await present(
                gateway,
                PlateRead("cam-in", resident.plate or "", 0.97, "blue", frames=5),
                lambda: lane.opens == 1,
                "the barrier to open for the resident",
            )
            cycle = ["opening", "open", "closing", "closed"]
            await eventually(
                lambda: [e.payload.state for e in events(gateway, "gate.state")][-4:] == cycle,
                what="the lane's open cycle, with its loop passage",
            )
            assert gateway.alerts.open_alerts() == [], "the simulated loop saw the resident's car: no alert"
            (alert,) = await present(
                gateway,
                VehiclePassage("lane-in"),
                lambda: events(gateway, "alert.raised"),
                "the tailgating alert",
            )
            assert (alert.payload.kind, alert.payload.gate, alert.payload.severity) == (
                "gate.tailgating",
                "north-in",
                "warning",
            )

    asyncio.run(scenario())


def test_the_fire_lane_blocked_for_ten_minutes(tmp_path: Path):
    config = compound(
        tmp_path,
        extra="rules: {fire_lanes: [fire-lane], alerts: {check_interval_s: 0.05}}\n",
    )
    clock = Clock()

    async def scenario() -> None:
        async with running(config, clock) as gateway:
            await present(
                gateway,
                ZoneSample("yard-cam", "fire-lane", 1, plate="津F00001"),
                lambda: events(gateway, "occupancy.sample"),
                "the first sample",
            )
            for minute in range(1, 10):
                clock.advance(60)
                await present(
                    gateway,
                    ZoneSample("yard-cam", "fire-lane", 1),
                    lambda n=minute: len(events(gateway, "occupancy.sample")) == n + 1,
                    f"minute {minute}",
                )
            await gateway.rules.tick()
            assert events(gateway, "alert.raised") == [], "nine minutes is not yet blocked"
            clock.advance(60)
            (alert,) = await eventually(lambda: events(gateway, "alert.raised"), what="the fire-lane alert")
            assert (alert.payload.kind, alert.payload.severity) == ("fire_lane.blocked", "critical")
            assert "10 min" in alert.payload.message
            await present(
                gateway,
                ZoneSample("yard-cam", "fire-lane", 0),
                lambda: events(gateway, "alert.cleared"),
                "the alert to clear when the lane is free",
            )

    asyncio.run(scenario())
