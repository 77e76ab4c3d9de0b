"""Queries over the store that both the gateway and the CLI (on a read-only connection) run."""

from __future__ import annotations

import fnmatch
import sqlite3
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from edge.events import Event, EventType, Priority


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


class WaitingPictures(NamedTuple):
    count: int
    size: int
    oldest_ms: int | None
    skipped: int
    """never to be sent (too large, the file gone): attachments.upload_skipped says why"""


def pictures_waiting(conn: sqlite3.Connection) -> WaitingPictures:
    """The attachments the uplink has yet to send after the events, and those it will not."""
    count, size, oldest = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0), min(created_ms) FROM attachments "
        "WHERE uploaded_ms IS NULL AND upload_skipped IS NULL"
    ).fetchone()
    skipped = conn.execute("SELECT count(*) FROM attachments WHERE upload_skipped IS NOT NULL").fetchone()[0]
    return WaitingPictures(int(count), int(size), oldest, int(skipped))


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
    """`select_events` with type patterns (`alert.*`) and a limit, as a list."""
    matched = types_matching(types)
    if types and not matched:
        return []
    filters = EventFilter(types=matched, since_ms=since_ms)
    return list(select_events(conn, filters, after_seq=after_seq, limit=limit, newest=newest))


def types_matching(patterns: Iterable[str]) -> tuple[str, ...]:
    """The event types the glob patterns (`access.*`, `gate.state`) name."""
    wanted = [pattern.lower() for pattern in patterns]
    return tuple(t for t in sorted(EventType.registry) if any(fnmatch.fnmatch(t, p) for p in wanted))


FIELD_PLACES: dict[str, tuple[str, ...]] = {
    "gate": ("gate", "lane"),
    "plate": ("plate", "detail.plate"),
    "subject": ("subject",),
    "household": ("household",),
}
"""Where in a payload each field a filter asks for is found, the first place that has it
counting: a plate read's gate is its lane, and an alert about a plate (blocklisted, reading
again and again, parked in the fire lane) has the plate in its detail."""


def types_with(field: str) -> frozenset[str]:
    """The event types whose payload can hold `field` in one of its FIELD_PLACES (e.g. `plate`:
    access decisions, plate reads and alerts)."""
    names: set[str] = set()
    for place in FIELD_PLACES.get(field, (field,)):
        head, _, inner = place.partition(".")
        for name, kind in EventType.registry.items():
            info = kind.payload.model_fields.get(head)
            if info is not None and (not inner or typing.get_origin(info.annotation) is dict):
                names.add(name)
    return frozenset(names)


@dataclass(frozen=True)
class EventFilter:
    """What a person asks of the recorded events; every part given must hold (AND). A part
    with several values (types, gates) holds when any of them does."""

    types: tuple[str, ...] = ()
    """exact type names; empty: every type"""
    since_ms: int | None = None
    until_ms: int | None = None
    """exclusive: events before this moment"""
    gates: tuple[str, ...] = ()
    """the payload's gate (or a plate read's lane) is one of these"""
    plate: str | None = None
    """the payload's plate, as the cameras report it (see `edge.allowlist.normalise_plate`)"""
    subject: str | None = None
    household: str | None = None

    def fields(self) -> tuple[str, ...]:
        """The payload fields the filter looks at."""
        asked = {
            "gate": self.gates,
            "plate": self.plate,
            "subject": self.subject,
            "household": self.household,
        }
        return tuple(name for name, value in asked.items() if value)

    def candidate_types(self) -> tuple[str, ...]:
        """The types an event must have to pass: the asked ones (or all), narrowed to those whose
        payload can hold every field looked at (types_with). Empty when no type can pass."""
        names = set(self.types or EventType.registry)
        for name in self.fields():
            names &= types_with(name)
        return tuple(sorted(names))


def select_events(
    conn: sqlite3.Connection,
    filters: EventFilter,
    *,
    after_seq: int = 0,
    through_seq: int | None = None,
    limit: int | None = None,
    newest: bool = True,
) -> Iterator[Event]:
    """The events that pass `filters` with a seq above `after_seq` (and up to `through_seq`, when
    given), in commit order: the newest `limit` of them (all when None) with `newest`, else the
    oldest, read from the cursor as they are yielded.

    The type is matched with `IN` on exact names, which lets the planner take the `outbox_type`
    index (a payload filter narrows the types to those whose payload has the field); the outbox
    has no index on `ts_ms`, so the time is a column compare (see filter_terms)."""
    clauses, params = ["seq > ?"], [after_seq]
    if through_seq is not None:
        clauses.append("seq <= ?")
        params.append(through_seq)
    terms, values = filter_terms(filters, lambda name: f"json_extract(body, '$.payload.{name}')")
    clauses += terms
    params += values
    order = "DESC" if newest else "ASC"
    cursor = conn.execute(
        f"SELECT body FROM outbox WHERE {' AND '.join(clauses)} ORDER BY seq {order} LIMIT ?",
        (*params, -1 if limit is None else limit),
    )
    rows: Iterator[tuple[str]] = reversed(cursor.fetchall()) if newest else cursor
    for (body,) in rows:
        yield Event.model_validate_json(body)


def filter_terms(filters: EventFilter, field: Callable[[str], str]) -> tuple[list[str], list[Any]]:
    """The SQL terms (to be ANDed) and their parameters that `filters` asks for, over columns
    `type` and `ts_ms` and the payload fields `field(place)` reads (a place of FIELD_PLACES:
    `plate`, or `detail.plate` inside the payload's detail): the gateway's outbox and the
    community database's events table are asked the same way. Cheapest first: SQLite evaluates
    them in that order, so a payload is read only for rows the type and the time let through."""
    clauses: list[str] = []
    params: list[Any] = []
    wanted = filters.candidate_types()
    if filters.types or filters.fields():
        clauses.append(f"type IN ({', '.join('?' * len(wanted))})" if wanted else "1 = 0")
        params.extend(wanted)
    if filters.since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(filters.since_ms)
    if filters.until_ms is not None:
        clauses.append("ts_ms < ?")
        params.append(filters.until_ms)
    for name, values in (
        ("gate", filters.gates),
        ("plate", (filters.plate,) if filters.plate else ()),
        ("subject", (filters.subject,) if filters.subject else ()),
        ("household", (filters.household,) if filters.household else ()),
    ):
        if not values:
            continue
        places = [field(place) for place in FIELD_PLACES[name]]
        found = places[0] if len(places) == 1 else f"coalesce({', '.join(places)})"
        clauses.append(f"{found} = ?" if len(values) == 1 else f"{found} IN ({', '.join('?' * len(values))})")
        params.extend(values)
    return clauses, params


def gate_seen(conn: sqlite3.Connection, gate: str) -> bool:
    """Whether any stored event is at `gate` (one no longer configured keeps its history)."""
    return next(select_events(conn, EventFilter(gates=(gate,)), limit=1), None) is not None
