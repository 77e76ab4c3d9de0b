"""Running the `gatehouse` command in the test process."""

from __future__ import annotations

import pytest


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`gatehouse ARGV` in this process: exit code, stdout, stderr."""
    from edge.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
