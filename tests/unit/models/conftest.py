"""Real plate photos and model files from the shared data folder next to the repository
(or $GATEHOUSE_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.config import InferenceConfig, ModelFileConfig

HYPERLPR_SHA256 = "2a985dc63a5cc947ec36d18503d6fc0fd54525b9dba17f2fe29a71e86b44456d"


def shared_data() -> Path:
    env = os.environ.get("GATEHOUSE_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if not (root / "plates" / "labels.csv").is_file():
        pytest.fail(
            f"shared test data not found at {root}: check out the shared data folder next to the "
            "repository (../shared/data with plates/ and models/) or set GATEHOUSE_SHARED_DATA"
        )
    return root


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
