"""What every driver is: one device, turned into typed observations, driven by typed commands.

A driver never talks to MQTT or the store. It runs as one asyncio task under the supervisor:
`run(emit)` connects, reads and calls `emit(observation)` for what it saw, and `emit.alive()`
when it is healthy but has nothing to say (that feeds the hang detector). It emits
`Availability` when it reaches its device and whenever that changes: the device counts as
online only from then, never from heartbeats. It raises
`DeviceNotReady` when the device went away (the supervisor restarts it with backoff) and
`DeviceMisconfigured` / `AuthFailed` when a person must act. `execute(command)` acts on the
device (open the barrier, light the reader's LED). Blocking calls go through
`asyncio.to_thread` or a thread of the driver's own; the event loop is never blocked.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from edge.config_base import Identifier, StrictModel
from edge.errors import DeviceMisconfigured

GateSlot = Literal["barrier", "readers", "cameras"]
"""The lists of a gate a device can be in."""


class DeviceConfig(StrictModel):
    """Fields every device has. Each driver subclasses this with `kind: Literal["<name>"]`."""

    id: Identifier = Field(description="unique device id")
    name: str | None = Field(default=None, description="what people call it")
    enabled: bool = Field(default=True, description="run this device")
    hang_timeout_s: float = Field(
        default=30.0, gt=0, description="no sign of life for this long counts as a hang"
    )
    shares_line: ClassVar[bool] = False
    """Whether devices of this kind may share one serial port (a multi-drop RS-485 bus)."""
    gate_slot: ClassVar[GateSlot]
    """Where a gate lists devices of this kind (`gatehouse devices add --gate`)."""


# Observations: what drivers report. Raw credentials live only here, in memory; the rules hash
# them before anything is stored.


@dataclass(frozen=True, slots=True)
class CardPresented:
    device: str
    credential: str
    kind: Literal["card", "qr", "pin"] = "card"
    card_format: str | None = None
    monotonic: float = 0.0


@dataclass(frozen=True, slots=True)
class GateStateChanged:
    device: str
    state: Literal["closed", "opening", "open", "closing", "fault", "unknown"]
    previous: str | None = None
    commanded: bool = False
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class GateCondition:
    """A barrier condition that becomes (or clears) an alert: stuck, held_open, forced_open."""

    device: str
    condition: Literal["stuck", "held_open", "forced_open"]
    active: bool = True
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VehiclePassage:
    """The vehicle loop went from occupied to free: one vehicle passed."""

    device: str


@dataclass(frozen=True, slots=True)
class PlateRead:
    device: str
    plate: str
    confidence: float
    colour: str | None = None
    box: tuple[int, int, int, int] | None = None
    frames: int = 1
    crop_jpeg: bytes | None = None
    direction: Literal["in", "out"] | None = None


@dataclass(frozen=True, slots=True)
class ZoneSample:
    device: str
    zone: str
    count: int
    occupied: int | None = None
    capacity: int | None = None
    vehicle_dwell_s: float | None = None
    plate: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneCondition:
    """A zone rule broken or restored: a vehicle kept too long in a keep-clear zone (fire lane),
    or too many people at a gate."""

    device: str
    zone: str
    condition: Literal["blocked", "crowded"]
    active: bool = True
    detail: str = ""
    plate: str | None = None
    crop_jpeg: bytes | None = None


@dataclass(frozen=True, slots=True)
class Availability:
    """The driver reached, lost or regained its device (it reconnects by itself while it keeps
    running). The supervisor takes it: it becomes device.online / device.offline."""

    device: str
    online: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tamper:
    device: str
    active: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """Numbers about a device (fps, frame age, link quality). Periodic ones are telemetry and may
    be thinned out; a `state_change` (power lost, power back) is reported once and always kept."""

    device: str
    metrics: dict[str, float | int | str | None] = field(default_factory=dict)
    state_change: bool = False


Observation = (
    CardPresented
    | GateStateChanged
    | GateCondition
    | VehiclePassage
    | PlateRead
    | ZoneSample
    | ZoneCondition
    | Availability
    | Tamper
    | Health
)


# Commands: what the rules ask of a device.


@dataclass(frozen=True, slots=True)
class OpenGate:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CloseGate:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReaderFeedback:
    granted: bool


@dataclass(frozen=True, slots=True)
class SetOutput:
    """Drive a relay output (siren, strobe)."""

    output: str
    on: bool


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    pass


Command = OpenGate | CloseGate | ReaderFeedback | SetOutput | TakeSnapshot


class Emit(Protocol):
    """How a driver hands over what it saw."""

    def __call__(self, observation: Observation) -> None: ...

    def alive(self) -> None: ...


class Driver(abc.ABC):
    """One device. Subclasses set `kind` and `config_model`, and register in the registry by
    living in `drivers/<kind>/device.py`."""

    kind: ClassVar[str]
    config_model: ClassVar[type[DeviceConfig]]

    def __init__(self, config: Any, context: DriverContext) -> None:
        self.config = config
        self.context = context

    @property
    def id(self) -> str:
        return str(self.config.id)

    @abc.abstractmethod
    async def run(self, emit: Emit) -> None:
        """Connect and report until cancelled."""

    async def execute(self, command: Command) -> None:  # noqa: B027 - optional for sensors
        """Act on the device. Devices without outputs ignore commands."""

    def accepts(self, command: Command) -> bool:
        """Whether this device can act on the command (a camera cannot open a gate)."""
        return False

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        """`gatehouse devices test ID`: exercise the device and say what happened (a reader
        waits for a card, a gate pulses open and waits for its limit, a camera saves a frame).
        Raises DeviceNotReady when the device does not answer."""
        raise DeviceMisconfigured(f"{self.kind} devices have no self-test")


@dataclass
class DriverContext:
    """What a driver may know of the gateway: its secrets resolver and its clock."""

    state_dir: str
    resolve_secret: Callable[[str], str] = field(default=lambda value: value)
    home_province: str | None = None
    inference: Any = None  # the gateway's `inference:` section (models.config.InferenceConfig)
