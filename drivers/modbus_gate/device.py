"""The barrier driver: polls the board's inputs, runs the state machine, pulses relays."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Literal

from drivers.base import (
    CloseGate,
    Command,
    Driver,
    DriverContext,
    Emit,
    OpenGate,
    SetOutput,
)
from drivers.modbus_gate.bus import ModbusBus
from drivers.modbus_gate.config import ModbusGateConfig
from drivers.modbus_gate.state import GateStateMachine, Inputs
from drivers.serial.port import Backoff, LinkState
from edge.errors import DeviceMisconfigured, DeviceNotReady

log = logging.getLogger(__name__)


class ModbusGate(Driver):
    kind = "modbus_gate"
    config_model = ModbusGateConfig
    config: ModbusGateConfig

    def __init__(self, config: ModbusGateConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.machine = GateStateMachine(self.id, config.travel_timeout_s, config.held_open_s)
        self.coil_writes: deque[tuple[int, bool, float]] = deque(maxlen=1024)
        """(relay, on, time.monotonic() just before the write was issued): the last writes."""
        self._bus: ModbusBus | None = None
        self._emit: Emit | None = None
        self._pending_close = False
        self._release_due: dict[int, float] = {}
        """Relays that must be switched off, with the time.monotonic() their pulse ends: an entry
        stays until the board has confirmed the relay off."""
        self._releases: dict[int, asyncio.Task[None]] = {}
        """The task that switches each relay off (one per relay, kept until the next pulse)."""
        self._board_answered = asyncio.Event()

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        link = LinkState(self.id, emit)
        backoff = Backoff(self.config.serial.reconnect_min_s, self.config.serial.reconnect_max_s)
        delays = backoff.delays()
        self._bus = ModbusBus.acquire(self.config.serial, self.config.request_timeout_s)
        answered = False
        try:
            while True:
                try:
                    inputs = await self._read_inputs()
                except DeviceMisconfigured:
                    raise
                except DeviceNotReady as err:
                    if not answered:
                        raise
                    link.down(str(err))
                    emit.alive()
                    await asyncio.sleep(next(delays))
                    continue
                if not answered:
                    # A driver that stopped mid-pulse (a crash, a restart, the gateway's power)
                    # may have left a movement relay on: the board is told they are off first.
                    for coil in self._movement_coils():
                        self._release_after(coil, time.monotonic())
                answered = True
                self._board_answered.set()
                link.up()
                backoff.reset()
                now = time.monotonic()
                for observation in self.machine.update(inputs, now):
                    emit(observation)
                try:
                    await self._after_poll(now)
                except DeviceNotReady as err:
                    link.down(str(err))
                emit.alive()
                await asyncio.sleep(self.config.poll_interval_s)
        finally:
            await self._finish_releases()
            self._bus.release()
            self._bus = None

    def accepts(self, command: Command) -> bool:
        if isinstance(command, OpenGate | CloseGate):
            return True
        return isinstance(command, SetOutput) and command.output in self.config.profile.outputs

    async def execute(self, command: Command) -> None:
        if isinstance(command, OpenGate):
            self._pending_close = False
            await self._pulse("open")
        elif isinstance(command, CloseGate):
            if self.machine.loop_occupied:
                log.info("%s: vehicle on the loop; closing when it has passed", self.id)
                self._pending_close = True
                return
            await self._pulse("close")
        elif isinstance(command, SetOutput) and command.output in self.config.profile.outputs:
            await self._write(self.config.profile.outputs[command.output], command.on)

    async def _after_poll(self, now: float) -> None:
        if self.machine.loop_occupied:
            return
        if self._pending_close:
            await self._pulse("close")
            self._pending_close = False
            return
        close_after = self.config.close_after_s
        if (
            close_after is not None
            and self.machine.state == "open"
            and self.machine.expect is None
            and self.machine.open_since is not None
            and now - self.machine.open_since >= close_after
        ):
            await self._pulse("close")

    async def _pulse(self, direction: Literal["open", "close"]) -> None:
        """Switch a relay on for `pulse_ms`. Any other movement relay still on is switched off
        first, so the barrier controller never sees open and close together; if that fails the
        pulse is not sent (DeviceNotReady)."""
        profile = self.config.profile
        coil = profile.open_coil if direction == "open" else profile.close_coil
        for other in self._release_due.keys() & self._movement_coils() - {coil}:
            await self._write(other, False)
            self._release_due.pop(other, None)
        try:
            await self._write(coil, True)
        finally:
            # also when the write failed: the request may have reached the board
            self._release_after(coil, time.monotonic() + profile.pulse_ms / 1000)
        if self._emit is not None:
            for observation in self.machine.command(direction, time.monotonic()):
                self._emit(observation)

    def _movement_coils(self) -> set[int]:
        profile = self.config.profile
        return {c for c in (profile.open_coil, profile.close_coil, profile.stop_coil) if c is not None}

    def _release_after(self, coil: int, due: float) -> None:
        """Have `coil` switched off at `due` (time.monotonic()), and confirmed off."""
        self._release_due[coil] = due
        running = self._releases.get(coil)
        if running is None or running.done():
            self._releases[coil] = asyncio.create_task(self._release(coil), name=f"{self.id}-release-{coil}")

    async def _release(self, coil: int) -> None:
        """Switch `coil` off when its pulse ends (a new pulse moves the end), and keep trying,
        with backoff and again as soon as the board answers a poll, until the board confirms."""
        backoff = Backoff(self.config.serial.reconnect_min_s, self.config.serial.reconnect_max_s)
        delays = backoff.delays()
        failures = 0
        while (due := self._release_due.get(coil)) is not None:
            wait_s = due - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue
            try:
                await self._write(coil, False)
            except (DeviceNotReady, DeviceMisconfigured) as err:
                failures += 1
                if failures == 1:
                    log.warning(
                        "%s: relay %d may still be on; switching it off again until the board confirms (%s)",
                        self.id,
                        coil,
                        err,
                    )
                self._board_answered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._board_answered.wait(), next(delays))
                continue
            if self._release_due.get(coil) == due:
                del self._release_due[coil]
            if failures:
                log.info("%s: relay %d switched off after %d failed tries", self.id, coil, failures)
                failures = 0

    async def _finish_releases(self) -> None:
        for task in list(self._releases.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, self.config.profile.pulse_ms / 1000 + 2)

    async def _write(self, coil: int, on: bool) -> None:
        bus = self._bus
        if bus is None:
            raise DeviceNotReady(f"{self.id} is not running")
        self.coil_writes.append((coil, on, time.monotonic()))
        await bus.write_coil(self.config.unit_id, coil, on)

    async def _read_inputs(self) -> Inputs:
        assert self._bus is not None
        profile = self.config.profile
        first, count = profile.input_span
        bits = await self._bus.read_inputs(self.config.unit_id, first, count)

        def bit(address: int | None) -> bool:
            if address is None:
                return False
            return bits[address - first] != profile.inputs_active_low

        return Inputs(
            open_limit=bit(profile.open_limit_input),
            closed_limit=bit(profile.closed_limit_input),
            loop=bit(profile.loop_input),
            fault=bit(profile.fault_input),
        )

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        """Pulse open and wait for the open limit."""
        self._bus = ModbusBus.acquire(self.config.serial, self.config.request_timeout_s)
        try:
            before = await self._read_inputs()
            self.machine.update(before, time.monotonic())
            lines = [
                f"unit {self.config.unit_id} on {self.config.serial.port} answered; "
                f"arm {self.machine.state}, loop {'occupied' if before.loop else 'free'}"
            ]
            started = time.monotonic()
            await self._pulse("open")
            while time.monotonic() - started < timeout_s:
                inputs = await self._read_inputs()
                if inputs.open_limit:
                    lines.append(
                        f"open pulse sent; open limit reached after {time.monotonic() - started:.1f} s"
                    )
                    return "\n".join(lines)
                await asyncio.sleep(self.config.poll_interval_s)
            raise DeviceNotReady(
                "\n".join(
                    [
                        *lines,
                        f"open pulse sent, but no open limit within {timeout_s:g} s: "
                        "check the relay wiring to the barrier controller and the open-limit "
                        "input address",
                    ]
                )
            )
        finally:
            await self._finish_releases()
            self._bus.release()
            self._bus = None
