"""The converter driver's handling of decoded frames, without a port: repeats, parity, health."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from drivers.base import CardPresented, DriverContext, Health
from drivers.wiegand import device
from drivers.wiegand.bits import encode_bits
from drivers.wiegand.config import WiegandReaderConfig
from drivers.wiegand.device import WiegandReader
from drivers.wiegand.framing import Frame, profile


class Sink:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def __call__(self, observation) -> None:
        self.seen.append(observation)

    def alive(self) -> None:
        return None


def reader(**fields) -> WiegandReader:
    config = WiegandReaderConfig.model_validate(
        {"id": "w", "kind": "wiegand", "serial": {"port": "/dev/null"}, "profile": "maxiprox", **fields}
    )
    return WiegandReader(config, DriverContext(state_dir="."))


def frame(facility: int, number: int) -> bytes:
    return profile("maxiprox").encode(Frame(bits=encode_bits(facility, number), length=26))


def test_a_converter_repeating_a_read_is_one_presentation():
    driver, sink = reader(repeat_window_s=60), Sink()
    driver._frames(frame(1, 2) + frame(1, 2), sink)
    driver._frames(frame(1, 3), sink)
    cards = [o for o in sink.seen if isinstance(o, CardPresented)]
    assert [(c.credential, c.kind, c.card_format) for c in cards] == [
        ("1:2", "card", "wiegand26"),
        ("1:3", "card", "wiegand26"),
    ]


def test_bad_parity_and_bad_frames_are_counted_in_health_once_each():
    driver, sink = reader(), Sink()
    bad_parity = profile("maxiprox").encode(Frame(bits=encode_bits(1, 2) ^ 1, length=26))
    driver._frames(bad_parity, sink)
    driver._frames(b"nonsense\r\n", sink)
    driver._frames(frame(4, 5), sink)
    health = [o.metrics for o in sink.seen if isinstance(o, Health)]
    assert health == [{"rejected_frames": 0, "bad_reads": 1}, {"rejected_frames": 1, "bad_reads": 1}]
    assert driver.rejected == 2
    assert [o.credential for o in sink.seen if isinstance(o, CardPresented)] == ["4:5"]


def test_qr_readers_present_qr_credentials():
    driver, sink = reader(kind_of_credential="qr", profile="ascii_decimal"), Sink()
    driver._frames(b"0000012345\r\n", sink)
    assert [(o.credential, o.kind, o.card_format) for o in sink.seen] == [("12345", "qr", "decimal")]


def test_a_card_held_on_the_reader_is_one_presentation_while_the_converter_repeats_it(monkeypatch):
    driver, sink = reader(repeat_window_s=1.0), Sink()
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(device, "time", SimpleNamespace(monotonic=lambda: clock.now))
    for clock.now in (0.0, 0.6, 1.2, 1.8, 2.4):  # the converter repeats the held card
        driver._frames(frame(1, 2), sink)
    clock.now = 4.0  # taken away, presented again
    driver._frames(frame(1, 2), sink)
    cards = [o.monotonic for o in sink.seen if isinstance(o, CardPresented)]
    assert cards == [0.0, 4.0]


def test_a_noisy_line_is_logged_once_a_minute_and_every_rejection_counted(monkeypatch, caplog):
    driver, sink = reader(), Sink()
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(device, "time", SimpleNamespace(monotonic=lambda: clock.now))
    with caplog.at_level(logging.WARNING, logger="drivers.wiegand.device"):
        for clock.now in (0.0, 0.1, 0.2, 30.0, 59.9, 60.0, 60.1):
            driver._frames(b"\x00\xff\r\n", sink)
    assert [r.getMessage() for r in caplog.records] == [
        "w: 1 frame(s) rejected so far (last: not a hex frame: b'\\x00\\xff')",
        "w: 6 frame(s) rejected so far (last: not a hex frame: b'\\x00\\xff')",
    ]
    assert [o.metrics["rejected_frames"] for o in sink.seen if isinstance(o, Health)] == [1, 2, 3, 4, 5, 6, 7]
