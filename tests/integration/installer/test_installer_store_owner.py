"""`sudo gatehouse allow add` (and every command that writes the store) on an installed gateway:
the service runs as its own user in a state directory that user owns, the command runs as root.
Whatever the command creates there must stay the service's, or the service can no longer write
its store. Uid/gid 65534 (nobody) stands in for the `gatehouse` user."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.rules.alerts import AlertEngine
from edge.store import Store
from tests.integration.installer.cli_helpers import run_cli
from tests.integration.installer.conftest import REPO, SECRETS, small_config

SERVICE = (65534, 65534)

APPEND_AS_SERVICE = """
import os
import sys
from edge.events import EventFactory
from edge.store import Store

# The interpreter may live where only root can read (pyenv under /root): import and build what
# is needed first, then become the service's user for good before touching the store.
factory = EventFactory("test-site", "gw-test")
event = factory.make("gate.state", {"gate": "north", "state": "open"}, device="barrier")
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[3]))
assert (os.getresuid(), os.getresgid()) == ((int(sys.argv[3]),) * 3, (int(sys.argv[2]),) * 3)
with Store(sys.argv[1], synchronous="normal", events=factory) as store:
    print(store.append(event).seq)
"""


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests give files to uid 65534 and run a child as it: run them as root (CI does)")


def owners(folder: Path) -> dict[str, tuple[int, int]]:
    """uid and gid of the folder and of everything in it, by path relative to the folder."""
    paths = [folder, *folder.rglob("*")]
    return {str(p.relative_to(folder)): (p.lstat().st_uid, p.lstat().st_gid) for p in paths}


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder that uid 65534 can enter (pytest's tmp_path is root's alone), holding the
    configuration; its state directory is made by each test. Files are created with umask 022,
    as under sudo."""
    need_root()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    base = Path(tempfile.mkdtemp(prefix="gatehouse-owner-"))
    base.chmod(0o755)
    (base / "gatehouse.yaml").write_text(small_config(base / "state"))
    umask = os.umask(0o022)
    try:
        yield base
    finally:
        os.umask(umask)
        shutil.rmtree(base)


def state_dir(site: Path, uid: int, gid: int) -> Path:
    """The state directory as StateDirectory=gatehouse and StateDirectoryMode=0750 leave it."""
    state = site / "state"
    state.mkdir(mode=0o750)
    os.chown(state, uid, gid)
    return state


def gatehouse(site: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(["--config", str(site / "gatehouse.yaml"), *argv], capsys)
    assert code == 0, err
    return out


def run_every_store_command(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What an installer or a manager does with sudo: every command that writes the store, and
    the ones that only read it."""
    gatehouse(site, capsys, "allow", "add", "--person", "p-1", "--card", "12345678", "--plate", "津A12345")
    sheet = site / "residents.csv"
    sheet.write_text("person,plate\np-2,津A22222\n", encoding="utf-8")
    gatehouse(site, capsys, "allow", "import", str(sheet))
    issued = json.loads(
        gatehouse(site, capsys, "pass", "issue", "--plate", "津B12345", "--hours", "2", "--json")
    )
    gatehouse(site, capsys, "pass", "revoke", issued["id"])
    factory = EventFactory("test-site", "gw-test")
    with Store(site / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        raised = asyncio.run(
            AlertEngine(store, factory).raise_("gate.stuck", "gate.stuck:north", "north stuck")
        )
    assert raised is not None
    gatehouse(site, capsys, "alerts", "ack", raised.payload.alert_id, "--by", "guard-3")
    gatehouse(site, capsys, "allow", "remove", "--card", "12345678")
    for listing in (["events"], ["allow", "list"], ["pass", "list"], ["alerts", "--all"]):
        gatehouse(site, capsys, *listing)


def append_as_service(store: Path) -> subprocess.CompletedProcess[str]:
    """A child that drops to uid and gid 65534 (no way back: real, effective and saved ids), as
    the service runs, then opens the store and appends an event."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "HOME": "/nonexistent"}
    uid, gid = (str(n) for n in SERVICE)
    return subprocess.run(
        [sys.executable, "-c", APPEND_AS_SERVICE, str(store), gid, uid],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_store_commands_run_as_root_leave_the_state_directory_to_its_owner(
    site: Path, capsys: pytest.CaptureFixture[str]
):
    state = state_dir(site, *SERVICE)
    run_every_store_command(site, capsys)
    found = owners(state)
    assert {"gatehouse.db", "gatehouse.db.seq"} <= found.keys()
    assert {path: owner for path, owner in found.items() if owner != SERVICE} == {}
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in state.iterdir()}
    assert set(modes.values()) == {0o644}, f"modes are the ones the files were made with: {modes}"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750

    service = append_as_service(state / "gatehouse.db")
    assert service.returncode == 0, service.stderr
    assert int(service.stdout) > 1, "the service appended after what the commands recorded"
    assert {path: owner for path, owner in owners(state).items() if owner != SERVICE} == {}


def test_a_store_in_a_state_directory_of_root_keeps_root_as_owner(
    site: Path, capsys: pytest.CaptureFixture[str]
):
    """Nothing is given away in a directory whose owner is root, whatever its group; a file
    already there keeps its owner."""
    state = state_dir(site, 0, SERVICE[1])
    note = state / "note.txt"
    note.write_text("left by someone else\n")
    os.chown(note, *SERVICE)
    run_every_store_command(site, capsys)
    found = owners(state)
    assert found.pop("note.txt") == SERVICE
    assert found.pop(".") == (0, SERVICE[1])
    assert "gatehouse.db" in found
    assert set(found.values()) == {(0, 0)}
