"""Real plate photos and model files from the shared data folder next to the repository
(or $GATEHOUSE_SHARED_DATA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import InferenceConfig, ModelFileConfig
from tests.support.shared_data import HYPERLPR_SHA256, shared_data


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_data()


@pytest.fixture(scope="session")
def recommended_inference(shared: Path) -> InferenceConfig:
    detector = shared / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    return InferenceConfig(
        threads=2, plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_SHA256)
    )


@pytest.fixture(scope="session")
def pipeline(recommended_inference: InferenceConfig):  # type: ignore[no-untyped-def]
    from models.plates.pipeline import PlatePipeline

    return PlatePipeline(recommended_inference)
