"""A virtual serial cable: two pseudo-terminals joined by a copying thread.

Each end has a stable path (a symlink, like `/dev/serial/by-id/...`) that a driver or a
simulator opens with pyserial. `unplug(end)` closes that end's pty master, so whoever has the
port open gets EIO / "no data" errors and the path disappears, exactly as when a USB adapter
is pulled; `replug(end)` makes a fresh pty behind the same path. Used by the protocol
simulators for the demo, the integration tests and the benchmarks (a pty has no parity and no
RS-485 mode, so runs over it are 8N1).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from pathlib import Path
from typing import Literal

End = Literal["a", "b"]


class _Pty:
    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.link = link
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.ttyname(self.slave))

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class VirtualCable:
    """Two pty ends, `a` and `b`, whose bytes are copied both ways by a thread."""

    def __init__(self, directory: str | os.PathLike[str], name: str = "cable") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path_a = str(directory / f"{name}-a")
        self.path_b = str(directory / f"{name}-b")
        self._ends: dict[End, _Pty | None] = {
            "a": _Pty(Path(self.path_a)),
            "b": _Pty(Path(self.path_b)),
        }
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._thread = threading.Thread(target=self._pump, name=f"cable-{name}", daemon=True)
        self._thread.start()

    def path(self, end: End) -> str:
        return self.path_a if end == "a" else self.path_b

    def unplug(self, end: End = "a") -> None:
        """Pull the plug at one end: its port fails and its path disappears."""
        with self._lock:
            pty = self._ends[end]
            self._ends[end] = None
        if pty is not None:
            pty.close()
        os.write(self._wake_w, b"x")

    def replug(self, end: End = "a") -> None:
        """Plug a fresh pty in at the same path."""
        with self._lock:
            if self._ends[end] is None:
                self._ends[end] = _Pty(Path(self.path(end)))
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for end in ("a", "b"):
            self.unplug(end)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> VirtualCable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pump(self) -> None:
        while not self._stop:
            with self._lock:
                ends = dict(self._ends)
            fds = [pty.master for pty in ends.values() if pty is not None]
            try:
                ready, _, _ = select.select([*fds, self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
            for source, target in (("a", "b"), ("b", "a")):
                pty = ends[source]
                if pty is None or pty.master not in ready:
                    continue
                try:
                    data = os.read(pty.master, 4096)
                except OSError:
                    continue
                peer = ends[target]
                if peer is not None and data:
                    self._write_all(peer.master, data)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [], 0.1)
                continue
            except OSError:
                return
            view = view[written:]
