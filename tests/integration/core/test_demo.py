"""The README's first command ends in `gatehouse demo`: it must show events, and the community
side must receive them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.store import Store
from tests.support.children import run_gatehouse, start_gatehouse


def run_demo(tmp_path: Path, *extra: str) -> str:
    result = run_gatehouse("demo", "--duration", "10", "--state-dir", str(tmp_path), *extra, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.broker
def test_demo_shows_events_and_the_community_database_receives_them(tmp_path: Path):
    out = run_demo(tmp_path)
    assert "access.granted" in out and "gate.state" in out
    recorded = int(re.search(r"demo ended: (\d+) events recorded", out).group(1))
    received = [int(n) for n in re.findall(r"community database: (\d+) events from demo-gw", out)]
    assert recorded > 5
    assert received and received[-1] == recorded, out
    final = [line for line in out.splitlines() if "community database:" in line][-1]
    assert "seq gaps [" not in final
    own = re.search(r"Look again with: gatehouse (--config \S+) events", out)
    assert own and str(tmp_path) in own.group(1), out
    local = gatehouse(*own.group(1).split(), "events", "--type", "access.*")
    assert local.returncode == 0 and "access.granted" in local.stdout, (
        "the hint reaches the store in --state-dir, not the one the demo's file names",
        local.stdout,
        local.stderr,
    )
    hint = re.search(r"and the community side: gatehouse (admin --db \S+) events", out)
    assert hint, out
    listed = gatehouse(*hint.group(1).split(), "events", "--type", "access.*")
    assert listed.returncode == 0 and "demo-compound/demo-gw" in listed.stdout, listed.stderr
    signed = gatehouse(
        *hint.group(1).split(), "open-gate", "demo-compound", "demo-gw", "north-in", "--no-send"
    )
    assert signed.returncode == 0 and '"sig"' in signed.stdout, (
        "the demo's gateway is registered with its key"
    )


def gatehouse(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_gatehouse(*argv)


@pytest.mark.serial
def test_protocol_demo_runs_the_real_drivers(tmp_path: Path):
    out = run_demo(tmp_path, "--protocol", "--no-sync")
    assert re.search(r"device\.online\s+north-reader", out), out
    assert re.search(r"device\.online\s+north-barrier", out), out
    assert "demo ended" in out


@pytest.mark.broker
def test_demo_shows_events_another_process_records(tmp_path: Path):
    """A guard's `gatehouse alerts ack` in another terminal writes to the demo's store: the
    demo's table and its summary show it like the gateway's own events."""
    demo = start_gatehouse(
        "demo",
        "--duration",
        "8",
        "--state-dir",
        str(tmp_path),
        "--no-sync",
        stdout=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if line.startswith("time "):
            break
    factory = EventFactory("demo-compound", "demo-gw")
    with Store(tmp_path / "gatehouse.db", events=factory) as store:
        store.append(
            factory.make("gate.state", {"gate": "north-in", "state": "open", "detail": "from a terminal"})
        )
    out = "".join(lines) + demo.stdout.read()
    assert demo.wait(60) == 0
    assert "north-in: ? → open (from a terminal)" in out, out
    listed = [line for line in out.splitlines() if line[:2].isdigit()]
    recorded = int(re.search(r"demo ended: (\d+) events recorded", out).group(1))
    assert recorded == len(listed), "the summary counts what the table showed"
