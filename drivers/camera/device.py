"""The camera driver: a grabber thread keeps the newest frame; the driver looks at it
`analysis_fps` times a second in a worker thread and reports plates, zones, tamper, health and
availability. Stopping does not wait for a grabber stuck inside OpenCV (see grabber.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from drivers.base import (
    Availability,
    Command,
    DeviceConfig,
    Driver,
    DriverContext,
    Emit,
    Health,
    TakeSnapshot,
)
from drivers.camera.config import CameraConfig
from drivers.camera.grabber import Grabber, redact
from edge.errors import DeviceMisconfigured, DeviceNotReady, ModelError
from models.config import InferenceConfig

log = logging.getLogger(__name__)


class CameraDriver(Driver):
    kind: ClassVar[str] = "camera"
    config_model: ClassVar[type[DeviceConfig]] = CameraConfig
    config: CameraConfig

    def __init__(
        self,
        config: Any,
        context: DriverContext,
        inference: InferenceConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, context)
        self.inference = inference if inference is not None else context.inference
        self.clock = clock
        self.grabber: Grabber | None = None
        self.analyser: Any = None
        self._changes: asyncio.Queue[tuple[bool, str]] | None = None

    def _make_analyser(self) -> Any:
        try:
            from drivers.camera.analysis import FrameAnalyser
        except ImportError as err:
            raise DeviceMisconfigured(
                f"camera {self.id}: {err.name} is not installed; "
                "pip install opencv-python-headless onnxruntime"
            ) from err
        try:
            analyser = FrameAnalyser(self.config, self.clock, self.inference, self.context.home_province)
            analyser.warm_up()
        except ModelError as err:
            raise DeviceMisconfigured(f"camera {self.id}: {err}") from err
        return analyser

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        changes: asyncio.Queue[tuple[bool, str]] = asyncio.Queue(maxsize=64)
        self._changes = changes

        def on_availability(online: bool, reason: str) -> None:
            def put() -> None:
                if not changes.full():
                    changes.put_nowait((online, reason))

            loop.call_soon_threadsafe(put)

        self.analyser = await asyncio.to_thread(self._make_analyser)
        grabber = Grabber(
            self.config.source,
            on_availability,
            open_timeout_s=self.config.open_timeout_s,
            read_timeout_s=self.config.read_timeout_s,
            loop=self.config.loop,
            initial_s=self.config.reconnect_initial_s,
            max_s=self.config.reconnect_max_s,
            key=f"camera {self.id}",
        )
        self.grabber = grabber
        grabber.start()
        period = 1.0 / self.config.analysis_fps
        last_seq = 0
        next_health = self.clock() + self.config.health_interval_s
        try:
            while True:
                while not changes.empty():
                    online, reason = changes.get_nowait()
                    emit(Availability(self.id, online, reason))
                frame = grabber.latest()
                if frame is not None and frame.seq != last_seq:
                    last_seq = frame.seq
                    for observation in await asyncio.to_thread(self.analyser.analyse, frame.image):
                        emit(observation)
                else:
                    for observation in self.analyser.quiet():
                        emit(observation)
                if self.clock() >= next_health:
                    next_health = self.clock() + self.config.health_interval_s
                    emit(Health(self.id, self.health()))
                emit.alive()
                await asyncio.sleep(period)
        finally:
            grabber.request_stop()
            if not await asyncio.to_thread(grabber.stop):
                stuck_in = grabber.in_opencv or "open"
                log.warning(
                    "camera %s: OpenCV's %s of %s has not returned; stopped without waiting for it "
                    "(the thread ends when it does, %s timeout %g s, and keeps nothing it gets)",
                    self.id,
                    stuck_in,
                    redact(self.config.source),
                    stuck_in,
                    self.config.read_timeout_s if stuck_in == "read" else self.config.open_timeout_s,
                )
            for observation in self.analyser.flush():
                emit(observation)

    def health(self) -> dict[str, float | int | str | None]:
        grabber = self.grabber
        if grabber is None:
            return {"online": 0}
        age = grabber.frame_age_s()
        return {
            "fps": round(grabber.fps, 2),
            "last_frame_age_s": None if age is None else round(age, 2),
            "frames": grabber.frames,
            "reconnects": grabber.reconnects,
            "online": int(bool(grabber.online)),
        }

    def accepts(self, command: Command) -> bool:
        return isinstance(command, TakeSnapshot)

    async def execute(self, command: Command) -> None:
        if isinstance(command, TakeSnapshot):
            folder = Path(self.context.state_dir) / "snapshots"
            await asyncio.to_thread(self.snapshot, folder / f"{self.id}-{int(time.time())}.jpg")

    def snapshot(self, path: Path) -> Path:
        """Save the newest frame as a JPEG."""
        from drivers.camera.analysis import jpeg

        frame = self.grabber.latest() if self.grabber is not None else None
        if frame is None:
            raise DeviceNotReady(f"camera {self.id}: no frame yet from {redact(self.config.source)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(frame.image))
        return path

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        """Loads the models the camera uses, as the gateway does, then grabs a frame and saves it."""
        await asyncio.to_thread(self._make_analyser)
        image = await asyncio.to_thread(grab_one, self.config, timeout_s)
        from drivers.camera.analysis import jpeg

        path = Path(out_dir) / f"{self.id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(image))
        h, w = image.shape[:2]
        return f"camera {self.id}: grabbed a {w}x{h} frame from {redact(self.config.source)}, saved {path}"


def grab_one(config: CameraConfig, timeout_s: float) -> Any:
    """One frame from the camera, or DeviceNotReady (for the CLI and self-test)."""
    from drivers.camera.grabber import open_capture

    deadline = time.monotonic() + timeout_s
    capture = open_capture(config.source, min(config.open_timeout_s, timeout_s), config.read_timeout_s)
    if capture is None:
        raise DeviceNotReady(_cannot_open(config, min(config.open_timeout_s, timeout_s)))
    try:
        while time.monotonic() < deadline:
            ok, image = capture.read()
            if ok and image is not None:
                return image
    finally:
        capture.release()
    raise DeviceNotReady(f"camera {config.id}: no frame within {timeout_s:.0f} s")


def _cannot_open(config: CameraConfig, waited_s: float) -> str:
    """Why the camera's source did not open, with what the installer can check."""
    source = config.source
    if source.isdigit():
        return (
            f"camera {config.id}: no camera at USB index {source}; is it plugged in? "
            "(ls /dev/video* lists the ones this machine sees)"
        )
    if "://" in source:
        return (
            f"camera {config.id}: cannot open {redact(source)} (no stream within {waited_s:g} s); "
            "check its address, port, path, user and password (open it in VLC), and that this "
            "gateway reaches the camera"
        )
    path = Path(source)
    if not path.exists():
        return f"camera {config.id}: {source}: no such file"
    return f"camera {config.id}: {source} is not a video file OpenCV can read"
