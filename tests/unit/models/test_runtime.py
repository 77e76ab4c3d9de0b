"""Model manifest and session factory: checksums verified, errors that say what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ModelError
from models.config import InferenceConfig, ModelFileConfig
from models.manifest import default_spec, manifest, optional_spec
from models.runtime import SessionFactory, file_sha256


def test_default_models_come_from_the_rapidocr_wheel() -> None:
    for name in ("ppocr_det", "ppocr_rec"):
        spec = default_spec(name)
        assert spec.path.is_file(), spec.path
        assert file_sha256(spec.path) == spec.sha256
        assert spec.licence == "Apache-2.0"


def test_manifest_lists_configured_optional_models(tmp_path: Path) -> None:
    config = InferenceConfig(
        object_detector=ModelFileConfig(path=str(tmp_path / "yolox.onnx"), sha256="0" * 64)
    )
    names = [spec.name for spec in manifest(config)]
    assert names == ["ppocr_det", "ppocr_rec", "object_detector"]


def test_missing_model_names_the_file(tmp_path: Path) -> None:
    spec = optional_spec("plate_detector", ModelFileConfig(path=str(tmp_path / "nope.onnx"), sha256="0" * 64))
    with pytest.raises(ModelError, match=r"plate_detector.*nope\.onnx.*not found"):
        SessionFactory(1).session(spec)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    spec = optional_spec("plate_classifier", ModelFileConfig(path=str(path), sha256="1" * 64))
    with pytest.raises(ModelError, match="sha256"):
        SessionFactory(1).session(spec)


def test_session_created_once_and_threads_default_to_cores() -> None:
    factory = SessionFactory()
    assert factory.threads >= 1
    spec = default_spec("ppocr_det")
    first = factory.session(spec)
    assert factory.session(spec) is first
    assert factory.created == 1
