"""Zone occupancy per camera: parking spaces, keep-clear zones (fire lanes), crowding.

Classical method (no model): a space holds a vehicle when its share of edge pixels is above
the zone's `occupied_edge_density` (asphalt is smooth, a car is not); people are moving blobs
of a person's size from a background subtractor. With `inference.object_detector` (YOLOX-Nano),
a vehicle or person counts in a polygon when the bottom centre of its box is inside.

Time comes from an injected clock, so a test can let ten minutes pass at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.config import OccupancyConfig, ZoneConfig
from models.objects import PERSON, VEHICLES, Detection, ObjectDetector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ZoneState:
    zone: str
    kind: str
    count: int  # vehicles (parking/keep_clear) or people (crowd)
    occupied: int | None = None
    capacity: int | None = None
    vehicle_dwell_s: float | None = None
    spaces: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class ZoneAlert:
    zone: str
    condition: str  # "blocked" or "crowded"
    active: bool
    detail: str
    box: tuple[int, int, int, int] | None = None


@dataclass
class _Dwell:
    since: float | None = None
    alerted: bool = False


def _mask(shape: tuple[int, int], polygon: list[tuple[int, int]]) -> Any:
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.array(polygon, dtype=np.int32)], 1)
    return mask.astype(bool)


def _inside(point: tuple[float, float], polygon: list[tuple[int, int]]) -> bool:
    import cv2

    contour = np.array(polygon, dtype=np.float32)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0


def outside_frame(zones: list[ZoneConfig], shape: tuple[int, int]) -> list[str]:
    """One line per zone or space that reaches beyond a frame of `shape` (height, width):
    only its part inside is watched, and one wholly outside never holds anything (coordinates
    taken from another stream or resolution, most often)."""
    h, w = shape
    lines = []
    for zone in zones:
        named = [(zone.id, zone.polygon)]
        named += [(f"{zone.id} space {n}", space) for n, space in enumerate(zone.spaces, 1)]
        for name, polygon in named:
            xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
            if min(xs) >= 0 and min(ys) >= 0 and max(xs) <= w and max(ys) <= h:
                continue
            where = f"zone {name}: x {min(xs)}..{max(xs)}, y {min(ys)}..{max(ys)}"
            if _mask(shape, polygon).any():
                lines.append(f"{where} reaches beyond the {w}x{h} frame; only its part inside is watched")
            else:
                lines.append(
                    f"{where} is outside the {w}x{h} frame, nothing in it is ever seen; "
                    "were its corners taken from another stream or resolution?"
                )
    return lines


@dataclass
class OccupancyMonitor:
    zones: list[ZoneConfig]
    clock: Callable[[], float]
    config: OccupancyConfig = field(default_factory=OccupancyConfig)
    detector: ObjectDetector | None = None
    warn: Callable[[str], None] = log.warning  # told once per frame size what lies outside it
    _masks: dict[str, list[Any]] = field(default_factory=dict)
    _dwell: dict[str, _Dwell] = field(default_factory=dict)
    _crowded: dict[str, bool] = field(default_factory=dict)
    _subtractor: Any = None
    _shape: tuple[int, int] | None = None

    def _prepare(self, shape: tuple[int, int]) -> None:
        if self._shape == shape:
            return
        self._shape = shape
        self._masks = {
            zone.id: [_mask(shape, space) for space in (zone.spaces or [zone.polygon])] for zone in self.zones
        }
        for line in outside_frame(self.zones, shape):
            self.warn(line)

    def dwelling(self) -> bool:
        """Whether a vehicle is being timed in a keep-clear zone."""
        return any(d.since is not None for d in self._dwell.values())

    def update(self, frame: np.ndarray) -> tuple[list[ZoneState], list[ZoneAlert]]:
        """Look at one frame: each zone's state, and alerts that started or ended."""
        import cv2

        self._prepare(frame.shape[:2])
        now = self.clock()
        detections = self.detector.detect(frame) if self.detector is not None else None
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 60, 160) > 0
        people_mask = None
        if any(zone.kind == "crowd" for zone in self.zones) and detections is None:
            people_mask = self._foreground(frame)
        states: list[ZoneState] = []
        alerts: list[ZoneAlert] = []
        for zone in self.zones:
            if zone.kind == "crowd":
                count = self._people(zone, detections, people_mask)
                states.append(ZoneState(zone.id, zone.kind, count))
                alert = self._crowd(zone, count)
            else:
                spaces = self._spaces(zone, edges, detections)
                occupied = sum(spaces)
                if zone.kind == "parking":
                    states.append(
                        ZoneState(zone.id, zone.kind, occupied, occupied, len(spaces), None, spaces)
                    )
                    continue
                dwell = self._dwell.setdefault(zone.id, _Dwell())
                if occupied and dwell.since is None:
                    dwell.since = now
                seconds = now - dwell.since if occupied and dwell.since is not None else None
                states.append(ZoneState(zone.id, zone.kind, occupied, occupied, len(spaces), seconds, spaces))
                alert = self._blocked(zone, dwell, seconds, occupied > 0)
            if alert is not None:
                alerts.append(alert)
        return states, alerts

    def _spaces(
        self, zone: ZoneConfig, edges: np.ndarray, detections: list[Detection] | None
    ) -> tuple[bool, ...]:
        polygons = zone.spaces or [zone.polygon]
        if detections is not None:
            vehicles = [d for d in detections if d.cls in VEHICLES]
            return tuple(any(_inside(d.foot, p) for d in vehicles) for p in polygons)
        out = []
        for mask in self._masks[zone.id]:
            area = int(mask.sum())
            density = float(edges[mask].sum()) / area if area else 0.0
            out.append(density >= zone.occupied_edge_density)
        return tuple(out)

    def _foreground(self, frame: np.ndarray) -> Any:
        import cv2

        if self._subtractor is None:
            self._subtractor = cv2.createBackgroundSubtractorMOG2(
                history=300, varThreshold=25, detectShadows=False
            )
            # the first frame only starts the background: the subtractor calls all of it foreground
            self._subtractor.apply(frame)
            return np.zeros(frame.shape[:2], dtype=np.uint8)
        mask = self._subtractor.apply(frame)
        return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))

    def _people(self, zone: ZoneConfig, detections: list[Detection] | None, foreground: Any) -> int:
        import cv2

        if detections is not None:
            return sum(1 for d in detections if d.cls == PERSON and _inside(d.foot, zone.polygon))
        mask = self._masks[zone.id][0]
        blobs = (foreground > 0) & mask
        _, _, stats, _ = cv2.connectedComponentsWithStats(blobs.astype(np.uint8))
        return int((stats[1:, cv2.CC_STAT_AREA] >= self.config.min_person_area_px).sum())

    def _blocked(
        self, zone: ZoneConfig, dwell: _Dwell, seconds: float | None, present: bool
    ) -> ZoneAlert | None:
        if present and seconds is not None and seconds >= zone.max_dwell_s and not dwell.alerted:
            dwell.alerted = True
            minutes = seconds / 60
            return ZoneAlert(
                zone.id, "blocked", True, f"vehicle in {zone.id} for {minutes:.0f} min", _bbox(zone)
            )
        if not present:
            was = dwell.alerted
            dwell.since, dwell.alerted = None, False
            if was:
                return ZoneAlert(zone.id, "blocked", False, f"{zone.id} clear again", _bbox(zone))
        return None

    def _crowd(self, zone: ZoneConfig, count: int) -> ZoneAlert | None:
        was = self._crowded.get(zone.id, False)
        now = count >= zone.max_people
        if now == was:
            return None
        self._crowded[zone.id] = now
        detail = f"{count} people in {zone.id}" if now else f"{zone.id} back to {count} people"
        return ZoneAlert(zone.id, "crowded", now, detail, _bbox(zone))


def _bbox(zone: ZoneConfig) -> tuple[int, int, int, int]:
    xs = [p[0] for p in zone.polygon]
    ys = [p[1] for p in zone.polygon]
    return min(xs), min(ys), max(xs), max(ys)
