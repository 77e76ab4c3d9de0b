"""Camera peers for the integration tests: the RTSP simulator (gst-rtsp-server under the
system python3), a camera that never answers and one that stalls mid-stream."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SYSTEM_PYTHON = os.environ.get("GATEHOUSE_SYSTEM_PYTHON", "/usr/bin/python3")
INSTALL = (
    "apt-get install -y $(cat .ci/apt-packages-vision.txt)  "
    "(python3-gi, gir1.2-gst-rtsp-server-1.0, GStreamer base/good/ugly/libav plugins)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspServer:
    def __init__(self, video: Path, port: int) -> None:
        self.video = video
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/lane"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if not Path(SYSTEM_PYTHON).exists() and shutil.which(SYSTEM_PYTHON) is None:
            pytest.fail(f"the RTSP simulator needs the system python3 ({SYSTEM_PYTHON}): {INSTALL}")
        self.process = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(REPO / "drivers" / "camera" / "rtsp_sim.py"),
                "--video",
                str(self.video),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            _, err = self.process.communicate(timeout=10)
            pytest.fail(f"the RTSP simulator did not start ({err.strip()}); {INSTALL}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


class StuckCamera:
    """A camera that accepts the TCP connection and never answers (a hung RTSP server, or one
    behind a firewall that eats its replies): OpenCV's open of `url` waits until its timeout, or
    until `release()` closes the connections and the open fails at once."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/x"
        self.accepted = 0
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="stuck camera", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.accepted += 1
                self._connections.append(connection)

    def release(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self.release()
        self._listener.close()


class StallingMjpegCamera:
    """An HTTP MJPEG camera that sends `first` frames and then nothing until `resume()`, so a
    grabber waits inside OpenCV's read; after resume it sends a frame every 50 ms until the
    client hangs up, and sets `hung_up` (the client released its capture)."""

    BOUNDARY = "stall"

    def __init__(self, first: int = 3) -> None:
        import cv2
        import numpy as np

        jpeg = bytes(cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1])
        self._part = (
            f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg
            + b"\r\n"
        )
        self.first = first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/stream.mjpg"
        self._resume = threading.Event()
        self.hung_up = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stalling camera", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except TimeoutError:
            return
        with connection:
            connection.recv(4096)
            kind = f"multipart/x-mixed-replace; boundary={self.BOUNDARY}"
            connection.sendall(f"HTTP/1.0 200 OK\r\nContent-Type: {kind}\r\n\r\n".encode())
            connection.sendall(self._part * self.first)
            self._resume.wait()
            try:
                while True:
                    connection.sendall(self._part)
                    time.sleep(0.05)
            except OSError:
                self.hung_up.set()

    def resume(self) -> None:
        self._resume.set()

    def close(self) -> None:
        self._resume.set()
        self._listener.close()
