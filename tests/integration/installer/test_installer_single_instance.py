"""One gateway per state directory: a second `gatehouse run` stops at once naming the first,
`gatehouse status` says whether one runs (a crashed one does not look alive), and `devices test`
does not fight a running gateway for a serial port."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.instance import InstanceLock
from tests.integration.installer.cli_helpers import run_cli
from tests.integration.installer.conftest import SECRETS
from tests.integration.installer.test_installer_watchdog import GATEHOUSE, WAIT_S, wait_for_text


def start(config_file: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", GATEHOUSE, "--config", str(config_file), "run", "--text-logs"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_second_gateway_on_the_same_state_stops_and_status_tells_running_from_crashed(
    config_file: Path,
    child_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    first = start(config_file, child_env, tmp_path / "first.log")
    try:
        assert wait_for_text(tmp_path / "first.log", " started", first), (tmp_path / "first.log").read_text()
        code, out, _err = run_cli(["--config", str(config_file), "status"], capsys)
        assert code == 0
        assert f"running: yes (pid {first.pid}, since " in out

        second = start(config_file, child_env, tmp_path / "second.log")
        assert second.wait(WAIT_S) == 1
        said = (tmp_path / "second.log").read_text()
        assert f"a gateway already runs on {tmp_path / 'state'} (pid {first.pid}, since " in said, said
        assert "sudo systemctl stop gatehouse" in said
        assert first.poll() is None, "the first gateway is untouched"

        first.send_signal(signal.SIGKILL)
        first.wait(WAIT_S)
        code, out, _err = run_cli(["--config", str(config_file), "status"], capsys)
        assert "running: NO — no gateway runs on this store" in out, "a crash leaves no stale lock"

        third = start(config_file, child_env, tmp_path / "third.log")
        try:
            assert wait_for_text(tmp_path / "third.log", " started", third), (
                tmp_path / "third.log"
            ).read_text()
            third.send_signal(signal.SIGTERM)
            assert third.wait(WAIT_S) == 0
        finally:
            if third.poll() is None:
                third.kill()
                third.wait(WAIT_S)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(WAIT_S)


def test_devices_test_leaves_a_running_gateways_serial_port_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        "site: {id: s, salt: test-salt-0123456789}\n"
        f"gateway: {{id: gw, state_dir: {state}}}\n"
        "devices:\n"
        "  - {kind: wiegand, id: door, profile: ascii_hex, serial: {port: /dev/ttyUSB7}}\n"
    )
    held = InstanceLock(state)
    held.acquire()
    try:
        code, _out, err = run_cli(
            ["--config", str(config), "devices", "test", "door", "--timeout", "1"], capsys
        )
    finally:
        held.release()
    assert code == 1
    assert "the gateway is running (pid " in err and "has the serial port of door open" in err
