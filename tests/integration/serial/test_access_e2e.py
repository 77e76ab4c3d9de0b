"""Card at an OSDP reader (libosdp PD) → the gateway decides → LED/buzzer at the reader and the
barrier's open relay pulsed at the Modbus board (pymodbus server), all over ptys, through the
real `Gateway` (drivers, supervisor, rules, store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import osdp
import pytest

from drivers.base import CardPresented
from drivers.modbus_gate.sim import Barrier, BarrierBoardServer
from drivers.osdp.sim import ReaderLineSim
from drivers.osdp.sim import SimReader as OsdpSimReader
from drivers.sim_peers import start_protocol_peers
from edge.allowlist import AllowList
from edge.config import GatehouseConfig
from edge.gateway import Gateway
from edge.store.queries import query_events
from tests.support.pty import VirtualCable, eventually

pytestmark = pytest.mark.serial

KEY = "000102030405060708090a0b0c0d0e0f"


def lane_config(state_dir: Path) -> GatehouseConfig:
    return GatehouseConfig.model_validate(
        {
            "site": {"id": "e2e", "salt": "e2e-salt-0123456789"},
            "gateway": {"id": "gw", "state_dir": str(state_dir)},
            "store": {"synchronous": "normal"},
            "gates": [
                {"id": "lane", "kind": "vehicle", "barrier": "barrier", "readers": ["reader"]},
            ],
            "devices": [
                {
                    "kind": "osdp",
                    "id": "reader",
                    "serial": {"port": "reader-line", "baudrate": 115200},
                    "address": 1,
                    "scbk": KEY,
                },
                {
                    "kind": "modbus_gate",
                    "id": "barrier",
                    "serial": {"port": "barrier-line", "baudrate": 115200},
                    "unit_id": 1,
                    "profile": {"pulse_ms": 100},
                },
            ],
        }
    )


def test_card_to_decision_to_feedback_and_coil(tmp_path: Path):
    config = lane_config(tmp_path / "state")
    with start_protocol_peers(config, tmp_path / "ptys") as peers:
        reader = peers.readers["reader"]
        board = peers.boards["barrier-line"]
        allowed, stranger = peers.cards[0], peers.strangers[0]

        async def main() -> None:
            gateway = Gateway(peers.config)
            AllowList(gateway.store, config.site.salt).add_credential(
                f"{allowed[0]}:{allowed[1]}", "resident-1", kind="card"
            )
            stop = asyncio.Event()
            runner = asyncio.create_task(gateway.run(stop))
            try:
                async with asyncio.timeout(60):
                    await gateway.started.wait()
                    driver = gateway.drivers["reader"]
                    await eventually(
                        lambda: driver._bus and driver._slot and driver._bus.secure(driver._slot),
                        what="reader online over the secure channel",
                    )
                    reader.present_card(*allowed)
                    await eventually(lambda: board.pulses(1, 0) == 1, what="open relay pulsed")
                    await eventually(lambda: reader.received(osdp.Command.LED), what="LED")
                    await eventually(lambda: reader.received(osdp.Command.Buzzer), what="buzzer")
                    leds, beeps = reader.received(osdp.Command.LED), reader.received(osdp.Command.Buzzer)
                    assert leds[0].command["on_color"] == osdp.CommandLEDColor.Green
                    assert beeps[0].command["rep_count"] == 1
                    await eventually(lambda: peers.barriers["barrier"].position == "open", what="arm open")

                    reader.present_card(*stranger)
                    await eventually(lambda: len(reader.received(osdp.Command.LED)) == 2, what="red LED")
                    await eventually(lambda: len(reader.received(osdp.Command.Buzzer)) == 2, what="beeps")
                    leds, beeps = reader.received(osdp.Command.LED), reader.received(osdp.Command.Buzzer)
                    assert leds[1].command["on_color"] == osdp.CommandLEDColor.Red
                    assert beeps[1].command["rep_count"] == 3
                    assert board.pulses(1, 0) == 1

                    def recorded() -> list:
                        wanted = ["access.*", "gate.state"]
                        return query_events(gateway.store.read(), types=wanted, newest=False)

                    await eventually(
                        lambda: any(e.type == "gate.state" and e.payload.state == "open" for e in recorded()),
                        what="gate.state open recorded",
                    )
                    access = [e for e in recorded() if e.type.startswith("access.")]
                    assert [e.type for e in access] == ["access.granted", "access.denied"]
                    assert access[0].payload.gate == "lane"
                    assert access[0].payload.credential.last4 == str(allowed[1])[-4:]
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

        asyncio.run(main())


def test_a_barrier_refusing_the_open_relay_is_reported_and_the_reader_still_answered(
    tmp_path: Path, cable: VirtualCable
):
    """A board profile naming a relay the board does not have: the board refuses the write
    (Modbus exception), which must not escape into the rules."""
    config = GatehouseConfig.model_validate(
        {
            "site": {"id": "e2e", "salt": "e2e-salt-0123456789"},
            "gateway": {"id": "gw", "state_dir": str(tmp_path / "state")},
            "store": {"synchronous": "normal"},
            "gates": [{"id": "lane", "kind": "vehicle", "barrier": "barrier", "readers": ["reader"]}],
            "devices": [
                {
                    "kind": "modbus_gate",
                    "id": "barrier",
                    "serial": {"port": cable.path_a, "baudrate": 115200},
                    "unit_id": 1,
                    "profile": {"open_coil": 40},
                },
                {"kind": "sim_reader", "id": "reader", "interval_s": 3600},
            ],
        }
    )

    async def main() -> None:
        async with BarrierBoardServer(cable.path_b, {1: Barrier()}, baudrate=115200):
            gateway = Gateway(config)
            AllowList(gateway.store, config.site.salt).add_credential("12345678", "resident-1")
            stop = asyncio.Event()
            runner = asyncio.create_task(gateway.run(stop))
            try:
                async with asyncio.timeout(30):
                    await gateway.started.wait()
                    assert gateway.supervisor is not None and gateway.queue is not None
                    status = gateway.supervisor.status["barrier"]
                    await eventually(lambda: status.online, what="barrier online")
                    gateway.queue.put(CardPresented("reader", "12345678"))
                    await eventually(lambda: gateway.drivers["reader"].feedback, what="reader feedback")
                    assert gateway.drivers["reader"].feedback == [True]
                    await eventually(lambda: not status.online, what="barrier reported offline")
                    assert "refused to set relay 40" in status.last_error

                    def alerts() -> list[tuple[str, str]]:
                        return gateway.store.read().execute("SELECT kind, device FROM alerts").fetchall()

                    await eventually(alerts, what="an alert")
                    assert alerts() == [("device.offline", "barrier")]
                    devices = gateway.store.read().execute("SELECT state FROM devices WHERE id = 'barrier'")
                    assert devices.fetchall() == [("offline",)]
                    await asyncio.sleep(1)  # the driver keeps polling the board that answers
                    assert not status.online
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

    asyncio.run(main())


def test_a_readers_power_lost_and_back_are_both_recorded(tmp_path: Path, cable: VirtualCable):
    """A bad read (a bad_reads health report) then mains lost and back within a minute: the
    power changes are state, not telemetry, and none of them may be thinned out."""
    config = GatehouseConfig.model_validate(
        {
            "site": {"id": "e2e", "salt": "e2e-salt-0123456789"},
            "gateway": {"id": "gw", "state_dir": str(tmp_path / "state")},
            "store": {"synchronous": "normal"},
            "gates": [{"id": "door", "kind": "pedestrian", "readers": ["reader"]}],
            "devices": [
                {
                    "kind": "osdp",
                    "id": "reader",
                    "serial": {"port": cable.path_a, "baudrate": 115200},
                    "address": 1,
                }
            ],
        }
    )

    async def main() -> None:
        with ReaderLineSim(cable.path_b, [OsdpSimReader(1, None)], baudrate=115200) as line:
            gateway = Gateway(config)
            stop = asyncio.Event()
            runner = asyncio.create_task(gateway.run(stop))
            try:
                async with asyncio.timeout(30):
                    await gateway.started.wait()
                    driver = gateway.drivers["reader"]

                    def health() -> list[dict[str, object]]:
                        return [e.payload.metrics for e in gateway.store.events(types=["device.health"])]

                    await eventually(
                        lambda: driver._bus and driver._slot and driver._bus.online(driver._slot),
                        what="reader online",
                    )
                    line.reader(1).present_bits(0b1 << 25, 26)
                    await eventually(health, what="the bad read reported")
                    line.reader(1).report(tamper=False, power_lost=True)
                    await eventually(lambda: {"power": "lost"} in health(), what="power lost recorded")
                    line.reader(1).report(tamper=False, power_lost=False)
                    await eventually(lambda: {"power": "ok"} in health(), what="power back recorded")
                    assert health() == [{"bad_reads": 1}, {"power": "lost"}, {"power": "ok"}]
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

    asyncio.run(main())
