"""Model manifest and session factory: checksums verified, errors that say what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ModelError
from models.config import InferenceConfig, ModelFileConfig
from models.manifest import default_spec, manifest, optional_spec
from models.runtime import SessionFactory, file_sha256
from tests.support.shared_data import shared_data

YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


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


def test_another_model_in_a_models_place_is_named_before_it_runs() -> None:
    yolox = shared_data() / "models" / "yolox-nano" / "yolox_nano.onnx"
    spec = optional_spec("plate_detector", ModelFileConfig(path=str(yolox), sha256=YOLOX_SHA256))
    with pytest.raises(
        ModelError,
        match=r"plate_detector: .*yolox_nano\.onnx takes input 1×3×416×416, but "
        r"plate_detector must take 1×3×320×320",
    ):
        SessionFactory(1).session(spec)


def test_a_file_that_is_not_onnx_says_what_to_check(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    spec = optional_spec("plate_detector", ModelFileConfig(path=str(path), sha256=file_sha256(path)))
    with pytest.raises(ModelError, match=r"model\.onnx cannot be loaded .*is it the ONNX file"):
        SessionFactory(1).session(spec)


def test_a_folder_given_as_a_model_is_called_a_folder(tmp_path: Path) -> None:
    spec = optional_spec("object_detector", ModelFileConfig(path=str(tmp_path), sha256="0" * 64))
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        SessionFactory(1).session(spec)


def test_an_unreadable_model_file_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "open", refuse)  # as root, file modes cannot refuse a read
    spec = optional_spec("plate_classifier", ModelFileConfig(path=str(path), sha256="0" * 64))
    with pytest.raises(ModelError, match=r"model\.onnx cannot be read \(Permission denied\)"):
        SessionFactory(1).session(spec)


def test_a_sha256_in_upper_case_as_windows_prints_it_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    config = ModelFileConfig(path=str(path), sha256=file_sha256(path).upper())
    assert config.sha256 == file_sha256(path)
