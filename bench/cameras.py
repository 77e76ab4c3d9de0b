"""Idle cost of cameras: two streams at 10 fps showing a still scene (no motion).

    .venv/bin/python bench/cameras.py [--seconds 30] [--mjpeg]

Serves a still real gate photo as two RTSP streams (drivers/camera/rtsp_sim.py under the
system python3; `--mjpeg` uses the HTTP MJPEG simulator instead), runs two lane-camera drivers
(plates, tamper and motion gating on) against them in this process, and measures this
process's CPU time over the window, after a warm-up. The simulators' own CPU (encoding) is not
counted: on site the cameras encode. Last line: `cameras: idle_cpu_pct=<percent of one core>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.base import DriverContext, Observation
from drivers.camera.config import CameraConfig
from drivers.camera.device import CameraDriver

REPO = Path(__file__).resolve().parents[1]
FPS = 10


def shared_data() -> Path:
    env = os.environ.get("GATEHOUSE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def still_video(path: Path, seconds: float) -> None:
    import cv2

    photo = sorted((shared_data() / "plates" / "easypr_general_test").glob("*.jpg"))[0]
    frame = cv2.resize(cv2.imread(str(photo)), (640, 480))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for _ in range(int(seconds * FPS)):
        writer.write(frame)
    writer.release()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Quiet:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, observation: Observation) -> None:
        self.count += 1

    def alive(self) -> None:
        return


async def measure(urls: list[str], seconds: float, warm_up_s: float) -> tuple[float, list[dict]]:
    drivers = [
        CameraDriver(
            CameraConfig(id=f"lane-{i}", kind="camera", source=url, plates={}),
            DriverContext(state_dir=tempfile.gettempdir()),
        )
        for i, url in enumerate(urls)
    ]
    tasks = [asyncio.create_task(d.run(Quiet())) for d in drivers]
    await asyncio.sleep(warm_up_s)
    started_cpu, started = cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    used = cpu_s() - started_cpu
    elapsed = time.monotonic() - started
    health = [d.health() for d in drivers]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 100.0 * used / elapsed, health


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--mjpeg", action="store_true", help="use the HTTP MJPEG simulator")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gatehouse-bench-cameras-"))
    video = work / "still.avi"
    still_video(video, args.seconds + args.warm_up + 15)
    servers: list[subprocess.Popen[str]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            port = free_port()
            if args.mjpeg:
                from drivers.camera.mjpeg_sim import make_server

                server = make_server(str(video), port)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                urls.append(f"http://127.0.0.1:{port}/stream.mjpg")
                continue
            process = subprocess.Popen(
                [
                    "/usr/bin/python3",
                    str(REPO / "drivers/camera/rtsp_sim.py"),
                    "--video",
                    str(video),
                    "--port",
                    str(port),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(process)
            assert process.stdout is not None
            if not process.stdout.readline().startswith("ready"):
                print("RTSP simulator did not start; see .ci/apt-packages-vision.txt or use --mjpeg")
                return 1
            urls.append(f"rtsp://127.0.0.1:{port}/lane")
        percent, health = asyncio.run(measure(urls, args.seconds, args.warm_up))
    finally:
        for process in servers:
            process.kill()
            process.wait()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"streams: {'MJPEG' if args.mjpeg else 'RTSP H.264'} 640x480 at {FPS} fps, no motion")
    for item in health:
        print(f"  camera fps {item['fps']} frames {item['frames']} reconnects {item['reconnects']}")
    print(f"cameras: idle_cpu_pct={percent:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
