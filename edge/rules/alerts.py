"""The alert engine: one open alert per condition (its dedup key), a lifecycle
raised → acknowledged → cleared, a rate limit per kind, and sirens or strobes on relay outputs.

Alerts are events of the highest send priority (the uplink sends them ahead of any backlog);
their state is kept in the store's `alerts` table, so a restart does not raise again what is
already open and the CLI (another process) can list and acknowledge them.

Two sorts of alert:
- conditions (a gate forced open, a fire lane blocked, a device offline) clear when the
  condition ends;
- moments (tailgating, a blocklisted plate, an unknown plate returning) clear by themselves
  `momentary_clear_min` after their last repeat.

A repeat of an open moment is counted on it (`repeats`, `last_seen_ms`), not raised again; a
condition raised again while it is open (the periodic checks find it still so) only updates
`last_seen_ms`."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import Command, SetOutput
from edge.errors import GatehouseError
from edge.events import AlertAckPayload, AlertClearedPayload, AlertPayload, Event, EventFactory, Severity
from edge.ids import uuid7
from edge.rules.config import AlertOutput, AlertsConfig
from edge.store import Store, insert_alert

log = logging.getLogger(__name__)

OUTPUT_RETRY_S = 30.0
"""A siren or strobe that could not be switched is tried again after this long."""
Commander = Callable[[str, Command], Awaitable[bool | None]]
"""Sends a command to a device; False when it is known not to have been carried out."""


@dataclass(frozen=True)
class AlertKind:
    severity: Severity
    momentary: bool
    clears: str


KINDS: dict[str, AlertKind] = {
    "gate.forced_open": AlertKind("critical", False, "the barrier is closed again"),
    "gate.held_open": AlertKind("warning", False, "the barrier is closed again"),
    "gate.stuck": AlertKind("critical", False, "the arm reaches its limit again"),
    "gate.tailgating": AlertKind("warning", True, "15 min after the last unmatched passage"),
    "card.blocklisted": AlertKind("critical", True, "15 min after the last attempt"),
    "plate.blocklisted": AlertKind("critical", True, "15 min after the last read"),
    "plate.unknown_repeat": AlertKind("warning", True, "15 min after the last read"),
    "fire_lane.blocked": AlertKind("critical", False, "the zone is free again"),
    "gate.crowding": AlertKind("warning", False, "the crowd disperses"),
    "camera.offline": AlertKind("critical", False, "the camera delivers frames again"),
    "camera.tampered": AlertKind("critical", False, "the picture is normal again"),
    "reader.tamper": AlertKind("critical", False, "the reader's tamper switch closes"),
    "device.tamper": AlertKind("critical", False, "the device reports tamper cleared"),
    "device.offline": AlertKind("critical", False, "the device is back online"),
    "disk.nearly_full": AlertKind("warning", False, "free space is back above the threshold"),
    "sync.backlog_old": AlertKind("warning", False, "the oldest unsynced event is recent again"),
    "alerts.flood": AlertKind("warning", True, "15 min after the flood ends"),
}
"""Every alert kind the rules raise, its default severity, and what clears it."""

_COLUMNS = (
    "alert_id, key, kind, severity, state, message, gate, device, raised_ms, acked_ms, acked_by, "
    "cleared_ms, repeats, last_seen_ms"
)


class UnknownAlert(GatehouseError):
    """No alert with that id or key, or a piece of an id that fits several alerts."""


@dataclass(frozen=True)
class AlertRecord:
    alert_id: str
    key: str
    kind: str
    severity: str
    state: str
    message: str
    gate: str | None
    device: str | None
    raised_ms: int
    acked_ms: int | None
    acked_by: str | None
    cleared_ms: int | None
    repeats: int
    last_seen_ms: int | None


OpenAlert = AlertRecord


def list_alerts(
    conn: sqlite3.Connection, *, include_cleared: bool = False, limit: int = 200
) -> list[AlertRecord]:
    """Open alerts (or the most recent ones of every state), oldest first."""
    where = "" if include_cleared else "WHERE state != 'cleared'"
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM (SELECT * FROM alerts {where} ORDER BY raised_ms DESC LIMIT ?) "
        "ORDER BY raised_ms",
        (limit,),
    ).fetchall()
    return [AlertRecord(*row) for row in rows]


def find_alert(conn: sqlite3.Connection, alert_id_or_key: str) -> AlertRecord | None:
    """The alert with this id, or the newest with this key."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = ? OR key = ? ORDER BY raised_ms DESC LIMIT 1",
        (alert_id_or_key, alert_id_or_key),
    ).fetchone()
    return AlertRecord(*row) if row else None


MIN_ID_PIECE = 4
"""The fewest characters of an alert id that name it: `gatehouse alerts ack afa5`."""


def resolve_alert(conn: sqlite3.Connection, text: str) -> AlertRecord | None:
    """The alert a guard means by `text`: its id, its key (the newest alert with it), or a piece
    of at least MIN_ID_PIECE characters that begins or ends one alert's id (an open alert's when
    one matches, so an old cleared alert does not make a short piece ambiguous). None when no
    alert matches; UnknownAlert naming the candidates when the piece fits several."""
    found = find_alert(conn, text)
    piece = text.strip().lower()
    if found is not None or len(piece) < MIN_ID_PIECE:
        return found
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE substr(alert_id, 1, ?) = ? OR substr(alert_id, -?) = ? "
        "ORDER BY raised_ms",
        (len(piece), piece, len(piece), piece),
    ).fetchall()
    matches = [AlertRecord(*row) for row in rows]
    chosen = [alert for alert in matches if alert.state != "cleared"] or matches
    if len(chosen) > 1:
        shown = "; ".join(f"{alert.alert_id} ({alert.state}: {alert.message})" for alert in chosen[:5])
        more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
        raise UnknownAlert(f"{text!r} fits {len(chosen)} alerts: {shown}{more}; give more of the id")
    return chosen[0] if chosen else None


class AlertEngine:
    """Raises, acknowledges and clears alerts, recording each step as an event, and switches
    the configured sirens and strobes."""

    def __init__(
        self,
        store: Store,
        factory: EventFactory,
        *,
        clock: Callable[[], float] = time.time,
        on_raised: Callable[[Event], Awaitable[None]] | None = None,
        config: AlertsConfig | None = None,
        commander: Commander | None = None,
    ) -> None:
        self.store = store
        self.factory = factory
        self.clock = clock
        self.on_raised = on_raised
        self.config = config or AlertsConfig()
        self.commander = commander
        self.suppressed = 0
        self._outputs: dict[tuple[str, str], bool] = {}
        self._failed_outputs: dict[tuple[str, str], tuple[bool, int]] = {}
        """outputs a command failed to switch: the state asked for and when to try again (ms)"""
        self._lock = asyncio.Lock()

    def configure(self, config: AlertsConfig, commander: Commander | None) -> None:
        """Set thresholds and the relay outputs (the rules do this with their configuration)."""
        self.config = config
        self.commander = commander

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # reading

    def open_alerts(self) -> list[AlertRecord]:
        return list_alerts(self.store.read())

    def find(self, alert_id_or_key: str) -> AlertRecord | None:
        """The alert with this id, or the newest with this key."""
        return find_alert(self.store.read(), alert_id_or_key)

    # the lifecycle

    async def raise_(
        self,
        kind: str,
        key: str,
        message: str,
        *,
        severity: Severity | None = None,
        device: str | None = None,
        gate: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Event | None:
        """Raise an alert unless one with this key is open (then the repeat is counted on it),
        or the kind (for a critical alert: the key) is over its rate limit (then it is counted,
        and one alerts.flood alert says so). Returns the alert.raised event, committed, or None."""
        known = KINDS.get(kind)
        chosen: Severity = severity or (known.severity if known else "warning")
        momentary = bool(known and known.momentary)
        # a critical alert is limited per condition: one flapping gate must not hide the first
        # forced opening of another (nor its flood be counted on the other gate's)
        scope, limited = ("key", key) if chosen == "critical" else ("kind", kind)
        async with self._lock:
            now_ms = self._now_ms()
            limit = self.config.max_per_kind_per_min

            def probe(conn: sqlite3.Connection) -> tuple[str, Event | None]:
                row = conn.execute(
                    "SELECT alert_id, state FROM alerts WHERE key=? AND state != 'cleared'", (key,)
                ).fetchone()
                if row is not None and momentary and row[1] == "acknowledged":
                    # the guards have dealt with it, and it happens again (the blocked card
                    # tried once more): that is news, not a repeat to count quietly; the
                    # acknowledged one is cleared in the same commit
                    reason = "happened again after it was acknowledged"
                    return "new", self._clear_row(str(row[0]), key, reason, now_ms, conn)[1]
                if row is not None:
                    # a moment happening again is counted (×3 for the guards); a condition that is
                    # still so (a device offline at every check) is the same one, not a repeat
                    conn.execute(
                        "UPDATE alerts SET repeats = repeats + momentary, last_seen_ms=? WHERE alert_id=?",
                        (now_ms, row[0]),
                    )
                    return "repeat", None
                if kind != "alerts.flood":
                    recent = conn.execute(
                        f"SELECT count(*) FROM alerts WHERE {scope}=? AND raised_ms > ?",
                        (limited, now_ms - 60_000),
                    ).fetchone()[0]
                    if recent >= limit:
                        conn.execute(
                            "INSERT INTO counters(name, value) VALUES ('alerts.suppressed', 1) "
                            "ON CONFLICT(name) DO UPDATE SET value = value + 1"
                        )
                        return "limited", None
                return "new", None

            outcome, _ = await self.store.write_with_event_async(probe)
            if outcome == "repeat":
                return None
            if outcome == "limited":
                self.suppressed += 1
                flood = (
                    "alerts.flood",
                    f"alerts.flood:{limited}",
                    f"more than {limit} {kind} alerts a minute"
                    + (f" for {key}" if scope == "key" else "")
                    + "; further ones are counted, not raised",
                )
            else:
                alert_id = str(uuid7())
                payload = AlertPayload(
                    alert_id=alert_id,
                    kind=kind,
                    key=key,
                    severity=chosen,
                    message=message,
                    gate=gate,
                    detail=detail or {},
                )
                raised = self.factory.make("alert.raised", payload, device=device)

                def open_alert(conn: sqlite3.Connection) -> tuple[None, Event]:
                    insert_alert(conn, raised, now_ms, momentary=momentary)
                    return None, raised

                _, event = await self.store.write_with_event_async(open_alert)
        if outcome == "limited":
            return await self.raise_(*flood, severity="warning", detail={"kind": kind, "per_min": limit})
        log.warning("alert %s [%s] %s", kind, chosen, message)
        await self.drive_outputs()
        if self.on_raised is not None:
            await self.on_raised(event)
        return event

    async def acknowledge(self, alert_id_or_key: str, by: str = "operator") -> Event | None:
        """Acknowledge a raised alert (by id, or the open one with this key) and record
        `alert.acknowledged`. Returns None when it was already acknowledged or cleared; raises
        UnknownAlert when there is no such alert."""
        now_ms = self._now_ms()

        def record(conn: sqlite3.Connection) -> tuple[str | None, Event | None]:
            row = conn.execute(
                "SELECT alert_id, key, state, repeats, gate FROM alerts "
                "WHERE alert_id = ? OR (key = ? AND state != 'cleared') "
                "ORDER BY raised_ms DESC LIMIT 1",
                (alert_id_or_key, alert_id_or_key),
            ).fetchone()
            if row is None:
                raise UnknownAlert(
                    f"no alert {alert_id_or_key!r}; `gatehouse alerts` lists the open ones with their ids"
                )
            if row[2] != "raised":
                return None, None
            conn.execute(
                "UPDATE alerts SET state='acknowledged', acked_ms=?, acked_by=? WHERE alert_id=?",
                (now_ms, by, row[0]),
            )
            payload = AlertAckPayload(
                alert_id=str(row[0]), key=str(row[1]), by=by, repeats=int(row[3]), gate=row[4]
            )
            return str(row[0]), self.factory.make("alert.acknowledged", payload)

        _, event = await self.store.write_with_event_async(record)
        if event is None:
            return None
        await self.drive_outputs()
        return event

    async def clear(self, key: str, reason: str = "", *, quiet_since_ms: int | None = None) -> Event | None:
        """Clear the open alert with this key (the condition is over). An alert being raised
        meanwhile is waited for, then cleared. With `quiet_since_ms`, only an alert not seen
        since then: a moment that happened again while waiting stays open, counted. Each change
        of an alert's state and the event that records it are one commit: the guards' list and
        the community's never disagree after a crash."""
        sql = "SELECT alert_id FROM alerts WHERE key=? AND state != 'cleared'"
        params: tuple[Any, ...] = (key,)
        if quiet_since_ms is not None:
            sql += " AND coalesce(last_seen_ms, raised_ms) < ?"
            params = (key, quiet_since_ms)
        async with self._lock:
            if self.store.read().execute(sql, params).fetchone() is None:
                return None
            now_ms = self._now_ms()

            def record(conn: sqlite3.Connection) -> tuple[str | None, Event | None]:
                row = conn.execute(sql, params).fetchone()
                if row is None:
                    return None, None
                return self._clear_row(str(row[0]), key, reason, now_ms, conn)

            _, event = await self.store.write_with_event_async(record)
            if event is None:
                return None
        await self.drive_outputs()
        return event

    def _clear_row(
        self, alert_id: str, key: str, reason: str, now_ms: int, conn: sqlite3.Connection
    ) -> tuple[str, Event]:
        """Mark the alert cleared; its alert.cleared event (for `write_with_event`)."""
        conn.execute("UPDATE alerts SET state='cleared', cleared_ms=? WHERE alert_id=?", (now_ms, alert_id))
        repeats, gate = conn.execute(
            "SELECT repeats, gate FROM alerts WHERE alert_id=?", (alert_id,)
        ).fetchone()
        payload = AlertClearedPayload(
            alert_id=alert_id, key=key, reason=reason, repeats=int(repeats), gate=gate
        )
        return alert_id, self.factory.make("alert.cleared", payload)

    async def check(self) -> None:
        """Clear moments whose last repeat is older than `momentary_clear_min`, and switch off
        outputs past their hold time."""
        quiet_since = self._now_ms() - int(self.config.momentary_clear_min * 60_000)
        stale = (
            self.store.read()
            .execute(
                "SELECT key FROM alerts WHERE momentary=1 AND state != 'cleared' "
                "AND coalesce(last_seen_ms, raised_ms) < ?",
                (quiet_since,),
            )
            .fetchall()
        )
        for (key,) in stale:
            await self.clear(
                key, reason=f"quiet for {self.config.momentary_clear_min:g} min", quiet_since_ms=quiet_since
            )
        await self.drive_outputs()

    # sirens and strobes

    def _wanted(self, output: AlertOutput, now_ms: int) -> bool:
        sql = (
            "SELECT count(*) FROM alerts WHERE state='raised' AND raised_ms > ? AND severity IN ({})".format(
                ",".join("?" * len(output.severities))
            )
        )
        params: list[Any] = [now_ms - int(output.hold_s * 1000), *output.severities]
        if output.kinds:
            sql += " AND kind IN ({})".format(",".join("?" * len(output.kinds)))
            params.extend(output.kinds)
        return bool(self.store.read().execute(sql, params).fetchone()[0])

    async def drive_outputs(self) -> None:
        """Switch each siren or strobe on while an unacknowledged alert it answers to is younger
        than its hold time, off otherwise. A relay this process has not switched yet is switched
        either way: the board keeps its output across a restart of the gateway. A relay that fails
        is logged and tried again OUTPUT_RETRY_S later, or at once when it should now go the
        other way; a hung relay board must not hold up every alert (and the decisions queued
        behind it) by its command timeout. Alerts go on."""
        if self.commander is None or not self.config.outputs:
            return
        now_ms = self._now_ms()
        for output in self.config.outputs:
            wanted = self._wanted(output, now_ms)
            slot = (output.device, output.output)
            if self._outputs.get(slot) == wanted:
                continue
            failed = self._failed_outputs.get(slot)
            if failed is not None and failed[0] == wanted and now_ms < failed[1]:
                continue
            self._outputs[slot] = wanted
            try:
                done = await self.commander(output.device, SetOutput(output.output, wanted))
            except Exception:
                log.exception("could not switch %s on %s", output.output, output.device)
                done = False
            if done is False:
                # not known to be switched: tried again later (a siren left on, or off)
                del self._outputs[slot]
                self._failed_outputs[slot] = (wanted, now_ms + int(OUTPUT_RETRY_S * 1000))
            else:
                self._failed_outputs.pop(slot, None)

    def output_states(self) -> dict[tuple[str, str], bool]:
        return dict(self._outputs)
