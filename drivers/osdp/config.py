"""An OSDP reader: its RS-485 line, its address on it, and its secure-channel key."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import DeviceConfig, GateSlot
from drivers.serial.config import SerialSettings
from edge.config_base import SECRET, StrictModel

Colour = Literal["red", "green", "amber", "blue", "magenta", "cyan", "white"]


class FeedbackConfig(StrictModel):
    granted_colour: Colour = Field(default="green", description="LED colour on access granted")
    denied_colour: Colour = Field(default="red", description="LED colour on access denied")
    led_ms: int = Field(default=2000, ge=100, le=25_000, description="how long the LED shows the answer")
    granted_beeps: int = Field(default=1, ge=0, le=10, description="beeps on access granted")
    denied_beeps: int = Field(default=3, ge=0, le=10, description="beeps on access denied")


class OsdpReaderConfig(DeviceConfig):
    kind: Literal["osdp"] = Field(description="OSDP card/PIN reader on an RS-485 line")
    gate_slot: ClassVar[GateSlot] = "readers"
    shares_line: ClassVar[bool] = True
    serial: SerialSettings = Field(
        description=(
            "the RS-485 line; readers with the same port share it by address (line settings must match)"
        )
    )
    address: int = Field(
        ge=0, le=126, description="the reader's OSDP address on the line (0-126; often 0 or 1)"
    )
    scbk: str | None = Field(
        default=None,
        description=(
            "secure channel base key, 32 hex digits; write ${NAME}. Absent: no secure channel "
            "(card numbers travel in clear text on the line)"
        ),
        json_schema_extra=SECRET,
    )
    install_mode: bool = Field(
        default=False,
        description=(
            "the reader still has its factory key: connect with the default key and give it "
            "`scbk`; set back to false once the log says the key was accepted"
        ),
    )
    reader_number: int = Field(
        default=0, ge=0, le=7, description="reader head on the device (0 for single readers)"
    )
    pin_timeout_s: float = Field(
        default=5.0, gt=0, description="a PIN being typed is dropped after this pause"
    )
    offline_retry_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "an offline reader is retried this often (libosdp alone would wait 300 s after a reader drops)"
        ),
    )
    answer_timeout_s: float = Field(
        default=5.0, gt=0, description="a reader silent this long after start is reported offline"
    )
    feedback: FeedbackConfig = Field(
        default_factory=FeedbackConfig, description="LED and buzzer answers to card reads"
    )

    @field_validator("scbk")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        cleaned = value.replace(" ", "").replace(":", "")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", cleaned):
            raise ValueError("must be 32 hex digits (16 bytes), e.g. from `openssl rand -hex 16`")
        return cleaned.lower()

    @model_validator(mode="after")
    def _install_needs_key(self) -> OsdpReaderConfig:
        if self.install_mode and self.scbk is None:
            raise ValueError("install_mode sets a new key on the reader: give the key as scbk")
        return self

    @property
    def key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.scbk) if self.scbk else None
