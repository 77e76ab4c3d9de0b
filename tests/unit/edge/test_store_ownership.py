"""Run as root in a state directory that belongs to another user (the service's), the store gives
everything it creates there to that user: proven with real files owned by uid 65534."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.store import Store

SERVICE = (65534, 65534)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("these tests give files to uid 65534: run them as root (CI does)")
    folder = tmp_path / "state"
    folder.mkdir(mode=0o750)
    os.chown(folder, *SERVICE)
    return folder


def owners(folder: Path) -> dict[str, tuple[int, int]]:
    """uid and gid of everything in the folder, by path relative to it."""
    return {str(p.relative_to(folder)): (p.lstat().st_uid, p.lstat().st_gid) for p in folder.rglob("*")}


def open_store(state: Path) -> Store:
    return Store(state / "gatehouse.db", synchronous="normal", events=EventFactory("site", "gw"))


def test_attachment_folders_and_files_go_to_the_owner(state: Path):
    with open_store(state) as store:
        digest, _ = store.put_attachment(b"\xff\xd8 a snapshot")
        store.put_attachment(b"\xff\xd8 another one")
        path = store.attachment_path(digest)
    found = owners(state)
    assert {"attachments", f"attachments/{digest[:2]}", str(path.relative_to(state))} <= found.keys()
    assert not list(state.rglob("*.tmp"))
    assert {p: owner for p, owner in found.items() if owner != SERVICE} == {}


def test_a_store_that_replaces_a_damaged_one_goes_to_the_owner(state: Path):
    damaged = state / "gatehouse.db"
    damaged.write_bytes(b"this is not a database" * 200)
    os.chown(damaged, *SERVICE)
    with open_store(state) as store:
        assert store.recovered_from is not None
        store.append(store.factory.make("gate.state", {"gate": "north", "state": "open"}))
    found = owners(state)
    assert store.recovered_from.name in found and "gatehouse.db" in found
    assert {p: owner for p, owner in found.items() if owner != SERVICE} == {}


def test_nothing_is_given_away_through_a_link_out_of_the_state_directory(state: Path, tmp_path: Path):
    """A link planted in the service's directory must not make root hand out files elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "attachments").symlink_to(elsewhere)
    with open_store(state) as store:
        digest, _ = store.put_attachment(b"\xff\xd8 a snapshot")
    outside = [elsewhere / digest[:2], elsewhere / digest[:2] / digest]
    assert [(p.stat().st_uid, p.stat().st_gid) for p in outside] == [(0, 0), (0, 0)]
    assert (elsewhere.stat().st_uid, elsewhere.stat().st_gid) == (0, 0)


def test_a_process_that_is_not_root_gives_nothing_away(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with open_store(state) as store:
        store.put_attachment(b"\xff\xd8 a snapshot")
    assert set(owners(state).values()) == {(0, 0)}


def test_the_gateway_lock_goes_to_the_owner_too(state: Path):
    """`sudo gatehouse run` once must not leave a root-owned gateway.lock for the service."""
    from edge.instance import InstanceLock

    lock = InstanceLock(state)
    lock.acquire()
    try:
        assert owners(state) == {"gateway.lock": SERVICE}
    finally:
        lock.release()
