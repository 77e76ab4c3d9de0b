"""A thread that reads a camera as fast as it delivers and keeps only the newest frame.

The stream is opened with its timeouts passed to `cv2.VideoCapture` at open time (FFmpeg
ignores them when set afterwards). When a read fails the grabber reports the camera offline,
waits (doubling from `initial_s` to `max_s`, back to `initial_s` once frames arrive), and opens
it again. A looping file is opened again at its end, so a file truncated or replaced while it
plays is met like any other source: it fails to open or gives no frame, and is offline."""

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


class Grabber:
    def __init__(
        self,
        source: str,
        on_availability: Callable[[bool, str], None],
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        loop: bool = False,
        initial_s: float = 1.0,
        max_s: float = 30.0,
    ) -> None:
        self.source = source
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

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"grab {self.source}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout_s + self.open_timeout_s + 1)

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
        if self.online != online:
            self.online = online
            self.on_availability(online, reason)

    def _run(self) -> None:
        delay = self.initial_s
        while not self._stop.is_set():
            capture = open_capture(self.source, self.open_timeout_s, self.read_timeout_s)
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
            ok, image = capture.read()
            if not ok or image is None:
                return delivered
            now = time.monotonic()
            delivered += 1
            self.frames += 1
            with self._lock:
                self._frame = Frame(self.frames, now, image)
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
