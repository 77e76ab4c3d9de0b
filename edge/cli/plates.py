"""`gatehouse plates read IMAGE...`: read licence plates in pictures, as the lane cameras do."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import add_command, config_path, image_path, load, write_image
from edge.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plates",
        help="read licence plates in pictures",
        description="Read licence plates in pictures with the on-device models.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="plates_command", metavar="ACTION", title="actions")
    read = add_command(
        sub,
        "read",
        "print plate, colour, confidence and box for each picture",
        _read,
        description=(
            "Read the plates in each picture with the models of the configuration's inference "
            "section (without a configuration file: the default PP-OCRv4 models) and the site's "
            "home province. Prints one line per plate, or JSON with --json."
        ),
    )
    read.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (JPEG, PNG)")
    read.add_argument("--json", action="store_true", help="print JSON, one object per picture")
    read.add_argument(
        "--annotate",
        metavar="OUT.jpg",
        help="draw the plates found on the picture and save it here (with several pictures, "
        "OUT-1.jpg, OUT-2.jpg, ...; .jpg is added to a name without an image extension)",
    )
    read.add_argument("--crop", action="store_true", help="the pictures are already cut to the plate")


def _settings(args: argparse.Namespace) -> tuple[Any, str | None]:
    from models.config import InferenceConfig

    if config_path(args).exists():
        config = load(args)
        return config.inference, config.site.home_province
    print(
        f"note: no configuration at {config_path(args)}; using the default models",
        file=sys.stderr,
    )
    return InferenceConfig(), None


def _annotated_path(base: str, index: int, count: int) -> Path:
    path = image_path(base)
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


def _read(args: argparse.Namespace) -> int:
    from models.plates.pipeline import PlatePipeline, load_image

    for name in args.images:
        if not Path(name).is_file():
            raise UsageError(f"{name}: no such file" if not Path(name).exists() else f"{name}: not a file")
    inference, home = _settings(args)
    pipeline = PlatePipeline(inference, home)
    found_any = False
    for index, name in enumerate(args.images, 1):
        image = load_image(name)
        if args.crop:
            single = pipeline.read_crop(image)
            results = [single] if single else []
        else:
            results = pipeline.read(image)
        found_any |= bool(results)
        rows = [
            {
                "plate": r.plate,
                "colour": r.colour,
                "confidence": r.confidence,
                "box": list(r.box),
                "double_layer": r.double,
            }
            for r in results
        ]
        if args.json:
            print(json.dumps({"image": name, "plates": rows}, ensure_ascii=False))
        elif not rows:
            print(f"{name}: no plate")
        else:
            for row in rows:
                box = " ".join(str(v) for v in row["box"])
                print(
                    f"{name}: {row['plate']} {row['colour'] or '-'} "
                    f"confidence {row['confidence']:.2f} box {box}"
                )
        if args.annotate:
            out = _annotated_path(args.annotate, index, len(args.images))
            draw_plates(image, results, out)
            if not args.json:
                print(f"{name}: annotated picture saved to {out}")
    return 0 if found_any else 1


def draw_plates(image: Any, results: list[Any], out: Path) -> None:
    import cv2
    import numpy as np

    from models.plates.grammar import ascii_label

    canvas = image.copy()
    thickness = max(2, canvas.shape[1] // 400)
    for r in results:
        cv2.polylines(canvas, [r.corners.astype(np.int32)], True, (0, 0, 255), thickness)
        label = f"{ascii_label(r.plate)} {r.colour or ''} {r.confidence:.2f}"
        x, y = r.box[0], max(20, r.box[1] - 8)
        cv2.putText(canvas, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4)
        cv2.putText(canvas, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 1)
    write_image(out, canvas)
