"""Retention of personal data: plate text in local events (and in the guards' record of the
alerts about a plate) and JPEG snapshots are kept only as long as the configuration says (90
and 30 days by default).

Work is done in small slices (a few thousand rows per transaction, walking the outbox by seq
from a persisted cursor) so that commits of new events never wait long behind it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from edge.store import Store

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
SLICE_ROWS = 2000
CURSOR_KEY = "retention.plates_cursor"
PLATE_TYPES = (
    "vehicle.plate",
    "access.granted",
    "access.denied",
    "alert.raised",
    "alert.acknowledged",
    "alert.cleared",
)
"""the events that can name a plate: in `plate`, in an alert's `detail`, in an alert's key (one
alert per plate: `plate.blocklisted:津A12345`), and then in the words of `detail` or `message`"""
REMOVED = "[plate removed]"


def redact_plates(store: Store, older_than_ms: int) -> int:
    """Remove the plate text of events recorded before `older_than_ms`, wherever the event has
    it (its plate field, an alert's detail and key, the words of a decision's detail or an
    alert's message), and from the guards' record of those alerts; returns events changed."""
    changed = 0
    while True:
        cursor = int(store.kv_get(CURSOR_KEY) or 0)

        def one_slice(conn: sqlite3.Connection, start: int = cursor) -> tuple[int, int, bool]:
            rows = conn.execute(
                "SELECT seq, ts_ms FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (start, SLICE_ROWS)
            ).fetchall()
            old = [seq for seq, ts in rows if ts < older_than_ms]
            if not old:
                return 0, start, False
            updated = _redact(conn, old)
            # Timestamps rise with seq; the cursor stops at the first row still inside the limit.
            done_through = old[-1] if len(old) < len(rows) or len(rows) < SLICE_ROWS else rows[-1][0]
            conn.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (CURSOR_KEY, str(done_through)),
            )
            more = len(old) == len(rows) == SLICE_ROWS
            return updated, done_through, more

        updated, _, more = store.write(one_slice)
        changed += updated
        if not more:
            return changed


def _redact(conn: sqlite3.Connection, seqs: list[int]) -> int:
    """Remove the plates of these events (of PLATE_TYPES) and of the alerts they raised."""
    rows = conn.execute(
        f"SELECT seq, body FROM outbox WHERE seq IN ({','.join('?' * len(seqs))}) "
        f"AND type IN ({','.join('?' * len(PLATE_TYPES))})",
        (*seqs, *PLATE_TYPES),
    ).fetchall()
    bodies: list[tuple[str, int]] = []
    alerts: list[tuple[str, str, str]] = []
    for seq, body in rows:
        event = json.loads(body)
        payload = event["payload"]
        plates = _plates_of(payload)
        if not plates:
            continue
        text = body
        for plate in sorted(plates, key=len, reverse=True):
            text = text.replace(json.dumps(plate, ensure_ascii=False)[1:-1], REMOVED)
        try:
            redacted = json.loads(text)
        except ValueError:  # the text replaced was part of the JSON itself: the fields at least
            redacted = event
        if "plate" in redacted["payload"]:
            redacted["payload"]["plate"] = None
        if isinstance(redacted["payload"].get("detail"), dict) and "plate" in redacted["payload"]["detail"]:
            redacted["payload"]["detail"]["plate"] = None
        bodies.append((json.dumps(redacted, ensure_ascii=False, separators=(",", ":")), seq))
        if event["type"] == "alert.raised":
            alerts.extend((plate, plate, payload.get("alert_id", "")) for plate in plates)
    conn.executemany("UPDATE outbox SET body = ? WHERE seq = ?", bodies)
    conn.executemany(
        f"UPDATE alerts SET key = replace(key, ?, '{REMOVED}'), message = replace(message, ?, '{REMOVED}') "
        "WHERE alert_id = ? AND state = 'cleared'",
        alerts,
    )
    return len(bodies)


def _plates_of(payload: dict[str, Any]) -> set[str]:
    """The plate texts a payload names in its own fields (not yet removed)."""
    found = {payload.get("plate")}
    detail = payload.get("detail")
    if isinstance(detail, dict):
        found.add(detail.get("plate"))
    kind, _, rest = str(payload.get("key") or "").partition(":")
    if kind.startswith("plate.") and rest != REMOVED:
        found.add(rest)
    return {plate for plate in found if isinstance(plate, str) and plate}


async def run_housekeeping(
    store: Store,
    retention: Any,
    *,
    interval_s: float = 600.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Apply the retention limits now and then every `interval_s`, until cancelled."""
    while True:
        now_ms = int(clock() * 1000)
        try:
            plates = await asyncio.to_thread(redact_plates, store, now_ms - retention.plates_days * DAY_MS)
            snapshots = await asyncio.to_thread(
                store.expire_attachments, now_ms - retention.snapshots_days * DAY_MS
            )
            if plates or snapshots:
                log.info(
                    "retention: removed the plates of %d events, deleted %d snapshots", plates, snapshots
                )
        except Exception:
            log.exception("retention housekeeping failed; will retry")
        await asyncio.sleep(interval_s)
