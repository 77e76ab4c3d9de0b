"""The alert engine: one open alert per condition (its dedup key), a lifecycle
raised → acknowledged → cleared, and a rate limit on repeats.

Alerts are events of the highest send priority; their state is kept in the store's `alerts`
table so that a restart does not raise again what is already open."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge.events import AlertAckPayload, AlertClearedPayload, AlertPayload, Event, EventFactory, Severity
from edge.ids import uuid7
from edge.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAlert:
    alert_id: str
    key: str
    kind: str
    severity: str
    state: str
    message: str
    gate: str | None
    raised_ms: int
    acked_ms: int | None
    repeats: int


class AlertEngine:
    """Raises, acknowledges and clears alerts, recording each step as an event."""

    def __init__(
        self,
        store: Store,
        factory: EventFactory,
        *,
        clock: Callable[[], float] = time.time,
        on_raised: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.factory = factory
        self.clock = clock
        self.on_raised = on_raised

    def open_alerts(self) -> list[OpenAlert]:
        rows = self.store.read().execute(
            "SELECT alert_id, key, kind, severity, state, message, gate, raised_ms, acked_ms, repeats "
            "FROM alerts WHERE state != 'cleared' ORDER BY raised_ms"
        )
        return [OpenAlert(*row) for row in rows]

    def find(self, alert_id_or_key: str) -> OpenAlert | None:
        row = (
            self.store.read()
            .execute(
                "SELECT alert_id, key, kind, severity, state, message, gate, raised_ms, acked_ms, repeats "
                "FROM alerts WHERE (alert_id = ? OR key = ?) ORDER BY raised_ms DESC LIMIT 1",
                (alert_id_or_key, alert_id_or_key),
            )
            .fetchone()
        )
        return OpenAlert(*row) if row else None

    async def raise_(
        self,
        kind: str,
        key: str,
        message: str,
        *,
        severity: Severity = "warning",
        device: str | None = None,
        gate: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Event | None:
        """Raise an alert unless one with this key is open; a repeat of an open one is only
        counted."""
        now_ms = int(self.clock() * 1000)
        alert_id = str(uuid7())

        def record(conn: Any) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT alert_id, raised_ms, repeats FROM alerts WHERE key=? AND state != 'cleared'",
                (key,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO alerts(alert_id, key, kind, severity, state, message, gate, raised_ms) "
                    "VALUES (?, ?, ?, ?, 'raised', ?, ?, ?)",
                    (alert_id, key, kind, severity, message, gate, now_ms),
                )
                return None
            conn.execute("UPDATE alerts SET repeats = repeats + 1 WHERE alert_id=?", (row[0],))
            return row[0], row[1]

        existing = await self.store.write_async(record)
        if existing is not None:
            return None
        payload = AlertPayload(
            alert_id=alert_id,
            kind=kind,
            key=key,
            severity=severity,
            message=message,
            gate=gate,
            detail=detail or {},
        )
        event = await self.store.append_async(self.factory.make("alert.raised", payload, device=device))
        log.warning("alert %s [%s] %s", kind, severity, message)
        if self.on_raised is not None:
            await self.on_raised(event)
        return event

    async def acknowledge(self, alert_id_or_key: str, by: str = "operator") -> Event | None:
        alert = self.find(alert_id_or_key)
        if alert is None or alert.state != "raised":
            return None
        now_ms = int(self.clock() * 1000)
        await self.store.write_async(
            lambda c: c.execute(
                "UPDATE alerts SET state='acknowledged', acked_ms=?, acked_by=? WHERE alert_id=?",
                (now_ms, by, alert.alert_id),
            )
        )
        return await self.store.append_async(
            self.factory.make(
                "alert.acknowledged", AlertAckPayload(alert_id=alert.alert_id, key=alert.key, by=by)
            )
        )

    async def clear(self, key: str, reason: str = "") -> Event | None:
        """Clear the open alert with this key (the condition is over)."""
        now_ms = int(self.clock() * 1000)

        def record(conn: Any) -> str | None:
            row = conn.execute(
                "SELECT alert_id FROM alerts WHERE key=? AND state != 'cleared'", (key,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE alerts SET state='cleared', cleared_ms=? WHERE alert_id=?", (now_ms, row[0]))
            return str(row[0])

        alert_id = await self.store.write_async(record)
        if alert_id is None:
            return None
        return await self.store.append_async(
            self.factory.make("alert.cleared", AlertClearedPayload(alert_id=alert_id, key=key, reason=reason))
        )
