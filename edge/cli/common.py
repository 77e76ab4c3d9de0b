"""Helpers the sub-command modules share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edge.config import DEFAULT_CONFIG_PATH
from edge.errors import StoreError


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


def ensure_state_dir(config: Any) -> Path:
    """The configured state directory, created if need be; StoreError saying why when it cannot
    be."""
    folder = Path(config.gateway.state_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(
            f"cannot create the state directory {folder} ({err.strerror or err}); "
            "check gateway.state_dir and that its file system is writable"
        ) from err
    return folder
