"""Cheap motion gating: a small grey copy of each frame compared with a running background.
Nothing heavier runs while nothing moves."""

from __future__ import annotations

from typing import Any

import numpy as np


def small_grey(frame: np.ndarray, width: int) -> Any:
    import cv2

    h, w = frame.shape[:2]
    scale = width / max(w, 1)
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (5, 5), 0)


class MotionGate:
    """`update(frame)` is True while enough of the watched area changes."""

    def __init__(
        self,
        width: int = 160,
        pixel_threshold: int = 18,
        min_changed_fraction: float = 0.004,
        learning_rate: float = 0.05,
        region: tuple[float, float, float, float] | None = None,
    ) -> None:
        self.width = width
        self.pixel_threshold = pixel_threshold
        self.min_changed_fraction = min_changed_fraction
        self.learning_rate = learning_rate
        self.region = region  # x, y, width, height as fractions of the frame
        self._background: np.ndarray | None = None
        self.changed_fraction = 0.0

    def update(self, frame: np.ndarray) -> bool:
        import cv2

        grey = small_grey(frame, self.width).astype(np.float32)
        if self.region is not None:
            h, w = grey.shape
            x, y, rw, rh = self.region
            grey = grey[int(y * h) : int((y + rh) * h) or None, int(x * w) : int((x + rw) * w) or None]
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.copy()
            return False
        diff = cv2.absdiff(grey, self._background)
        self.changed_fraction = float((diff > self.pixel_threshold).mean())
        cv2.accumulateWeighted(grey, self._background, self.learning_rate)
        return self.changed_fraction >= self.min_changed_fraction
