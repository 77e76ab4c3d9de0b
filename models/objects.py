"""Optional vehicle and person detector: YOLOX-Nano (`inference.object_detector`).

The model must take `images`, 1×3×416×416 float32, BGR with raw 0–255 values, letterboxed to
the top-left of a canvas filled with 114, and give `output`, 1×N×(5+80): per grid point of
strides 8, 16 and 32, x, y, w, h (still relative to the grid: centre = (x + col) × stride,
size = exp(w) × stride), objectness and 80 COCO class scores, already sigmoid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.manifest import ModelSpec
from models.runtime import SessionFactory

SIZE = 416
STRIDES = (8, 16, 32)
PERSON = 0
VEHICLES = (2, 3, 5, 7)  # car, motorcycle, bus, truck


@dataclass(frozen=True, slots=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    cls: int
    score: float

    @property
    def foot(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


def _grid() -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for stride in STRIDES:
        n = SIZE // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(n * n, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


class ObjectDetector:
    def __init__(
        self, factory: SessionFactory, spec: ModelSpec, min_score: float = 0.3, nms_iou: float = 0.45
    ) -> None:
        self.factory = factory
        self.spec = spec
        self.min_score = min_score
        self.nms_iou = nms_iou
        self._cells, self._strides = _grid()

    def warm_up(self) -> None:
        """Create (and verify) the session now rather than at the first zone check."""
        self.factory.session(self.spec)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import cv2

        session = self.factory.session(self.spec)
        h, w = frame.shape[:2]
        scale = min(SIZE / h, SIZE / w)
        canvas = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)
        resized = cv2.resize(frame, (int(w * scale), int(h * scale)))
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
        centre = (out[:, :2] + self._cells) * self._strides[:, None]
        size = np.exp(out[:, 2:4]) * self._strides[:, None]
        scores = out[:, 4:5] * out[:, 5:]
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), cls]
        keep = best >= self.min_score
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)[keep] / scale
        cls, best = cls[keep], best[keep]
        found: list[Detection] = []
        for i in np.argsort(best)[::-1]:
            box = tuple(float(v) for v in boxes[i])
            if all(_iou(box, d.box) < self.nms_iou or d.cls != cls[i] for d in found):
                found.append(Detection(box, int(cls[i]), float(best[i])))  # type: ignore[arg-type]
        return found


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
