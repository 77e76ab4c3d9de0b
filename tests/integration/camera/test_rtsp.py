"""The camera driver against real stream servers: RTSP through gst-rtsp-server (killed and
restarted: the camera reconnects), and the HTTP MJPEG fallback."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from camera_peers import RtspServer, free_port

from drivers.base import Availability, DriverContext, Health, Observation
from drivers.camera.config import CameraConfig
from drivers.camera.device import CameraDriver
from drivers.camera.grabber import Grabber

pytestmark = pytest.mark.camera


class Collector:
    def __init__(self) -> None:
        self.seen: list[Observation] = []
        self.alive_calls = 0

    def __call__(self, observation: Observation) -> None:
        self.seen.append(observation)

    def alive(self) -> None:
        self.alive_calls += 1

    def availability(self) -> list[bool]:
        return [o.online for o in self.seen if isinstance(o, Availability)]


async def until(condition, what: str, timeout_s: float = 20) -> None:  # type: ignore[no-untyped-def]
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def camera(url: str, tmp_path: Path) -> CameraDriver:
    config = CameraConfig(
        id="lane-in",
        kind="camera",
        source=url,
        open_timeout_s=2,
        read_timeout_s=2,
        reconnect_initial_s=0.2,
        reconnect_max_s=1,
        health_interval_s=0.5,
    )
    return CameraDriver(config, DriverContext(state_dir=str(tmp_path)))


def test_camera_reconnects_after_rtsp_server_restart(rtsp_server: RtspServer, tmp_path: Path) -> None:
    asyncio.run(reconnect_scenario(rtsp_server, tmp_path))


async def reconnect_scenario(rtsp_server: RtspServer, tmp_path: Path) -> None:
    driver = camera(rtsp_server.url, tmp_path)
    emit = Collector()
    task = asyncio.create_task(driver.run(emit))
    try:
        await until(lambda: emit.availability() == [True], "the camera to come online")
        await until(lambda: driver.grabber is not None and driver.grabber.frames > 5, "frames")
        snapshot = driver.snapshot(tmp_path / "snap.jpg")
        assert snapshot.read_bytes()[:2] == b"\xff\xd8"

        rtsp_server.kill()
        await until(lambda: emit.availability() == [True, False], "the camera to go offline")
        offline = [o for o in emit.seen if isinstance(o, Availability)][-1]
        assert "lane" in offline.reason

        rtsp_server.start()
        await until(lambda: emit.availability() == [True, False, True], "the camera to return")
        await until(lambda: any(isinstance(o, Health) for o in emit.seen), "a health report")
        health = [o for o in emit.seen if isinstance(o, Health)][-1].metrics
        assert health["reconnects"] >= 1
        assert emit.alive_calls > 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_grabber_reads_the_mjpeg_fallback(plate_video: Path) -> None:
    from drivers.camera.mjpeg_sim import make_server

    server = make_server(str(plate_video), free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    changes: list[bool] = []
    arrived = threading.Event()
    grabber = Grabber(
        f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg",
        lambda online, _: (changes.append(online), arrived.set()),
        open_timeout_s=3,
        read_timeout_s=3,
    )
    grabber.start()
    try:
        assert arrived.wait(15), "no frame from the MJPEG stream"
        assert changes == [True]
        frame = grabber.latest()
        assert frame is not None and frame.image.shape[:2] == (360, 480)
    finally:
        grabber.stop()
        server.shutdown()
        server.server_close()


def test_file_source_loops(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    short = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for shade in range(5):
        writer.write(np.full((48, 64, 3), 40 * shade, dtype=np.uint8))
    writer.release()
    grabber = Grabber(str(short), lambda *_: None, loop=True)
    assert grabber.is_file
    grabber.start()
    try:
        for _ in range(200):
            if grabber.frames > 12:
                break
            threading.Event().wait(0.05)
        assert grabber.frames > 12, "a 5-frame file played past its end"
        assert grabber.online
    finally:
        grabber.stop()
