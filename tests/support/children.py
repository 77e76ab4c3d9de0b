"""This checkout run as a child process: importable from its root, whatever the venv installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that imports this checkout (plus `extra`)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def gatehouse_argv(*argv: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *argv]


def run_gatehouse(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`gatehouse ARGV` of this checkout, run to its end, its output captured as text."""
    return subprocess.run(
        gatehouse_argv(*argv), cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout
    )


def start_gatehouse(*argv: str, **popen: Any) -> subprocess.Popen[Any]:
    """`gatehouse ARGV` of this checkout as a running child process (pipes as `popen` says)."""
    return subprocess.Popen(gatehouse_argv(*argv), cwd=REPO, env=child_env(), **popen)
