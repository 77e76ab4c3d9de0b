"""Doctor pieces that need no devices: the line format, the clock answer, the service state,
and who may open a device node."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from edge.cli.doctor import config_or_problem
from edge.doctor import Result, checks
from edge.doctor.checks import (
    Context,
    access_problem,
    check_config,
    check_service,
    service_groups,
    timedatectl_synchronised,
)

NOBODY = "nobody"


def test_lines():
    assert Result.ok("disk", "plenty").line() == "[ OK ] disk: plenty"
    assert Result.fail("clock", "late", "enable NTP").line() == "[FAIL] clock: late → fix: enable NTP"
    assert Result.skip("service", "no systemd").line() == "[SKIP] service: no systemd"
    assert Result.fail("x", "y", "z").line(colour=True).startswith("\033[31m[FAIL]\033[0m x: y")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Timezone=UTC\nNTP=yes\nNTPSynchronized=yes\nTimeUSec=…\n", True),
        ("NTP=no\nNTPSynchronized=no\n", False),
        ("", None),
    ],
)
def test_timedatectl_show(output: str, expected: bool | None):
    assert timedatectl_synchronised(output) is expected


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (("active", "enabled"), "[ OK ] service: gatehouse.service is active (enabled)"),
        (
            ("failed", "enabled"),
            "[FAIL] service: gatehouse.service is failed (enabled) → fix: see why: journalctl -u gatehouse "
            "-e; start it: sudo systemctl start gatehouse",
        ),
        (
            ("inactive", "not-found"),
            "[FAIL] service: gatehouse.service is not installed → fix: sudo gatehouse service install --now",
        ),
        (
            (None, "System has not been booted with systemd"),
            "[SKIP] service: cannot ask systemd here (System has not been booted with systemd)",
        ),
    ],
)
def test_service_states(state, line, tmp_path: Path):
    context = Context(config_file=tmp_path / "g.yaml", service_state=state)
    assert [result.line() for result in check_service(context)] == [line]


@pytest.fixture
def node(tmp_path: Path) -> Path:
    path = tmp_path / "ttyUSB0"
    path.write_bytes(b"")
    return path


def own(path: Path, user: str, group: str, mode: int) -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests chown files: run them as root (CI does)")
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    path.chmod(mode)


def test_group_member_may_open(node: Path):
    own(node, "root", grp.getgrgid(pwd.getpwnam(NOBODY).pw_gid).gr_name, 0o660)
    assert access_problem(node, NOBODY) is None


def test_not_in_group_names_the_group(node: Path):
    own(node, "root", "dialout", 0o660)
    problem = access_problem(node, NOBODY)
    assert problem == (
        f"{node} is root:dialout 0660; nobody is not in group dialout",
        "join the group: sudo usermod -aG dialout nobody (then restart: sudo systemctl restart gatehouse)",
    )


def test_group_without_rw_needs_a_udev_rule(node: Path):
    own(node, "root", "dialout", 0o600)
    problem = access_problem(node, NOBODY)
    assert problem is not None
    assert problem[0] == f"{node} is root:dialout 0600; its group may not read and write it"
    assert 'GROUP="dialout", MODE="0660"' in problem[1]


def test_unknown_user(node: Path):
    assert access_problem(node, "no-such-user-gatehouse-test") == (
        "user no-such-user-gatehouse-test does not exist",
        "create it with: sudo gatehouse service install (or pass --user NAME)",
    )


def test_supplementary_groups_of_the_installed_unit_count_for_its_user(node: Path, tmp_path: Path):
    own(node, "root", "dialout", 0o660)
    unit = tmp_path / "gatehouse.service"
    unit.write_text(f"[Service]\nUser={NOBODY}\nSupplementaryGroups=dialout video\n")
    gids, exists = service_groups(NOBODY, unit)
    assert exists and grp.getgrnam("dialout").gr_gid in gids
    assert access_problem(node, NOBODY, unit) is None
    unit.write_text("[Service]\nUser=someone-else\nSupplementaryGroups=dialout video\n")
    assert access_problem(node, NOBODY, unit) is not None


def test_the_sudo_advice_follows_the_kind_of_error_not_its_words(tmp_path: Path, monkeypatch):
    """A site named 'Salt is not set' is a bad value to fix in the file; a secret this user cannot
    see is a matter of sudo or --credentials-dir."""
    monkeypatch.delenv("NO_SUCH_SALT", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(checks.os, "geteuid", lambda: 1000)  # root is told where to put it instead
    cases = {
        "site: {id: Salt is not set, salt: test-salt-0123456789}\ngateway: {id: gw}\n": "edit the file",
        "site:\n  id: s\n  salt: ${NO_SUCH_SALT}\ngateway: {id: gw}\n": "run the doctor with sudo",
    }
    path = tmp_path / "x.yaml"
    for text, advice in cases.items():
        path.write_text(text)
        config, problem, secret_unavailable = config_or_problem(path, debug=False)
        assert config is None
        context = Context(config_file=path, config_error=problem, secret_unavailable=secret_unavailable)
        (result,) = check_config(context)
        assert "is not set" in result.message
        assert advice in result.fix
