"""Plate colour from the straightened crop: blue, yellow, green (new-energy), white, black.

The background is the commonest colour class among the crop's pixels (characters are the
minority); without a saturated majority, brightness tells white from black."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.manifest import ModelSpec
from models.runtime import SessionFactory

COLOURS = ("blue", "yellow", "green", "white", "black")


def plate_colour(crop: np.ndarray) -> str | None:
    """The plate's background colour, or None when the crop looks like no plate colour."""
    import cv2

    h, w = crop.shape[:2]
    inner = crop[h // 6 : h - h // 6, w // 12 : w - w // 12]
    if inner.size == 0:
        return None
    hsv = cv2.cvtColor(inner, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.int32)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    saturated = (sat > 50) & (val > 40)
    counts = {
        "blue": int((saturated & (hue >= 95) & (hue <= 130)).sum()),
        "yellow": int((saturated & (hue >= 12) & (hue <= 34)).sum()),
        "green": int((saturated & (hue > 34) & (hue < 95)).sum()),
    }
    total = len(hue)
    best = max(counts, key=lambda name: counts[name])
    if counts[best] >= 0.2 * total:
        return best
    grey = sat < 60
    if grey.sum() < 0.4 * total:
        return None
    bright = (grey & (val > 150)).sum()
    dark = (grey & (val < 90)).sum()
    return "white" if bright >= dark else "black"


class PlateColourClassifier:
    """HyperLPR's litemodel_cls_96x (`inference.plate_classifier`): the crop resized to 96×96,
    BGR scaled to 0..1; three scores: blue, green, yellow. It settles the saturated colours;
    white and black plates are left to `plate_colour`."""

    classes = ("blue", "green", "yellow")

    def __init__(self, factory: SessionFactory, spec: ModelSpec) -> None:
        self.factory = factory
        self.spec = spec

    def __call__(self, crop: np.ndarray) -> str | None:
        import cv2

        seen = plate_colour(crop)
        if seen in ("white", "black"):
            return seen
        session: Any = self.factory.session(self.spec)
        blob = cv2.resize(crop, (96, 96)).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        scores = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
        return self.classes[int(np.argmax(scores))]
