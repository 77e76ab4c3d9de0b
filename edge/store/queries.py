"""Queries over the store that both the gateway and the CLI (on a read-only connection) run."""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from edge.events import Event, Priority


class Backlog(NamedTuple):
    count: int
    oldest_ts_ms: int | None
    by_priority: dict[int, int]


def sync_marks(conn: sqlite3.Connection) -> dict[int, int]:
    """Per priority class, the seq up to which every row is synced (see migration 0004). A store
    that an older gatehouse wrote and the daemon has not migrated yet has none."""
    try:
        return {int(p): int(s) for p, s in conn.execute("SELECT priority, through_seq FROM sync_marks")}
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):
            raise
        return {}


def pending_after(conn: sqlite3.Connection, priority: int, after: int) -> int:
    """Where reading a class's unsynced rows may start: past `after` and past its mark."""
    row = conn.execute("SELECT through_seq FROM sync_marks WHERE priority=?", (priority,)).fetchone()
    return max(after, int(row[0]) if row else 0)


def read_backlog(conn: sqlite3.Connection) -> Backlog:
    """Unsynced rows per class: above the class's mark and without synced_ms. Counted from the
    pending index alone; the oldest is the first row in seq order (a status report every few
    seconds must not read a day of backlog)."""
    marks = sync_marks(conn)
    by_priority: dict[int, int] = {}
    oldest: list[int] = []
    for priority in Priority:
        # One statement, so that the count and the oldest come from one snapshot (the uplink
        # marks rows synced meanwhile).
        count, first = conn.execute(
            "SELECT count(*), (SELECT ts_ms FROM outbox WHERE synced_ms IS NULL AND priority = ?1 "
            "AND seq > ?2 ORDER BY seq LIMIT 1) FROM outbox WHERE synced_ms IS NULL AND priority = ?1 "
            "AND seq > ?2",
            (int(priority), marks.get(int(priority), 0)),
        ).fetchone()
        if count:
            by_priority[int(priority)] = int(count)
            oldest.append(int(first))
    return Backlog(sum(by_priority.values()), min(oldest, default=None), by_priority)


class WaitingType(NamedTuple):
    type: str
    priority: int
    count: int
    oldest_ts_ms: int


def backlog_by_type(conn: sqlite3.Connection) -> list[WaitingType]:
    """Unsynced rows per event type, in sending order (class, then the type's oldest row). Reads
    the rows themselves: for a person asking, not for the uplink's periodic report."""
    marks = sync_marks(conn)
    waiting: list[WaitingType] = []
    for priority in Priority:
        rows = conn.execute(
            "SELECT type, count(*), min(ts_ms), min(seq) FROM outbox WHERE synced_ms IS NULL "
            "AND priority = ? AND seq > ? GROUP BY type ORDER BY min(seq)",
            (int(priority), marks.get(int(priority), 0)),
        ).fetchall()
        waiting.extend(WaitingType(t, int(priority), int(n), int(ts)) for t, n, ts, _ in rows)
    return waiting


def next_to_send(conn: sqlite3.Connection, limit: int) -> list[Event]:
    """The unsynced events the uplink sends next: alerts first, then access decisions, state
    and telemetry, each class in commit order."""
    marks = sync_marks(conn)
    bodies: list[str] = []
    for priority in Priority:
        if len(bodies) >= limit:
            break
        bodies.extend(
            body
            for (body,) in conn.execute(
                "SELECT body FROM outbox WHERE synced_ms IS NULL AND priority = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (int(priority), marks.get(int(priority), 0), limit - len(bodies)),
            )
        )
    return [Event.model_validate_json(body) for body in bodies]


def query_events(
    conn: sqlite3.Connection,
    *,
    since_ms: int | None = None,
    types: list[str] | tuple[str, ...] = (),
    after_seq: int = 0,
    limit: int = 50,
    newest: bool = True,
) -> list[Event]:
    clauses, params = ["seq > ?"], [after_seq]
    if since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(since_ms)
    if types:
        clauses.append("(" + " OR ".join("type LIKE ?" for _ in types) + ")")
        params.extend(t.replace("*", "%") for t in types)  # type: ignore[misc]
    order = "DESC" if newest else "ASC"
    rows = conn.execute(
        f"SELECT body FROM outbox WHERE {' AND '.join(clauses)} ORDER BY seq {order} LIMIT ?",
        (*params, limit),
    ).fetchall()
    if newest:
        rows.reverse()
    return [Event.model_validate_json(body) for (body,) in rows]
