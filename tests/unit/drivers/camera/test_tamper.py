"""Tamper detection: black, uniform, defocused and a large scene change, each reported once
after it lasted `hold_s`, and cleared once."""

from __future__ import annotations

import numpy as np
import pytest
from camera_scenes import FakeClock

from drivers.camera.config import TamperConfig
from drivers.camera.tamper import TamperDetector
from models.motion import small_grey

SCENE = "easypr_general_test/easypr_general_test_0012.jpg"
OTHER = "easypr_general_test/easypr_general_test_0060.jpg"


def run(detector: TamperDetector, clock: FakeClock, grey: np.ndarray, seconds: int) -> list:
    out = []
    for _ in range(seconds):
        changed = detector.check(grey)
        if changed is not None:
            out.append(changed)
        clock.advance(1)
    return out


@pytest.mark.parametrize("what", ["black", "uniform", "defocused", "scene changed"])
def test_tamper(photo, clock: FakeClock, what: str) -> None:  # type: ignore[no-untyped-def]
    import cv2

    scene = small_grey(photo(SCENE), 160)
    detector = TamperDetector(TamperConfig(hold_s=3), clock)
    assert run(detector, clock, scene, 20) == []
    bad = {
        "black": np.full_like(scene, 4),
        "uniform": np.full_like(scene, 128),
        "defocused": cv2.GaussianBlur(scene, (0, 0), 6),
        "scene changed": cv2.resize(small_grey(photo(OTHER), 160), scene.shape[::-1]),
    }[what]
    assert run(detector, clock, bad, 2) == [], "not before hold_s"
    assert run(detector, clock, bad, 10) == [(True, what)]
    assert run(detector, clock, scene, 3) == [(False, f"{what} cleared")]


def test_brief_glitch_is_not_reported(photo, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    scene = small_grey(photo(SCENE), 160)
    detector = TamperDetector(TamperConfig(hold_s=5), clock)
    run(detector, clock, scene, 15)
    assert run(detector, clock, np.zeros_like(scene), 3) == []
    assert run(detector, clock, scene, 10) == []
