"""`gatehouse plates read IMAGE...`: read licence plates in pictures, as the lane cameras do."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge.cli import EXIT_CONFIG
from edge.cli.common import add_command, config_path, draw_label, image_path, load, write_image
from edge.errors import GatehouseError, ModelError, UsageError


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
            "section and the site's home province (without --config or $GATEHOUSE_CONFIG, and no "
            "file at the default place: the default PP-OCRv4 models). Prints one line per plate, "
            "or with --json one JSON object per picture "
            "and line: image and plates, or image and error when the picture cannot be read (image, "
            "plates and error when the annotated one cannot be written). A picture that fails does "
            "not stop the others. "
            "Exit status: 2 when any picture failed or a model cannot be loaded, else 0 when a "
            "plate was found, 1 when none was."
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

    named = getattr(args, "config", None) or os.environ.get("GATEHOUSE_CONFIG")
    if named or config_path(args).exists():
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


def _refuse_to_overwrite_a_picture(base: str, images: list[str]) -> None:
    """UsageError when an annotated picture would be written over one of the pictures to read
    (`--annotate a.jpg a.jpg`, or `*.jpg` run again after out-1.jpg, out-2.jpg were written)."""
    inputs = {Path(name).resolve(): name for name in images}
    for index in range(1, len(images) + 1):
        out = _annotated_path(base, index, len(images))
        if out.resolve() in inputs:
            raise UsageError(
                f"--annotate {base} would write {out} over the picture {inputs[out.resolve()]} "
                "given to read; choose another name or folder for the annotated pictures"
            )


def _load(name: str) -> Any:
    """The picture at `name` (BGR), or GatehouseError saying why it cannot be read."""
    from models.plates.pipeline import load_image

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
    return load_image(name)


def _read(args: argparse.Namespace) -> int:
    from models.plates.pipeline import PlatePipeline

    if args.annotate:
        _refuse_to_overwrite_a_picture(args.annotate, args.images)
    inference, home = _settings(args)
    try:
        return _read_all(args, PlatePipeline(inference, home))
    except ModelError as err:
        # not "no plate" (1): no picture could be read at all
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG


def _read_all(args: argparse.Namespace, pipeline: Any) -> int:
    found_any = failed = False
    for index, name in enumerate(args.images, 1):
        try:
            image = _load(name)
        except GatehouseError as err:
            failed = True
            _report_failure(args, {"image": name}, err)
            continue
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
        entry: dict[str, Any] = {"image": name, "plates": rows}
        if not args.json:
            _print_rows(name, rows)
        if args.annotate:
            out = _annotated_path(args.annotate, index, len(args.images))
            try:
                draw_plates(image, results, out)
            except GatehouseError as err:
                failed = True
                _report_failure(args, entry, err)
                continue
            if not args.json:
                print(f"{name}: annotated picture saved to {out}")
        if args.json:
            print(json.dumps(entry, ensure_ascii=False))
    if failed:
        return EXIT_CONFIG
    return 0 if found_any else 1


def _print_rows(name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        print(f"{name}: no plate")
    for row in rows:
        box = " ".join(str(v) for v in row["box"])
        print(f"{name}: {row['plate']} {row['colour'] or '-'} confidence {row['confidence']:.2f} box {box}")


def _report_failure(args: argparse.Namespace, entry: dict[str, Any], err: GatehouseError) -> None:
    """One picture went wrong: said on stderr, and in its JSON object; the others go on."""
    print(f"error: {err}", file=sys.stderr)
    if args.json:
        print(json.dumps({**entry, "error": str(err)}, ensure_ascii=False))


def draw_plates(image: Any, results: list[Any], out: Path) -> None:
    import cv2
    import numpy as np

    from models.plates.grammar import ascii_label

    canvas = image.copy()
    thickness = max(2, canvas.shape[1] // 400)
    for r in results:
        cv2.polylines(canvas, [r.corners.astype(np.int32)], True, (0, 0, 255), thickness)
        label = f"{ascii_label(r.plate)} {r.colour or ''} {r.confidence:.2f}"
        draw_label(canvas, label, (r.box[0], r.box[1] - 8), (0, 255, 255))
    write_image(out, canvas)
