"""Model manifest and session factory: checksums verified, errors that say what is missing, one
session per model file, sha256 and thread count in the process."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge.errors import ModelError
from models import runtime
from models.config import InferenceConfig, ModelFileConfig
from models.manifest import ModelSpec, default_spec, manifest, optional_spec
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
    factory = SessionFactory(pool=runtime.SessionPool())
    assert factory.threads >= 1
    spec = default_spec("ppocr_det")
    first = factory.session(spec)
    assert factory.session(spec) is first
    assert factory.pool.built == 1


def test_pipelines_share_one_session_per_model_file_sha256_and_threads(tmp_path: Path) -> None:
    pool = runtime.SessionPool()
    spec = default_spec("ppocr_det")
    first = SessionFactory(2, pool).session(spec)
    assert SessionFactory(2, pool).session(spec) is first
    one_thread = SessionFactory(1, pool).session(spec)
    assert one_thread is not first
    assert one_thread.get_session_options().intra_op_num_threads == 1
    assert first.get_session_options().intra_op_num_threads == 2
    copy = tmp_path / spec.path.name
    shutil.copyfile(spec.path, copy)
    assert SessionFactory(2, pool).session(replace(spec, path=copy)) is not first
    assert pool.built == 3


def test_a_pipeline_that_asks_for_another_file_under_the_same_name_gets_that_file(tmp_path: Path) -> None:
    factory = SessionFactory(1)
    spec = default_spec("ppocr_det")
    first = factory.session(spec)
    copy = tmp_path / spec.path.name
    shutil.copyfile(spec.path, copy)
    assert factory.session(replace(spec, path=copy)) is not first


def test_a_wrong_sha256_is_refused_while_the_right_one_is_loaded() -> None:
    factory = SessionFactory(1)
    spec = default_spec("ppocr_det")
    factory.session(spec)
    for asking in (factory, SessionFactory(1)):
        with pytest.raises(
            ModelError, match=r"ppocr_det: .* has sha256 d2a7720d.*, expected 0{64}; the file is damaged"
        ):
            asking.session(replace(spec, sha256="0" * 64))


def test_a_session_nothing_uses_any_more_is_freed() -> None:
    pool = runtime.SessionPool()
    spec = default_spec("ppocr_det")
    factory = SessionFactory(1, pool)
    gone = weakref.ref(factory.session(spec))
    del factory  # the camera stopped, or the configuration was reloaded with other threads
    gc.collect()
    assert gone() is None
    SessionFactory(1, pool).session(spec)
    assert pool.built == 2


def test_cameras_starting_at_once_build_each_session_once(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    load = runtime.load_session

    def slow_load(spec: ModelSpec, threads: int) -> Any:
        builds.append(spec.name)
        time.sleep(0.2)  # all the other cameras ask meanwhile
        return load(spec, threads)

    monkeypatch.setattr(runtime, "load_session", slow_load)
    pool = runtime.SessionPool()
    spec = default_spec("ppocr_rec")
    start = threading.Barrier(4)

    def camera() -> Any:
        start.wait(timeout=10)
        return SessionFactory(2, pool).session(spec)

    with ThreadPoolExecutor(4) as cameras:
        sessions = [f.result(timeout=30) for f in [cameras.submit(camera) for _ in range(4)]]
    assert builds == ["ppocr_rec"]
    assert pool.built == 1
    assert all(session is sessions[0] for session in sessions)


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
