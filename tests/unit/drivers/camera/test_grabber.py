"""The grabber on a file source: looping, and a file damaged while it is being played."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from drivers.camera.grabber import Grabber


def write_video(path: Path, frames: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for i in range(frames):
        writer.write(np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def test_a_looping_file_truncated_while_playing_is_a_failed_stream(tmp_path: Path) -> None:
    path = tmp_path / "lane.avi"
    write_video(path, 10)
    reports: list[tuple[bool, str]] = []
    grabber = Grabber(
        str(path), lambda online, reason: reports.append((online, reason)), loop=True, initial_s=0.1
    )
    grabber.start()
    try:
        wait_until(lambda: grabber.frames > 20, "the file to play more than once")
        assert reports == [(True, "frames arriving")]
        path.write_bytes(b"")
        wait_until(lambda: len(reports) > 1, "the camera reported offline")
        assert reports[1][0] is False
        wait_until(lambda: grabber.reconnects >= 2, "reopening with backoff")
        assert grabber.online is False
    finally:
        grabber.stop()
