"""Helpers for the camera tests: frames made from real photos, a settable clock, the shared
data folder."""

from __future__ import annotations

import numpy as np


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def road(width: int = 640, height: int = 480) -> np.ndarray:
    """A plain, smooth background (asphalt seen from a pole)."""
    rng = np.random.default_rng(3)
    base = np.full((height, width, 3), 96, dtype=np.uint8)
    noise = rng.integers(0, 6, size=(height, width, 1), dtype=np.uint8)
    return base + noise


def paste(background: np.ndarray, image: np.ndarray, x: int, y: int, width: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    height = int(h * width / w)
    resized = cv2.resize(image, (width, height))
    out = background.copy()
    y2, x2 = min(out.shape[0], y + height), min(out.shape[1], x + width)
    out[y:y2, x:x2] = resized[: y2 - y, : x2 - x]
    return out
