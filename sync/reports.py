"""What people read from the community database: the events of every gateway, filtered the way
`gatehouse events` filters one gateway's store, and the alerts of every gateway (the `alerts`
table the ingest keeps). SQL that both engines run: JSON fields are read with `->>`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.events import Event
from edge.rules.alerts import MIN_ID_PIECE, AlertRecord, UnknownAlert
from edge.store.queries import EventFilter, filter_terms
from sync.db import Database


@dataclass(frozen=True)
class Where:
    """Which gateways: one site, one gateway id (of any site), or both; None is every one."""

    site: str | None = None
    gateway: str | None = None

    def terms(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("site_id", self.site), ("gateway_id", self.gateway)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params


def select_events(db: Database, filters: EventFilter, where: Where, *, limit: int) -> list[Event]:
    """The newest `limit` events that pass `filters`, oldest first. Ordered by the gateways'
    clocks (`ts_ms`, with an index): a backlog that arrived late is listed where it happened, not
    where it arrived."""
    text, params = _events_query(filters, where, "DESC")
    rows = db.query(text + " LIMIT ?", [*params, limit])
    return [_event(row) for row in reversed(rows)]


def each_event(db: Database, filters: EventFilter, where: Where) -> Iterator[Event]:
    """Every event that passes `filters`, oldest first, read from the database a piece at a time
    as they are taken: a year of a compound's events as a spreadsheet is millions of rows, more
    than a community server holds in memory at once."""
    text, params = _events_query(filters, where, "ASC")
    for row in db.stream(text, params):
        yield _event(row)


def _events_query(filters: EventFilter, where: Where, order: str) -> tuple[str, list[Any]]:
    clauses, params = where.terms()
    terms, values = filter_terms(filters, _payload_field)
    return (
        "SELECT id, site_id, gateway_id, device_id, type, ts, seq, payload, attachments FROM events"
        + _where([*clauses, *terms])
        + f" ORDER BY ts_ms {order}, site_id {order}, gateway_id {order}, seq {order}",
        [*params, *values],
    )


def _payload_field(place: str) -> str:
    """A payload field as text: `plate` is payload ->> 'plate', `detail.plate` is
    payload -> 'detail' ->> 'plate' (the same on both engines)."""
    *outer, last = place.split(".")
    return "payload" + "".join(f" -> '{name}'" for name in outer) + f" ->> '{last}'"


def _event(row: tuple[Any, ...]) -> Event:
    event_id, site, gateway, device, event_type, ts, seq, payload, attachments = row
    return Event.model_validate(
        {
            "id": event_id,
            "site": site,
            "gateway": gateway,
            "device": device,
            "type": event_type,
            "ts": ts,
            "seq": seq,
            "payload": _decoded(payload),
            "attachments": _decoded(attachments) or (),
        }
    )


def _decoded(value: Any) -> Any:
    """A JSON column: text in SQLite, already decoded from PostgreSQL's JSONB."""
    return json.loads(value) if isinstance(value, str) else value


def attachment_data(db: Database, sha256: str) -> bytes | None:
    """An attachment's bytes as a gateway sent them; None when none has yet."""
    row = db.one("SELECT data FROM attachments WHERE sha256 = ?", (sha256,))
    return bytes(row[0]) if row else None


def gate_known(db: Database, gate: str, where: Where) -> bool:
    """Whether `gate` is a gate these gateways registered, or events of theirs name it (a gate
    since removed keeps its history)."""
    clauses, params = where.terms()
    if db.one(f"SELECT 1 FROM gates WHERE {' AND '.join(['id = ?', *clauses])}", [gate, *params]):
        return True
    return bool(select_events(db, EventFilter(gates=(gate,)), where, limit=1))


def known_gates(db: Database, where: Where) -> list[str]:
    """The gates these gateways registered (their `provision` or online status lists them)."""
    clauses, params = where.terms()
    return [
        row[0]
        for row in db.query(
            "SELECT DISTINCT id FROM gates" + _where(clauses) + " ORDER BY id",
            params,
        )
    ]


def _where(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


@dataclass(frozen=True)
class GatewayAlert:
    """An alert of one gateway, as the community database holds it."""

    site: str
    gateway: str
    alert: AlertRecord
    updated_ms: int


_ALERT_COLUMNS = (
    "site_id, gateway_id, alert_id, alert_key, kind, severity, message, gate_id, device_id, raised_ms, "
    "acked_ms, acked_by, cleared_ms, repeats, updated_ms"
)


def list_alerts(
    db: Database, where: Where, *, include_cleared: bool = False, limit: int = 100
) -> list[GatewayAlert]:
    """The alerts still open at these gateways (with `include_cleared`, the latest of every
    state), the `limit` most recently raised, oldest first."""
    clauses, params = where.terms()
    if not include_cleared:
        clauses.append("cleared_ms IS NULL")
    rows = db.query(
        f"SELECT {_ALERT_COLUMNS} FROM alerts"
        + _where(clauses)
        + " ORDER BY coalesce(raised_ms, acked_ms, cleared_ms) DESC, site_id, gateway_id, alert_id LIMIT ?",
        [*params, limit],
    )
    return [_alert(row) for row in reversed(rows)]


def last_alert_change(db: Database) -> int:
    """When the ingest last changed an alert (its clock, ms), 0 for never."""
    row = db.one("SELECT coalesce(max(updated_ms), 0) FROM alerts")
    return int(row[0]) if row else 0


def alerts_changed(db: Database, where: Where, since_ms: int) -> list[GatewayAlert]:
    """The alerts whose row the ingest changed at or after `since_ms` (its clock), in that order."""
    clauses, params = where.terms()
    clauses.append("updated_ms >= ?")
    rows = db.query(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(clauses)} "
        "ORDER BY updated_ms, site_id, gateway_id, alert_id",
        [*params, since_ms],
    )
    return [_alert(row) for row in rows]


_ID_PIECE = re.compile(r"^[0-9a-f-]+$")


def resolve_alert(db: Database, site: str, gateway: str, text: str) -> GatewayAlert | None:
    """The alert of this gateway someone means by `text`, as `gatehouse alerts ack` reads it on
    the gateway: its id, its key (the newest alert with it), or a piece of at least MIN_ID_PIECE
    characters that begins or ends one alert's id (an open one's when one matches). None when
    none matches; UnknownAlert naming the candidates when the piece fits several."""
    where = "site_id = ? AND gateway_id = ?"
    rows = db.query(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where} AND (alert_id = ? OR alert_key = ?) "
        "ORDER BY raised_ms DESC LIMIT 1",
        (site, gateway, text, text),
    )
    piece = text.strip().lower()
    if rows or len(piece) < MIN_ID_PIECE or not _ID_PIECE.match(piece):
        return _alert(rows[0]) if rows else None
    rows = db.query(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where} AND (alert_id LIKE ? OR alert_id LIKE ?) "
        "ORDER BY raised_ms",
        (site, gateway, f"{piece}%", f"%{piece}"),
    )
    matches = [_alert(row) for row in rows]
    chosen = [m for m in matches if m.alert.state != "cleared"] or matches
    if len(chosen) > 1:
        shown = "; ".join(f"{m.alert.alert_id} ({m.alert.state}: {m.alert.message})" for m in chosen[:5])
        more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
        raise UnknownAlert(f"{text!r} fits {len(chosen)} alerts: {shown}{more}; give more of the id")
    return chosen[0] if chosen else None


def _alert(row: tuple[Any, ...]) -> GatewayAlert:
    (
        site,
        gateway,
        alert_id,
        key,
        kind,
        severity,
        message,
        gate,
        device,
        raised,
        acked,
        by,
        cleared,
        repeats,
        updated,
    ) = row
    state = "cleared" if cleared is not None else "acknowledged" if acked is not None else "raised"
    record = AlertRecord(
        alert_id=alert_id,
        key=key or "",
        kind=kind or "?",
        severity=severity or "warning",
        state=state,
        message=message or "",
        gate=gate,
        device=device,
        raised_ms=int(raised) if raised is not None else 0,
        acked_ms=int(acked) if acked is not None else None,
        acked_by=by,
        cleared_ms=int(cleared) if cleared is not None else None,
        repeats=int(repeats or 0),
        last_seen_ms=None,
    )
    return GatewayAlert(site, gateway, record, int(updated))
