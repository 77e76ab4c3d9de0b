"""A Wiegand-to-serial converter for the demo and the tests: writes frames of one profile to a
serial port, and on request garbage, split frames or frames with bad checks."""

from __future__ import annotations

import serial

from drivers.wiegand.bits import encode_bits
from drivers.wiegand.framing import Frame, ProfileName, profile


class ConverterSim:
    def __init__(self, port: str, profile_name: ProfileName, baudrate: int = 9600) -> None:
        self.port = port
        self.profile = profile(profile_name)
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    def start(self) -> ConverterSim:
        self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=2)
        return self

    def stop(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self) -> ConverterSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def frame_for(self, facility: int, number: int, length: int = 26) -> bytes:
        if self.profile.name == "ascii_decimal":
            return self.profile.encode(Frame(number=str(facility * 65536 + number)))
        return self.profile.encode(Frame(bits=encode_bits(facility, number, length), length=length))

    def send_raw(self, data: bytes) -> None:
        if self._serial is None:
            raise RuntimeError("the simulated converter is not running")
        self._serial.write(data)
        self._serial.flush()

    def present_card(self, facility: int, number: int, length: int = 26) -> None:
        self.send_raw(self.frame_for(facility, number, length))
