"""Converter framers: whole, split, byte-wise, merged, garbage and bad-check input (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.wiegand.bits import encode_bits
from drivers.wiegand.framing import INTER_BYTE_GAP_S, PROFILES, Deframer, Frame, Rejected, profile

BIT_PROFILES = ["ascii_hex", "stx_etx", "maxiprox"]
LINE_PROFILES = ["ascii_hex", "ascii_decimal", "maxiprox"]


@st.composite
def frames(draw: st.DrawFn, name: str) -> Frame:
    if name == "ascii_decimal":
        return Frame(number=str(draw(st.integers(0, 10**10 - 1))))
    length = draw(st.sampled_from([26, 34, 37]))
    return Frame(bits=draw(st.integers(0, (1 << length) - 1)), length=length)


def feed_in_pieces(deframer: Deframer, data: bytes, cuts: list[int]) -> list[Frame]:
    found: list[Frame] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        found += deframer.feed(data[start:cut], now=0.0)
        start = cut
    return found


@pytest.mark.parametrize("name", sorted(PROFILES))
@settings(deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise_and_respect_the_contract(name, data):
    framer = profile(name)
    consumed, result = framer.decode(data)
    assert 0 <= consumed <= len(data)
    if consumed == 0:
        assert result is None
    assert isinstance(result, Frame | Rejected | None)
    deframer = Deframer(name)
    deframer.feed(data)
    assert len(deframer.buffer) <= deframer.max_buffer


@pytest.mark.parametrize("name", sorted(PROFILES))
@given(st.data())
@settings(max_examples=60, deadline=None)
def test_merged_and_split_frames_come_out_whole(name, data):
    sent = data.draw(st.lists(frames(name), min_size=1, max_size=5))
    stream = b"".join(profile(name).encode(frame) for frame in sent)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=8))
    deframer = Deframer(name)
    assert feed_in_pieces(deframer, stream, cuts) == sent
    assert deframer.rejected == 0


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_whole_half_and_byte_at_a_time(name):
    frame = Frame(number="12345") if name == "ascii_decimal" else Frame(encode_bits(1, 1), 26)
    encoded = profile(name).encode(frame)
    whole, halves, bytewise = Deframer(name), Deframer(name), Deframer(name)
    assert whole.feed(encoded) == [frame]
    half = len(encoded) // 2
    assert halves.feed(encoded[:half]) == []
    assert halves.feed(encoded[half:]) == [frame]
    found = [f for i in range(len(encoded)) for f in bytewise.feed(encoded[i : i + 1])]
    assert found == [frame]


@pytest.mark.parametrize("name", sorted(PROFILES))
@given(st.data())
@settings(max_examples=60, deadline=None)
def test_garbage_between_frames_is_counted_and_skipped(name, data):
    frame = data.draw(frames(name))
    forbidden = {0x02, 0x03, 0x0D, 0x0A}
    octets = st.integers(0, 255).filter(lambda b: b not in forbidden)
    junk = bytes(data.draw(st.lists(octets, max_size=40))) + b"~"
    if name in LINE_PROFILES:
        junk += b"\r\n"
    encoded = profile(name).encode(frame)
    deframer = Deframer(name)
    found = deframer.feed(junk + encoded + junk + encoded)
    assert frame in found
    assert found.count(frame) == 2
    assert deframer.rejected >= 1


@pytest.mark.parametrize("name", ["stx_etx", "maxiprox"])
@given(st.data())
@settings(max_examples=60, deadline=None)
def test_a_bad_check_is_rejected(name, data):
    frame = data.draw(frames(name))
    encoded = bytearray(profile(name).encode(frame))
    end = len(encoded) - (1 if name == "stx_etx" else 2)
    position = end - data.draw(st.integers(1, 2))
    original = encoded[position]
    encoded[position] = data.draw(st.sampled_from([c for c in b"0123456789ABCDEF" if c != original]))
    deframer = Deframer(name)
    assert deframer.feed(bytes(encoded)) == []
    assert deframer.rejected == 1
    assert deframer.feed(profile(name).encode(frame)) == [frame]


def test_a_cut_stx_frame_is_dropped_at_the_next_stx():
    deframer = Deframer("stx_etx")
    good = profile("stx_etx").encode(Frame(encode_bits(3, 4), 26))
    assert deframer.feed(good[:5] + good) == [Frame(encode_bits(3, 4), 26)]
    assert deframer.rejected == 1
    assert deframer.last_rejection == "frame cut short by a new STX"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r", b"\n"])
def test_stx_etx_frames_ended_by_a_line_end_are_not_rejections(line_end):
    frame = Frame(encode_bits(3, 4), 26)
    encoded = profile("stx_etx").encode(frame) + line_end
    deframer = Deframer("stx_etx")
    assert deframer.feed(encoded + encoded[:3]) == [frame]
    assert deframer.feed(encoded[3:]) == [frame]
    assert deframer.rejected == 0


def test_an_endless_line_is_dropped_not_buffered_forever():
    deframer = Deframer("ascii_hex")
    deframer.feed(b"A" * 1000)
    assert deframer.rejected == 1
    assert deframer.buffer == bytearray()


@pytest.mark.parametrize("line", [b"12345678\r\n", b"1234567G\r\n", b"FFFFFFF\r\n"])
def test_ascii_hex_lines_that_are_not_frames(line):
    deframer = Deframer("ascii_hex")
    assert deframer.feed(line) == []
    assert deframer.rejected == 1


@pytest.mark.parametrize(
    ("name", "noise"),
    [("ascii_hex", b"\x00"), ("maxiprox", b"\xff"), ("ascii_decimal", b"0A1"), ("stx_etx", b"\x02")],
)
def test_a_partial_frame_followed_by_silence_is_dropped_not_glued_to_the_next(name, noise):
    frame = Frame(number="789888") if name == "ascii_decimal" else Frame(encode_bits(12, 3456), 26)
    encoded = profile(name).encode(frame)
    deframer = Deframer(name)
    assert deframer.feed(noise, now=10.0) == []
    assert deframer.feed(encoded[:4], now=10.0 + 2 * INTER_BYTE_GAP_S) == []
    assert deframer.feed(encoded[4:], now=10.0 + 2 * INTER_BYTE_GAP_S + 0.01) == [frame]
    assert deframer.rejected == 1
    assert "silence" in deframer.last_rejection
