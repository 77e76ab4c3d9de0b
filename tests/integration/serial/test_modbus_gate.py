"""The barrier driver against a pymodbus RTU server modelling barrier boards, over a pty pair."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.base import (
    Availability,
    CloseGate,
    DriverContext,
    GateCondition,
    GateStateChanged,
    OpenGate,
    SetOutput,
    VehiclePassage,
)
from drivers.modbus_gate.config import ModbusGateConfig
from drivers.modbus_gate.device import ModbusGate
from drivers.modbus_gate.sim import Barrier, BarrierBoardServer
from edge.config import GatehouseConfig
from edge.errors import DeviceMisconfigured, DeviceNotReady
from edge.gateway import Gateway
from tests.support.pty import Recorder, VirtualCable, eventually

pytestmark = pytest.mark.serial

Body = Callable[[dict[int, ModbusGate], BarrierBoardServer, dict[int, Recorder]], Awaitable[None]]


def gate_config(port: str, unit: int = 1, **overrides: Any) -> ModbusGateConfig:
    return ModbusGateConfig.model_validate(
        {
            "id": f"barrier-{unit}",
            "kind": "modbus_gate",
            "serial": {"port": port, "baudrate": 115200, "reconnect_min_s": 0.1},
            "unit_id": unit,
            "poll_interval_s": 0.05,
            "travel_timeout_s": 3.0,
            "profile": {"pulse_ms": 100},
            **overrides,
        }
    )


def run_gates(
    cable: VirtualCable,
    tmp_path: Path,
    body: Body,
    barriers: dict[int, Barrier] | None = None,
    **overrides: Any,
) -> None:
    barriers = barriers or {1: Barrier(travel_s=0.3)}

    async def main() -> None:
        async with asyncio.timeout(60):
            server = BarrierBoardServer(cable.path_b, barriers, baudrate=115200)
            async with server:
                drivers = {
                    unit: ModbusGate(
                        gate_config(cable.path_a, unit, **overrides),
                        DriverContext(state_dir=str(tmp_path)),
                    )
                    for unit in barriers
                }
                recorders = {unit: Recorder() for unit in barriers}
                tasks = [asyncio.create_task(drivers[unit].run(recorders[unit])) for unit in barriers]
                try:
                    for unit in barriers:
                        await eventually(
                            lambda unit=unit: recorders[unit].of(GateStateChanged),
                            what=f"unit {unit}'s first state",
                        )
                        await eventually(
                            lambda unit=unit: startup_releases_done(server, unit),
                            what=f"unit {unit}'s movement relays switched off at start",
                        )
                    server.writes.clear()
                    await body(drivers, server, recorders)
                finally:
                    for task in tasks:
                        task.cancel()
                    results = await asyncio.gather(*tasks, return_exceptions=True)
                    for result in results:
                        if not isinstance(result, asyncio.CancelledError):
                            raise AssertionError(f"driver ended with {result!r}")

    asyncio.run(main())


def startup_releases_done(server: BarrierBoardServer, unit: int) -> bool:
    """A starting driver switches every movement relay off (open 0, close 1, stop 2 here)."""
    return {(w.coil, w.on) for w in server.writes if w.unit == unit} >= {(0, False), (1, False), (2, False)}


def states(recorder: Recorder) -> list[str]:
    return [o.state for o in recorder.of(GateStateChanged)]


def conditions(recorder: Recorder, name: str) -> list[bool]:
    return [o.active for o in recorder.of(GateCondition) if o.condition == name]


def test_open_pulses_the_open_relay_and_follows_the_limits(cable, tmp_path):
    async def body(drivers, server, recorders):
        gate, rec = drivers[1], recorders[1]
        await gate.execute(OpenGate(reason="test"))
        await eventually(lambda: "open" in states(rec), what="open limit")
        await eventually(lambda: len([w for w in server.writes if w.coil == 0]) == 2)
        assert [(w.coil, w.on) for w in server.writes] == [(0, True), (0, False)]
        assert states(rec) == ["closed", "opening", "open"]
        opening = rec.of(GateStateChanged)[1]
        assert opening.commanded and opening.previous == "closed"
        assert [w[:2] for w in gate.coil_writes][-2:] == [(0, True), (0, False)]

    run_gates(cable, tmp_path, body)


def test_an_arm_that_never_reaches_its_limit_is_stuck(cable, tmp_path):
    async def body(drivers, server, recorders):
        rec = recorders[1]
        await drivers[1].execute(OpenGate())
        await eventually(lambda: conditions(rec, "stuck") == [True], what="stuck")
        assert states(rec)[-1] == "fault"
        stuck = next(o for o in rec.of(GateCondition) if o.condition == "stuck")
        assert "no open limit" in stuck.detail
        server.barrier(1).stuck = False
        await eventually(lambda: conditions(rec, "stuck") == [True, False], what="cleared")
        assert states(rec)[-1] == "open"

    run_gates(cable, tmp_path, body, {1: Barrier(travel_s=0.2, stuck=True)}, travel_timeout_s=0.5)


def test_a_vehicle_on_the_loop_blocks_closing(cable, tmp_path):
    async def body(drivers, server, recorders):
        gate, rec = drivers[1], recorders[1]
        await gate.execute(OpenGate())
        await eventually(lambda: "open" in states(rec), what="open")
        server.barrier(1).vehicle = True
        await eventually(lambda: gate.machine.loop_occupied, what="loop seen")
        await gate.execute(CloseGate())
        polls = rec.heartbeats
        await eventually(lambda: rec.heartbeats >= polls + 10, what="ten more polls")
        assert server.pulses(1, 1) == 0
        assert states(rec)[-1] == "open"
        server.barrier(1).vehicle = False
        await eventually(lambda: server.pulses(1, 1) == 1, what="close pulse after the car")
        await eventually(lambda: states(rec)[-1] == "closed", what="closed")
        assert len(rec.of(VehiclePassage)) == 1
        closing = [o for o in rec.of(GateStateChanged) if o.state == "closing"]
        assert closing and closing[0].commanded

    run_gates(cable, tmp_path, body)


def test_an_arm_lifted_without_a_command_is_forced_open(cable, tmp_path):
    async def body(drivers, server, recorders):
        rec = recorders[1]
        server.barrier(1).force_open()
        await eventually(lambda: conditions(rec, "forced_open") == [True], what="forced")
        assert states(rec)[-1] == "open"
        assert not [o for o in rec.of(GateStateChanged) if o.commanded]
        await drivers[1].execute(CloseGate())
        await eventually(lambda: conditions(rec, "forced_open") == [True, False], what="clear")

    run_gates(cable, tmp_path, body)


def test_an_arm_left_open_with_no_vehicle_is_held_open(cable, tmp_path):
    async def body(drivers, server, recorders):
        rec = recorders[1]
        await drivers[1].execute(OpenGate())
        await eventually(lambda: conditions(rec, "held_open") == [True], what="held open")
        assert conditions(rec, "forced_open") == []
        await drivers[1].execute(CloseGate())
        await eventually(lambda: conditions(rec, "held_open") == [True, False], what="cleared")

    run_gates(cable, tmp_path, body, held_open_s=0.4)


def test_two_units_share_one_line(cable, tmp_path):
    async def body(drivers, server, recorders):
        await drivers[2].execute(OpenGate())
        await eventually(lambda: "open" in states(recorders[2]), what="unit 2 open")
        assert server.pulses(2, 0) == 1
        assert server.pulses(1, 0) == 0
        assert states(recorders[1]) == ["closed"]

    run_gates(cable, tmp_path, body, {1: Barrier(travel_s=0.2), 2: Barrier(travel_s=0.2)})


def test_unplug_and_replug_mid_session(cable, tmp_path):
    async def body(drivers, server, recorders):
        rec = recorders[1]
        cable.unplug("a")
        await eventually(lambda: rec.availability() == [True, False], what="offline")
        cable.replug("a")
        await eventually(lambda: rec.availability() == [True, False, True], what="online again")
        await drivers[1].execute(OpenGate())
        await eventually(lambda: "open" in states(rec), what="open after replug")

    run_gates(cable, tmp_path, body)


def relays_on_together(server: BarrierBoardServer, unit: int, coils: set[int]) -> bool:
    """Whether the board ever had all of `coils` on at once, replaying its writes in order."""
    on: set[int] = set()
    for write in server.writes:
        if write.unit != unit:
            continue
        if write.on:
            on.add(write.coil)
        else:
            on.discard(write.coil)
        if coils <= on:
            return True
    return False


def test_a_release_lost_in_a_dropout_is_retried_until_the_relay_is_off(cable, tmp_path):
    async def body(drivers, server, recorders):
        gate, rec = drivers[1], recorders[1]
        await gate.execute(OpenGate())
        cable.unplug("a")
        await eventually(
            lambda: [w[:2] for w in gate.coil_writes].count((0, False)) >= 4, what="four failed releases"
        )
        assert rec.availability() == [True, False]
        cable.replug("a")
        await eventually(lambda: rec.availability() == [True, False, True], what="online again")
        await eventually(lambda: server.barrier(1).coils.get(0) is False, what="open relay off")
        assert [(w.coil, w.on) for w in server.writes] == [(0, True), (0, False)]

    run_gates(cable, tmp_path, body, profile={"pulse_ms": 50})


def test_a_relay_left_on_before_the_driver_started_is_switched_off(cable, tmp_path):
    """The gateway died mid-pulse: the open relay is still on when the driver starts again."""
    left_on = Barrier(travel_s=0.3, coils={0: True})

    async def body(drivers, server, recorders):
        assert server.barrier(1).coils == {0: False, 1: False, 2: False}

    run_gates(cable, tmp_path, body, barriers={1: left_on})


def test_a_close_during_the_open_pulse_switches_the_open_relay_off_first(cable, tmp_path):
    async def body(drivers, server, recorders):
        gate = drivers[1]
        await gate.execute(OpenGate())
        await gate.execute(CloseGate())
        await eventually(lambda: server.barrier(1).coils.get(1) is False, what="close pulse over")
        assert [(w.coil, w.on) for w in server.writes] == [(0, True), (0, False), (1, True), (1, False)]
        assert not relays_on_together(server, 1, {0, 1})

    run_gates(cable, tmp_path, body, profile={"pulse_ms": 1000})


def test_a_board_busy_for_two_requests_still_opens_the_barrier(cable, tmp_path):
    """Modbus exception 6 (device busy) means "ask again", not a wrong board profile: the request
    is sent again and the barrier opens, with no fault and no offline report."""

    async def body(drivers, server, recorders):
        gate, rec = drivers[1], recorders[1]
        server.barrier(1).busy = 2
        await gate.execute(OpenGate())
        assert server.barrier(1).busy == 0, "both busy replies were given"
        await eventually(lambda: "open" in states(rec), what="open limit")
        assert server.pulses(1, 0) == 1
        assert rec.availability() == [True]
        assert "fault" not in states(rec)

    run_gates(cable, tmp_path, body)


def test_a_board_that_stays_busy_is_not_ready_rather_than_misconfigured(cable, tmp_path):
    async def body(drivers, server, recorders):
        gate, rec = drivers[1], recorders[1]
        server.barrier(1).busy = 1_000_000
        with pytest.raises(
            DeviceNotReady, match=r"^unit 1 on .* kept answering busy \(Modbus exception 6"
        ) as err:
            await gate.execute(OpenGate())
        assert "to set relay 0 on" in str(err.value)
        assert server.pulses(1, 0) == 0
        await eventually(lambda: rec.availability() == [True, False], what="offline while busy")
        assert "kept answering busy" in rec.of(Availability)[-1].reason
        server.barrier(1).busy = 0
        await eventually(lambda: rec.availability() == [True, False, True], what="online again")
        await gate.execute(OpenGate())
        await eventually(lambda: "open" in states(rec), what="open once the board is free")

    run_gates(cable, tmp_path, body)


def test_a_relay_the_board_does_not_have_is_still_misconfigured(cable, tmp_path):
    """Exception 2 (illegal data address) will not go away by asking again."""

    async def body(drivers, server, recorders):
        with pytest.raises(DeviceMisconfigured) as err:
            await drivers[1].execute(SetOutput("siren", True))
        assert "unit 1 on" in str(err.value)
        assert "refused to set relay 40 (Modbus exception 2, illegal data address" in str(err.value)
        assert "coil addresses" in str(err.value)
        assert recorders[1].availability() == [True]

    run_gates(cable, tmp_path, body, profile={"pulse_ms": 100, "outputs": {"siren": 40}})


def test_the_supervisor_sees_no_fault_when_the_board_is_busy_for_a_moment(cable, tmp_path):
    """Through the real Gateway: a command answered busy twice is carried out and the barrier
    stays online (a refused command would mark it offline with an alert)."""
    config = GatehouseConfig.model_validate(
        {
            "site": {"id": "busy", "salt": "busy-salt-0123456789"},
            "gateway": {"id": "gw", "state_dir": str(tmp_path / "state")},
            "store": {"synchronous": "normal"},
            "devices": [
                {
                    "kind": "modbus_gate",
                    "id": "barrier",
                    "serial": {"port": cable.path_a, "baudrate": 115200},
                    "unit_id": 1,
                    "poll_interval_s": 0.05,
                    "profile": {"pulse_ms": 100},
                }
            ],
        }
    )

    async def main() -> None:
        server = BarrierBoardServer(cable.path_b, {1: Barrier(travel_s=0.3)}, baudrate=115200)
        async with server:
            gateway = Gateway(config)
            stop = asyncio.Event()
            runner = asyncio.create_task(gateway.run(stop))
            try:
                async with asyncio.timeout(30):
                    await gateway.started.wait()
                    assert gateway.supervisor is not None
                    status = gateway.supervisor.status["barrier"]
                    await eventually(lambda: status.online, what="barrier online")
                    server.barrier(1).busy = 2
                    await gateway.command("barrier", OpenGate())
                    assert (status.online, status.fault) == (True, "")
                    assert server.barrier(1).busy == 0, "both busy replies were given"
                    await eventually(lambda: server.barrier(1).position == "open", what="barrier open")
                    assert status.online
                    alerts = gateway.store.read().execute("SELECT kind FROM alerts").fetchall()
                    assert alerts == []
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

    asyncio.run(main())
