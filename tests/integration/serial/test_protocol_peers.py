"""The demo's protocol peers: config/demo-protocol.yaml on simulators through the real Gateway,
and the peers in a child process as the benchmark runs them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import osdp
import pytest

from drivers.base import CardPresented, DriverContext, OpenGate, ReaderFeedback
from drivers.modbus_gate.device import ModbusGate
from drivers.osdp.device import OsdpReader
from drivers.sim_peers import peers_in_process, start_protocol_peers
from edge.allowlist import AllowList
from edge.config_loader import load_config
from edge.gateway import Gateway
from edge.store.queries import query_events
from tests.support.pty import Recorder, eventually

pytestmark = pytest.mark.serial

REPO = Path(__file__).resolve().parents[3]


def test_the_protocol_demo_configuration_runs_on_its_simulators(tmp_path: Path):
    config = load_config(REPO / "config" / "demo-protocol.yaml")
    gateway_config = config.gateway.model_copy(update={"state_dir": str(tmp_path / "state")})
    config = config.model_copy(update={"gateway": gateway_config})
    with start_protocol_peers(config, tmp_path / "ptys") as peers:
        assert set(peers.readers) == {"north-reader", "south-reader"}
        assert set(peers.converters) == {"east-reader"}
        assert set(peers.barriers) == {"north-barrier", "south-barrier", "east-lock"}

        async def main() -> None:
            gateway = Gateway(peers.config)
            allow = AllowList(gateway.store, config.site.salt)
            for credential in peers.credentials:
                allow.add_credential(credential, f"resident-{credential}", kind="card")
            stop = asyncio.Event()
            runner = asyncio.create_task(gateway.run(stop))
            try:
                async with asyncio.timeout(60):
                    await gateway.started.wait()
                    for device in ("north-reader", "south-reader"):
                        driver = gateway.drivers[device]
                        await eventually(
                            lambda d=driver: d._bus and d._slot and d._bus.secure(d._slot),
                            what=f"{device} online",
                        )
                    peers.start_traffic(interval_s=0.3, seed=3)

                    def types() -> set[str]:
                        return {e.type for e in query_events(gateway.store.read(), limit=500)}

                    await eventually(
                        lambda: {"access.granted", "gate.state"} <= types(),
                        timeout_s=30,
                        what="granted access and barrier movements recorded",
                    )
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

        asyncio.run(main())


def test_peers_in_a_child_process_report_what_they_receive(tmp_path: Path):
    config = load_config(REPO / "config" / "demo-protocol.yaml")
    with peers_in_process(config, tmp_path / "ptys", residents=3) as peers:
        devices = {device.id: device for device in peers.config.devices}
        context = DriverContext(state_dir=str(tmp_path))
        reader = OsdpReader(devices["north-reader"], context)
        barrier = ModbusGate(devices["north-barrier"], context)
        seen = Recorder()

        async def main() -> None:
            tasks = [asyncio.create_task(reader.run(seen)), asyncio.create_task(barrier.run(Recorder()))]
            try:
                async with asyncio.timeout(30):
                    await eventually(lambda: peers.reader_secure("north-reader"), what="secure channel")
                    await eventually(lambda: reader._bus and reader._bus.online(reader._slot), what="online")
                    presented = peers.present("north-reader", *peers.cards[0])
                    card = (
                        await eventually(
                            lambda: seen.of(CardPresented),
                            what="card",
                        )
                    )[0]
                    assert card.monotonic >= presented
                    await reader.execute(ReaderFeedback(granted=True))
                    await eventually(
                        lambda: any(
                            c.get("command") == osdp.Command.LED
                            for _at, c in peers.reader_commands.get("north-reader", [])
                        ),
                        what="LED command pushed back",
                    )
                    await eventually(lambda: barrier.machine.state == "closed", what="barrier polled")
                    await barrier.execute(OpenGate())
                    await eventually(
                        lambda: [
                            w for w in peers.relay_writes.get("sim-barrier-line", []) if w[:3] == (1, 0, True)
                        ],
                        what="open relay write pushed back",
                    )
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
