"""Plate recognition on a labelled set of real photos.

    .venv/bin/python bench/plates.py [--labels PATH/labels.csv] [--config FILE] [--threads N]

Runs the whole pipeline (localisation, straightening, recognition, grammar) on every image of
a labels file in the format of `shared/data/plates/labels.csv` (default: that file, found next
to the repository or under $GATEHOUSE_SHARED_DATA) and prints results per subset. The default
configuration is the recommended one: HyperLPR's y5fu_320x corner detector (from
shared/data/models) with the PP-OCRv4 recogniser of the rapidocr-onnxruntime wheel and
Gatehouse's own plate-grammar decoding. `--config FILE` evaluates another: a YAML file holding
an `inference:` section (see docs/vision.md); without `plate_detector` the PP-OCRv4 text
detector is used.

Full-scene images count as read when the reading of the labelled plate (the result whose box
overlaps the labelled box, else the most confident) equals the label; times are per full-scene
image (the gate case); foreign scenes count when any Chinese plate is reported.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import InferenceConfig, ModelFileConfig
from models.plates.detector import box_iou
from models.plates.pipeline import PlatePipeline, PlateResult, load_image

HYPERLPR_DETECTOR_SHA256 = "2a985dc63a5cc947ec36d18503d6fc0fd54525b9dba17f2fe29a71e86b44456d"


def shared_data() -> Path:
    env = os.environ.get("GATEHOUSE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def recommended(threads: int) -> InferenceConfig:
    detector = shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    return InferenceConfig(
        threads=threads,
        plate_detector=ModelFileConfig(path=str(detector), sha256=HYPERLPR_DETECTOR_SHA256),
    )


def from_file(path: Path, threads: int) -> InferenceConfig:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = data.get("inference", data)
    section.setdefault("threads", threads)
    return InferenceConfig.model_validate(section)


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def char_accuracy(read: str, truth: str) -> float:
    return max(0.0, 1.0 - levenshtein(read, truth) / max(len(truth), 1))


def pick(results: list[PlateResult], bbox: tuple[float, ...]) -> str:
    if not results:
        return ""
    overlapping = [r for r in results if box_iou(tuple(map(float, r.box)), bbox) > 0.3]
    return (overlapping or results)[0].plate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--labels", type=Path, default=shared_data() / "plates" / "labels.csv", help="labels CSV"
    )
    parser.add_argument("--config", type=Path, help="YAML with an inference: section")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--verbose", action="store_true", help="print every miss")
    args = parser.parse_args()

    inference = from_file(args.config, args.threads) if args.config else recommended(args.threads)
    pipeline = PlatePipeline(inference)
    pipeline.warm_up()
    root = args.labels.resolve().parent
    rows = list(csv.DictReader(args.labels.open(encoding="utf-8")))

    per_subset: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    full_exact: list[int] = []
    full_char: list[float] = []
    crop_exact: list[int] = []
    foreign_false = 0
    foreign_n = 0
    times_ms: list[float] = []
    for row in rows:
        image = load_image(str(root / row["file"]))
        subset = row["file"].split("/")[0]
        started = time.perf_counter()
        if row["kind"] == "cropped-plate":
            found = pipeline.read_crop(image)
            results = [found] if found else []
        else:
            results = pipeline.read(image)
        elapsed = (time.perf_counter() - started) * 1000
        if row["region"] != "cn":
            foreign_n += 1
            false_read = bool(results)
            foreign_false += false_read
            per_subset[subset][0] += not false_read
            per_subset[subset][1] += 1
            if false_read and args.verbose:
                print(f"  foreign read as Chinese: {row['file']} -> {results[0].plate}")
            if row["kind"] != "cropped-plate":
                times_ms.append(elapsed)
            continue
        if row["kind"] == "cropped-plate":
            read = results[0].plate if results else ""
            crop_exact.append(read == row["plate"])
        else:
            times_ms.append(elapsed)
            read = pick(results, tuple(map(float, row["bbox"].split())))
            full_exact.append(read == row["plate"])
            full_char.append(char_accuracy(read, row["plate"]))
        per_subset[subset][0] += read == row["plate"]
        per_subset[subset][1] += 1
        if read != row["plate"] and args.verbose:
            print(f"  miss: {row['file']} label {row['plate']} read {read or '-'}")

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(
        f"models: detector {pipeline.detector_name}, recogniser ppocrv4-rec, "
        + f"threads {pipeline.factory.threads}"
    )
    for subset, (good, total) in sorted(per_subset.items()):
        what = "not read as Chinese" if subset.startswith("openalpr") else "exact"
        print(f"  {subset:24s} {what:20s} {good}/{total} = {good / max(total, 1):.3f}")

    def ratio(values: list[int] | list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    p95 = statistics.quantiles(times_ms, n=20)[-1] if len(times_ms) >= 2 else 0.0
    print(
        f"plates: cn_full_exact={ratio(full_exact):.3f} cn_full_char={ratio(full_char):.3f} "
        f"cn_crop_exact={ratio(crop_exact):.3f} foreign_false_cn={foreign_false} "
        f"median_ms={statistics.median(times_ms) if times_ms else 0:.1f} p95_ms={p95:.1f} "
        f"rss_mb={rss_mb:.0f} n={len(rows)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
