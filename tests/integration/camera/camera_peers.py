"""Camera peers for the integration tests: the RTSP simulator (gst-rtsp-server under the
system python3) and the shared data folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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
