"""The local store: one SQLite file in WAL mode holding the outbox of events, attachment metadata,
allow-lists and passes, device state and counters.

Its promises:
- `append()` returns only after the event is committed. Appends from many threads or tasks are
  gathered by one writer thread into a shared transaction (group commit), so durability costs
  one commit per group, not one per event.
- `seq` is given under the same lock that queues the row, so commit order is seq order; it is
  persisted in the same transaction as the rows, and a high-water mark reserved ahead in a side
  file means a store that had to be replaced never hands out a number twice.
- Past the quota the store drops synced rows first, then unsynced telemetry, never access
  events or alerts; it counts what it dropped and raises (and later clears) an alert.
- A database that cannot be opened or fails its integrity check is moved aside, reported and
  replaced by a new one; it is never deleted.
- Run as root (`sudo gatehouse allow add`) in a state directory that belongs to another user
  (the service's), every file and folder it creates there is given to that user and group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from edge.errors import StoreError, StoreFull
from edge.events import MAX_EVENT_BYTES, AlertClearedPayload, AlertPayload, Event, EventFactory, Priority
from edge.ids import uuid7
from edge.store.migrations import migrate
from edge.store.ownership import StateDirOwner
from edge.store.queries import Backlog, pending_after, query_events, read_backlog, sync_marks

log = logging.getLogger(__name__)

T = TypeVar("T")

SEQ_RESERVE = 10_000
LOW_WATERMARK = 0.9
CLEAR_WATERMARK = 0.5
EVICT_CHUNK = 100
CHECKPOINT_INTERVAL_S = 1.0
QUOTA_ALERT_KEY = "store.quota"
CORRUPT_ALERT_KEY = "store.corrupt"
SQLITE_SUFFIXES = ("", "-wal", "-shm")
"""the database file and the companions SQLite keeps beside it in WAL mode"""
NEWEST_SEQ_SQL = (
    "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0), (SELECT value FROM counters WHERE name='seq'))"
)
SET_KV_SQL = "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
ADD_COUNTER_SQL = (
    "INSERT INTO counters(name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)
INSERT_OUTBOX_SQL = (
    "INSERT INTO outbox(id, seq, type, priority, ts_ms, device, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SET_COUNTER_SQL = (
    "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)


class OutboxRow(NamedTuple):
    """An outbox row; `rowid` is the seq (the outbox's primary key), kept under both names."""

    rowid: int
    id: str
    seq: int
    type: str
    priority: int
    ts_ms: int
    body: str


@dataclass
class _Group:
    """Appends and writes that share one transaction."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    seqs: Sequence[int] = ()
    calls: list[_Call] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    waiters: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int]]] = field(
        default_factory=dict
    )
    """per event loop, (future, index of its row) of the submitted events"""


@dataclass
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    with_event: bool = False
    """`fn` returns (result, event or None), and the event is appended in its savepoint"""
    result: Any = None
    error: BaseException | None = None


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def insert_alert(conn: sqlite3.Connection, raised: Event, at_ms: int, *, momentary: bool) -> None:
    """The guards' record of an alert (the `alerts` table), from its alert.raised event, written
    in the transaction that appends the event: the alert engine's alerts and the store's own
    (store.corrupt, store.quota) alike, so every one is listed, acknowledged and sounds the
    sirens configured for its severity. A moment clears itself when quiet."""
    payload: Any = raised.payload
    conn.execute(
        "INSERT INTO alerts(alert_id, key, kind, severity, state, message, gate, device, raised_ms, "
        "last_seen_ms, momentary, detail) VALUES (?, ?, ?, ?, 'raised', ?, ?, ?, ?, ?, ?, ?)",
        (
            payload.alert_id,
            payload.key,
            payload.kind,
            payload.severity,
            payload.message,
            payload.gate,
            raised.device,
            at_ms,
            at_ms,
            int(momentary),
            json.dumps(payload.detail, ensure_ascii=False, default=str),
        ),
    )


def _keep_alert_row(conn: sqlite3.Connection, event: Event, *, momentary: bool) -> None:
    """The alerts table's side of an alert event the store appends itself."""
    payload: Any = event.payload
    if event.type == "alert.raised":
        insert_alert(conn, event, event.ts_ms, momentary=momentary)
    elif event.type == "alert.cleared":
        conn.execute(
            "UPDATE alerts SET state = 'cleared', cleared_ms = ? WHERE key = ? AND state != 'cleared'",
            (event.ts_ms, payload.key),
        )


class Store:
    """The gateway's SQLite store. Thread-safe; one writer thread, read connections per thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        quota_bytes: int = 512 * 1024 * 1024,
        synchronous: str = "full",
        events: EventFactory | None = None,
        max_page_count: int | None = None,
    ) -> None:
        self.path = Path(path)
        make_state_dir(self.path.parent)
        self._owner = StateDirOwner(self.path.parent)
        self.quota_bytes = quota_bytes
        self.synchronous = synchronous
        self.factory = events or EventFactory("local", "local")
        self.attachments_dir = self.path.parent / "attachments"
        self._seq_file = self.path.with_name(self.path.name + ".seq")
        self.recovered_from: Path | None = None
        self._vanished = not self.path.exists()
        self._conn = self._open_or_replace()
        # SQLite creates the -wal and -shm with the owner of the database file, which is root's
        # when this (root) process has just created it.
        self._owner.claim(*(Path(f"{self.path}{suffix}") for suffix in SQLITE_SUFFIXES))
        if max_page_count is not None:
            self._conn.execute(f"PRAGMA max_page_count={int(max_page_count)}")
        self._page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        self._seq_floor = self._initial_seq()
        self.last_seq = self._seq_floor
        """the last seq this store committed"""
        self.foreign_appends = 0
        """commits that found rows another process (the CLI) had appended since this store's own
        last commit; the uplink reads again when it changes"""
        self._failing = 0
        """commits failed since the last one that worked: the first is logged as an error, the
        rest (every commit while the disk is full) only counted, and said when one works again"""
        self._reserved = 0
        try:
            self._reserve_seq(self._seq_floor)
        except StoreError as err:
            # Opening must not need free space: access decisions work from what is stored, and
            # appends fail with StoreFull until the reservation can be written.
            log.error("%s", err)
        self._cond = threading.Condition()
        self._group = _Group()
        self._closing = False
        self._listeners: list[Callable[[list[OutboxRow]], None]] = []
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._written_since_check = 0
        self._check_every = max(4096, min(1 << 20, quota_bytes // 100))
        self._quota_alert_open = self.kv_get_direct(f"alert:{QUOTA_ALERT_KEY}") is not None
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()
        self._checkpointer_stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="store-checkpoint", daemon=True
        )
        self._checkpointer.start()
        if self.recovered_from is not None:
            self._record_corruption()

    # Opening, integrity and recovery

    def _open_or_replace(self) -> sqlite3.Connection:
        try:
            conn = _connect(self.path, self.synchronous)
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                conn.close()
                raise sqlite3.DatabaseError(f"integrity check failed: {problem}")
        except sqlite3.DatabaseError as err:
            if not _is_corruption(err):
                raise StoreError(f"cannot open the store {self.path}: {err}") from err
            aside = self._move_aside(err)
            log.error(
                "store %s is unreadable (%s); moved to %s, starting a new one",
                self.path,
                err,
                aside,
            )
            conn = _connect(self.path, self.synchronous)
        migrate(conn)
        return conn

    def _move_aside(self, err: BaseException) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in SQLITE_SUFFIXES:
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(Path(f"{aside}{suffix}"))
        self.recovered_from = aside
        self._corruption = str(err)
        return aside

    def _record_corruption(self) -> None:
        payload = AlertPayload(
            alert_id=str(uuid7()),
            kind="store.corrupt",
            key=CORRUPT_ALERT_KEY,
            severity="critical",
            # one line for the guards' lists; SQLite's check may take several (in `problem`)
            message=(
                f"the event store was unreadable ({' '.join(self._corruption.split())}); it was moved "
                f"to {self.recovered_from} and a new one started; the allow-list and passes were in "
                "it: the community database sends them again once the gateway is online (without an "
                "uplink, import and issue them again)"
            ),
            detail={"moved_to": str(self.recovered_from), "problem": self._corruption},
        )
        event = self.factory.make("alert.raised", payload)
        self.write_with_event(lambda conn: (_keep_alert_row(conn, event, momentary=True), event))

    def _initial_seq(self) -> int:
        """The last seq handed out: the newest row's, or the counter kept when rows are evicted;
        for a store that had to be replaced, or whose file vanished while its side file stayed,
        the reserved high-water mark, so the upstream sees a gap rather than a repeat."""
        counted = self._conn.execute("SELECT value FROM counters WHERE name='seq'").fetchone()[0]
        newest = self._conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        seq = max(int(counted), int(newest))
        reserved = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            reserved = int(self._seq_file.read_text().strip())
        if self._vanished or self.recovered_from is not None:
            return max(seq, reserved)
        return seq

    def _reserve_seq(self, seq: int) -> None:
        """Write a high-water mark ahead of `seq`, durably, before numbers below it are used.
        When it cannot be written (StoreFull on a full disk, else StoreError), only the mark
        already on disk counts."""
        durable = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            durable = int(self._seq_file.read_text().strip())
        wanted = max(seq, durable - SEQ_RESERVE) + SEQ_RESERVE
        tmp = self._seq_file.with_suffix(".tmp")
        try:
            with open(tmp, "w") as handle:
                handle.write(str(wanted))
                handle.flush()
                os.fsync(handle.fileno())
            self._owner.claim(tmp)
            os.replace(tmp, self._seq_file)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._reserved = max(self._reserved, durable)
            problem = f"cannot reserve sequence numbers in {self._seq_file} ({err.strerror or err})"
            if err.errno == errno.ENOSPC:
                raise StoreFull(f"{problem}; free disk space under {self.path.parent}") from err
            raise StoreError(problem) from err
        self._reserved = wanted

    # Appending

    def _enqueue(self, event: Event) -> tuple[int, _Group]:
        row = _row(event)
        with self._cond:
            if self._closing:
                raise StoreError("the store is closed")
            group = self._group
            group.rows.append(row)
            self._cond.notify()
            return len(group.rows) - 1, group

    def _next_seq(self, conn: sqlite3.Connection) -> int:
        """The next seq, read inside the write transaction, so that another process appending
        to the same file (the CLI) can never take the same number."""
        newest = conn.execute(NEWEST_SEQ_SQL).fetchone()[0]
        return max(int(newest), self._seq_floor) + 1

    def _number(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], after: int
    ) -> list[tuple[Any, ...]]:
        """Give the rows their seq and put it into their JSON; `after` is the last seq this
        process gave. The events were serialised with seq 0; the fields before "seq" (id, v,
        site, gateway, device, type, ts) cannot contain an unescaped ',"seq":0,'."""
        first = self._next_seq(conn)
        if first != after + 1:
            self.foreign_appends += 1
        last = first + len(rows) - 1
        if last >= self._reserved:
            self._reserve_seq(last)
        return [
            (r[0], first + i, r[2], r[3], r[4], r[5], r[6].replace(',"seq":0,', f',"seq":{first + i},', 1))
            for i, r in enumerate(rows)
        ]

    def append(self, event: Event, timeout: float = 30.0) -> Event:
        """Commit the event; return it with its seq once it is durable."""
        index, group = self._enqueue(event)
        self._wait(group, timeout)
        return event.model_copy(update={"seq": group.seqs[index]})

    def submit(self, event: Event) -> asyncio.Future[int]:
        """Queue the event for the next commit and return at once: the future gives its seq
        once it is durable, or the store's error. Events are numbered in the order they were
        submitted, so a producer may keep several in flight (a burst of readings) and share
        larger commits; it acts on one only after its future is done. The writer resolves
        the futures of a group with one wake-up of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        row = _row(event)
        with self._cond:
            if self._closing:
                raise StoreError("the store is closed")
            group = self._group
            group.waiters.setdefault(loop, []).append((future, len(group.rows)))
            group.rows.append(row)
            self._cond.notify()
        return future

    async def append_async(self, event: Event) -> Event:
        """Commit the event without blocking the event loop; return it with its seq."""
        seq = await self.submit(event)
        return event.model_copy(update={"seq": seq})

    def write(self, fn: Callable[[sqlite3.Connection], T], timeout: float = 30.0) -> T:
        """Run `fn(conn)` atomically on the writer thread (a savepoint inside the group's
        transaction) and return its result."""
        return self._run_call(_Call(fn), timeout)  # type: ignore[no-any-return]

    def write_with_event(
        self, fn: Callable[[sqlite3.Connection], tuple[T, Event | None]], timeout: float = 30.0
    ) -> tuple[T, Event | None]:
        """`write()` for a change that is recorded as an event: `fn(conn)` returns its result
        and the event (or None), and the event is appended in the same savepoint, so that the
        change and its event are committed together or not at all (a crash, a full disk).
        Returns the result and the event with its seq."""
        return self._run_call(_Call(fn, with_event=True), timeout)  # type: ignore[no-any-return]

    async def write_with_event_async(
        self, fn: Callable[[sqlite3.Connection], tuple[T, Event | None]]
    ) -> tuple[T, Event | None]:
        """`write_with_event()` from a worker thread, without blocking the event loop."""
        return await asyncio.to_thread(self.write_with_event, fn)

    def _run_call(self, call: _Call, timeout: float) -> Any:
        with self._cond:
            if self._closing:
                raise StoreError("the store is closed")
            group = self._group
            group.calls.append(call)
            self._cond.notify()
        self._wait(group, timeout)
        if call.error is not None:
            raise call.error
        return call.result

    async def write_async(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`write()` from a worker thread, without blocking the event loop."""
        return await asyncio.to_thread(self.write, fn)

    @staticmethod
    def _wait(group: _Group, timeout: float) -> None:
        if not group.done.wait(timeout):
            raise StoreError(f"the store did not commit within {timeout} s")
        if group.error is not None:
            raise group.error

    def add_commit_listener(self, callback: Callable[[list[OutboxRow]], None]) -> None:
        """Call `callback(rows)` on the writer thread after each commit of new events, in commit
        order. Keep it quick: hand the rows to your own thread or loop."""
        self._listeners.append(callback)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._group.rows and not self._group.calls and not self._closing:
                    self._cond.wait()
                group = self._group
                self._group = _Group()
                closing = self._closing
            rows = self._commit(group) if group.rows or group.calls else []
            self._finish(group)
            if rows:
                self._after_commit(rows)
            if closing:
                return

    def _after_commit(self, numbered: list[tuple[Any, ...]]) -> None:
        if self._listeners:
            rows = [OutboxRow(r[1], r[0], r[1], r[2], r[3], r[4], r[6]) for r in numbered]
            for listener in self._listeners:
                try:
                    listener(rows)
                except Exception:
                    log.exception("commit listener failed")
        # Measuring the file costs more than a small commit: do it once per slice of the quota
        # written, not once per group.
        self._written_since_check += sum(len(r[6]) for r in numbered)
        if self._written_since_check >= self._check_every:
            self._written_since_check = 0
            self._enforce_quota()

    def _finish(self, group: _Group) -> None:
        with self._cond:
            group.done.set()
            waiters = group.waiters
            group.waiters = {}
        for loop, futures in waiters.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, futures, group)

    def _commit(self, group: _Group) -> list[tuple[Any, ...]]:
        """Commit the group; return its rows as inserted (seq given), in seq order."""
        conn = self._conn
        for attempt in (1, 2):
            try:
                conn.execute("BEGIN IMMEDIATE")
                numbered: list[tuple[Any, ...]] = []
                if group.rows:
                    numbered = self._number(conn, group.rows, self.last_seq)
                    conn.executemany(INSERT_OUTBOX_SQL, numbered)
                for index, call in enumerate(group.calls):
                    conn.execute(f"SAVEPOINT call{index}")
                    try:
                        result = call.fn(conn)
                        if call.with_event:
                            result = self._append_in_call(conn, result, numbered)
                        call.result = result
                        conn.execute(f"RELEASE call{index}")
                    except Exception as err:
                        if not conn.in_transaction or _is_full(err):
                            # A full disk fails the whole group (and SQLite may already have
                            # rolled the transaction back, savepoints and all): evict and retry.
                            raise
                        conn.execute(f"ROLLBACK TO call{index}")
                        conn.execute(f"RELEASE call{index}")
                        call.error = err
                conn.execute("COMMIT")
                if self._failing:
                    log.info("the store commits again, after %d failed commits", self._failing)
                    self._failing = 0
                if group.rows:
                    group.seqs = range(numbered[0][1], numbered[0][1] + len(group.rows))
                if numbered:
                    self.last_seq = numbered[-1][1]
                return numbered
            except StoreError as err:
                # the seq reservation could not be written: nothing of the group is committed
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for call in group.calls:
                    call.result, call.error = None, None
                group.error = err
                self._commit_failed(err)
                return []
            except sqlite3.Error as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for call in group.calls:
                    call.result, call.error = None, None
                if _is_full(err) and attempt == 1 and any((self._evict(force=True) or {}).values()):
                    continue
                group.error = (
                    StoreFull(f"the store is full ({err}); free disk space under {self.path.parent}")
                    if _is_full(err)
                    else StoreError(f"the store could not commit: {err}")
                )
                self._commit_failed(err)
                return []
        return []

    def _commit_failed(self, err: BaseException) -> None:
        self._failing += 1
        log.log(
            logging.ERROR if self._failing == 1 else logging.DEBUG,
            "store commit failed: %s%s",
            err,
            "; further failures are counted until a commit works again" if self._failing == 1 else "",
        )

    def _append_in_call(
        self, conn: sqlite3.Connection, result: tuple[Any, Event | None], numbered: list[tuple[Any, ...]]
    ) -> tuple[Any, Event | None]:
        """Append a write's event inside its savepoint, after the rows numbered so far."""
        value, event = result
        if event is None:
            return value, None
        (row,) = self._number(conn, [_row(event)], numbered[-1][1] if numbered else self.last_seq)
        try:
            conn.execute(INSERT_OUTBOX_SQL, row)
        except sqlite3.Error as err:
            if _is_full(err):
                raise
            raise StoreError(f"the store could not record {event.type}: {err}") from err
        numbered.append(row)
        return value, event.model_copy(update={"seq": row[1]})

    # Quota

    def used_bytes(self) -> int:
        pages, free = self._conn.execute(
            "SELECT (SELECT page_count FROM pragma_page_count), "
            "(SELECT freelist_count FROM pragma_freelist_count)"
        ).fetchone()
        return int((pages - free) * self._page_size)

    def _enforce_quota(self) -> None:
        """Dropping synced rows is housekeeping (counted, no alert). Dropping unsynced telemetry,
        or being over quota with nothing left to drop, raises the alert; it clears once a round
        needs to drop only synced rows again, or usage falls under half the quota."""
        if self.used_bytes() <= self.quota_bytes:
            if self._quota_alert_open and self.used_bytes() < self.quota_bytes * CLEAR_WATERMARK:
                self._clear_quota_alert()
            return
        dropped = self._evict(force=False)
        if dropped is None:
            return
        losing_data = dropped["telemetry"] > 0 or self.used_bytes() > self.quota_bytes
        if losing_data and not self._quota_alert_open:
            self._raise_quota_alert(dropped)
        elif not losing_data and self._quota_alert_open:
            self._clear_quota_alert()

    def _evict(self, force: bool) -> dict[str, int] | None:
        """Drop synced rows, then unsynced telemetry, until under the low watermark (with
        `force`, one chunk, to make room when the disk is full). Returns what was dropped, or
        None when eviction failed."""
        target = self.quota_bytes * LOW_WATERMARK
        conn = self._conn
        dropped = {"synced": 0, "telemetry": 0}
        steps = (("synced", _oldest_synced), ("telemetry", _oldest_unsynced_telemetry))
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE counters SET value=max(value, (SELECT coalesce(max(seq), 0) FROM outbox)) "
                "WHERE name='seq'"
            )
            for name, oldest in steps:
                while force or self.used_bytes() > target:
                    rowids = oldest(conn, EVICT_CHUNK)
                    if not rowids:
                        break
                    conn.executemany("DELETE FROM outbox WHERE seq=?", [(r,) for r in rowids])
                    dropped[name] += len(rowids)
                    if force:
                        break
                if force and dropped[name]:
                    break
            for name, count in dropped.items():
                if count:
                    conn.execute(ADD_COUNTER_SQL, (f"dropped_{name}", count))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # on a full disk every commit tries to make room: said once, with the commit's failure
            log.log(logging.DEBUG if self._failing else logging.ERROR, "eviction failed: %s", err)
            return None
        if dropped["telemetry"]:
            log.warning(
                "store over quota: dropped %d synced and %d unsynced telemetry rows",
                dropped["synced"],
                dropped["telemetry"],
            )
        return dropped

    def _raise_quota_alert(self, dropped: dict[str, int]) -> None:
        payload = AlertPayload(
            alert_id=str(uuid7()),
            kind="store.quota",
            key=QUOTA_ALERT_KEY,
            severity="critical" if not dropped["telemetry"] else "warning",
            message=(
                f"event store over its quota of {self.quota_bytes / 1e6:.1f} MB: dropped "
                f"{dropped['telemetry']} unsynced telemetry rows; is the uplink down?"
                if dropped["telemetry"]
                else f"event store over its quota of {self.quota_bytes / 1e6:.1f} MB and only "
                "access events and alerts are left; they are kept: free disk or restore the uplink"
            ),
            detail=dict(dropped),
        )
        event = self.factory.make("alert.raised", payload)
        self._quota_alert_open = True
        self._insert_internal(event, {f"alert:{QUOTA_ALERT_KEY}": payload.alert_id})

    def _clear_quota_alert(self) -> None:
        alert_id = self.kv_get_direct(f"alert:{QUOTA_ALERT_KEY}") or ""
        event = self.factory.make(
            "alert.cleared",
            AlertClearedPayload(alert_id=alert_id, key=QUOTA_ALERT_KEY, reason="usage back under quota"),
        )
        self._quota_alert_open = False
        self._insert_internal(event, {f"alert:{QUOTA_ALERT_KEY}": None})

    def _insert_internal(self, event: Event, kv: dict[str, str | None]) -> None:
        """Append from the writer thread itself (it cannot wait on its own queue)."""
        row = _row(event)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            (row,) = self._number(conn, [row], self.last_seq)
            conn.execute(INSERT_OUTBOX_SQL, row)
            _keep_alert_row(conn, event, momentary=False)
            for key, value in kv.items():
                if value is None:
                    conn.execute("DELETE FROM kv WHERE key=?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO kv(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value),
                    )
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("could not record %s: %s", event.type, err)
            return
        self.last_seq = row[1]
        rows = [OutboxRow(row[1], row[0], row[1], row[2], row[3], row[4], row[6])]
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(rows)

    # Reading

    def read(self) -> sqlite3.Connection:
        """A read-only connection for the calling thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def pending(self, priority: int, after_rowid: int = 0, limit: int = 100) -> list[OutboxRow]:
        conn = self.read()
        rows = conn.execute(
            "SELECT seq, id, seq, type, priority, ts_ms, body FROM outbox "
            "WHERE synced_ms IS NULL AND priority=? AND seq>? ORDER BY seq LIMIT ?",
            (priority, pending_after(conn, priority, after_rowid), limit),
        )
        return [OutboxRow(*row) for row in rows]

    def mark_synced(self, rowids: Iterable[int] = (), through: Mapping[int, int] | None = None) -> None:
        """Record delivered rows. `through[p]` raises class p's mark: every row of the class up
        to that seq is synced (one small write for a whole drained window). Each of `rowids`
        that no mark covers gets its synced_ms."""
        ids, marks = list(rowids), dict(through or {})
        if ids or marks:
            self.write(partial(_record_synced, ids, marks, int(time.time() * 1000)))

    def newest_seq(self) -> int:
        """The last seq given by any process appending to this file."""
        return int(self.read().execute(NEWEST_SEQ_SQL).fetchone()[0])

    def sync_marks(self) -> dict[int, int]:
        return sync_marks(self.read())

    def backlog(self) -> Backlog:
        return read_backlog(self.read())

    def events(self, **filters: Any) -> list[Event]:
        """Stored events; see `edge.store.queries.query_events` for the filters."""
        return query_events(self.read(), **filters)

    def counter(self, name: str) -> int:
        row = self.read().execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def counters(self) -> dict[str, int]:
        return {n: int(v) for n, v in self.read().execute("SELECT name, value FROM counters")}

    def add_counter(self, name: str, delta: int) -> None:
        self.update_state(add={name: delta})

    def set_counter(self, name: str, value: int) -> None:
        self.update_state(values={name: value})

    def update_state(
        self,
        kv: Mapping[str, str] | None = None,
        add: Mapping[str, int] | None = None,
        values: Mapping[str, int] | None = None,
    ) -> None:
        """Set key-values (`kv`), add to counters (`add`) and set counters (`values`), in one
        transaction."""

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(SET_KV_SQL, (kv or {}).items())
            conn.executemany(ADD_COUNTER_SQL, (add or {}).items())
            conn.executemany(SET_COUNTER_SQL, (values or {}).items())

        self.write(apply)

    def kv_get(self, key: str) -> str | None:
        row = self.read().execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def kv_get_direct(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def kv_set(self, key: str, value: str) -> None:
        self.update_state(kv={key: value})

    # Attachments

    def put_attachment(self, data: bytes, mime: str = "image/jpeg") -> tuple[str, int]:
        """Keep a blob on disk under its sha256 (written and synced before it is recorded)."""
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        target = self.attachments_dir / digest[:2] / digest
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            self._owner.claim(self.attachments_dir, target.parent)
            tmp = target.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._owner.claim(tmp)
            os.replace(tmp, target)
        now = int(time.time() * 1000)
        self.write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO attachments(sha256, size, mime, created_ms) VALUES (?,?,?,?)",
                (digest, len(data), mime, now),
            )
        )
        return digest, len(data)

    def attachments_to_upload(self, limit: int) -> list[tuple[str, str]]:
        """(sha256, mime) of the oldest attachments neither uploaded nor skipped."""
        rows = self.read().execute(
            "SELECT sha256, mime FROM attachments WHERE uploaded_ms IS NULL AND upload_skipped IS NULL "
            "ORDER BY created_ms LIMIT ?",
            (limit,),
        )
        return [(str(digest), str(mime)) for digest, mime in rows]

    def mark_uploaded(self, uploaded: Iterable[str] = (), skipped: Mapping[str, str] | None = None) -> None:
        """Record attachments the community database has (PUBACK), or will never get (why)."""
        done, never = list(uploaded), dict(skipped or {})
        if not done and not never:
            return
        now = int(time.time() * 1000)

        def record(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE attachments SET uploaded_ms = ? WHERE sha256 = ?", [(now, d) for d in done]
            )
            conn.executemany(
                "UPDATE attachments SET upload_skipped = ? WHERE sha256 = ?",
                [(why, d) for d, why in never.items()],
            )

        self.write(record)

    def attachment_path(self, sha256: str) -> Path:
        return self.attachments_dir / sha256[:2] / sha256

    def expire_attachments(self, older_than_ms: int) -> int:
        """Delete attachment files recorded before `older_than_ms` (snapshot retention)."""
        old = [
            r[0]
            for r in self.read().execute(
                "SELECT sha256 FROM attachments WHERE created_ms < ?", (older_than_ms,)
            )
        ]
        for digest in old:
            with contextlib.suppress(FileNotFoundError):
                self.attachment_path(digest).unlink()
        if old:
            self.write(lambda c: c.executemany("DELETE FROM attachments WHERE sha256=?", [(d,) for d in old]))
        return len(old)

    # Life cycle

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued and close. Appends after this raise StoreError."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._writer.join(timeout)
        self._checkpointer_stop.set()
        self._checkpointer.join(timeout)
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
        if not self._writer.is_alive():
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database off the commit path (the committing connection
        has automatic checkpoints turned off, which would otherwise stall every few hundred
        commits)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        failing: str | None = None
        try:
            while not self._checkpointer_stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as err:
                    # every second while the disk is full: say it when it starts or changes
                    if str(err) != failing:
                        log.warning("WAL checkpoint failed: %s", err)
                    failing = str(err)
                    continue
                if failing is not None:
                    log.info("WAL checkpoints work again")
                    failing = None
        finally:
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_synced(rowids: list[int], through: dict[int, int], now_ms: int, conn: sqlite3.Connection) -> None:
    for priority, seq in through.items():
        conn.execute(
            "INSERT INTO sync_marks(priority, through_seq) VALUES (?, ?) "
            "ON CONFLICT(priority) DO UPDATE SET through_seq = max(through_seq, excluded.through_seq)",
            (priority, seq),
        )
    if rowids:
        # One statement: SQLite walks the list without handing the GIL back and forth per row.
        conn.execute(
            "UPDATE outbox SET synced_ms = ? WHERE seq IN (SELECT value FROM json_each(?)) "
            "AND synced_ms IS NULL AND seq > coalesce("
            "(SELECT through_seq FROM sync_marks m WHERE m.priority = outbox.priority), 0)",
            (now_ms, json.dumps(rowids)),
        )


def _oldest_synced(conn: sqlite3.Connection, limit: int) -> list[int]:
    """The `limit` oldest synced rows: those with synced_ms and those under their class's mark
    (each source read through its index, then merged)."""
    seqs = [
        r[0]
        for r in conn.execute(
            "SELECT seq FROM outbox WHERE synced_ms IS NOT NULL ORDER BY synced_ms LIMIT ?", (limit,)
        )
    ]
    for priority, through in sync_marks(conn).items():
        seqs.extend(
            r[0]
            for r in conn.execute(
                "SELECT seq FROM outbox WHERE synced_ms IS NULL AND priority=? AND seq<=? "
                "ORDER BY seq LIMIT ?",
                (priority, through, limit),
            )
        )
    return sorted(seqs)[:limit]


def _oldest_unsynced_telemetry(conn: sqlite3.Connection, limit: int) -> list[int]:
    telemetry = int(Priority.TELEMETRY)
    return [
        r[0]
        for r in conn.execute(
            "SELECT seq FROM outbox WHERE synced_ms IS NULL AND priority=? AND seq>? ORDER BY seq LIMIT ?",
            (telemetry, pending_after(conn, telemetry, 0), limit),
        )
    ]


def make_state_dir(folder: Path) -> None:
    """Create the gateway's state directory if need be; StoreError saying why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(
            f"cannot create the state directory {folder} ({err.strerror or err}); "
            "check gateway.state_dir and that its file system is writable"
        ) from err


def _is_full(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(err)


def _row(event: Event) -> tuple[Any, ...]:
    """The outbox row of an event, serialised with seq 0 (`Store._number` puts the seq in)."""
    body = event.model_dump_json()
    # A character is at most four bytes: only a long body needs encoding to be measured.
    if len(body) * 4 > MAX_EVENT_BYTES and (size := len(body.encode())) > MAX_EVENT_BYTES:
        raise StoreError(
            f"{event.type} event of {size} bytes not recorded: events are at most "
            f"{MAX_EVENT_BYTES} bytes, or they could not be sent upstream"
        )
    return (str(event.id), 0, event.type, int(event.priority), event.ts_ms, event.device, body)


def _resolve(futures: list[tuple[asyncio.Future[int], int]], group: _Group) -> None:
    for future, index in futures:
        if future.done():
            continue
        if group.error is None:
            future.set_result(group.seqs[index])
        else:
            future.set_exception(group.error)


def _is_corruption(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(err)
    return "integrity check failed" in text or "malformed" in text or "not a database" in text
