"""A thread that reads a camera as fast as it delivers and keeps only the newest frame.

The stream is opened with its timeouts passed to `cv2.VideoCapture` at open time (FFmpeg
ignores them when set afterwards). When a read fails the grabber reports the camera offline,
waits (doubling from `initial_s` to `max_s`, back to `initial_s` once frames arrive), and opens
it again. A looping file is opened again at its end, so a file truncated or replaced while it
plays is met like any other source: it fails to open or gives no frame, and is offline.

A thread inside OpenCV's open or read cannot be interrupted; the timeouts only bound how long it
stays there. So `stop()` waits a moment (`STOP_GRACE_S`) and then leaves such a thread to finish
on its own: from the moment stop is asked it keeps no frame and reports nothing, and it releases
its capture when OpenCV returns. At most one thread per camera (`key`) is ever inside OpenCV: a
grabber started while the previous one is still stuck reports the camera offline and does not
open it again until the previous one has given up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    ts: float  # monotonic time it arrived
    image: np.ndarray


def open_capture(source: str, open_timeout_s: float, read_timeout_s: float) -> Any:
    """An opened cv2.VideoCapture, or None."""
    import os

    import cv2

    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    elif "://" in source:
        if source.startswith("rtsp"):
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
        ]
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    else:
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        return None
    return capture


_slots: dict[str, threading.Lock] = {}
_slots_guard = threading.Lock()


def _slot(key: str) -> threading.Lock:
    """Held by the one grabber thread of camera `key` that may open it or read from it."""
    with _slots_guard:
        return _slots.setdefault(key, threading.Lock())


class Grabber:
    STOP_GRACE_S = 0.5
    """How long stop() waits for the thread; a read of a live stream returns well within it."""

    def __init__(
        self,
        source: str,
        on_availability: Callable[[bool, str], None],
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        loop: bool = False,
        initial_s: float = 1.0,
        max_s: float = 30.0,
        key: str | None = None,
    ) -> None:
        self.source = source
        self.key = key if key is not None else source
        self.on_availability = on_availability
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.loop = loop
        self.initial_s = initial_s
        self.max_s = max_s
        self.is_file = not source.isdigit() and "://" not in source
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online: bool | None = None
        self.frames = 0
        self.reconnects = 0
        self._fps = 0.0
        self.in_opencv: str | None = None  # "open" or "read" while the thread is inside OpenCV

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"grab {redact(self.source)}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """From now on no frame is kept and nothing is reported; returns at once."""
        with self._lock:
            self._stop.set()

    def stop(self) -> bool:
        """Stop and wait up to STOP_GRACE_S for the thread. False: it is still inside OpenCV
        (see `in_opencv`) and ends by itself when OpenCV's timeout returns it."""
        self.request_stop()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout=self.STOP_GRACE_S)
        return not thread.is_alive()

    def latest(self) -> Frame | None:
        with self._lock:
            return self._frame

    @property
    def fps(self) -> float:
        return self._fps

    def frame_age_s(self) -> float | None:
        frame = self.latest()
        return None if frame is None else time.monotonic() - frame.ts

    def _set_online(self, online: bool, reason: str) -> None:
        with self._lock:
            if self._stop.is_set() or self.online == online:
                return
            self.online = online
            self.on_availability(online, reason)

    def _run(self) -> None:
        slot = _slot(self.key)
        if not slot.acquire(blocking=False):
            self._set_online(
                False,
                f"the previous connection to {redact(self.source)} is still stuck in OpenCV; "
                "not opening another until it times out",
            )
            while not slot.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
        try:
            self._connect_and_read()
        finally:
            slot.release()

    def _connect_and_read(self) -> None:
        delay = self.initial_s
        while not self._stop.is_set():
            self.in_opencv = "open"
            try:
                capture = open_capture(self.source, self.open_timeout_s, self.read_timeout_s)
            finally:
                self.in_opencv = None
            if capture is None:
                self._set_online(False, f"cannot open {redact(self.source)}")
            else:
                try:
                    delivered = self._read_until_failure(capture)
                finally:
                    capture.release()
                if self._stop.is_set():
                    return
                if delivered:
                    delay = self.initial_s
                    if self.is_file and self.loop:
                        continue
                self._set_online(False, f"stream {redact(self.source)} stopped")
            self.reconnects += 1
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.max_s)

    def _read_until_failure(self, capture: Any) -> int:
        """Read until the stream fails, ends or the grabber stops; how many frames came."""
        import cv2

        native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        pace = 1.0 / native_fps if self.is_file and 0 < native_fps <= 120 else 0.0
        next_at = time.monotonic()
        window_start, window_frames = time.monotonic(), 0
        delivered = 0
        while not self._stop.is_set():
            self.in_opencv = "read"
            try:
                ok, image = capture.read()
            finally:
                self.in_opencv = None
            if not ok or image is None:
                return delivered
            now = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    return delivered
                self.frames += 1
                self._frame = Frame(self.frames, now, image)
            delivered += 1
            self._set_online(True, "frames arriving")
            window_frames += 1
            if now - window_start >= 2.0:
                self._fps = window_frames / (now - window_start)
                window_start, window_frames = now, 0
            if pace:
                next_at += pace
                wait = next_at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return delivered
                if wait < -1.0:
                    next_at = time.monotonic()
        return delivered


def redact(source: str) -> str:
    """The source without a password (rtsp://user:secret@host → rtsp://user:***@host)."""
    if "://" in source and "@" in source:
        scheme, rest = source.split("://", 1)
        credentials, host = rest.split("@", 1)
        if ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return source
