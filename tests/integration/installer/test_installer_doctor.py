"""`gatehouse doctor` on a good configuration and on broken ones: the messages an installer
reads are asserted, red means exit status 1, and there is never a traceback."""

from __future__ import annotations

import grp
import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.doctor import checks
from sync.broker import free_port
from tests.integration.installer.cli_helpers import run_cli

GATEHOUSE = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def pty_port() -> Iterator[Path]:
    """A real character device to stand in for a serial adapter, owned root:dialout 0660."""
    controller, device = os.openpty()
    path = Path(os.ttyname(device))
    os.chown(path, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(path, 0o660)
    yield path
    os.close(device)
    os.close(controller)


def add_devices(config: Path, devices: str) -> None:
    text = config.read_text()
    config.write_text(text.replace("devices:\n", f"devices:\n{devices}", 1))


def wiegand(port: Path | str) -> str:
    return (
        f"  - kind: wiegand\n    id: gate-wiegand\n    profile: ascii_hex\n    serial:\n      port: {port}\n"
    )


def doctor(config: Path, credentials: Path, capsys, *extra: str) -> tuple[int, str]:
    code, out, err = run_cli(
        ["--config", str(config), "doctor", "--credentials-dir", str(credentials), "--timeout", "2", *extra],
        capsys,
    )
    assert "Traceback" not in out + err
    return code, out


def line(out: str, start: str) -> str:
    found = [text for text in out.splitlines() if text.startswith(start)]
    assert found, f"no line starting {start!r} in:\n{out}"
    return found[0]


def test_good_configuration_is_all_green(initialised, pty_port, capsys):
    config, credentials = initialised
    add_devices(
        config,
        wiegand(pty_port),
    )
    code, out = doctor(config, credentials, capsys, "--user", "root", "--skip", "clock", "--skip", "service")
    assert code == 0, out
    assert (
        "[ OK ] config: " in out
        and "is valid: site lotus-garden, gateway gw-north, 0 gates, 2 devices" in out
    )
    assert (
        line(out, "[ OK ] serial gate-wiegand")
        == f"[ OK ] serial gate-wiegand: {pty_port} present; root may open it"
    )
    assert line(out, "[ OK ] device gate-wiegand").startswith("[ OK ] device gate-wiegand: wiegand answering")
    assert line(out, "[ OK ] device east-reader").startswith(
        "[ OK ] device east-reader: sim_reader answering"
    )
    assert "[ OK ] disk: " in out
    assert "does not exist yet; the service creates it on first start" in line(out, "[ OK ] store")
    assert "[ OK ] models: none used by this configuration" in out
    assert "[SKIP] broker: no mqtt: section" in out
    assert "[SKIP] clock: skipped (--skip)" in out
    assert out.rstrip().endswith("all checks passed")


def test_a_credentials_dir_that_does_not_exist_is_named_not_passed_over(initialised, tmp_path, capsys):
    """A mistyped --credentials-dir must not quietly leave the secrets to be found elsewhere."""
    config, _credentials = initialised
    code, _out, err = run_cli(
        ["--config", str(config), "doctor", "--credentials-dir", str(tmp_path / "typo")], capsys
    )
    assert code == 2 and f"--credentials-dir {tmp_path / 'typo'}: no such folder" in err


def test_misspelt_key_is_named_with_the_suggestion(initialised, capsys):
    config, credentials = initialised
    config.write_text(config.read_text().replace("  state_dir:", "  state_dri:"))
    code, out = doctor(
        config, credentials, capsys, "--skip", "clock", "--skip", "service", "--skip", "devices"
    )
    assert code == 1
    assert "[FAIL] config: " in out
    assert "gateway.state_dri: unknown key 'state_dri'; did you mean 'state_dir'?" in out
    assert "[SKIP] serial: not checked: the configuration is not valid" in out
    assert out.rstrip().endswith("1 problem found")


def test_unbuildable_yaml_is_a_red_config_line_and_the_doctor_carries_on(initialised, capsys):
    config, credentials = initialised
    config.write_text(config.read_text().replace('id: "lotus-garden"', 'id: !foo "lotus-garden"', 1))
    code, out = doctor(config, credentials, capsys, "--skip", "clock", "--skip", "service")
    assert code == 1
    assert "[FAIL] config: " in out and "could not determine a constructor for the tag '!foo'" in out
    assert "[SKIP] serial: not checked: the configuration is not valid" in out


@pytest.mark.parametrize("uid", [1000, 0], ids=["user", "root"])
def test_secrets_out_of_reach_say_where_they_are(initialised, tmp_path, capsys, monkeypatch, uid):
    config, _credentials = initialised
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(checks.os, "geteuid", lambda: uid)
    code, out = doctor(config, elsewhere, capsys, "--skip", "clock", "--skip", "service")
    assert code == 1
    assert "secret ${GATEHOUSE_SITE_SALT} is not set" in out
    if uid:
        assert "→ fix: the secrets live in the credentials directory, readable by root only: run the " in out
    else:
        assert "with sudo" not in out, "root is told where to put the secret, not to use sudo"
        assert "→ fix: put the secret in the file the line above names (mode 0600)" in out


def test_secrets_the_user_may_not_read_get_the_sudo_hint(initialised, capsys, monkeypatch):
    config, credentials = initialised
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        # as a non-root user meets the root-only credentials directory `gatehouse init` makes
        if self.parent == credentials:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(checks.os, "geteuid", lambda: 1000)
    code, out = doctor(config, credentials, capsys, "--skip", "clock", "--skip", "service")
    assert code == 1
    assert f"{credentials / 'GATEHOUSE_SITE_SALT'} cannot be read (permission denied)" in out
    assert (
        "→ fix: the secrets live in the credentials directory, readable by root only: run the doctor " in out
    )
    assert "[SKIP] serial: not checked: the configuration is not valid" in out


def test_missing_serial_port(initialised, capsys):
    config, credentials = initialised
    missing = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0"
    add_devices(
        config,
        wiegand(missing),
    )
    code, out = doctor(config, credentials, capsys, "--skip", "clock", "--skip", "service")
    assert code == 1
    failed = line(out, "[FAIL] serial gate-wiegand")
    assert f"{missing} does not exist (adapters in /dev/serial/by-id: " in failed
    assert (
        "→ fix: plug the adapter in, or set devices.gate-wiegand.serial.port to its /dev/serial/by-id/… path"
        in failed
    )
    assert f"[SKIP] device gate-wiegand: not tried: {missing} is missing" in out


def test_a_camera_whose_stream_never_opens_fails(initialised, capsys):
    """A server that accepts the connection and says nothing: the driver keeps trying (and
    heartbeats), but no frame ever comes."""
    config, credentials = initialised
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        add_devices(config, f"  - {{kind: camera, id: lane-cam, source: 'rtsp://127.0.0.1:{port}/lane'}}\n")
        code, out = doctor(config, credentials, capsys, "--skip", "clock", "--skip", "service")
    finally:
        silent.close()
    assert code == 1
    failed = line(out, "[FAIL] device lane-cam")
    assert f"camera rtsp://127.0.0.1:{port}/lane did not answer within 2 s" in failed


def test_a_camera_password_is_never_printed(initialised, capsys):
    """The doctor's line names the camera's URL with the password blanked, as everywhere else."""
    config, credentials = initialised
    (credentials / "LANE_CAM_PASSWORD").write_text("s3cret-pw\n")
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        add_devices(
            config,
            "  - {kind: camera, id: lane-cam, "
            f"source: 'rtsp://gatehouse:${{LANE_CAM_PASSWORD}}@127.0.0.1:{port}/lane'}}\n",
        )
        code, out = doctor(config, credentials, capsys, "--skip", "clock", "--skip", "service")
    finally:
        silent.close()
    assert code == 1
    assert "s3cret-pw" not in out
    failed = line(out, "[FAIL] device lane-cam")
    assert f"camera rtsp://gatehouse:***@127.0.0.1:{port}/lane did not answer within 2 s" in failed


def test_serial_permission_names_the_group_to_join(initialised, pty_port, capsys):
    config, credentials = initialised
    add_devices(
        config,
        wiegand(pty_port),
    )
    code, out = doctor(
        config, credentials, capsys, "--user", "nobody", "--skip", "clock", "--skip", "service"
    )
    assert code == 1
    assert line(out, "[FAIL] serial gate-wiegand") == (
        f"[FAIL] serial gate-wiegand: nobody cannot open it: {pty_port} is root:dialout 0660; nobody is not "
        "in group dialout → fix: join the group: sudo usermod -aG dialout nobody (then restart: sudo "
        "systemctl restart gatehouse)"
    )


def test_device_not_answering(initialised, pty_port, capsys):
    """A barrier board that never answers on its (present, permitted) port."""
    config, credentials = initialised
    add_devices(
        config,
        "  - kind: modbus_gate\n    id: north-barrier\n    unit_id: 3\n"
        f"    serial:\n      port: {pty_port}\n",
    )
    code, out = doctor(config, credentials, capsys, "--user", "root", "--skip", "clock", "--skip", "service")
    assert code == 1
    failed = line(out, "[FAIL] device north-barrier")
    assert failed.startswith("[FAIL] device north-barrier: modbus_gate does not answer: ")
    assert "(DeviceNotReady) → fix: check the wiring, the device's address and the line settings" in failed
    assert f"`gatehouse probe {pty_port}` shows what answers" in failed
    assert f"[ OK ] serial north-barrier: {pty_port} present; root may open it" in out


def test_a_gateway_holding_the_devices_is_not_disturbed(initialised, pty_port, tmp_path, capsys):
    """Without systemd to ask (--skip service, or a gateway run by hand) the state directory's lock
    says that a gateway runs: the doctor leaves its ports alone instead of failing them as 'in use'."""
    from edge.instance import InstanceLock

    config, credentials = initialised
    add_devices(config, wiegand(pty_port))
    (tmp_path / "state").mkdir()
    lock = InstanceLock(tmp_path / "state")
    lock.acquire()
    try:
        code, out = doctor(
            config, credentials, capsys, "--user", "root", "--skip", "clock", "--skip", "service"
        )
    finally:
        lock.release()
    assert code == 0, out
    skipped = line(out, "[SKIP] devices")
    assert skipped.startswith(f"[SKIP] devices: a gateway (pid {os.getpid()}, since ")
    assert skipped.endswith(
        " CST) is running and holds the devices; see `gatehouse status`, or stop it to let the doctor "
        "talk to them"
    )
    assert "device gate-wiegand" not in out and "device east-reader" not in out


def test_unreachable_broker(initialised, capsys):
    config, credentials = initialised
    port = free_port()
    config.write_text(config.read_text() + f"\nmqtt:\n  host: 127.0.0.1\n  port: {port}\n")
    code, out = doctor(
        config, credentials, capsys, "--skip", "clock", "--skip", "service", "--skip", "devices"
    )
    assert code == 1
    assert line(out, "[FAIL] broker").startswith(
        f"[FAIL] broker: nothing accepts connections on 127.0.0.1:{port}; is the broker running?"
    )


def test_model_checksum_mismatch(initialised, tmp_path, capsys):
    config, credentials = initialised
    model = tmp_path / "y5fu_320x_sim.onnx"
    model.write_bytes(b"not the model you are looking for")
    wrong = hashlib.sha256(b"the real model").hexdigest()
    config.write_text(
        config.read_text() + f"\ninference:\n  plate_detector:\n    path: {model}\n    sha256: {wrong}\n"
    )
    code, out = doctor(
        config, credentials, capsys, "--skip", "clock", "--skip", "service", "--skip", "devices"
    )
    assert code == 1
    failed = line(out, "[FAIL] model plate_detector")
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    assert f"{model}: checksum mismatch (sha256 {actual[:16]}…, expected {wrong[:16]}…)" in failed
    assert "→ fix: the file is damaged or another version" in failed


def test_not_enough_disk(initialised, capsys):
    config, credentials = initialised
    code, out = doctor(
        config, credentials, capsys, "--min-free-mb", "1e12", "--skip", "clock", "--skip", "service"
    )
    assert code == 1
    failed = line(out, "[FAIL] disk")
    assert "(want at least 1,000,000,000,000 MB)" in failed
    assert "→ fix: free space" in failed


def test_damaged_store(initialised, tmp_path, capsys):
    config, credentials = initialised
    store = tmp_path / "state" / "gatehouse.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    code, out = doctor(
        config, credentials, capsys, "--skip", "clock", "--skip", "service", "--skip", "devices"
    )
    assert code == 1
    assert line(out, "[FAIL] store").startswith(f"[FAIL] store: {store} is damaged: ")


def test_an_empty_or_foreign_store_is_not_called_healthy(initialised, tmp_path, capsys):
    config, credentials = initialised
    store = tmp_path / "state" / "gatehouse.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    skips = ("--skip", "clock", "--skip", "service", "--skip", "devices")
    store.write_bytes(b"")
    code, out = doctor(config, credentials, capsys, *skips)
    assert (
        line(out, "[ OK ] store")
        == f"[ OK ] store: {store} is empty; the service creates its tables on first start"
    )
    store.unlink()
    with sqlite3.connect(store) as other:
        other.execute("CREATE TABLE photos(name TEXT)")
    other.close()
    code, out = doctor(config, credentials, capsys, *skips)
    assert code == 1
    assert "is an SQLite file but not a Gatehouse store" in line(out, "[FAIL] store")


def test_clock_check_runs_here(initialised, capsys):
    """What this machine can say: timedatectl when systemd runs, else the kernel's adjtimex."""
    config, credentials = initialised
    code, out = doctor(config, credentials, capsys, "--skip", "service", "--skip", "devices")
    clock = next(text for text in out.splitlines() if " clock: " in text)
    assert clock.startswith(("[ OK ] clock: synchronised (", "[FAIL] clock: not synchronised ("))
    assert "timedatectl" in clock or "adjtimex" in clock
    assert code == (1 if clock.startswith("[FAIL]") else 0)


def test_broken_configuration_in_a_real_process_has_no_traceback(initialised, child_env):
    config, credentials = initialised
    config.write_text(config.read_text().replace("site:", "sight:"))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            GATEHOUSE,
            "--config",
            str(config),
            "doctor",
            "--credentials-dir",
            str(credentials),
            "--skip",
            "clock",
            "--skip",
            "service",
        ],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "unknown key 'sight'; did you mean 'site'?" in result.stdout
