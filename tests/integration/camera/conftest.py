"""Fixtures for the camera integration tests: a video made from the real plate photos, and
the RTSP simulator serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from camera_peers import RtspServer, free_port

from tests.support.shared_data import shared_data


@pytest.fixture(scope="session")
def plate_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s at 10 fps: real gate photos, each held for 3 s."""
    import cv2

    photos = sorted((shared_data() / "plates" / "easypr_general_test").glob("*.jpg"))[:10]
    path = tmp_path_factory.mktemp("video") / "lane.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 360))
    for photo in photos:
        frame = cv2.resize(cv2.imread(str(photo)), (480, 360))
        for _ in range(30):
            writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def rtsp_server(plate_video: Path) -> Iterator[RtspServer]:
    server = RtspServer(plate_video, free_port())
    server.start()
    yield server
    server.kill()
