"""A barrier board that speaks Modbus RTU: a pymodbus server on a serial port (a pty in the demo
and the tests), with one barrier per unit id whose limit inputs follow the relays.

Knobs: `stuck` (the arm never reaches a limit), `vehicle` (a car stands on the loop),
`fault`, `busy` (the next N requests get Modbus exception 6, device busy, and are not carried
out) and `force_open()` (someone lifts the arm by hand). Every relay write is recorded with its
time, so tests and benchmarks see exactly what the driver did on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_gate.config import BoardProfile

_INPUT_SPAN = 32
_COIL_SPAN = 32


@dataclass(frozen=True, slots=True)
class CoilWrite:
    unit: int
    coil: int
    on: bool
    at: float


@dataclass
class Barrier:
    """One simulated arm: closed at start, moves `travel_s` after a relay turns on."""

    profile: BoardProfile = field(default_factory=BoardProfile)
    travel_s: float = 0.6
    stuck: bool = False
    vehicle: bool = False
    fault: bool = False
    busy: int = 0
    """Answer this many more requests (reads and writes alike) with exception 6, device busy,
    without carrying them out."""
    position: str = "closed"
    target: str | None = None
    moving_since: float = 0.0
    coils: dict[int, bool] = field(default_factory=dict)

    def on_coil(self, coil: int, on: bool, now: float) -> None:
        was = self.coils.get(coil, False)
        self.coils[coil] = on
        if not on or was:
            return
        self._settle(now)
        if coil == self.profile.open_coil and self.position != "open":
            self._move("open", now)
        elif coil == self.profile.close_coil and self.position != "closed":
            self._move("closed", now)
        elif coil == self.profile.stop_coil and self.target is not None:
            self.target = None
            self.position = "between"

    def force_open(self) -> None:
        self.target = None
        self.position = "open"

    def _move(self, target: str, now: float) -> None:
        self.target = target
        self.moving_since = now
        self.position = "between"

    def _settle(self, now: float) -> None:
        if self.target is None or self.stuck:
            return
        if now - self.moving_since >= self.travel_s:
            self.position = self.target
            self.target = None

    def inputs(self, now: float) -> dict[int, bool]:
        self._settle(now)
        profile = self.profile
        values = {
            profile.open_limit_input: self.position == "open",
            profile.closed_limit_input: self.position == "closed",
        }
        if profile.loop_input is not None:
            values[profile.loop_input] = self.vehicle
        if profile.fault_input is not None:
            values[profile.fault_input] = self.fault
        if profile.inputs_active_low:
            values = {address: not value for address, value in values.items()}
        return values


class BarrierBoardServer:
    """A pymodbus RTU server with one `Barrier` per unit id, serving on `port`."""

    def __init__(
        self,
        port: str,
        barriers: dict[int, Barrier],
        baudrate: int = 9600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.barriers = barriers
        self.writes: list[CoilWrite] = []
        self.listeners: list[Callable[[CoilWrite], None]] = []
        self._clock = clock
        devices = [self._device(unit, partial(self._action, unit)) for unit in barriers]
        devices.append(self._device(0, None))
        self._server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=port,
            baudrate=baudrate,
            reconnect_delay=0.2,
            trace_packet=self._only_present_units,
        )

    @staticmethod
    def _device(unit: int, action: Any) -> SimDevice:
        return SimDevice(
            unit,
            simdata=(
                [SimData(0, count=_COIL_SPAN, values=False, datatype=DataType.BITS)],
                [SimData(0, count=_INPUT_SPAN, values=False, datatype=DataType.BITS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
            ),
            action=action,
        )

    def _only_present_units(self, sending: bool, packet: bytes) -> bytes:
        """Units that are not on the line stay silent, as on a real RS-485 bus (pymodbus would
        answer for any unit id: id 0 catches those requests and this drops the replies)."""
        if sending and packet and packet[0] not in self.barriers:
            return b""
        return packet

    def barrier(self, unit: int) -> Barrier:
        return self.barriers[unit]

    def pulses(self, unit: int, coil: int) -> int:
        """How many times a relay was switched on."""
        return sum(1 for w in self.writes if w.unit == unit and w.coil == coil and w.on)

    async def start(self) -> None:
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.shutdown(), 5)

    async def __aenter__(self) -> BarrierBoardServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        barrier = self.barriers[unit]
        if barrier.busy > 0:
            barrier.busy -= 1
            return ExcCodes.DEVICE_BUSY
        now = self._clock()
        if function_code == 2:
            for bit, value in barrier.inputs(now).items():
                index, offset = divmod(bit, 16)
                index -= start_address
                if 0 <= index < len(registers):
                    if value:
                        registers[index] |= 1 << offset
                    else:
                        registers[index] &= ~(1 << offset)
        elif function_code in (5, 15) and values is not None:
            for i, value in enumerate(values):
                write = CoilWrite(unit, address + i, bool(value), now)
                self.writes.append(write)
                barrier.on_coil(write.coil, write.on, now)
                for listener in self.listeners:
                    listener(write)
        return None


@contextmanager
def board_in_thread(
    port: str, barriers: dict[int, Barrier], baudrate: int = 9600
) -> Iterator[BarrierBoardServer]:
    """The board simulator on a thread and event loop of its own, for callers that run their own
    loop (the CLI, the demo) or none."""
    loop = asyncio.new_event_loop()
    made: list[BarrierBoardServer] = []
    started = threading.Event()
    failed: list[BaseException] = []

    async def start() -> None:
        made.append(BarrierBoardServer(port, barriers, baudrate=baudrate))
        await made[0].start()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as err:
            failed.append(err)
            return
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name=f"board-{port}", daemon=True)
    thread.start()
    if not started.wait(10) or failed:
        raise RuntimeError(f"the barrier board simulator did not start on {port}: {failed}")
    try:
        yield made[0]
    finally:
        asyncio.run_coroutine_threadsafe(made[0].stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
