"""Memory of lane cameras: this process's RSS with 1 and with 3 cameras reading plates.

    .venv/bin/python bench/camera_memory.py [--cameras 1 3] [--frames 24] [--threads 2]

Each count runs in a fresh child process, which imports NumPy, OpenCV and ONNX Runtime and
reads its RSS (the baseline, measured in the same run), then builds that many lane-camera
analysers (drivers/camera/analysis.py) from one configuration, the recommended one of
bench/plates.py, warms each up as the camera driver does, and runs them at once, one thread
each as the driver's worker threads do, over real gate photos resized to 640×480 (consecutive
frames differ, so the motion gate hands every frame to the plate pipeline). RSS is read from
/proc/self/status after the run (VmRSS; VmHWM is the peak), with the process's threads and the
distinct ONNX Runtime sessions the cameras hold. Last line:
`camera_memory: rss_1_mb=<MB> rss_3_mb=<MB> per_extra_camera_mb=<MB>`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.plates import recommended, shared_data

FRAME_SIZE = (640, 480)
PHOTOS = 8


def status(field: str) -> int:
    """A field of /proc/self/status: VmRSS and VmHWM in kB, Threads."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def child(cameras: int, frames: int, threads: int) -> dict[str, Any]:
    """Build and run `cameras` analysers in this process; what it cost."""
    import cv2
    import numpy as np
    import onnxruntime  # noqa: F401  (part of the baseline: every camera gateway loads it)

    from drivers.camera.analysis import FrameAnalyser
    from drivers.camera.config import CameraConfig

    photos = sorted((shared_data() / "plates" / "easypr_general_test").glob("*.jpg"))[:PHOTOS]
    images: list[np.ndarray] = [cv2.resize(cv2.imread(str(p)), FRAME_SIZE) for p in photos]
    baseline = status("VmRSS") / 1024
    inference = recommended(threads)
    analysers = []
    for number in range(cameras):
        config = CameraConfig(id=f"lane-{number}", kind="camera", source="unused", plates={})
        analyser = FrameAnalyser(config, lambda: 0.0, inference)
        assert analyser.pipeline is not None
        analyser.pipeline.warm_up()
        analysers.append(analyser)
    built = status("VmRSS") / 1024

    def run(number: int, analyser: FrameAnalyser) -> None:
        for frame in range(frames):
            analyser.analyse(images[(frame + number) % len(images)])

    workers = [threading.Thread(target=run, args=pair) for pair in enumerate(analysers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sessions = {
        id(a.pipeline.factory.session(model.spec))
        for a in analysers
        if a.pipeline is not None
        for model in (a.pipeline.detector, a.pipeline.recogniser)
    }
    return {
        "baseline_mb": baseline,
        "built_mb": built,
        "rss_mb": status("VmRSS") / 1024,
        "peak_mb": status("VmHWM") / 1024,
        "threads": status("Threads"),
        "sessions": len(sessions),
        "read": sum(a.pipeline.recogniser.calls for a in analysers if a.pipeline is not None),
    }


def measure(cameras: int, frames: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(cameras), "--frames", str(frames)]
    done = subprocess.run(
        [*command, "--threads", str(threads)], capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs=2, default=[1, 3], help="the two camera counts")
    parser.add_argument("--frames", type=int, default=24, help="frames each camera analyses")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.frames, args.threads)))
        return 0
    few, many = args.cameras
    results = {count: measure(count, args.frames, args.threads) for count in (few, many)}
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"config: recommended plate models, {args.threads} threads, {args.frames} frames a camera")
    for count, r in results.items():
        print(
            f"  {count} camera(s): baseline {r['baseline_mb']:.0f} MB (libraries), "
            f"built {r['built_mb']:.0f} MB, after the run {r['rss_mb']:.0f} MB, peak {r['peak_mb']:.0f} MB; "
            f"{r['sessions']} sessions, {r['threads']} threads, {r['read']} recogniser runs"
        )
    rss = {count: r["rss_mb"] for count, r in results.items()}
    extra = (rss[many] - rss[few]) / max(many - few, 1)
    print(
        f"camera_memory: rss_{few}_mb={rss[few]:.0f} rss_{many}_mb={rss[many]:.0f} "
        f"per_extra_camera_mb={extra:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
