"""A camera stuck inside OpenCV (an RTSP server that accepts and never answers, an MJPEG stream
that stalls) must not hold up stopping the driver: the stuck thread is left to end by itself,
reports and keeps nothing after stop, and restarts never pile up more than one of them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from camera_peers import StallingMjpegCamera, StuckCamera

from drivers.base import Availability, DriverContext, Observation
from drivers.camera.config import CameraConfig
from drivers.camera.device import CameraDriver
from drivers.camera.grabber import Grabber

pytestmark = pytest.mark.camera

HANG_GUARD_S = 3.0
"""Only keeps a stop that waits for OpenCV from hanging the run; it measures nothing."""
OPENCV_TIMEOUT_S = 30.0
"""Longer than any test: a thread inside OpenCV leaves only when the peer lets it go."""


class Collector:
    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def __call__(self, observation: Observation) -> None:
        self.seen.append(observation)

    def alive(self) -> None:
        return

    def availability(self) -> list[Availability]:
        return [o for o in self.seen if isinstance(o, Availability)]


async def until(condition: Callable[[], object], what: str, timeout_s: float = 10) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


async def stop_grabber(grabber: Grabber) -> bool:
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            return await asyncio.to_thread(grabber.stop)
    except TimeoutError:
        pytest.fail(f"Grabber.stop() waited for OpenCV (still running after {HANG_GUARD_S:g} s)")


async def cancel_driver(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            await task
    except asyncio.CancelledError:
        return
    except TimeoutError:
        pytest.fail(f"the camera driver waited for OpenCV (still stopping after {HANG_GUARD_S:g} s)")


def grab_threads(url: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"grab {url}" and t.is_alive()]


@pytest.fixture
def stuck_camera() -> Iterator[StuckCamera]:
    camera = StuckCamera()
    yield camera
    camera.close()


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions raised in threads (a late report into a closed event loop would show here)."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def reporting_grabber(url: str) -> tuple[Grabber, list[tuple[bool, str]]]:
    """A started grabber on `url` with OpenCV's short test timeouts, and what it reports."""
    reports: list[tuple[bool, str]] = []
    grabber = Grabber(
        url,
        lambda online, reason: reports.append((online, reason)),
        open_timeout_s=OPENCV_TIMEOUT_S,
        read_timeout_s=OPENCV_TIMEOUT_S,
    )
    grabber.start()
    return grabber, reports


def test_stop_does_not_wait_for_a_stuck_open(
    stuck_camera: StuckCamera, thread_errors: list[BaseException | None]
) -> None:
    asyncio.run(stuck_open_scenario(stuck_camera))
    assert thread_errors == []


async def stuck_open_scenario(stuck_camera: StuckCamera) -> None:
    grabber, reports = reporting_grabber(stuck_camera.url)
    try:
        await until(lambda: stuck_camera.accepted == 1, "the grabber to connect (it waits in open now)")
        assert await stop_grabber(grabber) is False, "the thread cannot have left OpenCV's open"
        assert len(grab_threads(stuck_camera.url)) == 1
    finally:
        stuck_camera.release()  # the open fails now
    await until(lambda: not grab_threads(stuck_camera.url), "the left-behind thread to end")
    assert reports == [], "the open that failed after stop was reported"


def test_a_read_that_returns_after_stop_keeps_nothing_and_releases_the_stream(
    thread_errors: list[BaseException | None],
) -> None:
    camera = StallingMjpegCamera(first=3)
    try:
        asyncio.run(stuck_read_scenario(camera))
    finally:
        camera.close()
    assert thread_errors == []


async def stuck_read_scenario(camera: StallingMjpegCamera) -> None:
    grabber, reports = reporting_grabber(camera.url)
    try:
        await until(lambda: grabber.frames == 3 and grabber.in_opencv == "read", "3 frames, then a read")
        assert await stop_grabber(grabber) is False, "the thread cannot have left OpenCV's read"
    finally:
        camera.resume()  # the read left behind returns a frame now
    await until(camera.hung_up.is_set, "the left-behind thread to release the stream")
    await until(lambda: not grab_threads(camera.url), "the left-behind thread to end")
    frame = grabber.latest()
    assert grabber.frames == 3 and frame is not None and frame.seq == 3, "a frame was kept after stop"
    assert reports == [(True, "frames arriving")]


def test_restarts_keep_at_most_one_thread_stuck_in_open(
    stuck_camera: StuckCamera, tmp_path: Path, thread_errors: list[BaseException | None]
) -> None:
    asyncio.run(restart_scenario(stuck_camera, tmp_path))
    assert thread_errors == []


async def restart_scenario(stuck_camera: StuckCamera, tmp_path: Path) -> None:
    config = CameraConfig(
        id="stuck-cam",
        kind="camera",
        source=stuck_camera.url,
        open_timeout_s=OPENCV_TIMEOUT_S,
        read_timeout_s=OPENCV_TIMEOUT_S,
        reconnect_initial_s=0.1,
    )
    driver = CameraDriver(config, DriverContext(state_dir=str(tmp_path)))
    runs: list[Collector] = []
    try:
        for attempt in range(5):  # as the supervisor restarts it, or systemd stops and starts it
            emit = Collector()
            runs.append(emit)
            task = asyncio.create_task(driver.run(emit))
            if attempt == 0:
                await until(lambda: stuck_camera.accepted == 1, "the camera to be connected")
            else:
                await until(lambda e=emit: e.availability(), "the camera reported offline")
                [offline] = emit.availability()
                assert not offline.online and "still stuck" in offline.reason, offline
            await cancel_driver(task)
            assert len(grab_threads(stuck_camera.url)) == 1
        assert stuck_camera.accepted == 1, "a new connection was opened beside the stuck one"
        seen = [len(emit.seen) for emit in runs]
    finally:
        stuck_camera.release()
    await until(lambda: not grab_threads(stuck_camera.url), "the stuck thread to end")
    assert [len(emit.seen) for emit in runs] == seen, "something was emitted after stop"

    emit = Collector()  # once the stuck open has given up, the camera is opened again
    task = asyncio.create_task(driver.run(emit))
    try:
        await until(lambda: stuck_camera.accepted == 2, "a new connection")
    finally:
        await cancel_driver(task)
        stuck_camera.release()
    await until(lambda: not grab_threads(stuck_camera.url), "the second thread to end")
