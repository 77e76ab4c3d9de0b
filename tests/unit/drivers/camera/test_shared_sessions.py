"""Cameras built from one configuration share the heavy ONNX Runtime sessions (one per model
file, sha256 and thread count in the process) and keep their own pre- and post-processing;
plates read by two cameras at once are those one camera reads alone."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from camera_scenes import FakeClock

from drivers.camera.analysis import FrameAnalyser
from drivers.camera.config import CameraConfig
from models import runtime
from models.config import InferenceConfig, ModelFileConfig, ZoneConfig
from models.manifest import ModelSpec
from models.plates.pipeline import PlatePipeline
from tests.support.shared_data import HYPERLPR_SHA256, shared_data

pytestmark = pytest.mark.camera

YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
SCENES = [
    "easypr_general_test/easypr_general_test_0004.jpg",
    "easypr_general_test/easypr_general_test_0008.jpg",
    "easypr_general_test/easypr_general_test_0060.jpg",
    "easypr_general_test/easypr_general_test_0088.jpg",
    "ccpd_hukai97/ccpd_hukai97_0005.jpg",
    "openalpr_us/openalpr_us_0015.jpg",
]
CROPS = [
    "lprnet_sirius_crops/lprnet_sirius_crops_0000.jpg",
    "lprnet_sirius_crops/lprnet_sirius_crops_0184.jpg",
]


def recommended(threads: int = 2, detector: Path | None = None) -> InferenceConfig:
    detector = detector or shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    return InferenceConfig(
        threads=threads, plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_SHA256)
    )


def lane(number: int, inference: InferenceConfig, clock: FakeClock) -> FrameAnalyser:
    config = CameraConfig(id=f"lane-{number}", kind="camera", source="unused.avi", plates={})
    return FrameAnalyser(config, clock, inference)


def plates(analyser: FrameAnalyser) -> PlatePipeline:
    assert analyser.pipeline is not None
    return analyser.pipeline


def sessions(analyser: FrameAnalyser) -> tuple[Any, Any]:
    """The detector's and the recogniser's session of a lane camera."""
    factory = plates(analyser).factory
    return factory.session(plates(analyser).detector.spec), factory.session(plates(analyser).recogniser.spec)


def test_lane_cameras_from_one_configuration_share_one_session_per_model(clock: FakeClock) -> None:
    inference = recommended()
    first, second = lane(1, inference, clock), lane(2, inference, clock)
    detector, recogniser = sessions(first)
    assert detector is not recogniser
    for a, b in zip(sessions(second), (detector, recogniser), strict=True):
        assert a is b
    # what holds a camera's state stays the camera's own
    assert plates(first).recogniser is not plates(second).recogniser
    assert plates(first).detector is not plates(second).detector
    assert first.voter is not second.voter and first.motion is not second.motion


def test_other_threads_or_another_detector_file_get_their_own_sessions(
    clock: FakeClock, tmp_path: Path
) -> None:
    detector, recogniser = sessions(lane(1, recommended(threads=2), clock))
    one_thread = sessions(lane(2, recommended(threads=1), clock))
    assert one_thread[0] is not detector and one_thread[1] is not recogniser
    copy = tmp_path / "y5fu_320x_sim.onnx"
    shutil.copyfile(shared_data() / "models" / "hyperlpr3-detector" / copy.name, copy)
    elsewhere = sessions(lane(3, recommended(threads=2, detector=copy), clock))
    assert elsewhere[0] is not detector
    assert elsewhere[1] is recogniser


def test_yard_cameras_share_the_object_detector(clock: FakeClock) -> None:
    yolox = shared_data() / "models" / "yolox-nano" / "yolox_nano.onnx"
    inference = InferenceConfig(
        threads=2, object_detector=ModelFileConfig(path=str(yolox), sha256=YOLOX_SHA256)
    )
    zone = ZoneConfig(id="bay", kind="parking", polygon=[(0, 0), (640, 0), (640, 480), (0, 480)])
    found = []
    for number in (1, 2):
        config = CameraConfig(id=f"yard-{number}", kind="camera", source="unused.avi", zones=[zone])
        occupancy = FrameAnalyser(config, clock, inference).occupancy
        assert occupancy is not None and occupancy.detector is not None
        found.append(occupancy.detector.factory.session(occupancy.detector.spec))
    assert found[0] is found[1]


def test_cameras_starting_at_once_build_each_session_once(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setattr(runtime, "SESSIONS", runtime.SessionPool())
    builds: list[str] = []
    load = runtime.load_session

    def slow_load(spec: ModelSpec, threads: int) -> Any:
        builds.append(spec.name)
        time.sleep(0.2)  # the other cameras ask meanwhile
        return load(spec, threads)

    monkeypatch.setattr(runtime, "load_session", slow_load)
    inference = recommended()
    start = threading.Barrier(4)

    def camera(number: int) -> FrameAnalyser:  # as the camera driver starts one
        start.wait(timeout=10)
        analyser = lane(number, inference, clock)
        plates(analyser).warm_up()
        return analyser

    with ThreadPoolExecutor(4) as pool:
        cameras = [f.result(timeout=60) for f in [pool.submit(camera, n) for n in range(4)]]
    assert sorted(builds) == ["plate_detector", "ppocr_rec"]
    first = sessions(cameras[0])
    for other in cameras[1:]:
        assert all(a is b for a, b in zip(sessions(other), first, strict=True))


def summary(pipeline: PlatePipeline, name: str, image: np.ndarray) -> list[tuple[Any, ...]]:
    if name in CROPS:
        found = pipeline.read_crop(image)
        results = [found] if found is not None else []
    else:
        results = pipeline.read(image)
    return [(r.plate, r.confidence, r.colour, r.box, r.raw) for r in results]


def test_two_cameras_reading_at_once_read_what_one_reads_alone(photo, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    inference = recommended()
    first, second = lane(1, inference, clock), lane(2, inference, clock)
    images = {name: photo(name) for name in SCENES + CROPS}
    alone = {name: summary(plates(first), name, image) for name, image in images.items()}
    assert [alone[name][0][0] for name in SCENES[:3]] == ["京PC5U22", "川A09X20", "浙A12210"]
    start = threading.Barrier(2)

    def read(analyser: FrameAnalyser, order: list[str]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        start.wait(timeout=10)
        return [(name, summary(plates(analyser), name, images[name])) for name in order * 3]

    names = list(images)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(read, first, names), pool.submit(read, second, names[::-1])]
        together = [item for run in runs for item in run.result(timeout=120)]
    assert len(together) == 2 * 3 * len(names)
    for name, found in together:
        assert found == alone[name], name
