"""The daemon under a fake systemd: READY=1 once the gateway runs, WATCHDOG=1 every
WATCHDOG_USEC/2, no pings while the event loop is stuck, STOPPING=1 on SIGTERM.

The stuck loop comes from the documented test hook in edge/systemd.py: with
GATEHOUSE_DEBUG_STALL_FILE set, SIGUSR2 blocks the event loop until that file exists."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

WATCHDOG_USEC = 600_000
INTERVAL_S = WATCHDOG_USEC / 2 / 1_000_000
WAIT_S = 20.0
GATEHOUSE = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def next(self, timeout: float = WAIT_S) -> list[str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        return data.decode().splitlines()

    def until(self, wanted: str, timeout: float = WAIT_S) -> list[list[str]]:
        """Messages up to and including the first one with the line `wanted` (or a prefix), within
        `timeout` seconds in all."""
        seen: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next(max(0.01, deadline - time.monotonic()))
            seen.append(message)
            if any(line == wanted or line.startswith(wanted) for line in message):
                return seen
        raise TimeoutError(f"no {wanted} within {timeout:g} s; seen: {seen}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder: unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="gh-notify-") as folder:
        yield Path(folder)


def test_ready_then_watchdog_pings_stop_while_the_loop_is_stuck(
    config_file: Path, child_env: dict[str, str], short_dir: Path
):
    systemd = FakeSystemd(short_dir)
    release = short_dir / "release"
    env = {
        **child_env,
        "NOTIFY_SOCKET": str(systemd.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "GATEHOUSE_DEBUG_STALL_FILE": str(release),
    }
    log = short_dir / "daemon.log"
    with running_daemon(config_file, env, log) as daemon:
        first = systemd.next()
        assert "READY=1" in first, first
        assert f"STATUS=running: 1 devices; watchdog every {INTERVAL_S:g} s" in first

        for _ in range(4):
            assert systemd.next() == ["WATCHDOG=1"]

        daemon.send_signal(signal.SIGUSR2)
        stall = systemd.until("STATUS=debug stall")
        assert stall[-1][0].startswith("STATUS=debug stall")
        with pytest.raises(TimeoutError):
            message = systemd.next(timeout=INTERVAL_S * 4)
            pytest.fail(f"a notification arrived while the event loop was stuck: {message}")

        release.touch()
        assert systemd.until("WATCHDOG=1")[-1] == ["WATCHDOG=1"]

        daemon.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in systemd.until("STOPPING=1")[-1]
        assert daemon.wait(WAIT_S) == 0
    systemd.close()
    output = log.read_text()
    assert "Traceback" not in output, output


def test_sighup_reloads_a_good_file_in_place_and_keeps_running_on_a_bad_one(
    config_file: Path, child_env: dict[str, str], short_dir: Path
):
    """`systemctl reload gatehouse` (ExecReload= sends SIGHUP): RELOADING=1, then READY=1 on the
    new file, the process never leaving. A file with errors changes nothing: no RELOADING=1, the
    pings go on, the log says why."""
    systemd = FakeSystemd(short_dir)
    env = {**child_env, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    log = short_dir / "daemon.log"
    good = config_file.read_text()
    with running_daemon(config_file, env, log) as daemon:
        assert "STATUS=running: 1 devices" in " ".join(systemd.until("READY=1")[-1])
        config_file.write_text(good + "  - kind: sim_reader\n    id: side-reader\n")
        daemon.send_signal(signal.SIGHUP)
        reloading = systemd.until("RELOADING=1")[-1]
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading), reloading
        ready = systemd.until("READY=1")
        assert not any("STOPPING=1" in message for message in ready), ready
        assert "STATUS=running: 2 devices" in " ".join(ready[-1]), "ready again, on the new file"

        config_file.write_text(good.replace("kind: sim_reader", "kind: sim_readr"))
        daemon.send_signal(signal.SIGHUP)
        assert wait_for_text(log, "still running the previous configuration", daemon), log.read_text()
        after = [systemd.next() for _ in range(3)]
        assert after == [["WATCHDOG=1"]] * 3, after
        assert daemon.poll() is None

        daemon.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in systemd.until("STOPPING=1")[-1]
        assert daemon.wait(WAIT_S) == 0
    systemd.close()
    output = log.read_text()
    assert "sim_readr" in output and "Traceback" not in output, output


def test_without_notify_socket_the_daemon_runs_and_stops(
    config_file: Path, child_env: dict[str, str], short_dir: Path
):
    """Outside systemd the notifier is silent and the daemon starts and stops as before."""
    log = short_dir / "daemon.log"
    with running_daemon(config_file, child_env, log) as daemon:
        assert wait_for_text(log, " started", daemon), log.read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(WAIT_S) == 0, log.read_text()
    output = log.read_text()
    assert "sd_notify" not in output and "Traceback" not in output, output


@contextlib.contextmanager
def running_daemon(config_file: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`gatehouse run` as a child process writing to `log`; killed if the block leaves it running."""
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-c", GATEHOUSE, "--config", str(config_file), "run", "--text-logs"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(WAIT_S)


def wait_for_text(log: Path, text: str, process: subprocess.Popen[bytes]) -> bool:
    """Wait (at most WAIT_S) until the process has logged `text`; False if it ended first."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {WAIT_S} s:\n{log.read_text()}")
