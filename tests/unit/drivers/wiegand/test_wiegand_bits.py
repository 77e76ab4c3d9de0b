"""Wiegand 26/34/37 bit formats: parity, round trips, and no exception but WiegandError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.wiegand.bits import (
    LAYOUTS,
    WiegandError,
    bits_from_bytes,
    bits_to_bytes,
    decode_bits,
    encode_bits,
)


@st.composite
def cards(draw: st.DrawFn) -> tuple[int, int, int]:
    layout = LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))]
    facility = draw(st.integers(0, (1 << layout.facility_bits) - 1))
    number = draw(st.integers(0, (1 << layout.number_bits) - 1))
    return layout.length, facility, number


def test_a_known_h10301_frame():
    assert encode_bits(1, 1, 26) == 0b1_00000001_0000000000000001_0
    card = decode_bits(0b1_00000001_0000000000000001_0, 26)
    assert (card.format, card.facility, card.number, card.credential) == ("wiegand26", 1, 1, "1:1")


def test_a_known_h10304_frame_whose_parities_share_bit_19():
    # H10304: even parity (bit 1) over bits 2-19, odd parity (bit 37) over bits 19-36. Card 131072
    # sets bit 19, which counts for both halves: with facility 1, both parity bits are 0.
    frame = 0b0_0000000000000001_0100000000000000000_0
    card = decode_bits(frame, 37)
    assert (card.format, card.facility, card.number) == ("wiegand37", 1, 131072)
    assert encode_bits(1, 131072, 37) == frame
    with pytest.raises(WiegandError, match="odd"):
        decode_bits(frame | 1, 37)


@settings(deadline=None)
@given(cards())
def test_round_trip(card):
    length, facility, number = card
    decoded = decode_bits(encode_bits(facility, number, length), length)
    assert (decoded.facility, decoded.number) == (facility, number)


@settings(deadline=None)
@given(cards(), st.data())
def test_any_single_bit_error_fails_parity(card, data):
    length, facility, number = card
    flip = data.draw(st.integers(0, length - 1))
    with pytest.raises(WiegandError):
        decode_bits(encode_bits(facility, number, length) ^ (1 << flip), length)


@settings(deadline=None)
@given(st.integers(-5, 1 << 80), st.integers(-3, 80))
def test_random_frames_raise_only_wiegand_errors(value, length):
    with contextlib.suppress(WiegandError):
        decode_bits(value, length)


@settings(deadline=None)
@given(st.binary(max_size=12), st.integers(-2, 100))
def test_bytes_to_bits_raise_only_wiegand_errors(data, length):
    try:
        value = bits_from_bytes(data, length)
    except WiegandError:
        return
    assert 0 <= value < 1 << length


@settings(deadline=None)
@given(cards())
def test_bytes_round_trip(card):
    length, facility, number = card
    value = encode_bits(facility, number, length)
    assert bits_from_bytes(bits_to_bytes(value, length), length) == value


def test_numbers_too_large_for_the_format():
    with pytest.raises(WiegandError):
        encode_bits(256, 1, 26)
    with pytest.raises(WiegandError):
        encode_bits(1, 1 << 16, 26)
