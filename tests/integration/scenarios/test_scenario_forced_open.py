"""A barrier lifted by hand, on the Modbus RTU board simulator over a pty pair: the driver sees
it, the rules raise a critical alert and sound the siren on the board's spare relay; the guard's
acknowledgement silences it, and closing the barrier clears the alert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import CardPresented, CloseGate
from drivers.modbus_gate.sim import Barrier, BarrierBoardServer
from edge.allowlist import AllowList
from tests.integration.scenarios.conftest import compound, events, present, running
from tests.support.pty import VirtualCable, eventually, virtual_cable
from tests.unit.rules.conftest import Clock

pytestmark = pytest.mark.serial

SIREN = 4

BOARD = """\
gates:
  - {{id: north-in, kind: vehicle, direction: in, barrier: barrier, readers: [reader-in]}}
devices:
  - kind: modbus_gate
    id: barrier
    serial: {{port: {port}, baudrate: 115200, reconnect_min_s: 0.1}}
    unit_id: 1
    poll_interval_s: 0.05
    travel_timeout_s: 3.0
    profile: {{pulse_ms: 100, outputs: {{siren: {siren}}}}}
  - {{kind: sim_reader, id: reader-in, interval_s: 86400}}
rules:
  alerts:
    outputs: [{{device: barrier, output: siren, severities: [critical], kinds: [gate.forced_open]}}]
"""


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[VirtualCable]:
    with virtual_cable(tmp_path) as made:
        yield made


def siren_writes(server: BarrierBoardServer) -> list[bool]:
    return [write.on for write in server.writes if write.coil == SIREN]


def test_forced_open_sounds_the_siren_until_acknowledged(tmp_path: Path, cable: VirtualCable):
    config = compound(tmp_path, BOARD.format(port=cable.path_a, siren=SIREN))
    clock = Clock()

    async def scenario() -> None:
        server = BarrierBoardServer(cable.path_b, {1: Barrier(travel_s=0.3)}, baudrate=115200)
        async with server, running(config, clock) as gateway:
            await eventually(lambda: events(gateway, "gate.state"), 15, "the barrier's first state")
            AllowList(gateway.store, config.site.salt, clock=clock).add_credential("12345678", "p-1")
            await present(
                gateway,
                CardPresented("reader-in", "12345678"),
                lambda: server.barrier(1).position == "open",
                "the barrier to open for the resident",
            )
            await gateway.command("barrier", CloseGate())
            await eventually(lambda: server.barrier(1).position == "closed", what="the barrier to close")
            assert gateway.alerts.open_alerts() == [], "a commanded opening is not forced"

            server.barrier(1).force_open()
            (alert,) = await eventually(lambda: events(gateway, "alert.raised"), 10, "the forced-open alert")
            assert (alert.payload.kind, alert.payload.severity, alert.payload.gate) == (
                "gate.forced_open",
                "critical",
                "north-in",
            )
            await eventually(lambda: siren_writes(server) == [True], what="the siren relay on")
            await gateway.alerts.acknowledge(alert.payload.alert_id, by="guard-1")
            await eventually(lambda: siren_writes(server) == [True, False], what="the siren relay off")
            await gateway.command("barrier", CloseGate())
            await eventually(lambda: events(gateway, "alert.cleared"), 10, "the alert to clear")
            assert [e.type for e in events(gateway, "alert.*")] == [
                "alert.raised",
                "alert.acknowledged",
                "alert.cleared",
            ]

    asyncio.run(scenario())
