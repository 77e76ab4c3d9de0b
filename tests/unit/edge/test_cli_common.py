"""How the CLI names itself in the commands it suggests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.cli.common import own_command


@pytest.fixture
def venv_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gatehouse` console script in a venv under the working directory, running."""
    script = tmp_path / ".venv" / "bin" / "gatehouse"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    return script


def test_a_venv_not_on_path_is_named_by_its_path(venv_script: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert own_command() == ".venv/bin/gatehouse"


def test_an_activated_venv_or_an_installed_gateway_is_plain_gatehouse(
    venv_script: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(venv_script.parent))
    assert own_command() == "gatehouse"


def test_another_gatehouse_first_on_path_does_not_count(
    venv_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    other = tmp_path / "other" / "gatehouse"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{other.parent}:{venv_script.parent}")
    assert own_command() == ".venv/bin/gatehouse"


def test_outside_the_working_directory_the_path_is_absolute(
    venv_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert own_command() == str(venv_script)


def test_run_from_its_own_folder_it_is_dot_slash(venv_script: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(venv_script.parent)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert own_command() == "./gatehouse"


def test_run_as_a_module_it_is_gatehouse(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["/src/edge/cli/__main__.py", "demo"])
    assert own_command() == "gatehouse"
