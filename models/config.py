"""The inference section (`inference:`): threads and optional model files."""

from typing import Literal

from pydantic import Field

from edge.config_base import StrictModel


class ModelFileConfig(StrictModel):
    path: str = Field(description="path of the ONNX file on the gateway")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of the file; it is checked before loading",
    )


class InferenceConfig(StrictModel):
    threads: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="ONNX Runtime intra-op threads; default: the CPU cores",
    )
    plate_detector: ModelFileConfig | None = Field(
        default=None, description="optional Chinese plate corner detector (HyperLPR y5fu_320x)"
    )
    plate_classifier: ModelFileConfig | None = Field(
        default=None, description="optional plate colour classifier (HyperLPR litemodel_cls_96x)"
    )
    object_detector: ModelFileConfig | None = Field(
        default=None, description="optional vehicle/person detector (YOLOX-Nano 416x416)"
    )


class ZoneConfig(StrictModel):
    """A polygon of one camera's picture, watched for occupancy."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="zone id, unique per camera")
    kind: Literal["parking", "keep_clear", "crowd"] = Field(
        description="parking: count occupied spaces; keep_clear: alert when a vehicle stays "
        "(fire lane); crowd: alert when too many people gather"
    )
    polygon: list[tuple[int, int]] = Field(
        min_length=3, description="corners of the zone in frame pixels, [[x, y], ...]"
    )
    spaces: list[list[tuple[int, int]]] = Field(
        default_factory=list,
        description="parking only: one polygon per space; default: the zone is one space",
    )
    max_dwell_s: float = Field(default=600.0, gt=0, description="keep_clear only: seconds a vehicle may stay")
    max_people: int = Field(
        default=8, ge=1, description="crowd only: people at or above this count raise an alert"
    )
    occupied_edge_density: float = Field(
        default=0.03,
        gt=0,
        lt=1,
        description="classical method: share of edge pixels above which a space holds a vehicle",
    )


class OccupancyConfig(StrictModel):
    sample_interval_s: float = Field(
        default=60.0, gt=0, description="seconds between occupancy.sample events per zone"
    )
    min_person_area_px: int = Field(
        default=400, ge=1, description="classical people count: smallest moving blob counted"
    )
