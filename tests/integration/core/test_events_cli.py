"""`gatehouse events`: what the gateway recorded, read while the daemon may be writing."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from edge.cli import main
from edge.events import EventFactory
from edge.instance import InstanceLock, Running
from edge.store import Store
from tests.support.sync_helpers import start_cli, wait_for_line

REPO = Path(__file__).resolve().parents[3]
CONFIG = (
    "site: {{id: test-site, salt: test-salt-long-enough}}\ngateway: {{id: gw-test, state_dir: {state}}}\n"
)


def gate_event(factory: EventFactory, state: str, previous: str | None = None):
    payload = {"gate": "north-in", "state": state, "previous": previous}
    return factory.make("gate.state", payload, device="barrier")


def test_events_lists_filters_and_follows(tmp_path: Path, capsys):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    store = Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory)
    try:
        store.append(gate_event(factory, "opening"))
        store.append(factory.make("occupancy.sample", {"zone": "lot", "count": 3}))
        assert main(["--config", str(config), "events", "--type", "gate.*"]) == 0
        out = capsys.readouterr().out
        assert "north-in: ? → opening" in out and "lot" not in out
        assert main(["--config", str(config), "events", "--since", "yesterday"]) == 2
        assert "--since 'yesterday'" in capsys.readouterr().err
        assert main(["--config", str(config), "events", "--type", "gate"]) == 2
        assert "--type 'gate' matches no event type; did you mean 'gate.*'?" in capsys.readouterr().err
        assert main(["--config", str(config), "events", "--type", "occupancy.samples"]) == 2
        assert "did you mean 'occupancy.sample'?" in capsys.readouterr().err

        process = start_cli(config, "events", "--follow")
        try:
            wait_for_line(process, b"opening", 30)
            store.append(gate_event(factory, "open", previous="opening"))
            wait_for_line(process, b"opening \xe2\x86\x92 open", 30)
        finally:
            process.terminate()
            process.wait(10)
    finally:
        store.close()


def test_events_show_and_read_times_in_the_site_time_zone(tmp_path: Path, capsys):
    """The compound is in Asia/Shanghai (UTC+8), whatever the machine's own zone is."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state").replace("}", ", timezone: Asia/Shanghai}", 1))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        for moment in ("2026-01-10T23:30:00+00:00", "2026-01-11T00:30:00+00:00"):
            store.append(
                factory.make(
                    "gate.state",
                    {"gate": "north-in", "state": "open"},
                    device="barrier",
                    ts=datetime.fromisoformat(moment),
                )
            )
    assert main(["--config", str(config), "events"]) == 0
    out = capsys.readouterr().out
    assert "01-11 07:30:00" in out and "01-11 08:30:00" in out
    assert main(["--config", str(config), "events", "--since", "2026-01-11T08:00"]) == 0
    out = capsys.readouterr().out
    assert "01-11 08:30:00" in out and "07:30:00" not in out
    assert main(["--config", str(config), "events", "--since", "2026-01-10T23:00Z"]) == 0
    assert "01-11 07:30:00" in capsys.readouterr().out, "a time with a zone is taken as given"


def test_events_since_a_span_longer_than_the_epoch_lists_everything(tmp_path: Path, capsys):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        store.append(gate_event(factory, "opening"))
    assert main(["--config", str(config), "events", "--since", "999999999999d"]) == 0
    assert "north-in: ? → opening" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty: the gateway has not committed anything to it yet"),
        (bytes(range(256)) * 12, "cannot be read as a store (file is not a database); restart the service"),
        (None, "is not a file; check gateway.state_dir"),
    ],
)
@pytest.mark.parametrize("command", ["events", "status", "alerts"])
def test_readers_name_a_damaged_empty_or_misplaced_store(tmp_path: Path, capsys, command, content, expected):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    db = tmp_path / "state" / "gatehouse.db"
    db.parent.mkdir()
    if content is None:
        db.mkdir()
    else:
        db.write_bytes(content)
    assert main(["--config", str(config), command]) == 1
    err = capsys.readouterr().err
    assert f"error: {db} {expected}" in err
    assert "internal error" not in err


def test_events_into_a_pipe_closed_early_stops_quietly(tmp_path: Path):
    """`gatehouse events | head -1`: more output than a pipe holds, and the reader goes away."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:

        async def append_many() -> None:
            await asyncio.gather(*(store.append_async(gate_event(factory, "open")) for _ in range(3000)))

        asyncio.run(append_many())
    process = start_cli(config, "events", "--limit", "3000", stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"time")
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(30) == 141
    assert err == ""


def test_a_listing_cut_at_the_limit_says_so(tmp_path: Path, capsys):
    """A manager asking for a day of events must not take the last 50 for the whole day."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        for index in range(7):
            store.append(gate_event(factory, "open" if index % 2 else "closed"))
    assert main(["--config", str(config), "events", "--limit", "5"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 5
    assert captured.out.splitlines()[-1].split()[2] == "7", "the newest are shown"
    assert captured.err == "(older events not shown; raise --limit to see them)\n"
    assert main(["--config", str(config), "events", "--limit", "7", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 7 and captured.err == ""
    for bad in ("0", "-1", "lots"):
        with pytest.raises(SystemExit):
            main(["--config", str(config), "events", "--limit", bad])
        assert "is not a whole number of 1 or more" in capsys.readouterr().err


def test_status_shows_its_times_in_the_site_zone(tmp_path: Path, capsys):
    """`alerts` and `events` show the compound's time; `status` must not show the guards a second
    clock eight hours off (the uplink records UTC, the service may run in UTC)."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state").replace("}", ", timezone: Asia/Shanghai}", 1))
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal") as store:
        report = {
            "state": "online",
            "connected_since": "2026-11-26T01:00:00.000Z",
            "last_puback": "bad",
            "backlog": {"count": 6, "oldest_age_s": 3.0},
            "devices": [{"id": "reader", "kind": "osdp", "state": "online"}],
            "extra": {"a": 1},
        }
        store.update_state(kv={"uplink.status": json.dumps(report)})
    lock = InstanceLock(tmp_path / "state")
    lock.acquire()
    try:
        assert main(["--config", str(config), "status"]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert "uplink connected_since: 2026-11-26 09:00:00 CST" in out
    assert "uplink last_puback: bad" in out, "what is not a time is shown as it is"
    assert "uplink backlog" not in out and "uplink devices" not in out, "counted from the store instead"
    assert 'uplink extra: {"a": 1}' in out
    started = re.search(r"running: yes \(pid \d+, since (\S+ \S+ \S+)\)", out)
    assert started and started.group(1).endswith(" CST"), out


def test_status_says_when_each_device_came_and_does_not_show_an_old_problem_as_a_present_one(
    tmp_path: Path, capsys
):
    """A reader back after its adapter was unplugged keeps its last error for the record; `status`
    must not print it as if the reader were still at fault."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state").replace("}", ", timezone: Asia/Shanghai}", 1))
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal") as store:
        rows = [
            ("reader", "osdp", "online", 1_764_118_800_000, "/dev/ttyUSB0 is not there", 1),
            ("barrier", "modbus_gate", "offline", 1_764_118_860_000, "no answer from unit 1", 3),
            ("camera", "camera", "online", 1_764_118_920_000, None, 0),
        ]
        store.write(
            lambda c: c.executemany(
                "INSERT INTO devices(id, kind, state, since_ms, last_error, restarts) VALUES (?,?,?,?,?,?)",
                rows,
            )
        )
    assert main(["--config", str(config), "status"]) == 0
    devices = [
        line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("device ")
    ]
    assert devices == [
        "device barrier (modbus_gate): offline since 2025-11-26 09:01:00 CST, 3 restarts — "
        "no answer from unit 1",
        "device camera (camera): online since 2025-11-26 09:02:00 CST, 0 restarts",
        "device reader (osdp): online since 2025-11-26 09:00:00 CST, 1 restart; "
        "before it came back: /dev/ttyUSB0 is not there",
    ]


def test_a_lock_written_by_an_older_version_is_described_as_it_is():
    assert Running(7, "2026-11-26 09:00:00 UTC").describe() == "pid 7, since 2026-11-26 09:00:00 UTC"
    assert Running(7, "2026-11-26T01:00:00+00:00").describe() == "pid 7, since 2026-11-26 01:00:00 UTC"
