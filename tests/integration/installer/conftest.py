"""Fixtures for the installer tests: the repository on sys.path (for tests.support), the
`gatehouse` command of this checkout, and a small configuration with its secrets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from tests.integration.installer.cli_helpers import run_cli  # noqa: E402

SECRETS = {
    "GATEHOUSE_SITE_SALT": "test-salt-0123456789abcdef",
    "GATEHOUSE_SIGNING_KEY": "0123456789abcdef0123456789abcdef0123456789abcdef",
}


def small_config(state_dir: Path) -> str:
    return (
        "site:\n"
        "  id: test-site\n"
        "  salt: ${GATEHOUSE_SITE_SALT}\n"
        "gateway:\n"
        "  id: gw-test\n"
        f"  state_dir: {state_dir}\n"
        "  signing_key: ${GATEHOUSE_SIGNING_KEY}\n"
        "store:\n"
        "  synchronous: normal\n"
        "devices:\n"
        "  - kind: sim_reader\n"
        "    id: door-reader\n"
        "    interval_s: 0.5\n"
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(small_config(tmp_path / "state"))
    return path


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment of a `gatehouse` child process: this checkout first on the path."""
    env = {key: value for key, value in os.environ.items() if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(SECRETS)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def initialised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A configuration written by `gatehouse init` (with one simulated reader added) and its
    credentials directory."""
    config = tmp_path / "etc" / "gatehouse.yaml"
    credentials = tmp_path / "etc" / "credentials"
    code, _out, err = run_cli(
        [
            "--config",
            str(config),
            "init",
            "--yes",
            "--site-id",
            "lotus-garden",
            "--gateway-id",
            "gw-north",
            "--timezone",
            "Asia/Shanghai",
            "--credentials-dir",
            str(credentials),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capsys,
    )
    assert code == 0, err
    text = config.read_text().replace(
        "devices: []", "devices:\n  - kind: sim_reader\n    id: east-reader\n    name: East door reader"
    )
    config.write_text(text)
    return config, credentials
