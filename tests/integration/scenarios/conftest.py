"""Scenario tests: the whole gateway (supervisor, drivers, rules, store, and where it matters
the uplink, a real broker and the ingest) on simulated devices, with a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from drivers.base import Observation
from edge.config_loader import parse_config
from edge.gateway import Gateway
from tests.support.pty import eventually
from tests.unit.rules.conftest import Clock

T = TypeVar("T")

SITE, GATEWAY = "oak-court", "gw-1"

HEADER = """\
site: {{id: oak-court, salt: oak-court-salt-0123456789, home_province: 津, timezone: Asia/Shanghai}}
gateway: {{id: gw-1, state_dir: {state}}}
store: {{synchronous: normal}}
"""

SIM_COMPOUND = """\
gates:
  - {id: north-in, kind: vehicle, direction: in, barrier: lane-in, readers: [reader-in], cameras: [cam-in]}
  - {id: north-out, kind: vehicle, direction: out, barrier: lane-out, readers: [reader-out]}
devices:
  - {kind: sim_lane, id: lane-in, travel_s: 0.05, open_hold_s: 0.2, stuck_probability: 0}
  - {kind: sim_lane, id: lane-out, travel_s: 0.05, open_hold_s: 0.2, stuck_probability: 0}
  - {kind: sim_reader, id: reader-in, interval_s: 86400}
  - {kind: sim_reader, id: reader-out, interval_s: 86400}
  - {kind: sim_camera, id: cam-in, interval_s: 86400}
  - {kind: sim_camera, id: yard-cam, interval_s: 86400}
"""


def compound(tmp_path: Path, body: str = SIM_COMPOUND, extra: str = "") -> Any:
    text = HEADER.format(state=tmp_path / "state") + body + extra
    return parse_config(text, "scenario.yaml")


@contextlib.asynccontextmanager
async def running(config: Any, clock: Clock) -> AsyncIterator[Gateway]:
    """The gateway running until the block ends; then stopped as on SIGTERM."""
    gateway = Gateway(config, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(gateway.started.wait(), 10)
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def present(gateway: Gateway, observation: Observation, done: Callable[[], T], what: str) -> T:
    """Hand an observation over as its driver would, and wait until `done()` is truthy."""
    assert gateway.queue is not None
    gateway.queue.put(observation)
    return await eventually(done, 10.0, what)


def events(gateway: Gateway, pattern: str) -> list[Any]:
    return gateway.store.events(types=[pattern], limit=1000)
