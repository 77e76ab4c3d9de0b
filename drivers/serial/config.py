"""How a serial line is opened: the settings every serial-line device shares."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.config_base import StrictModel


class Rs485Settings(StrictModel):
    rts_level_for_tx: bool = Field(default=True, description="RTS level while sending")
    rts_level_for_rx: bool = Field(default=False, description="RTS level while receiving")
    delay_before_tx_s: float | None = Field(
        default=None, ge=0, description="pause after raising RTS before the first byte"
    )
    delay_before_rx_s: float | None = Field(
        default=None, ge=0, description="pause after the last byte before dropping RTS"
    )


class SerialSettings(StrictModel):
    port: str = Field(
        description=(
            "serial device; prefer the stable /dev/serial/by-id/... path over /dev/ttyUSB0, "
            "which changes when adapters are plugged in another order"
        )
    )
    baudrate: int = Field(default=9600, gt=0, description="line speed in bit/s")
    bytesize: Literal[7, 8] = Field(default=8, description="data bits per character")
    parity: Literal["N", "E", "O"] = Field(default="N", description="parity: N, E or O")
    stopbits: Literal[1, 2] = Field(default=1, description="stop bits")
    rs485: Rs485Settings | None = Field(
        default=None,
        description=(
            "kernel RS-485 mode (direction by RTS) for adapters that need it; most USB RS-485 "
            "adapters switch direction by themselves and need nothing here"
        ),
    )
    exclusive: bool = Field(default=True, description="refuse to share the port with another program")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="first wait before reopening a lost port")
    reconnect_max_s: float = Field(
        default=10.0, gt=0, description="longest wait between attempts to reopen a lost port"
    )
