"""The inference section (`inference:`): threads and optional model files."""

from typing import Literal

from pydantic import Field, field_validator

from edge.config_base import Identifier, StrictModel


class ModelFileConfig(StrictModel):
    path: str = Field(description="path of the ONNX file on the gateway")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of the file; it is checked before loading",
    )

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        """As Windows prints it too (Get-FileHash, certutil: upper case)."""
        return value.strip().lower() if isinstance(value, str) else value


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

    id: Identifier = Field(description="zone id, unique per camera")
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

    @field_validator("polygon")
    @classmethod
    def _polygon_encloses_an_area(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        problem = polygon_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("spaces")
    @classmethod
    def _spaces_enclose_areas(cls, value: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
        for number, space in enumerate(value, 1):
            problem = polygon_problem(space)
            if problem:
                raise ValueError(f"space {number}: {problem}")
        return value


def polygon_problem(corners: list[tuple[int, int]]) -> str | None:
    """What makes `corners` no zone (too few, edges that cross, no area), or None."""
    if len(corners) < 3:
        return f"a polygon needs 3 or more corners [x, y] (got {len(corners)})"
    edges = list(zip(corners, corners[1:] + corners[:1], strict=True))
    for i, (a, b) in enumerate(edges):
        for j in range(i + 2, len(edges) - (i == 0)):
            c, d = edges[j]
            if _side(a, b, c) * _side(a, b, d) < 0 and _side(c, d, a) * _side(c, d, b) < 0:
                return (
                    f"edges {list(a)}-{list(b)} and {list(c)}-{list(d)} cross; list the corners in "
                    "order around the zone (e.g. top-left, top-right, bottom-right, bottom-left)"
                )
    if sum(_side((0, 0), a, b) for a, b in edges) == 0:
        return "the corners enclose no area (they lie on one line); list the corners around the zone"
    return None


def _side(origin: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
    """Twice the signed area of the triangle origin, a, b: its sign says which side of the
    line origin-a the point b lies on."""
    return (a[0] - origin[0]) * (b[1] - origin[1]) - (a[1] - origin[1]) * (b[0] - origin[0])


class OccupancyConfig(StrictModel):
    sample_interval_s: float = Field(
        default=60.0, gt=0, description="seconds between occupancy.sample events per zone"
    )
    min_person_area_px: int = Field(
        default=400, ge=1, description="classical people count: smallest moving blob counted"
    )
