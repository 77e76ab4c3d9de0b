"""Doctor pieces that need no devices: the line format, the clock answer, the service state,
and who may open a device node."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from edge.doctor import Result
from edge.doctor.checks import (
    Context,
    access_problem,
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
