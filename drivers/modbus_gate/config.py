"""A barrier behind a Modbus RTU relay/IO board: the line, the unit id and the board's map."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from drivers.base import DeviceConfig, GateSlot
from drivers.serial.config import SerialSettings
from edge.config_base import StrictModel


class BoardProfile(StrictModel):
    """Where the board keeps its relays (coils) and inputs (discrete inputs), 0-based."""

    open_coil: int = Field(default=0, ge=0, le=65535, description="relay that opens the barrier")
    close_coil: int = Field(default=1, ge=0, le=65535, description="relay that closes it")
    stop_coil: int | None = Field(
        default=2, ge=0, le=65535, description="relay that stops the arm; null if none"
    )
    pulse_ms: int = Field(
        default=500, ge=20, le=10_000, description="how long a relay is held on for a command"
    )
    open_limit_input: int = Field(
        default=0, ge=0, le=65535, description="input that is on when the arm is fully open"
    )
    closed_limit_input: int = Field(
        default=1, ge=0, le=65535, description="input that is on when the arm is fully closed"
    )
    loop_input: int | None = Field(
        default=2, ge=0, le=65535, description="vehicle loop detector input; null if none"
    )
    fault_input: int | None = Field(
        default=3, ge=0, le=65535, description="barrier controller fault input; null if none"
    )
    inputs_active_low: bool = Field(
        default=False, description="inputs read 0 when active (normally-closed contacts)"
    )
    outputs: dict[str, int] = Field(
        default_factory=dict,
        description="extra relays by name for siren/strobe commands, e.g. {siren: 4}",
    )

    @model_validator(mode="after")
    def _distinct(self) -> BoardProfile:
        coils = [c for c in (self.open_coil, self.close_coil, self.stop_coil) if c is not None]
        coils += list(self.outputs.values())
        if len(set(coils)) != len(coils):
            raise ValueError("open_coil, close_coil, stop_coil and outputs must be different relays")
        inputs = [
            i
            for i in (
                self.open_limit_input,
                self.closed_limit_input,
                self.loop_input,
                self.fault_input,
            )
            if i is not None
        ]
        if len(set(inputs)) != len(inputs):
            raise ValueError("the limit, loop and fault inputs must be different inputs")
        return self

    @property
    def input_span(self) -> tuple[int, int]:
        """First input address and how many to read in one request."""
        used = [
            i
            for i in (
                self.open_limit_input,
                self.closed_limit_input,
                self.loop_input,
                self.fault_input,
            )
            if i is not None
        ]
        return min(used), max(used) - min(used) + 1


class ModbusGateConfig(DeviceConfig):
    kind: Literal["modbus_gate"] = Field(description="barrier on a Modbus RTU relay/IO board")
    gate_slot: ClassVar[GateSlot] = "barrier"
    shares_line: ClassVar[bool] = True
    serial: SerialSettings = Field(
        description="the RS-485 line; barriers with the same port share it (settings must match)"
    )
    unit_id: int = Field(
        ge=1, le=247, description="the board's Modbus unit id (DIP switches or its setup tool)"
    )
    profile: BoardProfile = Field(default_factory=BoardProfile, description="the board's coils and inputs")
    poll_interval_s: float = Field(default=0.1, gt=0, le=5, description="how often the inputs are read")
    request_timeout_s: float = Field(
        default=0.3,
        gt=0,
        le=5,
        description="how long to wait for the board's answer; also how long a board answering "
        "'busy' is asked again before the request fails",
    )
    travel_timeout_s: float = Field(
        default=8.0, gt=0, description="an arm that reaches no limit within this is stuck"
    )
    held_open_s: float = Field(
        default=60.0, gt=0, description="open this long with no vehicle on the loop: held open"
    )
    close_after_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "pulse close this long after the arm opened and the loop is free; null when the "
            "barrier controller closes by itself"
        ),
    )
    framer: Literal["rtu"] = Field(default="rtu", description="Modbus framing on the line")
