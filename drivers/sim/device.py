"""Event-level simulated devices. They exercise the supervisor, rules and store exactly as real
drivers do; protocol-level simulators (OSDP, Modbus, RTSP) live with their drivers."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, ClassVar

from drivers.base import (
    Availability,
    CardPresented,
    CloseGate,
    Command,
    Driver,
    DriverContext,
    Emit,
    GateCondition,
    GateStateChanged,
    OpenGate,
    PlateRead,
    ReaderFeedback,
    VehiclePassage,
)
from drivers.sim.config import SimCameraConfig, SimLaneConfig, SimReaderConfig
from drivers.sim.population import Population


async def _idle(emit: Emit, seconds: float) -> None:
    """Wait, showing signs of life every second like a real device's poll loop."""
    emit.alive()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        emit.alive()


class _FromPopulation(Driver):
    """A simulator whose people, cards and plates come from the shared deterministic population."""

    def __init__(self, config: Any, context: DriverContext) -> None:
        super().__init__(config, context)
        self.population = Population(
            config.population.seed, config.population.residents, context.home_province or "津"
        )
        self.rng = random.Random(f"{config.population.seed}:{config.id}")


class SimReader(_FromPopulation):
    """A card/QR reader at which residents, visitors and strangers present themselves."""

    kind: ClassVar[str] = "sim_reader"
    config_model = SimReaderConfig

    def __init__(self, config: SimReaderConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.feedback: list[bool] = []

    def pick(self) -> CardPresented:
        mix = self.config.population
        roll = self.rng.random()
        if roll < mix.resident_share:
            card = self.rng.choice(self.population.residents).card
            return CardPresented(self.id, card, "card", "wiegand26", time.monotonic())
        if roll < mix.resident_share + mix.visitor_share:
            token = self.rng.choice(self.population.visitors).token
            return CardPresented(self.id, token, "qr", None, time.monotonic())
        card = self.rng.choice(self.population.strangers_cards)
        return CardPresented(self.id, card, "card", "wiegand26", time.monotonic())

    async def run(self, emit: Emit) -> None:
        emit(Availability(self.id, True))
        while True:
            await _idle(emit, self.rng.expovariate(1 / self.config.interval_s))
            emit(self.pick())

    def accepts(self, command: Command) -> bool:
        return isinstance(command, ReaderFeedback)

    async def execute(self, command: Command) -> None:
        if isinstance(command, ReaderFeedback):
            self.feedback.append(command.granted)

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        seen = self.pick()
        return f"simulated {seen.kind} presented: …{seen.credential[-4:]}"


class SimLane(Driver):
    """A barrier arm with limit switches and a vehicle loop. Opens on command, lets one vehicle
    through, closes after a hold time; now and then the arm sticks."""

    kind: ClassVar[str] = "sim_lane"
    config_model = SimLaneConfig

    def __init__(self, config: SimLaneConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.rng = random.Random(f"lane:{config.id}")
        self.state = "closed"
        self._emit: Emit | None = None
        self._cycle: asyncio.Task[None] | None = None
        self.opens = 0

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        emit(Availability(self.id, True))
        emit(GateStateChanged(self.id, "closed", None, False, "simulated lane ready"))
        try:
            while True:
                await asyncio.sleep(1.0)
                emit.alive()
        finally:
            self._emit = None
            if self._cycle:
                self._cycle.cancel()

    def accepts(self, command: Command) -> bool:
        return isinstance(command, OpenGate | CloseGate)

    async def execute(self, command: Command) -> None:
        if isinstance(command, OpenGate) and self.state in ("closed", "closing"):
            self.opens += 1
            if self._cycle:
                self._cycle.cancel()
            self._cycle = asyncio.create_task(self._open_cycle())

    def _set(self, state: str, commanded: bool = True, detail: str | None = None) -> None:
        previous, self.state = self.state, state
        if self._emit:
            self._emit(GateStateChanged(self.id, state, previous, commanded, detail))  # type: ignore[arg-type]

    async def _open_cycle(self) -> None:
        cfg = self.config
        self._set("opening")
        if self.rng.random() < cfg.stuck_probability:
            await asyncio.sleep(cfg.travel_s * 3)
            self._set("fault", detail="open limit not reached")
            if self._emit:
                self._emit(GateCondition(self.id, "stuck", True, "open limit not reached"))
            await asyncio.sleep(cfg.open_hold_s * 2)
            self._set("closed", detail="arm freed")
            if self._emit:
                self._emit(GateCondition(self.id, "stuck", False, "arm moved again"))
            return
        await asyncio.sleep(cfg.travel_s)
        self._set("open")
        await asyncio.sleep(cfg.open_hold_s / 2)
        if self._emit:
            self._emit(VehiclePassage(self.id))
        await asyncio.sleep(cfg.open_hold_s / 2)
        self._set("closing")
        await asyncio.sleep(cfg.travel_s)
        self._set("closed")

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        return f"simulated barrier is {self.state}"


class SimCamera(_FromPopulation):
    """A lane camera that reports one plate read per passing vehicle."""

    kind: ClassVar[str] = "sim_camera"
    config_model = SimCameraConfig

    def pick(self) -> PlateRead:
        roll = self.rng.random()
        cars = [r.plate for r in self.population.residents if r.plate]
        if roll < 0.6 and cars:
            plate = self.rng.choice(cars)
        elif roll < 0.75:
            plate = self.rng.choice(self.population.visitors).plate
        elif roll < 0.97:
            plate = self.rng.choice(self.population.strangers_plates)
        else:
            plate = self.population.blocklisted_plate
        colour = "green" if len(plate) == 8 else "blue"
        confidence = round(self.rng.uniform(0.86, 0.995), 3)
        return PlateRead(self.id, plate, confidence, colour, None, self.rng.randint(3, 9))

    async def run(self, emit: Emit) -> None:
        emit(Availability(self.id, True))
        while True:
            await _idle(emit, self.rng.expovariate(1 / self.config.interval_s))
            emit(self.pick())

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        return f"simulated plate read: {self.pick().plate}"
