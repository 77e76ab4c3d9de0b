"""Zone logic with the classical method (no detector model): parking spaces, a fire lane held
by a vehicle for longer than allowed (ten minutes pass on an injected clock), and a crowd at
the gate."""

from __future__ import annotations

import numpy as np
import pytest
from camera_scenes import FakeClock, paste, road
from pydantic import ValidationError

from drivers.base import ZoneCondition, ZoneSample
from drivers.camera.analysis import FrameAnalyser
from drivers.camera.config import CameraConfig
from models.config import InferenceConfig, ModelFileConfig, ZoneConfig
from models.occupancy import OccupancyMonitor

CAR = "easypr_general_test/easypr_general_test_0004.jpg"


def parking() -> ZoneConfig:
    return ZoneConfig(
        id="bays",
        kind="parking",
        polygon=[(0, 240), (640, 240), (640, 480), (0, 480)],
        spaces=[
            [(0, 240), (210, 240), (210, 480), (0, 480)],
            [(215, 240), (425, 240), (425, 480), (215, 480)],
            [(430, 240), (640, 240), (640, 480), (430, 480)],
        ],
    )


def test_parking_spaces(photo, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    monitor = OccupancyMonitor([parking()], clock)
    frame = paste(road(), photo(CAR), 220, 250, 200)  # a car in the middle space
    states, alerts = monitor.update(frame)
    assert alerts == []
    assert states[0].spaces == (False, True, False)
    assert (states[0].occupied, states[0].capacity) == (1, 3)


FIRE_LANE = ZoneConfig(
    id="fire-lane",
    kind="keep_clear",
    polygon=[(0, 0), (640, 0), (640, 480), (0, 480)],
    max_dwell_s=600,
    occupied_edge_density=0.015,
)
"""A yard camera's fire lane over the whole frame: ten minutes of a parked car block it."""


def test_fire_lane_blocked_after_ten_minutes(photo, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    config = CameraConfig(id="yard", kind="camera", source="0", zones=[FIRE_LANE])
    from tests.support.shared_data import HYPERLPR_SHA256, shared_data

    detector = shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    inference = InferenceConfig(
        threads=2, plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_SHA256)
    )
    yard = FrameAnalyser(config, clock, inference=inference)
    parked = paste(road(), photo(CAR), 100, 0, 440)
    conditions: list[ZoneCondition] = []
    samples: list[ZoneSample] = []
    for _ in range(11):  # a frame a minute for ten minutes
        for o in yard.analyse(parked):
            (conditions if isinstance(o, ZoneCondition) else samples).append(o)  # type: ignore[arg-type]
        clock.advance(60)
    assert len(conditions) == 1
    blocked = conditions[0]
    assert (blocked.zone, blocked.condition, blocked.active) == ("fire-lane", "blocked", True)
    assert blocked.plate == "京PC5U22"
    assert blocked.crop_jpeg is not None and blocked.crop_jpeg[:2] == b"\xff\xd8"
    assert samples[-1].vehicle_dwell_s is not None and samples[-1].vehicle_dwell_s >= 540
    cleared = [o for o in yard.analyse(road()) if isinstance(o, ZoneCondition)]
    assert [(c.condition, c.active) for c in cleared] == [("blocked", False)]


def test_a_plate_model_that_cannot_load_costs_the_plate_not_the_fire_lane_alert(  # type: ignore[no-untyped-def]
    photo, clock: FakeClock, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A yard camera makes its plate reader at the first block; a missing model then must not
    crash the analysis (a restart would start the dwell again and the alert would never come)."""
    config = CameraConfig(id="yard", kind="camera", source="0", zones=[FIRE_LANE])

    missing = ModelFileConfig(path=str(tmp_path / "y5fu_320x_sim.onnx"), sha256="0" * 64)
    yard = FrameAnalyser(config, clock, inference=InferenceConfig(threads=1, plate_detector=missing))
    parked = paste(road(), photo(CAR), 100, 0, 440)
    conditions: list[ZoneCondition] = []
    with caplog.at_level("ERROR", logger="drivers.camera.analysis"):
        for _ in range(11):
            conditions += [o for o in yard.analyse(parked) if isinstance(o, ZoneCondition)]
            clock.advance(60)
    assert [(c.condition, c.active, c.plate) for c in conditions] == [("blocked", True, None)]
    assert conditions[0].crop_jpeg is not None
    assert "camera yard: the blocked zone's alert goes without a plate" in caplog.text
    assert "y5fu_320x_sim.onnx" in caplog.text


def test_short_stop_in_fire_lane_is_fine(photo, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    lane = ZoneConfig(id="fire-lane", kind="keep_clear", polygon=[(0, 0), (640, 0), (640, 480), (0, 480)])
    monitor = OccupancyMonitor([lane], clock)
    parked = paste(road(), photo(CAR), 100, 0, 440)
    monitor.update(parked)
    clock.advance(300)
    monitor.update(parked)
    clock.advance(10)
    monitor.update(road())  # gone after five minutes
    clock.advance(400)
    _, alerts = monitor.update(parked)  # a new stop starts a new timer
    assert alerts == []


def test_crowd_at_the_gate(clock: FakeClock) -> None:
    gate = ZoneConfig(
        id="gate",
        kind="crowd",
        polygon=[(0, 0), (640, 0), (640, 480), (0, 480)],
        max_people=4,
    )
    monitor = OccupancyMonitor([gate], clock)
    empty = road()
    for _ in range(30):
        monitor.update(empty)
    alerts = []
    counts = []
    for step in range(6):
        frame = empty.copy()
        for person in range(5):
            x = 40 + person * 120 + step * 3
            frame[200:300, x : x + 40] = (20 + person * 10, 30, 160)
        states, new = monitor.update(frame)
        counts.append(states[0].count)
        alerts += new
        clock.advance(1)
    assert counts[0] == 5
    assert [(a.condition, a.active) for a in alerts] == [("crowded", True)]
    assert np.all(np.array(counts) >= 4)


def test_the_first_frame_a_crowd_zone_sees_counts_nobody(clock: FakeClock) -> None:
    """Without a model people are what moves against the learned background; the first frame
    has no background yet (the subtractor calls all of it foreground), so it counts nobody
    rather than the whole zone as one person: the first occupancy.sample after a start, and
    `gatehouse camera zones`, said 1."""
    gate = ZoneConfig(id="gate", kind="crowd", polygon=[(0, 0), (640, 0), (640, 480), (0, 480)])
    monitor = OccupancyMonitor([gate], clock)
    states, _ = monitor.update(road())
    assert states[0].count == 0


@pytest.mark.parametrize(
    ("polygon", "spaces", "message"),
    [
        # corners in reading order instead of around: two triangles, not the zone
        (
            [(0, 240), (640, 240), (0, 480), (640, 480)],
            [],
            r"polygon\n.*edges .* cross; list the corners in order",
        ),
        # on one line: the mask is a line of pixels, and edges along it read as a vehicle
        ([(0, 0), (100, 100), (200, 200)], [], r"polygon\n.*enclose no area"),
        # a space of two corners passed the configuration check and crashed OpenCV's fillPoly
        ([(0, 240), (640, 240), (640, 480), (0, 480)], [[(0, 240), (300, 240)]], r"space 1: .*3 or more"),
        ([(0, 240), (640, 240), (640, 480), (0, 480)], [[]], r"space 1: .*3 or more corners"),
    ],
    ids=["crossing", "collinear", "two-corner-space", "empty-space"],
)
def test_a_polygon_that_is_no_zone_is_refused_by_the_configuration(
    polygon: list[tuple[int, int]], spaces: list[list[tuple[int, int]]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ZoneConfig(id="z", kind="parking", polygon=polygon, spaces=spaces)


def test_two_zones_with_one_id_on_a_camera_are_refused() -> None:
    """Occupancy keeps masks and dwell times by zone id: a parking zone of two spaces showed
    "0/1" when a second zone reused its id."""
    square = [(0, 0), (100, 0), (100, 100), (0, 100)]
    zones = [
        {"id": "bays", "kind": "parking", "polygon": square},
        {"id": "bays", "kind": "keep_clear", "polygon": square},
    ]
    with pytest.raises(
        ValidationError, match="zone ids must be unique on a camera; used more than once: bays"
    ):
        CameraConfig(kind="camera", id="yard", source="0", zones=zones)


def test_concave_and_explicitly_closed_polygons_are_zones() -> None:
    ZoneConfig(id="l", kind="keep_clear", polygon=[(0, 0), (10, 0), (10, 10), (5, 3), (0, 10)])
    ZoneConfig(id="closed", kind="keep_clear", polygon=[(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)])


def test_a_zone_outside_the_frame_is_logged_once(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    # drawn on the 1280x720 main stream, watched on the 640x480 substream: always "free" before
    lane = ZoneConfig(
        id="fire-lane", kind="keep_clear", polygon=[(700, 500), (1200, 500), (1200, 700), (700, 700)]
    )
    edge = ZoneConfig(id="edge", kind="parking", polygon=[(600, 0), (700, 0), (700, 100), (600, 100)])
    whole = ZoneConfig(id="whole", kind="parking", polygon=[(0, 0), (640, 0), (640, 480), (0, 480)])
    monitor = OccupancyMonitor([lane, edge, whole], clock)
    with caplog.at_level("WARNING", logger="models.occupancy"):
        monitor.update(road())
        monitor.update(road())
    assert [r.getMessage() for r in caplog.records] == [
        "zone fire-lane: x 700..1200, y 500..700 is outside the 640x480 frame, nothing in it is ever seen; "
        "were its corners taken from another stream or resolution?",
        "zone edge: x 600..700, y 0..100 reaches beyond the 640x480 frame; only its part inside is watched",
    ]


def test_the_gateway_log_names_the_camera_of_a_zone_outside_its_frame(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Zone ids are unique per camera only: two yard cameras may each have a `bays`, so the
    warning must say which camera's zone lies outside its frame."""
    bays = ZoneConfig(id="bays", kind="parking", polygon=[(700, 500), (1200, 500), (1200, 700), (700, 700)])
    yard = FrameAnalyser(CameraConfig(id="yard-east", kind="camera", source="0", zones=[bays]), clock)
    with caplog.at_level("WARNING"):
        yard.analyse(road())
    assert [r.getMessage() for r in caplog.records] == [
        "camera yard-east: zone bays: x 700..1200, y 500..700 is outside the 640x480 frame, nothing in "
        "it is ever seen; were its corners taken from another stream or resolution?"
    ]
