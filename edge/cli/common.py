"""Helpers the sub-command modules share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edge.config import DEFAULT_CONFIG_PATH
from edge.errors import GatehouseError


def config_path(args: argparse.Namespace) -> Path:
    """--config, else $GATEHOUSE_CONFIG, else /etc/gatehouse/gatehouse.yaml."""
    chosen = getattr(args, "config", None) or os.environ.get("GATEHOUSE_CONFIG")
    return Path(chosen) if chosen else DEFAULT_CONFIG_PATH


def load(args: argparse.Namespace) -> Any:
    from edge.config_loader import load_config

    return load_config(config_path(args))


def add_command(
    subparsers: Any, name: str, help_text: str, func: Any, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a sub-command whose help is always set (a test checks every command has some)."""
    parser = subparsers.add_parser(name, help=help_text, description=description or help_text)
    parser.set_defaults(func=func)
    return parser


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def image_path(name: str | Path) -> Path:
    """Where to save a picture named `name`: as given when it ends in an image extension OpenCV
    writes, else with .jpg added (`--out snap` writes snap.jpg)."""
    path = Path(name)
    return path if path.suffix.lower() in IMAGE_SUFFIXES else path.with_name(f"{path.name}.jpg")


def write_image(path: Path, image: Any) -> None:
    """Save `image` at `path` (see image_path), making its folder; GatehouseError saying why not."""
    import cv2

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), image)
    except (OSError, cv2.error) as err:
        raise GatehouseError(f"cannot write {path}: {getattr(err, 'strerror', None) or err}") from err
    if not written:
        raise GatehouseError(f"cannot write {path}; check that its folder is writable")
