"""Retention of personal data: plate text in local events and JPEG snapshots are kept only as
long as the configuration says (90 and 30 days by default).

Work is done in small slices (a few thousand rows per transaction, walking the outbox by seq
from a persisted cursor) so that commits of new events never wait long behind it."""

from __future__ import annotations

import asyncio
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
PLATE_TYPES = ("vehicle.plate", "access.granted", "access.denied")


def redact_plates(store: Store, older_than_ms: int) -> int:
    """Blank the plate text of events recorded before `older_than_ms`; returns rows changed."""
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
            placeholders = ",".join("?" * len(old))
            updated = conn.execute(
                "UPDATE outbox SET body = json_set(body, '$.payload.plate', NULL) "
                f"WHERE seq IN ({placeholders}) AND type IN ({','.join('?' * len(PLATE_TYPES))}) "
                "AND json_extract(body, '$.payload.plate') IS NOT NULL",
                (*old, *PLATE_TYPES),
            ).rowcount
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
                log.info("retention: blanked %d plate readings, deleted %d snapshots", plates, snapshots)
        except Exception:
            log.exception("retention housekeeping failed; will retry")
        await asyncio.sleep(interval_s)
