"""The Wiegand-converter driver against a simulated converter over a pty pair."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.base import CardPresented, DriverContext, Health
from drivers.wiegand.bits import encode_bits
from drivers.wiegand.config import WiegandReaderConfig
from drivers.wiegand.device import WiegandReader
from drivers.wiegand.framing import PROFILES, Frame
from drivers.wiegand.sim import ConverterSim
from tests.support.pty import Recorder, VirtualCable, eventually

pytestmark = pytest.mark.serial


def make_driver(cable: VirtualCable, tmp_path: Path, profile: str) -> WiegandReader:
    config = WiegandReaderConfig.model_validate(
        {
            "id": "wiegand-1",
            "kind": "wiegand",
            "serial": {"port": cable.path_a, "baudrate": 115200, "reconnect_min_s": 0.1},
            "profile": profile,
            "repeat_window_s": 0,
            "read_timeout_s": 0.05,
        }
    )
    return WiegandReader(config, DriverContext(state_dir=str(tmp_path)))


@contextlib.asynccontextmanager
async def converter_on_line(
    cable: VirtualCable, driver: WiegandReader, recorder: Recorder, profile: str
) -> AsyncIterator[ConverterSim]:
    """The driver running against a converter simulator on the other end of the cable, its port
    open; cancelled when the block ends (the whole within a 30 s hang guard)."""
    async with asyncio.timeout(30):
        with ConverterSim(cable.path_b, profile, baudrate=115200) as sim:
            task = asyncio.create_task(driver.run(recorder))
            try:
                await eventually(lambda: recorder.heartbeats, what="the port open")
                yield sim
                assert not task.done(), "the driver is still running"
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_cards_through_each_converter_profile_with_noise_and_split_frames(cable, tmp_path, profile):
    driver = make_driver(cable, tmp_path, profile)
    recorder = Recorder()

    async def main() -> None:
        async with converter_on_line(cable, driver, recorder, profile) as sim:
            first = sim.frame_for(12, 3456)
            sim.send_raw(b"\x00\xff~noise~\r\n")
            sim.send_raw(first[:3])
            await asyncio.sleep(0.05)
            sim.send_raw(first[3:] + sim.frame_for(12, 3457))
            await eventually(lambda: len(recorder.of(CardPresented)) == 2, what="two cards")
            assert driver.deframer.rejected >= 1

    asyncio.run(main())
    cards = recorder.of(CardPresented)
    if profile == "ascii_decimal":
        assert [c.credential for c in cards] == [str(12 * 65536 + 3456), str(12 * 65536 + 3457)]
    else:
        assert [c.credential for c in cards] == ["12:3456", "12:3457"]
        assert {c.card_format for c in cards} == {"wiegand26"}


def test_bad_parity_is_counted_not_presented(cable, tmp_path):
    driver = make_driver(cable, tmp_path, "stx_etx")
    recorder = Recorder()

    async def main() -> None:
        async with converter_on_line(cable, driver, recorder, "stx_etx") as sim:
            flipped = encode_bits(1, 2, 26) ^ (1 << 25)
            sim.send_raw(sim.profile.encode(Frame(bits=flipped, length=26)))
            sim.present_card(1, 3)
            await eventually(lambda: recorder.of(CardPresented), what="the good card")
            assert driver.bad_reads == 1

    asyncio.run(main())
    assert [c.credential for c in recorder.of(CardPresented)] == ["1:3"]


def test_unplug_and_replug_mid_session(cable, tmp_path):
    driver = make_driver(cable, tmp_path, "ascii_hex")
    recorder = Recorder()

    async def main() -> None:
        async with converter_on_line(cable, driver, recorder, "ascii_hex") as sim:
            sim.present_card(9, 9)
            await eventually(lambda: recorder.of(CardPresented), what="first card")
            cable.unplug("a")
            await eventually(lambda: recorder.availability() == [True, False], what="offline")
            cable.replug("a")
            await eventually(lambda: recorder.availability() == [True, False, True], what="online")
            sim.present_card(9, 10)
            await eventually(lambda: len(recorder.of(CardPresented)) == 2, what="card after")

    asyncio.run(main())
    assert recorder.availability() == [True, False, True]


def test_a_37_bit_card_with_bit_19_set_is_read(cable, tmp_path):
    # H10304 facility 1, card 131072: bit 19 belongs to both parity halves (both parity bits 0).
    driver = make_driver(cable, tmp_path, "ascii_hex")
    recorder = Recorder()

    async def main() -> None:
        async with converter_on_line(cable, driver, recorder, "ascii_hex") as sim:
            sim.send_raw(b"0000140000\r\n")
            sim.present_card(1, 4)
            await eventually(lambda: len(recorder.of(CardPresented)) == 2, what="both cards")

    asyncio.run(main())
    assert [c.credential for c in recorder.of(CardPresented)] == ["1:131072", "1:4"]
    assert driver.bad_reads == 0


def test_an_stx_etx_converter_ending_frames_with_a_line_end(cable, tmp_path):
    driver = make_driver(cable, tmp_path, "stx_etx")
    recorder = Recorder()

    async def main() -> None:
        async with converter_on_line(cable, driver, recorder, "stx_etx") as sim:
            sim.send_raw(sim.frame_for(5, 6) + b"\r\n")
            sim.send_raw(sim.frame_for(5, 7) + b"\r\n")
            await eventually(lambda: len(recorder.of(CardPresented)) == 2, what="two cards")

    asyncio.run(main())
    assert [c.credential for c in recorder.of(CardPresented)] == ["5:6", "5:7"]
    assert driver.rejected == 0
    assert recorder.of(Health) == []
