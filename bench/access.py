"""Access latency over real protocol peers: cards presented at a libosdp PeripheralDevice reach
the gateway's OSDP driver (libosdp Control Panel, secure channel), the rules decide, and the
barrier driver pulses the open relay of a pymodbus RTU server; everything over pty pairs.

Per card, on one monotonic clock:
- e2e: from the PD accepting the card event to the open-relay write arriving at the board;
- overhead: inside Gatehouse, from the card event arriving from libosdp (the Control Panel's
  callback) to the open-relay write being issued to the Modbus client;
- baselines measured in the same run: libosdp's own crossing (PD submit → CP callback) and the
  Modbus leg (write issued → write arriving at the board).

The simulators run in a child process (they are other devices, not part of the gateway's
interpreter). Cards are presented one at a time (the next after the previous answer reached
the reader).
Last line: `access: overhead_p99_ms=<x> e2e_p50_ms=<y> e2e_p99_ms=<z>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, bench/ comes first on sys.path and bench/sync.py would shadow the sync package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import osdp

from drivers.base import CardPresented
from drivers.sim_peers import peers_in_process
from edge.allowlist import AllowList
from edge.config import GatehouseConfig
from edge.gateway import Gateway
from tests.support.measure import percentile

KEY = "000102030405060708090a0b0c0d0e0f"


def config(state_dir: Path, synchronous: str) -> GatehouseConfig:
    return GatehouseConfig.model_validate(
        {
            "site": {"id": "bench", "salt": "bench-salt-0123456789"},
            "gateway": {"id": "gw-bench", "state_dir": str(state_dir)},
            "store": {"synchronous": synchronous},
            "gates": [{"id": "lane", "kind": "vehicle", "barrier": "barrier", "readers": ["reader"]}],
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
                    "profile": {"pulse_ms": 50},
                },
            ],
        }
    )


async def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def measure(cards: int, synchronous: str, state_dir: Path, ptys: Path) -> dict[str, list[float]]:
    setup = config(state_dir, synchronous)
    with peers_in_process(setup, ptys, residents=cards) as peers:
        gateway = Gateway(peers.config)
        allow = AllowList(gateway.store, setup.site.salt)
        for facility, number in peers.cards:
            allow.add_credential(f"{facility}:{number}", f"resident-{number}", kind="card")
        arrivals: list[float] = []
        gateway.rules.decision_hooks.append(
            lambda seen, _event: arrivals.append(seen.monotonic) if isinstance(seen, CardPresented) else None
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        results: dict[str, list[float]] = {"e2e": [], "overhead": [], "libosdp": [], "modbus": []}

        def opens() -> list[float]:
            writes = peers.relay_writes.get("barrier-line", [])
            return [at for _unit, coil, on, at in writes if coil == 0 and on]

        def leds() -> int:
            commands = peers.reader_commands.get("reader", [])
            return sum(1 for _at, command in commands if command.get("command") == osdp.Command.LED)

        try:
            await gateway.started.wait()
            await wait_for(lambda: peers.reader_secure("reader"), 30, "the reader's secure channel")
            barrier = gateway.drivers["barrier"]
            for facility, number in peers.cards:
                before_opens, before_leds, issued = len(opens()), leds(), len(barrier.coil_writes)
                presented = peers.present("reader", facility, number)
                await wait_for(lambda n=before_opens: len(opens()) > n, 10, "the open relay")
                arrived_at_board = opens()[-1]
                await wait_for(lambda n=before_leds: leds() > n, 10, "the LED")
                issued_at = next(t for coil, on, t in list(barrier.coil_writes)[issued:] if coil == 0 and on)
                arrival = arrivals[-1]
                results["e2e"].append(arrived_at_board - presented)
                results["overhead"].append(issued_at - arrival)
                results["libosdp"].append(arrival - presented)
                results["modbus"].append(arrived_at_board - issued_at)
                await asyncio.sleep(0.06)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200, help="cards to present (default 200)")
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal"],
        default="full",
        help="store durability (default full, the product default)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; store synchronous={args.synchronous}; ptys, 115200 8N1"
    )
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        results = asyncio.run(measure(args.cards, args.synchronous, Path(tmp) / "state", Path(tmp) / "ptys"))
    ms = {name: [v * 1000 for v in values] for name, values in results.items()}
    for name in ("libosdp", "overhead", "modbus", "e2e"):
        values = ms[name]
        print(
            f"{name:>9}: p50 {statistics.median(values):7.2f} ms  p99 {percentile(values, 0.99):7.2f} ms  "
            f"max {max(values):7.2f} ms  (n={len(values)})"
        )
    print("baseline (same run): libosdp crossing + Modbus leg; overhead is what Gatehouse adds between")
    print(
        f"access: overhead_p99_ms={percentile(ms['overhead'], 0.99):.2f} "
        f"e2e_p50_ms={statistics.median(ms['e2e']):.2f} e2e_p99_ms={percentile(ms['e2e'], 0.99):.2f}"
    )


if __name__ == "__main__":
    main()
