"""Frame analysis on a video made from real plate photos: one plate event per vehicle pass
(voting across frames), and no inference at all while nothing moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from camera_scenes import FakeClock, paste, road

from drivers.base import PlateRead
from drivers.camera.analysis import FrameAnalyser
from drivers.camera.config import CameraConfig
from models.config import InferenceConfig, ModelFileConfig
from models.plates.pipeline import PlatePipeline
from tests.support.shared_data import HYPERLPR_SHA256, shared_data

pytestmark = pytest.mark.camera

FPS = 10
VEHICLES = [
    ("easypr_general_test/easypr_general_test_0004.jpg", "京PC5U22"),
    ("easypr_general_test/easypr_general_test_0060.jpg", "浙A12210"),
]


@pytest.fixture(scope="module")
def pipeline(shared: Path) -> PlatePipeline:
    detector = shared / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    return PlatePipeline(
        InferenceConfig(threads=2, plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_SHA256))
    )


def make_video(path: Path, photo, seconds_between: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    """Each vehicle drives in from the right over 8 frames and stops briefly; the road is
    empty for a while between vehicles."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    empty = road()
    for _ in range(int(seconds_between * FPS)):
        writer.write(empty)
    for name, _ in VEHICLES:
        car = photo(name)
        for step in range(8):
            writer.write(paste(empty, car, 200 - step * 20, 0, 440))
        for _ in range(int(seconds_between * FPS)):
            writer.write(empty)
    writer.release()


def frames(path: Path):  # type: ignore[no-untyped-def]
    import cv2

    capture = cv2.VideoCapture(str(path))
    while True:
        ok, image = capture.read()
        if not ok:
            break
        yield image
    capture.release()


def analyser(pipeline: PlatePipeline, clock: FakeClock, **plates: object) -> FrameAnalyser:
    config = CameraConfig(id="lane-in", kind="camera", source="unused.avi", plates=plates)
    return FrameAnalyser(config, clock, pipeline=pipeline)


def test_one_event_per_vehicle_pass(tmp_path: Path, photo, pipeline: PlatePipeline, clock) -> None:  # type: ignore[no-untyped-def]
    video = tmp_path / "lane.avi"
    make_video(video, photo)
    lane = analyser(pipeline, clock, direction="in", pass_gap_s=1.5)
    reads = []
    for image in frames(video):
        reads += [o for o in lane.analyse(image) if isinstance(o, PlateRead)]
        clock.advance(1 / FPS)
    reads += [o for o in lane.flush() if isinstance(o, PlateRead)]
    assert [r.plate for r in reads] == [plate for _, plate in VEHICLES]
    for read in reads:
        assert read.frames > 1, "several frames of the pass voted"
        assert read.direction == "in"
        assert read.crop_jpeg is not None and read.crop_jpeg[:2] == b"\xff\xd8"
        assert 0 < read.confidence <= 1


def test_static_stream_runs_no_inference(pipeline: PlatePipeline, photo, clock) -> None:  # type: ignore[no-untyped-def]
    scene = paste(road(), photo(VEHICLES[0][0]), 100, 0, 440)  # a parked car, not moving
    lane = analyser(pipeline, clock)
    detector_calls = pipeline.detector.calls
    recogniser_calls = pipeline.recogniser.calls
    out = []
    for _ in range(100):
        out += lane.analyse(scene)
        clock.advance(1 / FPS)
    assert lane.analysed == 100
    assert pipeline.detector.calls == detector_calls
    assert pipeline.recogniser.calls == recogniser_calls
    assert not [o for o in out if isinstance(o, PlateRead)]


def test_motion_starts_inference(pipeline: PlatePipeline, photo, clock) -> None:  # type: ignore[no-untyped-def]
    lane = analyser(pipeline, clock)
    empty = road()
    lane.analyse(empty)
    calls = pipeline.detector.calls
    lane.analyse(paste(empty, photo(VEHICLES[0][0]), 100, 0, 440))
    assert pipeline.detector.calls == calls + 1
    assert np.any(lane.motion.changed_fraction > 0)


def test_a_pass_ends_on_time_when_the_stream_stops_in_the_middle_of_it(tmp_path: Path, photo) -> None:  # type: ignore[no-untyped-def]
    """A camera that drops while a car is in view must not hold back the car's plate (and the
    lane's decision) until the stream is back: the pass ends after its gap, frames or not."""
    import asyncio
    import contextlib
    import time

    import cv2

    from drivers.base import DriverContext
    from drivers.camera.device import CameraDriver

    video = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    empty, car = road(), photo(VEHICLES[0][0])
    for _ in range(FPS):
        writer.write(empty)
    for step in range(8):  # the stream ends with the car still driving in
        writer.write(paste(empty, car, 200 - step * 20, 0, 440))
    writer.release()
    config = CameraConfig(
        id="lane-in",
        kind="camera",
        source=str(video),
        plates={"pass_gap_s": 1.0},
        reconnect_initial_s=120,
        reconnect_max_s=120,
    )
    detector = shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    inference = InferenceConfig(
        threads=2, plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_SHA256)
    )
    driver = CameraDriver(config, DriverContext(state_dir=str(tmp_path), inference=inference))
    seen: list[object] = []

    class Emit:
        def __call__(self, observation: object) -> None:
            seen.append(observation)

        def alive(self) -> None:
            return

    async def scenario() -> list[str]:
        task = asyncio.create_task(driver.run(Emit()))
        deadline = time.monotonic() + 30
        while not any(isinstance(o, PlateRead) for o in seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        read_while_running = [o.plate for o in seen if isinstance(o, PlateRead)]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return read_while_running

    assert asyncio.run(scenario()) == [VEHICLES[0][1]], "not held until the stream comes back (120 s)"
