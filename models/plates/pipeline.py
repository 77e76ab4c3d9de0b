"""One image in, plates out: localisation, straightening, recognition, grammar, colour.

The recommended configuration uses HyperLPR's corner detector (`inference.plate_detector`)
with the PP-OCRv4 recogniser; without it the PP-OCRv4 text detector finds plate-shaped text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.config import InferenceConfig
from models.manifest import default_spec, optional_spec
from models.plates.colour import PlateColourClassifier, plate_colour
from models.plates.detector import Candidate, CornerPlateDetector, TextPlateDetector, warp
from models.plates.recogniser import PlateRecogniser, Reading
from models.runtime import SessionFactory

# Crops of each candidate read together (margins as fractions of the plate's width, height):
# the views vote, which steadies readings against a detector's corners being a little off.
VIEW_MARGINS: tuple[tuple[float, float], ...] = ((0.0, 0.05), (0.04, 0.12), (0.08, 0.2))
DOUBLE_UPPER = 0.4  # share of a double-layer plate's height taken by its upper row
DOUBLE_OVERLAP = 0.1


@dataclass(frozen=True, slots=True)
class PlateResult:
    plate: str
    confidence: float
    colour: str | None
    box: tuple[int, int, int, int]
    corners: np.ndarray = field(repr=False)
    crop: np.ndarray = field(repr=False)
    raw: str = ""
    double: bool = False


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of the frame (x, y, width, height) where plates are looked for."""

    x: int
    y: int
    width: int
    height: int


class PlatePipeline:
    def __init__(
        self,
        inference: InferenceConfig | None = None,
        home_province: str | None = None,
        factory: SessionFactory | None = None,
        max_candidates: int = 3,
        min_plate_height_px: int = 10,
        min_confidence: float = 0.1,
    ) -> None:
        inference = inference or InferenceConfig()
        self.factory = factory or SessionFactory(inference.threads)
        self.recogniser = PlateRecogniser(
            self.factory, default_spec("ppocr_rec"), home_province=home_province
        )
        self.detector: CornerPlateDetector | TextPlateDetector
        if inference.plate_detector is not None:
            self.detector = CornerPlateDetector(
                self.factory, optional_spec("plate_detector", inference.plate_detector)
            )
        else:
            self.detector = TextPlateDetector(self.factory, default_spec("ppocr_det"))
        self.text_detector = isinstance(self.detector, TextPlateDetector)
        self.colour: Callable[[np.ndarray], str | None] = plate_colour
        if inference.plate_classifier is not None:
            self.colour = PlateColourClassifier(
                self.factory, optional_spec("plate_classifier", inference.plate_classifier)
            )
        self.max_candidates = max_candidates
        self.min_plate_height_px = min_plate_height_px
        self.min_confidence = min_confidence

    @property
    def detector_name(self) -> str:
        return "hyperlpr-y5fu-320" if not self.text_detector else "ppocrv4-det"

    def warm_up(self) -> None:
        """Create the sessions now rather than on the first vehicle."""
        self.read(np.zeros((64, 64, 3), dtype=np.uint8))
        self.recogniser.read([np.zeros((48, 160, 3), dtype=np.uint8)])

    def read(self, image: np.ndarray, region: Region | None = None) -> list[PlateResult]:
        """Plates found in a BGR image (inside `region` when given), best first."""
        ox, oy = 0, 0
        view = image
        if region is not None:
            ox, oy = max(0, region.x), max(0, region.y)
            right, bottom = region.x + region.width, region.y + region.height
            view = image[oy : max(oy, bottom), ox : max(ox, right)]
        if view.size == 0:
            return []
        candidates = [c for c in self.detector.detect(view) if self._plausible(c)]
        candidates = candidates[: self.max_candidates]
        single = [c for c in candidates if not c.double]
        groups = [[warp(view, c.corners, mx, my) for mx, my in VIEW_MARGINS] for c in single]
        readings: list[tuple[Candidate, Reading, np.ndarray]] = [
            (c, r, views[0])
            for c, r, views in zip(single, self.recogniser.read_groups(groups), groups, strict=True)
        ]
        for c in candidates:
            if c.double:
                crop = warp(view, c.corners, 0.02, 0.04)
                readings.append((c, self._read_double(crop), crop))
        results = []
        for c, reading, crop in readings:
            if reading.plate is None or reading.confidence < self.min_confidence:
                continue
            colour = self.colour(crop)
            if self.text_detector and colour is None:
                continue
            corners = c.corners + np.array([ox, oy], dtype=np.float32)
            x1, y1, x2, y2 = c.box
            results.append(
                PlateResult(
                    plate=reading.plate,
                    confidence=round(reading.confidence, 3),
                    colour=_colour_for(reading.plate, colour),
                    box=(x1 + ox, y1 + oy, x2 + ox, y2 + oy),
                    corners=corners,
                    crop=crop,
                    raw=reading.raw,
                    double=c.double,
                )
            )
        results.sort(key=lambda r: r.confidence, reverse=True)
        return _dedupe(results)

    def read_crop(self, crop: np.ndarray) -> PlateResult | None:
        """A plate image already cut to the plate (as a guard's photo or another system's
        crop): recognition only."""
        reading = self.recogniser.read_views(_crop_views(crop))
        if reading.plate is None or reading.confidence < self.min_confidence:
            return None
        h, w = crop.shape[:2]
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
        return PlateResult(
            plate=reading.plate,
            confidence=round(reading.confidence, 3),
            colour=_colour_for(reading.plate, self.colour(crop)),
            box=(0, 0, w, h),
            corners=corners,
            crop=crop,
            raw=reading.raw,
        )

    def _plausible(self, candidate: Candidate) -> bool:
        tl, tr, br, bl = candidate.corners
        width = float(np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
        height = float(np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
        if height < self.min_plate_height_px:
            return False
        aspect = width / max(height, 1e-6)
        return 0.9 <= aspect <= 3.2 if candidate.double else 1.6 <= aspect <= 7.5

    def _read_double(self, crop: np.ndarray) -> Reading:
        h = crop.shape[0]
        upper = crop[: int(h * (DOUBLE_UPPER + DOUBLE_OVERLAP / 2))]
        lower = crop[int(h * (DOUBLE_UPPER - DOUBLE_OVERLAP / 2)) :]
        width = upper.shape[1]
        upper = upper[:, width // 5 : width - width // 5]
        return self.recogniser.read_double(upper, lower)


def _crop_views(crop: np.ndarray) -> list[np.ndarray]:
    """A tight plate crop as it is, with its sides extended, stretched wider, and with a thin
    border: the recogniser reads small crops more steadily from several framings."""
    import cv2

    h, w = crop.shape[:2]
    return [
        crop,
        cv2.copyMakeBorder(crop, 0, 0, 8, 8, cv2.BORDER_REPLICATE),
        cv2.resize(crop, (int(w * 1.4), h), interpolation=cv2.INTER_LINEAR),
        cv2.copyMakeBorder(crop, 2, 2, 2, 2, cv2.BORDER_REPLICATE),
    ]


def _colour_for(plate: str, seen: str | None) -> str | None:
    """New-energy plates are green whatever the light did to the crop."""
    from models.plates.grammar import is_new_energy

    return "green" if is_new_energy(plate) else seen


def _dedupe(results: list[PlateResult]) -> list[PlateResult]:
    seen: set[str] = set()
    out = []
    for result in results:
        if result.plate not in seen:
            seen.add(result.plate)
            out.append(result)
    return out


def load_image(path: str) -> Any:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        from edge.errors import GatehouseError

        raise GatehouseError(f"{path}: not an image OpenCV can read")
    return image
