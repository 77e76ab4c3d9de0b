"""ONNX Runtime sessions for small CPUs: one per model in the process, however many cameras
use it, created on first use after the file's sha256 matched the manifest."""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ModelError
from models.manifest import ModelSpec

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: ModelSpec) -> None:
    """Raise ModelError unless the file exists and has the expected sha256."""
    if not spec.path.is_file():
        what = "is a folder, not a model file" if spec.path.is_dir() else "not found"
        raise ModelError(
            f"model {spec.name}: file {spec.path} {what} ({spec.source}); "
            "see docs/vision.md for where to get it"
        )
    try:
        actual = file_sha256(spec.path)
    except OSError as err:
        raise ModelError(
            f"model {spec.name}: {spec.path} cannot be read ({err.strerror or err}); "
            "the gateway's user must be able to read it"
        ) from err
    if actual != spec.sha256:
        raise ModelError(
            f"model {spec.name}: {spec.path} has sha256 {actual}, expected {spec.sha256}; "
            "the file is damaged or a different version"
        )


def default_threads() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """What makes two sessions interchangeable: the same file, checked against the same
    sha256, run with the same options (all fixed here but the thread count)."""

    path: Path
    sha256: str
    threads: int


class SessionPool:
    """The process's ONNX Runtime sessions, one per `SessionKey`, whichever camera or pipeline
    asks: a session is built (after its sha256 check) by the first that needs it, under a lock
    so that cameras starting at once do not each build one, and shared with the rest, as
    `InferenceSession.run` may be called from several threads at once. The pool keeps a
    session only while something uses it: a configuration reloaded with other threads or
    another file leaves no unused session behind."""

    def __init__(self) -> None:
        self._sessions: weakref.WeakValueDictionary[SessionKey, Any] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self.built = 0

    def session(self, spec: ModelSpec, threads: int) -> Any:
        key = SessionKey(spec.path.resolve(), spec.sha256, threads)
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = load_session(spec, threads)
                self._sessions[key] = found
                self.built += 1
        check_input(spec, found.get_inputs()[0].shape)
        return found


SESSIONS = SessionPool()


class SessionFactory:
    """The sessions of one pipeline (CPU, graph optimisation on, `threads` intra-op threads),
    taken from `pool`, by default the process's. Only sessions are shared: the detectors and
    recognisers that pre- and post-process around them, and count their calls, belong to one
    camera and are used by one thread at a time."""

    def __init__(self, threads: int | None = None, pool: SessionPool | None = None) -> None:
        self.threads = threads or default_threads()
        self.pool = pool if pool is not None else SESSIONS
        self._sessions: dict[ModelSpec, Any] = {}

    def session(self, spec: ModelSpec) -> Any:
        found = self._sessions.get(spec)
        if found is None:
            found = self.pool.session(spec, self.threads)
            self._sessions[spec] = found
        return found


def load_session(spec: ModelSpec, threads: int) -> Any:
    """A new session on the model file, once its sha256 matched the manifest."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError(
            "onnxruntime is not installed: pip install onnxruntime (needed for cameras)"
        ) from err
    verify(spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # waiting threads sleep instead of spinning: the grabbers and the event loop need the CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(spec.path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ModelError(
            f"model {spec.name}: {spec.path} cannot be loaded ({err}); is it the ONNX file "
            "docs/vision.md names, copied whole?"
        ) from err


def check_input(spec: ModelSpec, shape: list[int | str | None]) -> None:
    """Raise ModelError unless the model's input fits the manifest's shape (a symbolic
    dimension, on either side, fits any size): another model in this place fails on every
    frame otherwise."""
    fits = len(shape) == len(spec.input_shape) and all(
        not isinstance(have, int) or not isinstance(want, int) or have == want
        for have, want in zip(shape, spec.input_shape, strict=True)
    )
    if not fits:
        raise ModelError(
            f"model {spec.name}: {spec.path} takes input {_dims(shape)}, but {spec.name} must take "
            f"{_dims(spec.input_shape)} ({spec.source}); is another model configured in its place?"
        )


def _dims(shape: Sequence[int | str | None]) -> str:
    return "×".join(str(d) for d in shape)
