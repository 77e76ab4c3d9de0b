"""The local store's promises, each proven on a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from edge.errors import StoreError, StoreFull
from edge.events import MAX_EVENT_BYTES, EventFactory, Priority
from edge.rules.alerts import AlertEngine, list_alerts
from edge.store import Store
from edge.store.migrations import MIGRATIONS, migrate
from edge.store.queries import read_backlog
from tests.support.store_faults import failing_inserts


def gate_event(factory: EventFactory, state: str = "open"):
    return factory.make("gate.state", {"gate": "north", "state": state}, device="barrier-1")


def telemetry(factory: EventFactory, count: int = 1):
    return factory.make("occupancy.sample", {"zone": "lot-a", "count": count}, device="cam-1")


def access(factory: EventFactory):
    return factory.make(
        "access.granted",
        {"gate": "north", "reason": "resident", "subject": "p-1", "plate": "津A12345"},
        device="reader-1",
    )


def test_append_returns_committed_event_with_increasing_seq(fresh_store: Store, factory: EventFactory):
    first = fresh_store.append(gate_event(factory))
    second = fresh_store.append(gate_event(factory, "closed"))
    assert (first.seq, second.seq) == (1, 2)
    other = sqlite3.connect(fresh_store.path)
    stored = other.execute("SELECT seq, type FROM outbox ORDER BY seq").fetchall()
    assert stored == [(1, "gate.state"), (2, "gate.state")]
    assert [e.seq for e in fresh_store.events()] == [1, 2]


def test_seq_persists_across_restart(tmp_path: Path, factory: EventFactory):
    path = tmp_path / "g.db"
    with Store(path, synchronous="normal", events=factory) as store:
        for _ in range(5):
            store.append(gate_event(factory))
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.append(gate_event(factory)).seq == 6


def test_seq_survives_eviction_of_every_row(tmp_path: Path, factory: EventFactory):
    path = tmp_path / "g.db"
    with Store(path, synchronous="normal", events=factory) as store:
        rows = [store.append(gate_event(factory)).seq for _ in range(3)]
        store.mark_synced(rows)
        store.write(lambda c: c.execute("UPDATE counters SET value=3 WHERE name='seq'"))
        store.write(lambda c: c.execute("DELETE FROM outbox"))
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.append(gate_event(factory)).seq == 4


def test_concurrent_producers_share_commits(fresh_store: Store, factory: EventFactory):
    commits: list[int] = []
    fresh_store.add_commit_listener(lambda rows: commits.append(len(rows)))
    events = [gate_event(factory) for _ in range(800)]

    def produce(chunk):
        for event in chunk:
            fresh_store.append(event)

    threads = [threading.Thread(target=produce, args=(events[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(commits) == 800
    assert len(commits) < 800, "every event got its own commit: no group commit happened"
    seqs = [e.seq for e in fresh_store.events(limit=1000)]
    assert seqs == list(range(1, 801))


def test_async_append(fresh_store: Store, factory: EventFactory):
    async def main():
        return await asyncio.gather(*(fresh_store.append_async(gate_event(factory)) for _ in range(50)))

    stored = asyncio.run(main())
    assert sorted(e.seq for e in stored) == list(range(1, 51))
    assert fresh_store.backlog().count == 50


def test_submitted_bursts_share_commits_in_submit_order(fresh_store: Store, factory: EventFactory):
    commits: list[int] = []
    fresh_store.add_commit_listener(lambda rows: commits.append(len(rows)))

    async def main() -> list[int]:
        futures = [fresh_store.submit(gate_event(factory)) for _ in range(300)]
        return list(await asyncio.gather(*futures))

    seqs = asyncio.run(main())
    assert seqs == list(range(1, 301))
    assert sum(commits) == 300
    assert len(commits) < 300, "every event got its own commit: no group commit happened"
    assert [e.seq for e in fresh_store.events(limit=1000)] == seqs


def test_a_full_disk_fails_the_submitted_futures_it_did_not_commit(tmp_path: Path, factory: EventFactory):
    store = Store(tmp_path / "full.db", synchronous="normal", events=factory, max_page_count=40)

    async def main() -> tuple[list[int], list[int | BaseException]]:
        first = [await store.submit(access(factory)) for _ in range(10)]
        burst = [store.submit(access(factory)) for _ in range(5000)]
        return first, list(await asyncio.gather(*burst, return_exceptions=True))

    try:
        first, burst = asyncio.run(main())
        assert all(isinstance(r, int | StoreFull) for r in burst)
        assert any(isinstance(r, StoreFull) for r in burst)
        stored = {r[0] for r in store.read().execute("SELECT seq FROM outbox")}
        assert stored == set(first) | {r for r in burst if isinstance(r, int)}
        store.close()
        with pytest.raises(StoreError, match="closed"):
            asyncio.run(_submit_one(store, access(factory)))
    finally:
        store.close()


async def _submit_one(store: Store, event) -> int:
    return await store.submit(event)


def test_commit_listener_sees_rows_in_order(fresh_store: Store, factory: EventFactory):
    seen: list[int] = []
    fresh_store.add_commit_listener(lambda rows: seen.extend(r.seq for r in rows))
    for _ in range(5):
        fresh_store.append(gate_event(factory))
    assert seen == [1, 2, 3, 4, 5]


def test_pending_orders_by_class_and_mark_synced(fresh_store: Store, factory: EventFactory):
    fresh_store.append(telemetry(factory))
    granted = fresh_store.append(access(factory))
    fresh_store.append(telemetry(factory))
    assert [r.seq for r in fresh_store.pending(int(Priority.ACCESS))] == [granted.seq]
    assert [r.seq for r in fresh_store.pending(int(Priority.TELEMETRY))] == [1, 3]
    fresh_store.mark_synced([1])
    assert [r.seq for r in fresh_store.pending(int(Priority.TELEMETRY))] == [3]
    backlog = fresh_store.backlog()
    assert backlog.count == 2
    assert backlog.by_priority == {int(Priority.ACCESS): 1, int(Priority.TELEMETRY): 1}


def test_sync_marks_cover_their_class_only(fresh_store: Store, factory: EventFactory):
    telemetry_class, access_class = int(Priority.TELEMETRY), int(Priority.ACCESS)
    for _ in range(3):
        fresh_store.append(telemetry(factory))
    granted = fresh_store.append(access(factory))
    last = fresh_store.append(telemetry(factory))
    fresh_store.mark_synced(through={telemetry_class: granted.seq})
    assert [r.seq for r in fresh_store.pending(telemetry_class)] == [last.seq]
    assert [r.seq for r in fresh_store.pending(access_class)] == [granted.seq]
    assert fresh_store.backlog().by_priority == {access_class: 1, telemetry_class: 1}
    # A mark never goes back; a row above it is marked by itself.
    fresh_store.mark_synced([last.seq], through={telemetry_class: 1})
    assert fresh_store.sync_marks() == {telemetry_class: granted.seq}
    assert fresh_store.pending(telemetry_class) == []
    backlog = fresh_store.backlog()
    assert (backlog.count, backlog.by_priority) == (1, {access_class: 1})
    assert backlog.oldest_ts_ms == granted.ts_ms
    stamped = fresh_store.read().execute("SELECT seq FROM outbox WHERE synced_ms IS NOT NULL").fetchall()
    assert stamped == [(last.seq,)]


def test_backlog_of_a_store_not_yet_migrated_to_marks(tmp_path: Path, factory: EventFactory):
    """`gatehouse status` reads the file read-only, perhaps before the daemon migrated it."""
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    event = telemetry(factory)
    conn.execute(
        "INSERT INTO outbox(id, seq, type, priority, ts_ms, device, body) VALUES (?, 1, ?, ?, ?, ?, ?)",
        (str(event.id), event.type, int(event.priority), event.ts_ms, event.device, event.model_dump_json()),
    )
    assert read_backlog(conn).by_priority == {int(Priority.TELEMETRY): 1}
    conn.close()


def test_pending_query_uses_the_partial_index(fresh_store: Store):
    plan = (
        fresh_store.read()
        .execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM outbox WHERE synced_ms IS NULL AND priority=? AND seq>? "
            "ORDER BY seq LIMIT ?",
            (1, 0, 10),
        )
        .fetchall()
    )
    assert "outbox_pending" in " ".join(str(step[-1]) for step in plan)


@pytest.mark.parametrize("marked_by", ["rows", "mark"])
def test_quota_drops_synced_first_then_telemetry_never_access(
    tmp_path: Path, factory: EventFactory, marked_by: str
):
    # The quota leaves room for the schema's own pages (every table and index takes some), so
    # that new migrations do not eat the test's margin.
    quota = 1_000_000
    store = Store(tmp_path / "q.db", synchronous="normal", events=factory, quota_bytes=quota)
    try:
        kept_access = [store.append(access(factory)).seq for _ in range(600)]
        synced = [store.append(gate_event(factory)).seq for _ in range(300)]
        if marked_by == "rows":
            store.mark_synced(synced)
        else:
            store.mark_synced(through={int(Priority.STATE): synced[-1]})
        for i in range(7000):
            store.append(telemetry(factory, i))
        counters = store.counters()
        assert counters.get("dropped_synced", 0) == 300
        assert counters.get("dropped_telemetry", 0) > 0
        remaining = {r[0] for r in store.read().execute("SELECT seq FROM outbox")}
        assert set(kept_access) <= remaining
        assert not set(synced) & remaining
        assert store.used_bytes() <= quota
        alerts = store.events(types=["alert.*"], limit=10)
        assert len(alerts) == 1
        assert alerts[0].payload.key == "store.quota"
    finally:
        store.close()


def test_quota_never_drops_alerts_or_access(tmp_path: Path, factory: EventFactory):
    store = Store(tmp_path / "q.db", synchronous="normal", events=factory, quota_bytes=100_000)
    try:
        seqs = [store.append(access(factory)).seq for _ in range(1500)]
        stored = {r[0] for r in store.read().execute("SELECT seq FROM outbox WHERE type='access.granted'")}
        assert stored == set(seqs)
    finally:
        store.close()


def test_disk_full_raises_and_keeps_what_was_committed(
    tmp_path: Path, factory: EventFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="edge.store.store")
    store = Store(tmp_path / "full.db", synchronous="normal", events=factory, max_page_count=40)
    try:
        committed = []
        with pytest.raises(StoreFull, match="free disk space"):
            for _ in range(5000):
                committed.append(store.append(access(factory)).seq)
        stored = {r[0] for r in store.read().execute("SELECT seq FROM outbox")}
        assert set(committed) <= stored
        assert len(committed) > 10
        for _ in range(5):  # every card while the disk is full: said once, not five more times
            with pytest.raises(StoreFull):
                store.append(access(factory))
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len([m for m in errors if m.startswith("store commit failed")]) == 1, errors
        assert len([m for m in errors if m.startswith("eviction failed")]) <= 1, errors
        store.write(lambda conn: conn.execute("DELETE FROM outbox"))
        store.append(access(factory))
        assert any(r.getMessage().startswith("the store commits again") for r in caplog.records)
    finally:
        store.close()


def test_a_write_that_fills_the_disk_raises_store_full_and_leaves_the_store_working(
    tmp_path: Path, factory: EventFactory
):
    """SQLite rolls the whole transaction back on a full disk, savepoints and all: the caller
    must still hear that the store is full (not about a missing savepoint), and the store must
    go on committing what fits."""
    store = Store(tmp_path / "full.db", synchronous="normal", events=factory, max_page_count=40)

    def oversized(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE filler(x BLOB)")
        conn.execute("INSERT INTO filler VALUES (zeroblob(400000))")

    try:
        before = store.append(access(factory)).seq
        with pytest.raises(StoreFull, match="free disk space"):
            store.write(oversized)
        after = store.append(access(factory)).seq
        stored = [r[0] for r in store.read().execute("SELECT seq FROM outbox ORDER BY seq")]
        assert stored == [before, after]
        tables = {r[0] for r in store.read().execute("SELECT name FROM sqlite_master")}
        assert "filler" not in tables
    finally:
        store.close()


def test_corrupt_file_is_moved_aside_reported_and_replaced(tmp_path: Path, factory: EventFactory):
    path = tmp_path / "c.db"
    with Store(path, synchronous="normal", events=factory) as store:
        last = [store.append(gate_event(factory)).seq for _ in range(20)][-1]
    data = bytearray(path.read_bytes())
    data[0:100] = b"\x00garbage" * 12 + b"\x00" * 4
    path.write_bytes(bytes(data))
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.recovered_from is not None
        assert store.recovered_from.exists(), "the corrupt file must be kept"
        assert store.recovered_from.read_bytes()[:8] == b"\x00garbage"
        alerts = store.events(types=["alert.raised"])
        assert [a.payload.kind for a in alerts] == ["store.corrupt"]
        assert alerts[0].seq > last, "seq must never repeat after recovery"
        (record,) = list_alerts(store.read())
        assert (record.alert_id, record.state, record.severity) == (
            alerts[0].payload.alert_id,
            "raised",
            "critical",
        )
        engine = AlertEngine(store, factory)
        assert asyncio.run(engine.acknowledge("store.corrupt", by="guard 2")) is not None
        assert engine.find(record.alert_id).state == "acknowledged"  # type: ignore[union-attr]


def test_a_store_damaged_in_the_middle_is_reported_on_one_line(tmp_path: Path, factory: EventFactory):
    """SQLite's check names the damaged pages over several lines: the guards' lists show one line
    (the whole text stays in the alert's detail)."""
    path = tmp_path / "m.db"
    with Store(path, synchronous="normal", events=factory) as store:
        for _ in range(2000):
            store.append(gate_event(factory))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = b"\xa5" * 3000
    path.write_bytes(bytes(data))
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.recovered_from is not None
        (alert,) = store.events(types=["alert.raised"])
        assert "\n" not in alert.payload.message
        assert "the community database sends them again once the gateway is online" in alert.payload.message
        assert "\n" in alert.payload.detail["problem"], "SQLite's whole text is kept in the detail"


def test_the_quota_alert_is_the_guards_to_see_and_acknowledge(tmp_path: Path, factory: EventFactory):
    """Raised and cleared by the store itself, the quota alert has its record in the alerts table
    like every other alert (listed, acknowledged, sounding the sirens for its severity)."""
    store = Store(tmp_path / "q.db", synchronous="normal", events=factory, quota_bytes=1_000_000)
    try:
        for i in range(7000):
            store.append(telemetry(factory, i))
        (record,) = list_alerts(store.read())
        assert (record.kind, record.key, record.state) == ("store.quota", "store.quota", "raised")
        assert asyncio.run(AlertEngine(store, factory).acknowledge(record.alert_id, by="guard 2")) is not None
        store.mark_synced(through={int(Priority.TELEMETRY): store.last_seq})
        for i in range(3000):  # until a round has only synced rows to drop
            store.append(telemetry(factory, i))
            if store.events(types=["alert.cleared"], limit=1):
                break
        assert store.events(types=["alert.cleared"], limit=1), "the store cleared it"
        assert list_alerts(store.read()) == [], "and the guards' list with it"
        (over,) = list_alerts(store.read(), include_cleared=True)
        assert (over.state, over.acked_by) == ("cleared", "guard 2")
    finally:
        store.close()


def test_migrations_from_empty_and_each_earlier_version(tmp_path: Path):
    for applied in range(len(MIGRATIONS) + 1):
        conn = sqlite3.connect(tmp_path / f"m{applied}.db", isolation_level=None)
        migrate(conn, MIGRATIONS[:applied])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == applied
        assert migrate(conn) == len(MIGRATIONS)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"outbox", "counters", "kv", "devices", "attachments", "passes"} <= tables
        conn.close()


def test_store_from_a_newer_gatehouse_is_refused(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(RuntimeError, match="newer than this gatehouse"):
        migrate(conn)


def test_attachments_are_content_addressed(fresh_store: Store):
    digest, size = fresh_store.put_attachment(b"\xff\xd8jpeg-bytes")
    again, _ = fresh_store.put_attachment(b"\xff\xd8jpeg-bytes")
    assert digest == again and size == len(b"\xff\xd8jpeg-bytes")
    assert fresh_store.attachment_path(digest).read_bytes() == b"\xff\xd8jpeg-bytes"
    assert fresh_store.expire_attachments(older_than_ms=2**62) == 1
    assert not fresh_store.attachment_path(digest).exists()


def test_kv_and_counters(fresh_store: Store):
    fresh_store.kv_set("allowlist.version", "7")
    fresh_store.add_counter("drops", 2)
    fresh_store.add_counter("drops", 3)
    assert fresh_store.kv_get("allowlist.version") == "7"
    assert fresh_store.counter("drops") == 5


def test_an_empty_store_reopened_starts_at_one(tmp_path: Path, factory: EventFactory):
    path = tmp_path / "empty.db"
    Store(path, synchronous="normal", events=factory).close()
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.append(gate_event(factory)).seq == 1


def test_a_vanished_store_never_repeats_seq(tmp_path: Path, factory: EventFactory):
    path = tmp_path / "gone.db"
    with Store(path, synchronous="normal", events=factory) as store:
        last = [store.append(gate_event(factory)).seq for _ in range(5)][-1]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with Store(path, synchronous="normal", events=factory) as store:
        assert store.append(gate_event(factory)).seq > last


def test_a_store_opens_when_its_seq_reservation_cannot_be_written(tmp_path: Path, factory: EventFactory):
    """A full disk must not stop the gateway from starting: the store opens (what is stored can be
    read), appends raise StoreFull while the reservation cannot be written, and no temporary file
    is left behind. `gatehouse.db.tmp` pointing at /dev/full makes every write of it ENOSPC."""
    path = tmp_path / "state" / "gatehouse.db"
    path.parent.mkdir()
    full = tmp_path / "state" / "gatehouse.db.tmp"
    full.symlink_to("/dev/full")
    store = Store(path, synchronous="normal", events=factory)
    try:
        assert not full.exists() and not full.is_symlink()
        assert store.kv_get_direct("anything") is None
        full.symlink_to("/dev/full")
        with pytest.raises(StoreFull, match=r"cannot reserve sequence numbers .* free disk space"):
            store.append(gate_event(factory))
        assert not full.is_symlink()
        assert store.append(gate_event(factory)).seq == 1
    finally:
        store.close()


def test_a_state_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path, factory: EventFactory):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=r"cannot create the state directory .*file/state"):
        Store(tmp_path / "file" / "state" / "gatehouse.db", events=factory)


def held_writer(store: Store) -> threading.Event:
    """Hold the store's writer until the returned event is set, so that what is queued meanwhile
    shares the next commit."""
    release, holding = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    threading.Thread(target=store.write, args=(hold,), daemon=True).start()
    assert holding.wait(10)
    return release


def set_kv(key: str, event):
    def change(conn: sqlite3.Connection):
        conn.execute("INSERT INTO kv(key, value) VALUES (?, 'set')", (key,))
        return key, event

    return change


def test_a_write_and_its_event_commit_together_numbered_after_the_appends(
    fresh_store: Store, factory: EventFactory
):
    seen: list[tuple[int, str]] = []
    fresh_store.add_commit_listener(lambda rows: seen.extend((r.seq, r.type) for r in rows))
    release = held_writer(fresh_store)
    results: list[object] = []
    appender = threading.Thread(target=lambda: results.append(fresh_store.append(telemetry(factory))))
    appender.start()
    writer = threading.Thread(
        target=lambda: results.append(fresh_store.write_with_event(set_kv("door", access(factory))))
    )
    writer.start()
    while len(fresh_store._group.rows) + len(fresh_store._group.calls) < 2:
        threading.Event().wait(0.001)
    release.set()
    appender.join(10)
    writer.join(10)
    appended = next(r for r in results if not isinstance(r, tuple))
    key, recorded = next(r for r in results if isinstance(r, tuple))
    assert key == "door" and recorded is not None
    assert (appended.seq, recorded.seq) == (1, 2)
    assert seen == [(1, "occupancy.sample"), (2, "access.granted")]
    assert fresh_store.events(types=["access.*"])[0].id == recorded.id
    assert fresh_store.read().execute("SELECT value FROM kv WHERE key = 'door'").fetchone() == ("set",)
    assert fresh_store.append(gate_event(factory)).seq == 3


def test_a_write_whose_event_cannot_be_inserted_changes_nothing(fresh_store: Store, factory: EventFactory):
    failing_inserts(fresh_store, "access.granted", "disk I/O error")
    with pytest.raises(StoreError, match=r"could not record access\.granted: disk I/O error"):
        fresh_store.write_with_event(set_kv("door", access(factory)))
    assert fresh_store.read().execute("SELECT value FROM kv WHERE key = 'door'").fetchone() is None
    assert fresh_store.write_with_event(set_kv("gate", None)) == ("gate", None)
    assert fresh_store.append(gate_event(factory)).seq == 1


def test_an_event_too_large_to_send_is_refused_and_nothing_else_is_lost(
    fresh_store: Store, factory: EventFactory
):
    """An event that no MQTT message could carry would hold up its whole class in the outbox."""
    before = fresh_store.append(gate_event(factory)).seq

    def alert(alert_id: str, characters: int):
        payload = {"alert_id": alert_id, "kind": "k", "key": alert_id, "message": "闸" * characters}
        return factory.make("alert.raised", payload)

    huge = alert("a1", MAX_EVENT_BYTES // 3)
    too_large = rf"alert\.raised event of \d+ bytes not recorded.*{MAX_EVENT_BYTES}"
    with pytest.raises(StoreError, match=too_large):
        fresh_store.append(huge)
    with pytest.raises(StoreError, match="not recorded"):
        fresh_store.write_with_event(set_kv("door", huge))
    assert fresh_store.read().execute("SELECT value FROM kv WHERE key = 'door'").fetchone() is None
    assert fresh_store.append(alert("a2", 20_000)).seq == before + 1
