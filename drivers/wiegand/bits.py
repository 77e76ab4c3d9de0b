"""Wiegand bit formats: 26-bit (H10301), 34-bit (H10306) and 37-bit (H10304), with parity.

A frame is `length` bits, first bit first, held as an int (the first bit is the most
significant). Each format has a leading even parity bit over the first half and a trailing odd
parity bit over the second half; in the 37-bit format the halves share the middle bit (HID
H10304: even over bits 2-19, odd over bits 19-36, counting from 1). Bad parity is a bad read
(a card swiped too fast, a noisy cable), never a credential.
"""

from __future__ import annotations

from dataclasses import dataclass


class WiegandError(ValueError):
    """A frame that is not a valid card read."""


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    length: int
    facility_bits: int
    number_bits: int
    even_last: int
    """The leading (even) parity covers the bits after it up to this index (0-based)."""
    odd_first: int
    """The trailing (odd) parity covers the bits from this index up to it."""


LAYOUTS: dict[int, Layout] = {
    26: Layout("wiegand26", 26, 8, 16, 12, 13),
    34: Layout("wiegand34", 34, 16, 16, 16, 17),
    37: Layout("wiegand37", 37, 16, 19, 18, 18),
}


@dataclass(frozen=True, slots=True)
class WiegandCard:
    format: str
    facility: int
    number: int

    @property
    def credential(self) -> str:
        """The text the rules hash and allow-lists hold: facility code, colon, card number."""
        return f"{self.facility}:{self.number}"


def _bit(value: int, length: int, index: int) -> int:
    return (value >> (length - 1 - index)) & 1


def _ones(value: int, length: int, first: int, last: int) -> int:
    return sum(_bit(value, length, i) for i in range(first, last + 1))


def decode_bits(value: int, length: int) -> WiegandCard:
    """Check parity and split a frame into facility code and card number."""
    layout = LAYOUTS.get(length)
    if layout is None:
        raise WiegandError(f"{length}-bit frames are not a known format (26, 34 or 37)")
    if value < 0 or value >> length:
        raise WiegandError(f"value does not fit in {length} bits")
    if _ones(value, length, 0, layout.even_last) % 2 != 0:
        raise WiegandError(f"{layout.name}: leading (even) parity is wrong")
    if _ones(value, length, layout.odd_first, length - 1) % 2 != 1:
        raise WiegandError(f"{layout.name}: trailing (odd) parity is wrong")
    payload = (value >> 1) & ((1 << (length - 2)) - 1)
    number = payload & ((1 << layout.number_bits) - 1)
    facility = payload >> layout.number_bits
    return WiegandCard(layout.name, facility, number)


def encode_bits(facility: int, number: int, length: int = 26) -> int:
    """The frame a reader sends for this card, parity included."""
    layout = LAYOUTS[length]
    if not 0 <= facility < 1 << layout.facility_bits:
        raise WiegandError(f"facility {facility} does not fit in {layout.name}")
    if not 0 <= number < 1 << layout.number_bits:
        raise WiegandError(f"card number {number} does not fit in {layout.name}")
    payload = (facility << layout.number_bits) | number
    value = payload << 1
    even_ones = _ones(value, length, 1, layout.even_last)
    odd_ones = _ones(value, length, layout.odd_first, length - 2)
    if even_ones % 2:
        value |= 1 << (length - 1)
    if odd_ones % 2 == 0:
        value |= 1
    return value


def bits_from_bytes(data: bytes, length: int) -> int:
    """Frame bits from bytes packed first-bit-first (as OSDP raw card data arrives)."""
    if length <= 0 or len(data) * 8 < length:
        raise WiegandError(f"{len(data)} bytes cannot hold {length} bits")
    whole = int.from_bytes(data[: (length + 7) // 8], "big")
    return whole >> (((length + 7) // 8) * 8 - length)


def bits_to_bytes(value: int, length: int) -> bytes:
    size = (length + 7) // 8
    return (value << (size * 8 - length)).to_bytes(size, "big")
