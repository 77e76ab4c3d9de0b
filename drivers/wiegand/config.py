"""A Wiegand reader behind a Wiegand-to-serial converter."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import DeviceConfig, GateSlot
from drivers.serial.config import SerialSettings
from drivers.wiegand.framing import ProfileName


class WiegandReaderConfig(DeviceConfig):
    kind: Literal["wiegand"] = Field(description="Wiegand reader behind a serial converter")
    gate_slot: ClassVar[GateSlot] = "readers"
    serial: SerialSettings = Field(description="the converter's serial port")
    profile: ProfileName = Field(
        description=(
            "the converter's frame format: ascii_hex, ascii_decimal, stx_etx or maxiprox "
            "(`gatehouse probe PORT` tries them all while you swipe a card)"
        )
    )
    read_timeout_s: float = Field(
        default=1.0, gt=0, le=10, description="longest single wait for bytes from the port"
    )
    repeat_window_s: float = Field(
        default=1.0,
        ge=0,
        description="the same card again within this time is one presentation (converters repeat)",
    )
    kind_of_credential: Literal["card", "qr"] = Field(
        default="card", description="what the reader reads: cards or QR codes"
    )
