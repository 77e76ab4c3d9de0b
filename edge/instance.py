"""One gateway per state directory.

The daemon holds an exclusive lock (flock) on `gateway.lock` in its state directory for as long
as it has the store open. A second `gatehouse run` on the same directory (the service is running
and someone starts one in a shell) would fight the first for the serial ports, the cameras and
the broker's client id; it stops at once instead, naming the one that runs. `gatehouse status`
and `gatehouse devices test` ask the same lock whether a gateway is running. The kernel drops
the lock when the process dies, however it dies, so a crash leaves nothing stale behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from edge.errors import GatehouseError
from edge.store.ownership import StateDirOwner
from edge.times import in_zone

LOCK_NAME = "gateway.lock"
ACQUIRE_TRIES = 20
"""A `status` probing the lock holds it for a moment; starting retries for about a second."""


class AlreadyRunning(GatehouseError):
    """Another gateway runs on this state directory."""


@dataclass(frozen=True)
class Running:
    """The gateway holding the lock, as it wrote itself into the file."""

    pid: int | None
    since: str
    """when it started: ISO 8601 in UTC (a lock written by an older version: local text)"""

    def describe(self, zone: tzinfo = UTC) -> str:
        """Who holds the lock and since when, in `zone` (the site's, where it is known)."""
        who = f"pid {self.pid}" if self.pid else "another process"
        return f"{who}, since {in_zone(self.since, zone, name_zone=True)}" if self.since else who


class InstanceLock:
    """The daemon's hold on its state directory."""

    def __init__(self, state_dir: Path, zone: tzinfo = UTC) -> None:
        self.path = state_dir / LOCK_NAME
        self.zone = zone
        """the zone AlreadyRunning names the running gateway's start in (the site's)"""
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the gateway that has it."""
        fd = _open(self.path)
        StateDirOwner(self.path.parent).claim(self.path)  # `sudo gatehouse run` once: still the service's
        for _ in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            holder = _holder(self.path)
            os.close(fd)
            raise AlreadyRunning(
                f"a gateway already runs on {self.path.parent} ({holder.describe(self.zone)}); stop it first "
                "(sudo systemctl stop gatehouse) or give this one another gateway.state_dir"
            )
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # a read-only lock file still locks
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def running_gateway(state_dir: Path) -> Running | None:
    """The gateway running on this state directory, or None when none is."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)
    return None


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        # made by another user (root once ran the gateway by hand): flock needs no write access
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _holder(path: Path) -> Running:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    return Running(pid, lines[1] if len(lines) > 1 else "")
