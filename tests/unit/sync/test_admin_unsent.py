"""`gatehouse admin` when the broker does not answer: the change is kept in the community
database, and the operator is told so and what to do, with exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from sync.broker import free_port
from sync.community import Community
from sync.db import open_database

SITE = "oak-court"
GATEWAY = "gw-1"


@pytest.fixture
def admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> list[str]:
    monkeypatch.setenv("GW_KEY", "k" * 40)
    monkeypatch.setenv("SITE_SALT", "a-site-salt-of-some-length")
    db = ["admin", "--db", f"sqlite:///{tmp_path / 'community.db'}"]
    assert main([*db, "gateway", "add", SITE, GATEWAY, "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]) == 0
    capsys.readouterr()
    return [*db, "--host", "127.0.0.1", "--port", str(free_port())]


def test_an_allow_list_change_that_cannot_be_sent_is_kept_and_said(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*admin, "allow", "add", SITE, GATEWAY, "--plate", "津A12345", "--subject", "unit-3-402"]
    assert main(argv) == 1
    said = capsys.readouterr()
    assert "is at version 1" in said.out
    assert "allowlist.apply not sent" in said.err
    assert "recorded in the community database" in said.err and "next comes online" in said.err
    assert Community(open_database(admin[2])).allowlist_version(SITE, GATEWAY) == 1


def test_a_pass_that_cannot_be_sent_says_how_to_put_it_right(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*admin, "pass", "issue", SITE, GATEWAY, "--plate", "津B12345", "--hours", "4"]) == 1
    said = capsys.readouterr()
    pass_id = said.out.split()[1]
    assert f"pass {pass_id} is recorded in the community database only" in said.err
    assert "gatehouse admin pass revoke" in said.err
    assert main([*admin, "open-gate", SITE, GATEWAY, "north-in"]) == 1
    assert "nothing was sent: the gate stays as it is" in capsys.readouterr().err


def test_a_pass_for_a_household_is_sent_to_the_broker_given_before_the_command(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`pass issue --host` is the household visited; `admin --host` is the broker: neither takes
    the other's place."""
    port = admin[-1]
    argv = [*admin, "pass", "issue", SITE, GATEWAY, "--plate", "津B12345", "--host", "unit-3-402"]
    assert main(argv) == 1
    assert f"cannot reach the broker at 127.0.0.1:{port}" in capsys.readouterr().err
    row = Community(open_database(admin[2])).db.one("SELECT host FROM passes")
    assert row == ("unit-3-402",)
    broker_named = [*admin[:3], "--host", "localhost", "--port", port]
    assert main([*broker_named, "pass", "issue", SITE, GATEWAY, "--plate", "津B12346"]) == 1
    assert f"cannot reach the broker at localhost:{port}" in capsys.readouterr().err
