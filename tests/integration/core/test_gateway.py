"""The gateway on simulated devices: decisions from the store, events committed before the
barrier moves, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.base import CardPresented, OpenGate, PlateRead
from edge.allowlist import AllowList
from edge.config_loader import parse_config
from edge.gateway import Gateway
from edge.instance import AlreadyRunning
from tests.support.children import run_gatehouse, start_gatehouse
from tests.support.store_faults import failing_inserts, working_inserts

CONFIG = """\
site: {{id: test-site, salt: test-salt-long-enough, home_province: 津}}
gateway: {{id: gw-test, state_dir: {state}}}
store: {{synchronous: normal}}
gates:
  - {{id: north-in, kind: vehicle, direction: in, barrier: barrier, readers: [reader], cameras: [cam]}}
devices:
  - {{kind: sim_lane, id: barrier, travel_s: 0.05, open_hold_s: 0.1, stuck_probability: 0}}
  - {{kind: sim_reader, id: reader, interval_s: 3600}}
  - {{kind: sim_camera, id: cam, interval_s: 3600}}
"""


def config_for(tmp_path: Path) -> Any:
    return parse_config(CONFIG.format(state=tmp_path / "state"), "test.yaml")


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_card_decision_is_committed_before_the_barrier_opens(tmp_path: Path):
    async def scenario() -> None:
        gateway = Gateway(config_for(tmp_path))
        allow = AllowList(gateway.store, gateway.config.site.salt)
        allow.add_credential("12345678", "person-1")
        barrier = gateway.drivers["barrier"]
        committed_when_opened: list[list[str]] = []
        original = barrier.execute

        async def watching_execute(command):
            if isinstance(command, OpenGate):
                committed_when_opened.append([e.type for e in gateway.store.events(types=["access.*"])])
            await original(command)

        barrier.execute = watching_execute  # type: ignore[method-assign]
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        await gateway.started.wait()
        gateway.queue.put(CardPresented("reader", "12345678"))
        gateway.queue.put(CardPresented("reader", "99999999"))
        await wait_for(lambda: len(gateway.drivers["reader"].feedback) == 2)
        await wait_for(lambda: barrier.state == "closed" and barrier.opens == 1)
        reasons = [(e.type, e.payload.reason) for e in gateway.store.events(types=["access.*"])]
        assert reasons == [("access.granted", "resident"), ("access.denied", "unknown")]
        assert committed_when_opened == [["access.granted"]]
        assert gateway.drivers["reader"].feedback == [True, False]
        granted = gateway.store.events(types=["access.granted"])[0]
        assert granted.payload.credential.last4 == "5678"
        assert "12345678" not in granted.model_dump_json(), "raw card numbers must never be stored"
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())


def test_allowed_plate_opens_the_lane_and_records_the_read(tmp_path: Path):
    async def scenario() -> None:
        gateway = Gateway(config_for(tmp_path))
        AllowList(gateway.store, gateway.config.site.salt).add_plate("津A12345", "person-2")
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        await gateway.started.wait()
        gateway.queue.put(PlateRead("cam", "津A12345", 0.97, "blue", crop_jpeg=b"\xff\xd8crop"))
        gateway.queue.put(PlateRead("cam", "京B99999", 0.95, "blue"))
        await wait_for(lambda: len(gateway.store.events(types=["access.*"])) == 2)
        await wait_for(lambda: gateway.drivers["barrier"].opens == 1)
        plates = gateway.store.events(types=["vehicle.plate"])
        assert [p.payload.plate for p in plates] == ["津A12345", "京B99999"]
        crop = plates[0].attachments[0]
        assert gateway.store.attachment_path(crop.sha256).read_bytes() == b"\xff\xd8crop"
        decisions = [(e.type, e.payload.reason) for e in gateway.store.events(types=["access.*"])]
        assert decisions == [("access.granted", "resident"), ("access.denied", "unknown")]
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())


def test_a_full_store_is_said_once_without_a_traceback_and_its_end_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Every card or plate on a full disk fails the same way: the log says so when it starts,
    without a traceback per observation, and says how many were not acted on when it ends."""

    async def scenario() -> None:
        gateway = Gateway(config_for(tmp_path))
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        await gateway.started.wait()
        await wait_for(lambda: len(gateway.store.events(types=["device.online"])) == 3)
        failing_inserts(gateway.store, "%", "database or disk is full")
        before = gateway.handled
        for card in ("11111111", "22222222", "33333333"):
            gateway.queue.put(CardPresented("reader", card))
        await wait_for(lambda: gateway.handled >= before + 3)
        working_inserts(gateway.store)
        gateway.queue.put(CardPresented("reader", "44444444"))
        await wait_for(lambda: len(gateway.store.events(types=["access.*"])) == 1)
        stop.set()
        await asyncio.wait_for(runner, 10)

    with caplog.at_level(logging.INFO, logger="edge.gateway"):
        asyncio.run(scenario())
    said = [r for r in caplog.records if r.name == "edge.gateway" and "not acted on" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in said[:-1]] == [(logging.ERROR, None)]
    assert "CardPresented from reader" in said[0].getMessage()
    assert re.search(r"[3-9]\d* observations were not acted on", said[-1].getMessage())


def test_sigterm_drains_and_closes_the_store(tmp_path: Path):
    config_file = tmp_path / "gatehouse.yaml"
    config_file.write_text(
        CONFIG.format(state=tmp_path / "state").replace("interval_s: 3600", "interval_s: 0.05")
    )
    process = start_gatehouse("--config", str(config_file), "run", stderr=subprocess.PIPE, text=True)
    db = tmp_path / "state" / "gatehouse.db"
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline and count < 20:
        time.sleep(0.2)
        if db.exists():
            try:
                count = sqlite3.connect(db).execute("SELECT count(*) FROM outbox").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
    assert count >= 20, "the daemon did not record events"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the store was not closed (WAL not checkpointed)"
    seqs = [r[0] for r in sqlite3.connect(db).execute("SELECT seq FROM outbox ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_camera_that_cannot_be_opened_is_offline_although_its_driver_runs(tmp_path: Path):
    config = parse_config(
        f"""\
site: {{id: test-site, salt: test-salt-long-enough, home_province: 津}}
gateway: {{id: gw-test, state_dir: {tmp_path / "state"}}}
store: {{synchronous: normal}}
rules: {{alerts: {{offline_grace_s: 0.5, check_interval_s: 0.2}}}}
gates:
  - {{id: north-in, kind: vehicle, direction: in, cameras: [cam]}}
devices:
  - {{kind: camera, id: cam, source: {tmp_path / "missing.mp4"}, tamper: {{enabled: false}}}}
""",
        "test.yaml",
    )

    async def scenario() -> None:
        gateway = Gateway(config)
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        await gateway.started.wait()

        def open_alerts() -> list[tuple[str, str]]:
            return gateway.store.read().execute("SELECT kind, state FROM alerts").fetchall()

        await wait_for(open_alerts)
        await asyncio.sleep(1.0)  # two more of the supervisor's looks at the heartbeating driver
        assert open_alerts() == [("camera.offline", "raised")]
        assert [e.type for e in gateway.store.events(types=["device.*"])] == ["device.offline"]
        state = gateway.store.read().execute("SELECT state, last_error FROM devices").fetchall()
        assert state == [("offline", f"cannot open {tmp_path / 'missing.mp4'}")]
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())


def test_run_with_a_state_directory_that_cannot_be_created_says_so(tmp_path: Path):
    (tmp_path / "file").write_text("not a directory")
    config_file = tmp_path / "gatehouse.yaml"
    config_file.write_text(CONFIG.format(state=tmp_path / "file" / "state"))
    result = run_gatehouse("--config", str(config_file), "run", "--text-logs")
    assert result.returncode == 1
    assert f"error: cannot create the state directory {tmp_path / 'file' / 'state'} (Not a directory)" in (
        result.stderr
    )
    assert "internal error" not in result.stderr


def test_a_second_gateway_names_the_first_ones_start_in_the_site_zone(tmp_path: Path):
    """`gatehouse run` beside a running gateway says since when that one runs, in the site's time
    zone like every time the CLI shows (`gatehouse status` says the same moment), not in UTC."""
    config = parse_config(
        CONFIG.format(state=tmp_path / "state").replace("home_province: 津", "timezone: Asia/Shanghai"),
        "test.yaml",
    )
    first = Gateway(config)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            Gateway(config)
    finally:
        first.store.close()
        first.instance.release()
    assert re.search(r"\(pid \d+, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CST\)", str(refused.value)), str(
        refused.value
    )
