"""Frames of Wiegand-to-serial converters, one profile per converter family.

Contract (as pymodbus' framers): `profile.decode(buffer)` returns `(consumed, result)`.
`consumed == 0` means "need more bytes". Otherwise the caller drops `consumed` bytes and
`result` is a `Frame`, a `Rejected` (garbage or a frame failing its check: counted), or None
(line-end padding, silently skipped). Serial reads split and merge frames; `Deframer` keeps
the leftovers between reads, but drops (and counts) a partial frame once the line has been
quiet for `INTER_BYTE_GAP_S`: converters send a frame's bytes back to back, so that is noise
or a cut frame, and kept it would spoil the next read. No input makes decode raise.

Profiles:
- `ascii_hex`: the raw Wiegand bits in hex, one line each (7, 9 or 10 digits: 26, 34, 37 bits)
- `ascii_decimal`: the card number in decimal, one line each (the converter checked parity)
- `stx_etx`: STX, bit count (2 hex), bits (hex), XOR of those characters (2 hex), ETX (many
  converters add a line end, skipped as padding)
- `maxiprox`: one line of bit count (2 hex), bits (hex) and the byte sum of those characters
  (2 hex), as HID MaxiProx-style serial outputs send
"""

from __future__ import annotations

import string
import time
from dataclasses import dataclass
from typing import Literal, Protocol

ProfileName = Literal["ascii_hex", "ascii_decimal", "stx_etx", "maxiprox"]

MAX_FRAME = 64
INTER_BYTE_GAP_S = 0.25
"""Silence after which a partial frame is given up: a whole frame takes about 15 ms at 9600
baud, and USB adapters hold bytes back for at most 16 ms."""
STX, ETX = 0x02, 0x03
LINE_ENDS = b"\r\n"
HEX_LENGTHS = {7: 26, 9: 34, 10: 37}
_HEX = set(string.hexdigits.encode())


@dataclass(frozen=True, slots=True)
class Frame:
    """A read: raw bits (`bits`, `length`) or an already-decoded decimal `number`."""

    bits: int | None = None
    length: int | None = None
    number: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


Decoded = tuple[int, Frame | Rejected | None]


class Profile(Protocol):
    name: ProfileName

    def decode(self, data: bytes) -> Decoded: ...

    def encode(self, frame: Frame) -> bytes: ...


def _is_hex(chunk: bytes) -> bool:
    return bool(chunk) and all(c in _HEX for c in chunk)


def _hex_digits(length: int) -> int:
    return (length + 3) // 4


def _padding(data: bytes) -> int:
    """How many line ends `data` starts with: padding between frames, skipped silently."""
    skip = 0
    while skip < len(data) and data[skip] in LINE_ENDS:
        skip += 1
    return skip


def _line(data: bytes) -> tuple[int, bytes | None, Rejected | None]:
    """Split off one line: (consumed, line, rejection); consumed 0 = no full line yet."""
    skip = _padding(data)
    if skip:
        return skip, None, None
    ends = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    if not ends:
        if len(data) > MAX_FRAME:
            return len(data), None, Rejected("line too long with no end")
        return 0, None, None
    end = min(ends)
    return end + 1, data[:end].strip(b" \t"), None


def _bits_frame(length_hex: bytes, bits_hex: bytes) -> Frame | Rejected:
    length = int(length_hex, 16)
    if not 1 <= length <= 128 or len(bits_hex) != _hex_digits(length):
        return Rejected(f"bit count {length} does not match {len(bits_hex)} hex digits")
    value = int(bits_hex, 16)
    if value >> length:
        return Rejected(f"value does not fit in {length} bits")
    return Frame(bits=value, length=length)


class AsciiHex:
    name: ProfileName = "ascii_hex"

    def decode(self, data: bytes) -> Decoded:
        consumed, line, rejected = _line(data)
        if line is None:
            return consumed, rejected
        length = HEX_LENGTHS.get(len(line))
        if length is None or not _is_hex(line):
            return consumed, Rejected(f"not a 7, 9 or 10 digit hex line: {line[:16]!r}")
        value = int(line, 16)
        if value >> length:
            return consumed, Rejected(f"value does not fit in {length} bits")
        return consumed, Frame(bits=value, length=length)

    def encode(self, frame: Frame) -> bytes:
        assert frame.bits is not None and frame.length in HEX_LENGTHS.values()
        digits = next(d for d, n in HEX_LENGTHS.items() if n == frame.length)
        return f"{frame.bits:0{digits}X}\r\n".encode()


class AsciiDecimal:
    name: ProfileName = "ascii_decimal"

    def decode(self, data: bytes) -> Decoded:
        consumed, line, rejected = _line(data)
        if line is None:
            return consumed, rejected
        if not line.isdigit() or len(line) > 20:
            return consumed, Rejected(f"not a decimal card number: {line[:16]!r}")
        return consumed, Frame(number=str(int(line)))

    def encode(self, frame: Frame) -> bytes:
        assert frame.number is not None
        return f"{int(frame.number):010d}\r\n".encode()


class StxEtx:
    name: ProfileName = "stx_etx"

    def decode(self, data: bytes) -> Decoded:
        padding = _padding(data)
        if padding:
            return padding, None
        start = data.find(bytes([STX]))
        if start < 0:
            return len(data), (Rejected("garbage between frames") if data else None)
        if start > 0:
            return start, Rejected("garbage between frames")
        end = data.find(bytes([ETX]), 1)
        restart = data.find(bytes([STX]), 1)
        if restart >= 0 and (end < 0 or restart < end):
            return restart, Rejected("frame cut short by a new STX")
        if end < 0:
            if len(data) > MAX_FRAME:
                return 1, Rejected("STX with no ETX")
            return 0, None
        body = data[1:end]
        if len(body) < 6 or not _is_hex(body):
            return end + 1, Rejected("frame body is not hex")
        payload, check = body[:-2], int(body[-2:], 16)
        xor = 0
        for char in payload:
            xor ^= char
        if xor != check:
            return end + 1, Rejected("XOR check failed")
        return end + 1, _bits_frame(payload[:2], payload[2:])

    def encode(self, frame: Frame) -> bytes:
        assert frame.bits is not None and frame.length is not None
        payload = f"{frame.length:02X}{frame.bits:0{_hex_digits(frame.length)}X}".encode()
        xor = 0
        for char in payload:
            xor ^= char
        return bytes([STX]) + payload + f"{xor:02X}".encode() + bytes([ETX])


class MaxiProx:
    name: ProfileName = "maxiprox"

    def decode(self, data: bytes) -> Decoded:
        consumed, line, rejected = _line(data)
        if line is None:
            return consumed, rejected
        if len(line) < 5 or not _is_hex(line):
            return consumed, Rejected(f"not a hex frame: {line[:16]!r}")
        payload, check = line[:-2], int(line[-2:], 16)
        if sum(payload) & 0xFF != check:
            return consumed, Rejected("sum check failed")
        return consumed, _bits_frame(payload[:2], payload[2:])

    def encode(self, frame: Frame) -> bytes:
        assert frame.bits is not None and frame.length is not None
        payload = f"{frame.length:02X}{frame.bits:0{_hex_digits(frame.length)}X}".encode()
        return payload + f"{sum(payload) & 0xFF:02X}\r\n".encode()


PROFILES: dict[ProfileName, type[AsciiHex | AsciiDecimal | StxEtx | MaxiProx]] = {
    "ascii_hex": AsciiHex,
    "ascii_decimal": AsciiDecimal,
    "stx_etx": StxEtx,
    "maxiprox": MaxiProx,
}


def profile(name: ProfileName) -> AsciiHex | AsciiDecimal | StxEtx | MaxiProx:
    return PROFILES[name]()


class Deframer:
    """Feeds serial reads through a profile; keeps partial frames and counts rejections."""

    def __init__(
        self, name: ProfileName, max_buffer: int = 4 * MAX_FRAME, gap_s: float = INTER_BYTE_GAP_S
    ) -> None:
        self.profile = profile(name)
        self.max_buffer = max_buffer
        self.gap_s = gap_s
        self.buffer = bytearray()
        self._last_byte_at = 0.0
        self.frames = 0
        self.rejected = 0
        self.last_rejection = ""

    def feed(self, data: bytes, now: float | None = None) -> list[Frame]:
        """The frames completed by `data`, which arrived at `now` (time.monotonic())."""
        now = time.monotonic() if now is None else now
        if self.buffer and now - self._last_byte_at > self.gap_s:
            self._reject(Rejected(f"partial frame dropped after {now - self._last_byte_at:.2f} s of silence"))
            self.buffer.clear()
        if data:
            self._last_byte_at = now
        self.buffer.extend(data)
        found: list[Frame] = []
        while self.buffer:
            consumed, result = self.profile.decode(bytes(self.buffer))
            if consumed == 0:
                if len(self.buffer) > self.max_buffer:
                    self._reject(Rejected("buffer overflow"))
                    self.buffer.clear()
                break
            del self.buffer[:consumed]
            if isinstance(result, Frame):
                self.frames += 1
                found.append(result)
            elif isinstance(result, Rejected):
                self._reject(result)
        return found

    def _reject(self, rejected: Rejected) -> None:
        self.rejected += 1
        self.last_rejection = rejected.reason
