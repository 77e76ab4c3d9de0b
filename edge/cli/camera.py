"""`gatehouse camera snapshot ID` and `gatehouse camera zones ID`: what a camera sees, and its
zones drawn on it."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from edge.cli.common import add_command, draw_label, image_path, load, positive, write_image
from edge.errors import ConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "camera",
        help="save a camera's picture, or draw its zones on it",
        description="Look through a configured camera: a snapshot, or its zones and their state.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="camera_command", metavar="ACTION", title="actions")
    snapshot = add_command(sub, "snapshot", "grab one frame from a camera and save it as JPEG", _snapshot)
    snapshot.add_argument("id", help="camera id, as in the configuration")
    snapshot.add_argument(
        "--out", metavar="FILE", help="picture to write (default ID.jpg; .jpg is added to a name without one)"
    )
    snapshot.add_argument("--timeout", type=positive, default=15.0, help="seconds to wait (15)")
    zones = add_command(
        sub,
        "zones",
        "draw the camera's zones and lane region, with their current state, on a snapshot",
        _zones,
        description=(
            "Grab one frame, judge each zone on it (parking spaces free or occupied, vehicles in "
            "keep-clear zones, people in crowd zones) and draw the polygons, the lane region "
            "and the state. Use it to check polygon coordinates after mounting a camera."
        ),
    )
    zones.add_argument("id", help="camera id, as in the configuration")
    zones.add_argument(
        "--out",
        default="zones.jpg",
        metavar="FILE",
        help="picture to write (default zones.jpg; .jpg is added to a name without one)",
    )
    zones.add_argument("--timeout", type=positive, default=15.0, help="seconds to wait (15)")


def _camera(args: argparse.Namespace) -> tuple[Any, Any]:
    config = load(args)
    cameras = {d.id: d for d in config.devices if getattr(d, "kind", None) == "camera"}
    if args.id not in cameras:
        near = difflib.get_close_matches(args.id, list(cameras), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (cameras: {', '.join(cameras) or 'none'})"
        raise ConfigError(f"no camera {args.id!r} in the configuration{hint}")
    return config, cameras[args.id]


def _snapshot(args: argparse.Namespace) -> int:
    from drivers.camera.device import grab_one

    _, camera = _camera(args)
    image = grab_one(camera, args.timeout)
    out = image_path(args.out or f"{camera.id}.jpg")
    write_image(out, image)
    h, w = image.shape[:2]
    print(f"{camera.id}: {w}x{h} frame saved to {out}")
    return 0


def _zones(args: argparse.Namespace) -> int:
    from drivers.camera.device import grab_one

    config, camera = _camera(args)
    image = grab_one(camera, args.timeout)
    lines = draw_zones(image, camera, config.inference)
    out = image_path(args.out)
    write_image(out, image)
    for line in lines:
        print(line)
    print(f"{camera.id}: zones drawn on {out}")
    return 0


def draw_zones(image: Any, camera: Any, inference: Any = None) -> list[str]:
    """Draw the lane region and each zone with its state on `image` (in place); one line of
    text per zone."""
    import time

    import cv2
    import numpy as np

    from drivers.camera.analysis import _object_detector
    from models.occupancy import OccupancyMonitor

    lines = []
    warnings: list[str] = []
    red, green, yellow = (0, 0, 255), (0, 200, 0), (0, 215, 255)
    if camera.plates is not None and camera.plates.region is not None:
        x, y, w, h = camera.plates.region
        cv2.rectangle(image, (x, y), (x + w, y + h), yellow, 2)
        cv2.putText(image, "plate lane", (x + 4, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, yellow, 2)
        lane = _lane_outside(camera.plates.region, image.shape[:2])
        if lane:
            warnings.append(lane)
    if not camera.zones:
        return ["no zones configured", *(f"warning: {w}" for w in warnings)]
    detector = _object_detector(inference)
    if detector is None and any(zone.kind == "crowd" for zone in camera.zones):
        warnings.append(
            "without inference.object_detector people are counted from what moves, which one "
            "picture cannot show: crowd zones read 0 here (the running gateway counts them)"
        )
    monitor = OccupancyMonitor(
        list(camera.zones), time.monotonic, camera.occupancy, detector, warnings.append
    )
    states, _ = monitor.update(image)
    for zone, state in zip(camera.zones, states, strict=True):
        polygons = zone.spaces or [zone.polygon]
        flags = state.spaces or (state.count >= zone.max_people,)
        for polygon, busy in zip(polygons, flags, strict=False):
            cv2.polylines(image, [np.array(polygon, np.int32)], True, red if busy else green, 2)
        if zone.kind == "parking":
            text = f"{zone.id}: {state.occupied}/{state.capacity} occupied"
        elif zone.kind == "keep_clear":
            text = f"{zone.id}: {'vehicle present' if state.count else 'clear'}"
        else:
            text = f"{zone.id}: {state.count} people (alert at {zone.max_people})"
        x, y = zone.polygon[0]
        draw_label(image, text, (x + 4, y + 20), (255, 255, 255))
        lines.append(text)
    return [*lines, *(f"warning: {w}" for w in warnings)]


def _lane_outside(region: tuple[int, int, int, int], shape: tuple[int, int]) -> str | None:
    """What is wrong when the plate lane region reaches beyond a frame of `shape` (height, width)."""
    x, y, w, h = region
    height, width = shape
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        return None
    where = f"plate lane {list(region)}"
    if x < width and y < height and x + w > 0 and y + h > 0:
        return f"{where}: reaches beyond the {width}x{height} frame; only its part inside is read"
    return f"{where}: outside the {width}x{height} frame, no plate in it is ever read"
