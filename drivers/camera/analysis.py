"""What the camera driver does with each frame it looks at, without threads or I/O, so tests
can feed frames and a clock directly: motion gate → tamper → plates (lane cameras) →
occupancy (zones). Returns observations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from drivers.base import Observation, PlateRead, Tamper, ZoneCondition, ZoneSample
from drivers.camera.config import CameraConfig
from drivers.camera.tamper import TamperDetector
from edge.errors import ModelError
from models.config import InferenceConfig
from models.motion import MotionGate, small_grey
from models.occupancy import OccupancyMonitor, ZoneAlert
from models.plates.pipeline import PlatePipeline, Region
from models.plates.voting import PassVoter

log = logging.getLogger(__name__)

JPEG_QUALITY = 85


def jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return bytes(data) if ok else b""


class FrameAnalyser:
    def __init__(
        self,
        config: CameraConfig,
        clock: Callable[[], float],
        inference: InferenceConfig | None = None,
        home_province: str | None = None,
        pipeline: PlatePipeline | None = None,
        occupancy: OccupancyMonitor | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.device = config.id
        self.inference = inference
        self.home_province = home_province
        self.motion = MotionGate(min_changed_fraction=config.motion_threshold)
        self.tamper = TamperDetector(config.tamper, clock) if config.tamper.enabled else None
        lane = config.plates
        self.pipeline: PlatePipeline | None = None
        self.voter: PassVoter | None = None
        self.region: Region | None = None
        if lane is not None and lane.enabled:
            self.pipeline = pipeline or PlatePipeline(inference, home_province)
            self.voter = PassVoter(clock, lane.pass_gap_s, lane.min_frames)
            self.region = Region(*lane.region) if lane.region else None
        self.occupancy: OccupancyMonitor | None = None
        if config.zones:
            self.occupancy = occupancy or OccupancyMonitor(
                list(config.zones), clock, config.occupancy, _object_detector(inference), self._warn
            )
        self._last_sample: float | None = None
        self._zones_dirty = True
        self.moving = False
        self.analysed = 0

    def warm_up(self) -> None:
        """Load (and verify) every model this camera uses now rather than at the first frame
        that needs it; raises ModelError naming a missing or wrong one."""
        if self.pipeline is not None:
            self.pipeline.warm_up()
        if self.occupancy is not None and self.occupancy.detector is not None:
            self.occupancy.detector.warm_up()

    def _warn(self, line: str) -> None:
        log.warning("camera %s: %s", self.device, line)

    def analyse(self, image: np.ndarray) -> list[Observation]:
        out: list[Observation] = []
        self.analysed += 1
        grey = small_grey(image, self.motion.width)
        if self.tamper is not None:
            changed = self.tamper.check(grey)
            if changed is not None:
                out.append(Tamper(self.device, changed[0], changed[1]))
        self.moving = self.motion.update(image)
        if self.pipeline is not None and self.voter is not None:
            finished = self.voter.poll()
            if self.moving:
                finished = self.voter.add(self.pipeline.read(image, self.region)) or finished
            if finished is not None:
                out.append(self._plate(finished))
        if self.occupancy is not None:
            out.extend(self._zones(image))
        return out

    def quiet(self) -> list[Observation]:
        """No new frame (the stream stalled, or is reconnecting): a pass quiet for its gap still
        ends now, not when frames come back."""
        finished = self.voter.poll() if self.voter is not None else None
        return [self._plate(finished)] if finished is not None else []

    def flush(self) -> list[Observation]:
        """Report a pass still open (the stream ended)."""
        if self.voter is None or not self.voter.open:
            return []
        finished = self.voter.close()
        return [self._plate(finished)] if finished is not None else []

    def _plate(self, finished: Any) -> PlateRead:
        lane = self.config.plates
        return PlateRead(
            device=self.device,
            plate=finished.plate,
            confidence=finished.confidence,
            colour=finished.colour,
            box=finished.box,
            frames=finished.frames,
            crop_jpeg=jpeg(finished.crop),
            direction=lane.direction if lane is not None else None,
        )

    def _zones(self, image: np.ndarray) -> list[Observation]:
        assert self.occupancy is not None
        now = self.clock()
        due = self._last_sample is None or (
            now - self._last_sample >= self.config.occupancy.sample_interval_s
        )
        if not (self.moving or due or self._zones_dirty or self._dwelling()):
            return []
        self._zones_dirty = self.moving
        states, alerts = self.occupancy.update(image)
        out: list[Observation] = [self._condition(alert, image) for alert in alerts]
        if due:
            self._last_sample = now
            out.extend(
                ZoneSample(
                    device=self.device,
                    zone=s.zone,
                    count=s.count,
                    occupied=s.occupied,
                    capacity=s.capacity,
                    vehicle_dwell_s=s.vehicle_dwell_s,
                )
                for s in states
            )
        return out

    def _dwelling(self) -> bool:
        assert self.occupancy is not None
        return self.occupancy.dwelling()

    def _condition(self, alert: ZoneAlert, image: np.ndarray) -> ZoneCondition:
        plate = None
        crop_jpeg = None
        if alert.box is not None:
            x1, y1, x2, y2 = alert.box
            crop = image[max(0, y1) : y2, max(0, x1) : x2]
            if alert.active and crop.size:
                crop_jpeg = jpeg(crop)
                if alert.condition == "blocked":
                    plate = self._plate_in(crop)
        return ZoneCondition(
            device=self.device,
            zone=alert.zone,
            condition=alert.condition,  # type: ignore[arg-type]
            active=alert.active,
            detail=alert.detail,
            plate=plate,
            crop_jpeg=crop_jpeg,
        )

    def _plate_in(self, crop: np.ndarray) -> str | None:
        """The plate of a vehicle blocking a keep-clear zone, when it can be read. The reader is
        made at the first block (a yard camera reads no lanes and keeps no plate models in memory
        until then); a plate model that cannot be loaded costs the plate, never the alert."""
        try:
            if self.pipeline is None:
                self.pipeline = PlatePipeline(self.inference, self.home_province)
            found = self.pipeline.read(crop)
        except ModelError as err:
            log.error("camera %s: the blocked zone's alert goes without a plate: %s", self.device, err)
            return None
        return found[0].plate if found else None


def _object_detector(inference: InferenceConfig | None) -> Any:
    if inference is None or inference.object_detector is None:
        return None
    from models.manifest import optional_spec
    from models.objects import ObjectDetector
    from models.runtime import SessionFactory

    return ObjectDetector(
        SessionFactory(inference.threads), optional_spec("object_detector", inference.object_detector)
    )
