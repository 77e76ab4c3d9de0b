"""Queries over the store that both the gateway and the CLI (on a read-only connection) run."""

from __future__ import annotations

import sqlite3

from edge.events import Event


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
