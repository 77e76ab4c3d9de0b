"""Plate localisation: where plates are in an image, as four corners each.

- `CornerPlateDetector`: HyperLPR's y5fu_320x model (YOLOv5-face style): the image is padded to
  a square at the top-left, resized to 320×320, RGB scaled to 0..1; each of the 6300 output rows
  is centre x, y, width, height, objectness, four corners (x, y ×4: top-left, top-right,
  bottom-right, bottom-left) and two class scores (single, double layer), in input pixels.
- `TextPlateDetector`: the PP-OCRv4 text detector (DB): a probability map thresholded into
  regions, each a rotated rectangle grown back to the text's full extent, kept when its shape is
  a plate's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.manifest import ModelSpec
from models.runtime import SessionFactory


@dataclass(frozen=True, slots=True)
class Candidate:
    corners: np.ndarray  # 4×2 float32: top-left, top-right, bottom-right, bottom-left
    score: float
    double: bool = False

    @property
    def box(self) -> tuple[int, int, int, int]:
        x1, y1 = self.corners.min(axis=0)
        x2, y2 = self.corners.max(axis=0)
        return int(x1), int(y1), math.ceil(x2), math.ceil(y2)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(scores)[::-1])
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        order = [j for j in order if box_iou(tuple(boxes[i]), tuple(boxes[j])) < iou]
    return keep


class CornerPlateDetector:
    """HyperLPR y5fu_320x corner detector."""

    size = 320

    def __init__(
        self, factory: SessionFactory, spec: ModelSpec, min_score: float = 0.3, nms_iou: float = 0.4
    ) -> None:
        self.factory = factory
        self.spec = spec
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Candidate]:
        import cv2

        session = self.factory.session(self.spec)
        h, w = image.shape[:2]
        side = max(h, w)
        scale = self.size / side
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        small = cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        )
        canvas[: small.shape[0], : small.shape[1]] = small
        blob = (canvas[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        self.calls += 1
        out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
        out = out[out[:, 4] >= self.min_score]
        if not len(out):
            return []
        score = out[:, 4] * out[:, 13:15].max(axis=1)
        keep_mask = score >= self.min_score
        out, score = out[keep_mask], score[keep_mask]
        boxes = np.stack(
            [
                out[:, 0] - out[:, 2] / 2,
                out[:, 1] - out[:, 3] / 2,
                out[:, 0] + out[:, 2] / 2,
                out[:, 1] + out[:, 3] / 2,
            ],
            axis=1,
        )
        found = []
        for i in _nms(boxes, score, self.nms_iou):
            corners = (out[i, 5:13].reshape(4, 2) / scale).astype(np.float32)
            corners[:, 0] = corners[:, 0].clip(0, w - 1)
            corners[:, 1] = corners[:, 1].clip(0, h - 1)
            found.append(Candidate(corners, float(score[i]), bool(out[i, 14] > out[i, 13])))
        return found


class TextPlateDetector:
    """PP-OCRv4 DB text detector, filtered to plate-shaped regions."""

    def __init__(
        self,
        factory: SessionFactory,
        spec: ModelSpec,
        max_side: int = 640,
        threshold: float = 0.3,
        box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
    ) -> None:
        self.factory = factory
        self.spec = spec
        self.max_side = max_side
        self.threshold = threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Candidate]:
        import cv2

        session = self.factory.session(self.spec)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        rh = max(32, round(h * scale / 32) * 32)
        rw = max(32, round(w * scale / 32) * 32)
        resized = cv2.resize(image, (rw, rh))
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255
        blob = ((resized.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
        self.calls += 1
        prob = session.run(None, {session.get_inputs()[0].name: blob})[0][0, 0]
        mask = (prob > self.threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = w / rw, h / rh
        found = []
        for contour in contours:
            if len(contour) < 4:
                continue
            x, y, cw, ch = cv2.boundingRect(contour)
            region = np.zeros_like(mask)
            cv2.drawContours(region, [contour], -1, 1, -1)
            score = float(prob[y : y + ch, x : x + cw][region[y : y + ch, x : x + cw] > 0].mean())
            if score < self.box_threshold:
                continue
            (cx, cy), (rw_, rh_), angle = cv2.minAreaRect(contour)
            area, perimeter = rw_ * rh_, 2 * (rw_ + rh_)
            if perimeter <= 0:
                continue
            grow = area * self.unclip_ratio / perimeter
            rect = ((cx, cy), (rw_ + 2 * grow, rh_ + 2 * grow), angle)
            pts = cv2.boxPoints(rect)
            pts[:, 0] *= sx
            pts[:, 1] *= sy
            corners = _order_corners(pts)
            width = np.linalg.norm(corners[1] - corners[0])
            height = np.linalg.norm(corners[3] - corners[0])
            if height < 8 or not 1.8 <= width / max(height, 1) <= 7.0:
                continue
            found.append(Candidate(corners, score))
        found.sort(key=lambda c: c.score, reverse=True)
        return found


def _order_corners(pts: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(pts, dtype=np.float32)
    by_x = pts[np.argsort(pts[:, 0])]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def warp(image: np.ndarray, corners: np.ndarray, margin_x: float, margin_y: float) -> Any:
    """The plate straightened to a rectangle, its corners grown by the margins (fractions of
    the plate's width and height)."""
    import cv2

    tl, tr, br, bl = corners.astype(np.float32)
    width = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
    height = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
    right = (tr - tl + br - bl) / 2
    down = (bl - tl + br - tr) / 2
    ux = right / max(np.linalg.norm(right), 1e-6)
    uy = down / max(np.linalg.norm(down), 1e-6)
    dx = ux * width * margin_x
    dy = uy * height * margin_y
    src = np.array([tl - dx - dy, tr + dx - dy, br + dx + dy, bl - dx + dy], dtype=np.float32)
    out_h = 48
    out_w = round(out_h * (width * (1 + 2 * margin_x)) / max(height * (1 + 2 * margin_y), 1))
    out_w = max(out_h, min(out_w, 320))
    dst = np.array([[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1], [0, out_h - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(
        image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
