"""A rules rig on a real store: configuration, a clock the test moves, and a commander that
records what the rules asked of the devices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Command
from edge.allowlist import AllowList
from edge.config_loader import parse_config
from edge.events import EventFactory
from edge.rules.alerts import AlertEngine
from edge.rules.engine import Rules
from edge.store import Store

SALT = "test-salt-long-enough"
NIGHT = datetime(2026, 11, 24, 18, 30, tzinfo=UTC).timestamp()  # 02:30 in Tianjin

CONFIG = """\
site: {{id: test-site, salt: {salt}, home_province: 津}}
gateway: {{id: gw-test, state_dir: {state}}}
gates:
  - {{id: north-in, kind: vehicle, direction: in, barrier: barrier, readers: [reader], cameras: [cam]}}
  - {{id: north-out, kind: vehicle, direction: out, barrier: barrier-out, readers: [reader-out]}}
devices:
  - {{kind: sim_lane, id: barrier}}
  - {{kind: sim_lane, id: barrier-out}}
  - {{kind: sim_reader, id: reader}}
  - {{kind: sim_reader, id: reader-out}}
  - {{kind: sim_camera, id: cam}}
  - {{kind: sim_camera, id: yard-cam}}
  - kind: modbus_gate
    id: relay
    serial: {{port: /dev/ttyUSB9}}
    unit_id: 9
    profile: {{outputs: {{siren: 4, strobe: 5}}}}
{extra}
"""


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = NIGHT) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    config: Any
    store: Store
    factory: EventFactory
    alerts: AlertEngine
    rules: Rules
    allow: AllowList
    clock: Clock
    commands: list[tuple[str, Command]] = field(default_factory=list)

    def events(self, pattern: str) -> list[Any]:
        return self.store.events(types=[pattern], limit=1000)

    def alert_kinds(self) -> list[str]:
        return [e.payload.kind for e in self.events("alert.raised")]


def make_rig(tmp_path: Path, extra: str = "", clock: Clock | None = None) -> Rig:
    config = parse_config(CONFIG.format(salt=SALT, state=tmp_path / "state", extra=extra), "test.yaml")
    clock = clock or Clock()
    factory = EventFactory(config.site.id, config.gateway.id)
    store = Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory)
    alerts = AlertEngine(store, factory, clock=clock)
    commands: list[tuple[str, Command]] = []

    async def commander(device: str, command: Command) -> None:
        commands.append((device, command))

    rules = Rules(config, store, factory, alerts, commander, clock=clock)
    allow = AllowList(store, config.site.salt, clock=clock)
    return Rig(config, store, factory, alerts, rules, allow, clock, commands)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rig(tmp_path: Path, clock: Clock) -> Iterator[Rig]:
    made = make_rig(tmp_path, clock=clock)
    yield made
    made.store.close()


@pytest.fixture(autouse=True)
def plenty_of_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine running the tests may be short of disk; the rules must not notice unless a
    test says so."""
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 10, 90))  # type: ignore[attr-defined]
