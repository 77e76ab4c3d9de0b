"""Configuration of a camera (`kind: camera`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from drivers.base import DeviceConfig, GateSlot
from edge.config_base import StrictModel
from models.config import OccupancyConfig, ZoneConfig


class PlateLaneConfig(StrictModel):
    enabled: bool = Field(default=True, description="read plates on this camera")
    region: tuple[int, int, int, int] | None = Field(
        default=None,
        description="lane region [x, y, width, height] in frame pixels; default: the whole frame",
    )
    direction: Literal["in", "out"] | None = Field(
        default=None, description="direction of travel of this lane, reported with each plate"
    )
    pass_gap_s: float = Field(
        default=2.0, gt=0, description="no plate read for this long ends a vehicle pass"
    )
    min_frames: int = Field(default=1, ge=1, description="readings a pass needs before it is reported")


class TamperConfig(StrictModel):
    enabled: bool = Field(default=True, description="report tampering")
    black_level: float = Field(
        default=16.0, ge=0, description="mean brightness (0-255) below which a frame is black"
    )
    uniform_std: float = Field(
        default=6.0, ge=0, description="brightness spread below which a frame is uniform (covered)"
    )
    defocus_ratio: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="sharpness below this share of the learned normal counts as defocused",
    )
    scene_change: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of the picture that differs from the learned scene to count as moved",
    )
    hold_s: float = Field(
        default=5.0, ge=0, description="a condition must last this long before it is reported"
    )


class CameraConfig(DeviceConfig):
    kind: Literal["camera"] = Field(description="a camera read through OpenCV")
    gate_slot: ClassVar[GateSlot] = "cameras"
    source: str = Field(
        description="rtsp://user:${CAM_PASSWORD}@host/path, http(s)://… MJPEG, a USB index "
        "such as 0, or a video file"
    )
    loop: bool = Field(default=False, description="file sources: start again at the end (demo)")
    open_timeout_s: float = Field(default=5.0, gt=0, description="give up opening after this")
    read_timeout_s: float = Field(default=5.0, gt=0, description="a read waiting longer fails")
    analysis_fps: float = Field(
        default=5.0, gt=0, le=30, description="frames per second looked at (newest frame only)"
    )
    reconnect_initial_s: float = Field(default=1.0, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="longest reconnect delay")
    health_interval_s: float = Field(
        default=30.0, gt=0, description="seconds between health reports (fps, frame age)"
    )
    motion_threshold: float = Field(
        default=0.004,
        gt=0,
        lt=1,
        description="share of the small grey frame that must change to count as motion",
    )
    plates: PlateLaneConfig | None = Field(
        default=None, description="plate reading for a lane camera; omit for none"
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="occupancy zones (parking, keep_clear, crowd)"
    )
    occupancy: OccupancyConfig = Field(
        default_factory=OccupancyConfig, description="occupancy sampling settings"
    )
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="tamper detection")

    @field_validator("zones")
    @classmethod
    def _zone_ids_unique(cls, zones: list[ZoneConfig]) -> list[ZoneConfig]:
        """Occupancy keeps masks and dwell times by zone id: two zones with one id would share
        them and report nonsense."""
        ids = [zone.id for zone in zones]
        repeated = sorted({zone_id for zone_id in ids if ids.count(zone_id) > 1})
        if repeated:
            raise ValueError(
                f"zone ids must be unique on a camera; used more than once: {', '.join(repeated)}"
            )
        return zones
