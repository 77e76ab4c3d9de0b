"""Fixtures for the camera tests: the shared data folder, real photos, a settable clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from camera_scenes import FakeClock

from tests.support.shared_data import shared_data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_data()


@pytest.fixture(scope="session")
def photo(shared: Path):  # type: ignore[no-untyped-def]
    import cv2

    def load(name: str) -> np.ndarray:
        image = cv2.imread(str(shared / "plates" / name))
        assert image is not None, name
        return image

    return load
