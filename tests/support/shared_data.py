"""Where the shared test data lives: real labelled plate photos and the optional ONNX models,
in ../shared/data beside the repository (or $GATEHOUSE_SHARED_DATA). Never copied in here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HYPERLPR_SHA256 = "2a985dc63a5cc947ec36d18503d6fc0fd54525b9dba17f2fe29a71e86b44456d"


def shared_data() -> Path:
    env = os.environ.get("GATEHOUSE_SHARED_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "plates" / "labels.csv").is_file():
        pytest.fail(
            f"shared test data not found at {root}: check out the shared data folder next to the "
            "repository (../shared/data with plates/ and models/) or set GATEHOUSE_SHARED_DATA"
        )
    return root
