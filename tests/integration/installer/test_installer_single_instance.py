"""One gateway per state directory: a second `gatehouse run` stops at once naming the first,
`gatehouse status` says whether one runs (a crashed one does not look alive), and `devices test`
does not fight a running gateway for a serial port."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from edge.instance import InstanceLock
from tests.integration.installer.cli_helpers import run_cli
from tests.integration.installer.conftest import SECRETS
from tests.integration.installer.test_installer_watchdog import WAIT_S, running_daemon, wait_for_text


def test_a_second_gateway_on_the_same_state_stops_and_status_tells_running_from_crashed(
    config_file: Path,
    child_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second", "third")}
    with running_daemon(config_file, child_env, logs["first"]) as first:
        assert wait_for_text(logs["first"], " started", first), logs["first"].read_text()
        code, out, _err = run_cli(["--config", str(config_file), "status"], capsys)
        assert code == 0
        assert f"running: yes (pid {first.pid}, since " in out

        with running_daemon(config_file, child_env, logs["second"]) as second:
            assert second.wait(WAIT_S) == 1
        said = logs["second"].read_text()
        assert f"a gateway already runs on {tmp_path / 'state'} (pid {first.pid}, since " in said, said
        assert "sudo systemctl stop gatehouse" in said
        assert first.poll() is None, "the first gateway is untouched"

        first.send_signal(signal.SIGKILL)
        first.wait(WAIT_S)
    code, out, _err = run_cli(["--config", str(config_file), "status"], capsys)
    assert "running: NO — no gateway runs on this store" in out, "a crash leaves no stale lock"

    with running_daemon(config_file, child_env, logs["third"]) as third:
        assert wait_for_text(logs["third"], " started", third), logs["third"].read_text()
        third.send_signal(signal.SIGTERM)
        assert third.wait(WAIT_S) == 0


def test_devices_test_leaves_a_running_gateways_serial_port_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        "site: {id: s, salt: test-salt-0123456789, timezone: Asia/Shanghai}\n"
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
    assert " CST) " in err, "its start in the site's time zone, as `gatehouse status` shows it"
