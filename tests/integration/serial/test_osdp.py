"""The OSDP reader driver (a libosdp Control Panel) against libosdp PeripheralDevices over ptys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import osdp
import pytest

from drivers.base import (
    Availability,
    CardPresented,
    DriverContext,
    Health,
    ReaderFeedback,
    Tamper,
)
from drivers.osdp.config import OsdpReaderConfig
from drivers.osdp.device import OsdpReader
from drivers.osdp.sim import ReaderLineSim, SimReader
from edge.config import GatehouseConfig
from edge.doctor import Result
from edge.doctor.checks import Context, check_devices
from edge.errors import AuthFailed
from tests.support.pty import Recorder, VirtualCable, eventually

pytestmark = pytest.mark.serial

KEY = bytes(range(16))
OTHER_KEY = bytes(range(16, 32))
Body = Callable[[dict[int, OsdpReader], ReaderLineSim, dict[int, Recorder]], Awaitable[None]]


def reader_config(port: str, address: int, key: bytes | None, **overrides: Any) -> OsdpReaderConfig:
    return OsdpReaderConfig.model_validate(
        {
            "id": f"reader-{address}",
            "kind": "osdp",
            "serial": {"port": port, "baudrate": 115200, "reconnect_min_s": 0.1},
            "address": address,
            "scbk": key.hex() if key else None,
            "offline_retry_s": 1.0,
            "answer_timeout_s": 3.0,
            **overrides,
        }
    )


def run_readers(
    cable: VirtualCable,
    tmp_path: Path,
    sim_readers: list[SimReader],
    keys: dict[int, bytes | None],
    body: Body,
    wait_online: bool = True,
    **overrides: Any,
) -> dict[int, BaseException | None]:
    """Run one driver per entry of `keys` against the simulated readers; return how each ended."""
    endings: dict[int, BaseException | None] = {}

    async def main() -> None:
        async with asyncio.timeout(60):
            with ReaderLineSim(cable.path_b, sim_readers, baudrate=115200) as sim:
                drivers = {
                    address: OsdpReader(
                        reader_config(cable.path_a, address, key, **overrides),
                        DriverContext(state_dir=str(tmp_path)),
                    )
                    for address, key in keys.items()
                }
                recorders = {address: Recorder() for address in keys}
                tasks = {
                    address: asyncio.create_task(drivers[address].run(recorders[address])) for address in keys
                }
                try:
                    if wait_online:
                        for address, driver in drivers.items():
                            await eventually(
                                lambda d=driver, r=recorders[address]: (
                                    d._bus
                                    and d._slot
                                    and d._bus.online(d._slot)
                                    and r.availability()[-1:] == [True]
                                ),
                                what=f"reader {address} online and reported so",
                            )
                    await body(drivers, sim, recorders)
                finally:
                    for task in tasks.values():
                        task.cancel()
                    for address, task in tasks.items():
                        try:
                            await task
                        except asyncio.CancelledError:
                            endings[address] = None
                        except BaseException as err:
                            endings[address] = err

    asyncio.run(main())
    return endings


def cards(recorder: Recorder) -> list[CardPresented]:
    return recorder.of(CardPresented)


def test_card_read_over_the_secure_channel_and_feedback_at_the_reader(cable, tmp_path):
    async def body(drivers, sim, recorders):
        reader, rec = sim.reader(1), recorders[1]
        assert drivers[1]._bus.secure(drivers[1]._slot)
        reader.present_card(123, 45678)
        card = (await eventually(lambda: cards(rec), what="card"))[0]
        assert (card.credential, card.card_format, card.kind) == ("123:45678", "wiegand26", "card")
        assert card.monotonic > 0
        await drivers[1].execute(ReaderFeedback(granted=True))
        await drivers[1].execute(ReaderFeedback(granted=False))
        leds = await eventually(
            lambda: len(reader.received(osdp.Command.LED)) == 2 and reader.received(osdp.Command.LED),
            what="two LED commands",
        )
        buzzers = await eventually(
            lambda: len(reader.received(osdp.Command.Buzzer)) == 2 and reader.received(osdp.Command.Buzzer),
            what="two buzzer commands",
        )
        assert [c.command["on_color"] for c in leds] == [
            osdp.CommandLEDColor.Green,
            osdp.CommandLEDColor.Red,
        ]
        assert [c.command["rep_count"] for c in buzzers] == [1, 3]

    endings = run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: KEY}, body)
    assert endings == {1: None}


def test_wiegand_34_37_pin_and_bad_parity(cable, tmp_path):
    async def body(drivers, sim, recorders):
        reader, rec = sim.reader(1), recorders[1]
        reader.present_card(300, 4000, 34)
        reader.present_card(65000, 500000, 37)
        reader.press("12")
        reader.press("34#")
        await eventually(lambda: len(cards(rec)) == 3, what="three credentials")
        assert [(c.credential, c.card_format, c.kind) for c in cards(rec)] == [
            ("300:4000", "wiegand34", "card"),
            ("65000:500000", "wiegand37", "card"),
            ("1234", "keypad", "pin"),
        ]
        reader.present_bits(0b1 << 25, 26)
        await eventually(lambda: drivers[1].bad_reads == 1, what="bad parity counted")
        assert rec.of(Health)[-1].metrics == {"bad_reads": 1}
        assert len(cards(rec)) == 3

    run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: KEY}, body)


def test_tamper_power_and_feedback_to_a_reader_without_led(cable, tmp_path):
    async def body(drivers, sim, recorders):
        reader, rec = sim.reader(1), recorders[1]
        reader.report(tamper=True, power_lost=False)
        await eventually(lambda: rec.of(Tamper), what="tamper")
        reader.report(tamper=False, power_lost=True)
        await eventually(lambda: len(rec.of(Tamper)) == 2 and rec.of(Health), what="power")
        assert [t.active for t in rec.of(Tamper)] == [True, False]
        assert rec.of(Health)[-1].metrics == {"power": "lost"}
        await drivers[1].execute(ReaderFeedback(granted=False))
        await eventually(lambda: reader.received(osdp.Command.Buzzer), what="beeps")
        assert reader.received(osdp.Command.LED) == []

    run_readers(cable, tmp_path, [SimReader(1, None, led=False)], {1: None}, body)


def test_a_reader_open_and_on_bad_power_before_the_driver_starts_is_reported_once(
    cable: VirtualCable, tmp_path: Path
) -> None:
    async def body(
        drivers: dict[int, OsdpReader], sim: ReaderLineSim, recorders: dict[int, Recorder]
    ) -> None:
        reader, rec = sim.reader(1), recorders[1]
        await eventually(lambda: rec.of(Tamper) and rec.of(Health), what="the state found at start")
        reader.report(tamper=True, power_lost=True)
        reader.report(tamper=False, power_lost=True)
        await eventually(lambda: len(rec.of(Tamper)) == 2, what="casing closed")
        assert [(t.active, t.detail) for t in rec.of(Tamper)] == [
            (True, "reader casing opened"),
            (False, "reader casing closed"),
        ]
        assert [h.metrics for h in rec.of(Health)] == [{"power": "lost"}]

    opened = SimReader(1, KEY, tamper=True, power_lost=True)
    assert run_readers(cable, tmp_path, [opened], {1: KEY}, body) == {1: None}


def test_a_reader_opened_while_it_was_offline_is_reported_when_it_is_back(
    cable: VirtualCable, tmp_path: Path
) -> None:
    async def body(
        drivers: dict[int, OsdpReader], sim: ReaderLineSim, recorders: dict[int, Recorder]
    ) -> None:
        rec = recorders[1]
        sim.stop()
        await eventually(lambda: rec.availability() == [True, False], what="offline")
        sim.reader(1).tamper = True
        sim.start()
        await eventually(
            lambda: rec.of(Tamper) and rec.availability() == [True, False, True],
            timeout_s=20,
            what="back online with its casing open",
        )
        assert [t.active for t in rec.of(Tamper)] == [True]
        assert rec.of(Health) == []

    run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: KEY}, body)


def test_two_readers_on_one_line_by_address(cable, tmp_path):
    async def body(drivers, sim, recorders):
        sim.reader(2).present_card(7, 2)
        sim.reader(1).present_card(7, 1)
        await eventually(lambda: cards(recorders[1]) and cards(recorders[2]), what="both")
        assert [c.credential for c in cards(recorders[1])] == ["7:1"]
        assert [c.credential for c in cards(recorders[2])] == ["7:2"]
        assert [c.device for c in cards(recorders[2])] == ["reader-2"]

    run_readers(cable, tmp_path, [SimReader(1, KEY), SimReader(2, OTHER_KEY)], {1: KEY, 2: OTHER_KEY}, body)


def test_a_wrong_key_is_refused(cable, tmp_path):
    async def body(drivers, sim, recorders):
        await eventually(lambda: recorders[1].of(Availability), what="offline")
        await eventually(lambda: drivers[1]._slot is None, what="the driver to give up")

    endings = run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: OTHER_KEY}, body, wait_online=False)
    assert isinstance(endings[1], AuthFailed)
    assert "refused the secure channel key" in str(endings[1])


def test_install_mode_gives_a_factory_reader_its_key(cable, tmp_path):
    factory = SimReader(1, None)

    async def install(drivers, sim, recorders):
        await eventually(lambda: factory.received(osdp.Command.Keyset), what="key set")
        await eventually(lambda: drivers[1]._slot.key_set_reported, what="key in use")

    run_readers(cable, tmp_path, [factory], {1: KEY}, install, install_mode=True)
    assert factory.scbk == KEY

    async def secure(drivers, sim, recorders):
        assert drivers[1]._bus.secure(drivers[1]._slot)
        sim.reader(1).present_card(1, 1)
        await eventually(lambda: cards(recorders[1]), what="card after install")

    rebooted = SimReader(1, factory.scbk)
    assert run_readers(cable, tmp_path, [rebooted], {1: KEY}, secure) == {1: None}


def test_install_mode_on_a_reader_with_another_key_is_refused_not_run_in_clear(cable, tmp_path):
    async def body(drivers, sim, recorders):
        await eventually(lambda: False in recorders[1].availability(), what="offline")
        await eventually(lambda: drivers[1]._slot is None, what="the driver to give up")

    endings = run_readers(
        cable, tmp_path, [SimReader(1, OTHER_KEY)], {1: KEY}, body, wait_online=False, install_mode=True
    )
    assert isinstance(endings[1], AuthFailed)
    assert "took neither the configured key (scbk) nor the factory key" in str(endings[1])


def test_unplug_and_replug_mid_session(cable, tmp_path):
    async def body(drivers, sim, recorders):
        rec = recorders[1]
        cable.unplug("a")
        await eventually(lambda: rec.availability() == [True, False], what="offline")
        cable.replug("a")
        await eventually(lambda: rec.availability() == [True, False, True], timeout_s=20, what="online")
        sim.reader(1).present_card(5, 55)
        await eventually(lambda: cards(rec), what="card after replug")

    assert run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: KEY}, body) == {1: None}


def test_a_reader_restarted_is_back_before_libosdps_300_s_penalty(cable, tmp_path):
    async def body(drivers, sim, recorders):
        rec = recorders[1]
        sim.stop()
        await eventually(lambda: rec.availability() == [True, False], what="offline")
        sim.start()
        await eventually(lambda: rec.availability() == [True, False, True], timeout_s=20, what="online")
        sim.reader(1).present_card(5, 56)
        await eventually(lambda: cards(rec), what="card after restart")

    run_readers(cable, tmp_path, [SimReader(1, KEY)], {1: KEY}, body)


def test_a_neighbours_restart_does_not_take_a_reader_offline(cable, tmp_path):
    context = DriverContext(state_dir=str(tmp_path))

    async def main() -> None:
        async with asyncio.timeout(60):
            with ReaderLineSim(cable.path_b, [SimReader(1, KEY), SimReader(2, OTHER_KEY)], 115200) as sim:
                first = OsdpReader(reader_config(cable.path_a, 1, KEY), context)
                first_seen = Recorder()
                steady = asyncio.create_task(first.run(first_seen))
                second = OsdpReader(reader_config(cable.path_a, 2, OTHER_KEY), context)
                restarted = asyncio.create_task(second.run(Recorder()))
                try:
                    await eventually(
                        lambda: (
                            first._slot
                            and first._slot.seen_online
                            and second._slot
                            and second._slot.seen_online
                        ),
                        what="both readers seen online",
                    )
                    restarted.cancel()
                    await asyncio.gather(restarted, return_exceptions=True)
                    second_seen = Recorder()
                    restarted = asyncio.create_task(second.run(second_seen))
                    await eventually(
                        lambda: second._bus and second._slot and second._bus.online(second._slot),
                        what="reader 2 back",
                    )
                    sim.reader(1).present_card(8, 1)
                    await eventually(lambda: cards(first_seen), what="reader 1 still reads")
                    assert first_seen.availability() == [True]
                finally:
                    for task in (steady, restarted):
                        task.cancel()
                    await asyncio.gather(steady, restarted, return_exceptions=True)

    asyncio.run(main())


def doctor_check(cable: VirtualCable, tmp_path: Path) -> Result:
    config = GatehouseConfig.model_validate(
        {
            "site": {"id": "doctor", "salt": "doctor-salt-0123456789"},
            "gateway": {"id": "gw", "state_dir": str(tmp_path / "state")},
            "devices": [
                {
                    "kind": "osdp",
                    "id": "north-reader",
                    "address": 1,
                    "serial": {"port": cable.path_a, "baudrate": 115200},
                }
            ],
        }
    )
    [result] = check_devices(Context(config_file=tmp_path / "gatehouse.yaml", config=config, timeout_s=3.0))
    return result


def test_doctor_fails_an_osdp_reader_that_does_not_answer(cable, tmp_path):
    result = doctor_check(cable, tmp_path)  # nothing on the other end of the line
    assert result.state == "fail"
    assert result.message == "osdp reader at address 1 did not answer within 3 s"


def test_doctor_passes_an_osdp_reader_that_answers(cable, tmp_path):
    with ReaderLineSim(cable.path_b, [SimReader(1, None)], 115200):
        result = doctor_check(cable, tmp_path)
    assert result.state == "ok", result.message
