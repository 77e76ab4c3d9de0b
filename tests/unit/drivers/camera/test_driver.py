"""The camera driver's set-up: registered by kind, lazy heavy imports, a missing model is a
configuration problem named for the installer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.base import DriverContext, TakeSnapshot
from drivers.camera.config import CameraConfig
from drivers.camera.device import CameraDriver
from drivers.registry import driver_for
from edge.errors import DeviceMisconfigured
from models.config import InferenceConfig, ModelFileConfig


def test_registered_by_kind() -> None:
    config = CameraConfig(id="cam", kind="camera", source="0")
    assert driver_for(config) is CameraDriver
    driver = CameraDriver(config, DriverContext(state_dir="/tmp"))
    assert driver.accepts(TakeSnapshot())


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        CameraConfig.model_validate({"id": "cam", "kind": "camera", "source": "0", "fps": 5})


def test_importing_drivers_does_not_load_cv2_or_onnxruntime() -> None:
    code = (
        "import sys, drivers.registry as r, drivers.camera.device, edge.config;"
        "r.device_config_models();"
        "print([m for m in sys.modules if m.split('.')[0] in ('cv2', 'onnxruntime')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("slot", ["plate_detector", "object_detector"])
def test_a_missing_model_is_named_when_the_camera_starts(tmp_path: Path, slot: str) -> None:
    """Not at the first vehicle or the first zone check, deep in the analysis thread."""
    missing = tmp_path / "model_sim.onnx"
    square = [(0, 0), (100, 0), (100, 100), (0, 100)]
    config = CameraConfig(
        id="lane",
        kind="camera",
        source="0",
        plates={},
        zones=[{"id": "lot", "kind": "parking", "polygon": square}],
    )
    inference = InferenceConfig(**{slot: ModelFileConfig(path=str(missing), sha256="0" * 64)})
    driver = CameraDriver(config, DriverContext(state_dir=str(tmp_path), inference=inference))

    class Emit:
        def __call__(self, observation: object) -> None:
            return

        def alive(self) -> None:
            return

    with pytest.raises(DeviceMisconfigured, match=r"model_sim\.onnx.*not found"):
        asyncio.run(asyncio.wait_for(driver.run(Emit()), timeout=30))
