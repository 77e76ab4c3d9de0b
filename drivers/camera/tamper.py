"""Tamper detection on a small grey frame: suddenly black, uniform (covered or sprayed),
defocused (sharpness far below its learned normal) or a large scene change (turned away).

A condition must last `hold_s` (by the injected clock) before it is reported, and is reported
once when it starts and once when it ends."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from drivers.camera.config import TamperConfig

LEARN_FRAMES = 10


class TamperDetector:
    def __init__(self, config: TamperConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._sharpness: float | None = None
        self._scene: np.ndarray | None = None
        self._seen = 0
        self._pending: tuple[str, float] | None = None
        self.active: str | None = None

    def check(self, grey: np.ndarray) -> tuple[bool, str] | None:
        """Look at one small grey frame; returns (active, detail) when the state changes."""
        condition = self._condition(grey)
        now = self.clock()
        if condition is None:
            self._pending = None
            if self.active is not None:
                ended, self.active = self.active, None
                return False, f"{ended} cleared"
            return None
        if self.active is not None:
            return None
        if self._pending is None or self._pending[0] != condition:
            self._pending = (condition, now)
        if now - self._pending[1] >= self.config.hold_s:
            self.active = condition
            self._pending = None
            return True, condition
        return None

    def _condition(self, grey: np.ndarray) -> str | None:
        import cv2

        mean = float(grey.mean())
        std = float(grey.std())
        if mean < self.config.black_level:
            return "black"
        if std < self.config.uniform_std:
            return "uniform"
        sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
        small = grey.astype(np.float32)
        if self._seen < LEARN_FRAMES or self._scene is None or self._sharpness is None:
            self._seen += 1
            self._sharpness = (
                sharpness if self._sharpness is None else max(self._sharpness * 0.9 + sharpness * 0.1, 1e-3)
            )
            self._scene = small if self._scene is None else self._scene * 0.8 + small * 0.2
            return None
        if sharpness < self.config.defocus_ratio * self._sharpness:
            return "defocused"
        changed = float((np.abs(small - self._scene) > 40).mean())
        if changed >= self.config.scene_change:
            return "scene changed"
        if self.active is None:
            self._sharpness = self._sharpness * 0.99 + sharpness * 0.01
            self._scene = self._scene * 0.98 + small * 0.02
        return None
