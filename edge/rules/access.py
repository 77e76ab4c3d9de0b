"""Access decisions, entirely offline, from the allow-list, blocklist and passes in the local
store. Every decision explains itself: a reason (resident, pass, expired, not_yet_valid,
exhausted, revoked, wrong_gate, blocklisted, unknown, anti_passback) and a sentence a guard can
read.

Order: the blocklist first (a blocked card is refused even when it is also allowed), then the
resident's entry, then passes. A grant at a gate of an anti-passback pair is refused when the
subject's last pass through the pair went the same way. The whole decision, with the pass use
and the anti-passback state it changes and the event that records it, is one transaction: a
decision that cannot be recorded (a full disk, a crash) changed nothing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from edge.allowlist import normalise_plate
from edge.events import AccessReason, Event
from edge.privacy import credential_hash
from edge.rules.config import AntiPassbackPair
from edge.store import Store


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: AccessReason
    subject: str | None = None
    pass_id: str | None = None
    household: str | None = None
    detail: str = ""
    blocked: bool = False


@dataclass(frozen=True)
class GateRef:
    """What a decision needs to know of the gate: its id and which way it lets people pass."""

    id: str
    direction: str = "both"


def _gate_allowed(gates_json: str | None, gate: str) -> bool:
    if not gates_json:
        return True
    gates = json.loads(gates_json)
    return not gates or gate in gates


def _when(ms: int, zone: tzinfo) -> str:
    """A moment as the guards read it: in the site's time zone, as `gatehouse pass list` shows it."""
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M %Z")


def _lets_out(reason: str, gate: GateRef) -> bool:
    """Whether a lapsed credential still opens this gate: an exit gate lets out whoever's pass or
    card expired or was revoked while they were inside (trapping a visitor who overstayed is
    worse than the overstay, which the event records); an entry or two-way gate does not."""
    return gate.direction == "out" and reason in ("expired", "revoked")


def _window(
    valid_from: int | None, valid_until: int | None, now_ms: int, zone: tzinfo
) -> tuple[AccessReason, str] | None:
    if valid_from is not None and now_ms < valid_from:
        return "not_yet_valid", f"valid from {_when(valid_from, zone)}"
    if valid_until is not None and now_ms >= valid_until:
        return "expired", f"expired {_when(valid_until, zone)}"
    return None


Recorder = Callable[[Decision], Event | None]
"""Makes the event that records a decision (None: not recorded)."""


class AccessDecider:
    """Decides for a card, QR token, PIN or plate at a gate; the reasons give times in `zone`
    (the site's time zone)."""

    def __init__(
        self,
        store: Store,
        salt: str,
        anti_passback: Sequence[AntiPassbackPair] = (),
        zone: tzinfo = UTC,
    ) -> None:
        self.store = store
        self.salt = salt
        self.areas = passback_areas(anti_passback)
        self.zone = zone

    def credential(
        self, kind: str, raw: str, gate: GateRef | str, now_ms: int, record: Recorder = lambda _: None
    ) -> tuple[Decision, Event | None]:
        """Decide on a card number, QR token or PIN, and commit the decision with the event
        `record` makes of it (none by default: a what-if). Returns both, the event with its seq."""
        digest = credential_hash(raw, self.salt, kind)
        shown = f"{kind} …{raw.strip().upper()[-4:]}"
        return self._run(kind, digest, shown, _ref(gate), now_ms, record)

    def plate(
        self, plate: str, gate: GateRef | str, now_ms: int, record: Recorder = lambda _: None
    ) -> tuple[Decision, Event | None]:
        """`credential()` for a number plate."""
        try:
            text = normalise_plate(plate)
        except ValueError:
            text = plate.strip().upper()
        return self._run("plate", text, f"plate {text}", _ref(gate), now_ms, record)

    def _run(
        self, kind: str, value: str, shown: str, gate: GateRef, now_ms: int, record: Recorder
    ) -> tuple[Decision, Event | None]:
        """Decide on a read connection when nothing has to change (a resident, an unknown or a
        blocked credential away from anti-passback gates: no write on the way to the barrier
        besides the event); otherwise in the event's write transaction (a pass is used, the
        anti-passback side recorded)."""
        if not any(gate.id in area.entries or gate.id in area.exits for area in self.areas):
            decided = self._decide(self.store.read(), kind, value, shown, gate, now_ms, writing=False)
            if decided is not None:
                event = record(decided)
                return decided, None if event is None else self.store.append(event)

        def decide(conn: sqlite3.Connection) -> tuple[Decision, Event | None]:
            decision = self._decide(conn, kind, value, shown, gate, now_ms, writing=True)
            assert decision is not None
            return decision, record(decision)

        return self.store.write_with_event(decide)

    def _decide(
        self,
        conn: sqlite3.Connection,
        kind: str,
        value: str,
        shown: str,
        gate: GateRef,
        now_ms: int,
        *,
        writing: bool,
    ) -> Decision | None:
        """The decision; None when it needs a write and `writing` is off."""
        blocked = conn.execute(
            "SELECT reason FROM blocklist WHERE kind=? AND value=? "
            "AND (valid_until_ms IS NULL OR valid_until_ms > ?)",
            (kind, value, now_ms),
        ).fetchone()
        if kind == "plate":
            sql = (
                "SELECT e.subject, e.valid_from_ms, e.valid_until_ms, e.gates, r.household, "
                "r.valid_from_ms, r.valid_until_ms, r.building, r.unit FROM allow_plates e "
                "LEFT JOIN residents r ON r.id = e.subject WHERE e.plate=?"
            )
        else:
            sql = (
                "SELECT e.subject, e.valid_from_ms, e.valid_until_ms, e.gates, r.household, "
                "r.valid_from_ms, r.valid_until_ms, r.building, r.unit FROM allow_cards e "
                "LEFT JOIN residents r ON r.id = e.subject WHERE e.hash=?"
            )
        row = conn.execute(sql, (value,)).fetchone()
        if blocked is not None:
            # a resident's lost card, blocked: refused, but under its owner, whom the property
            # manager looks for (`events --household`)
            owner, household = (row[0], row[4]) if row is not None else (None, None)
            why = f": {blocked[0]}" if blocked[0] else ""
            return Decision(
                False,
                "blocklisted",
                owner,
                household=household,
                detail=f"{shown} is on the blocklist{why}",
                blocked=True,
            )
        if row is not None:
            return self._resident(conn, row, shown, gate, now_ms)
        column = "plate" if kind == "plate" else "token_hash"
        return self._use_pass(conn, column, value, shown, gate, now_ms, writing)

    def _resident(
        self, conn: sqlite3.Connection, row: tuple[Any, ...], shown: str, gate: GateRef, now_ms: int
    ) -> Decision:
        subject, start, end, gates, household, person_start, person_end, building, unit = row
        where = ", ".join(
            p for p in (household, building and f"building {building}", unit and f"unit {unit}") if p
        )
        who = f"{subject}" + (f" ({where})" if where else "")
        overstay = ""
        for window, whose in (
            (_window(start, end, now_ms, self.zone), shown),
            (_window(person_start, person_end, now_ms, self.zone), who),
        ):
            if window and _lets_out(window[0], gate):
                overstay = f"; let out although {whose} {window[1]}"
            elif window:
                return Decision(
                    False, window[0], subject, household=household, detail=f"{whose}: {window[1]}"
                )
        if not _gate_allowed(gates, gate.id):
            return Decision(
                False,
                "wrong_gate",
                subject,
                household=household,
                detail=f"{shown} of {who} is not for {gate.id}",
            )
        refused = self._passback(conn, subject, gate, now_ms)
        if refused:
            return Decision(False, "anti_passback", subject, household=household, detail=refused)
        return Decision(
            True,
            "resident",
            subject,
            household=household,
            detail=f"{shown} of resident {who}{overstay}",
        )

    def _use_pass(
        self,
        conn: sqlite3.Connection,
        column: str,
        value: str,
        shown: str,
        gate: GateRef,
        now_ms: int,
        writing: bool,
    ) -> Decision | None:
        rows = conn.execute(
            "SELECT id, kind, holder, host, valid_from_ms, valid_until_ms, gates, max_entries, used, "
            f"revoked_ms FROM passes WHERE {column}=? ORDER BY valid_until_ms DESC",
            (value,),
        ).fetchall()
        if not rows:
            return Decision(False, "unknown", detail=f"{shown} is not on the allow-list and has no pass")
        if not writing:
            return None
        refusal: Decision | None = None
        for pass_id, kind, holder, host, start, end, gates, max_entries, used, revoked in rows:
            subject = holder or pass_id
            label = f"{kind} pass {pass_id}" + (f" for {host}" if host else "")
            counts = gate.direction != "out"
            why: tuple[AccessReason, str] | None = None
            overstay = ""
            window = _window(start, end, now_ms, self.zone)
            if revoked is not None and not _lets_out("revoked", gate):
                why = "revoked", f"{label} was revoked {_when(revoked, self.zone)}"
            elif window and not _lets_out(window[0], gate):
                why = window[0], f"{label} {window[1]}"
            elif not _gate_allowed(gates, gate.id):
                why = "wrong_gate", f"{label} is not for {gate.id}"
            elif counts and max_entries is not None and used >= max_entries:
                why = "exhausted", f"{label}: all {max_entries} entries used"
            elif passback := self._passback(conn, pass_id, gate, now_ms):
                why = "anti_passback", passback
            if why is not None:
                refusal = refusal or Decision(False, why[0], subject, pass_id, host, f"{shown}: {why[1]}")
                continue
            if counts:
                conn.execute("UPDATE passes SET used = used + 1 WHERE id=?", (pass_id,))
                used += 1
            left = f", entry {used} of {max_entries}" if counts and max_entries is not None else ""
            if revoked is not None:
                overstay = f"; let out although it was revoked {_when(revoked, self.zone)}"
            elif window:
                overstay = f"; let out although it {window[1]}"
            detail = f"{shown}: {label}{left}{overstay}"
            return Decision(True, "pass", subject, pass_id, host, detail)
        assert refusal is not None
        return refusal

    def _passback(self, conn: sqlite3.Connection, subject: str, gate: GateRef, now_ms: int) -> str | None:
        """Refuse a second entry (or exit) in a row into an anti-passback area; otherwise
        record the new side. State older than the area's reset time is forgotten."""
        for area in self.areas:
            if gate.id not in area.entries and gate.id not in area.exits:
                continue
            entering = gate.id in area.entries
            key = f"passback:{area.key}:{subject}"
            row = conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
            last = json.loads(row[0]) if row else None
            fresh = last is not None and now_ms - last["ts_ms"] < area.reset_after_h * 3600_000
            if fresh and last["inside"] == entering:
                side = "in" if entering else "out"
                when = _when(last["ts_ms"], self.zone)
                return f"{subject} already passed {side} at {last['gate']} at {when} and not back since"
            state = json.dumps({"inside": entering, "gate": gate.id, "ts_ms": now_ms})
            conn.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value=excluded.value",
                (key, state),
            )
        return None


@dataclass(frozen=True)
class PassbackArea:
    """The gates of anti-passback pairs that share a gate: one area with one inside. Two
    entrances sharing one exit are one area, so leaving by the shared exit after coming in by
    either entrance is the way out, not a second exit in a row."""

    key: str
    entries: frozenset[str]
    exits: frozenset[str]
    reset_after_h: float


def passback_areas(pairs: Sequence[AntiPassbackPair]) -> tuple[PassbackArea, ...]:
    """The pairs grouped into areas by the gates they share (a single pair keeps its own key,
    `entry/exit`, as the state it recorded before areas)."""
    groups: list[list[AntiPassbackPair]] = []
    for pair in pairs:
        joined = [g for g in groups if any({pair.entry, pair.exit} & {p.entry, p.exit} for p in g)]
        for group in joined:
            groups.remove(group)
        groups.append([pair for group in joined for pair in group] + [pair])
    return tuple(
        PassbackArea(
            key="+".join(f"{p.entry}/{p.exit}" for p in group),
            entries=frozenset(p.entry for p in group),
            exits=frozenset(p.exit for p in group),
            reset_after_h=min(p.reset_after_h for p in group),
        )
        for group in groups
    )


def _ref(gate: GateRef | str) -> GateRef:
    return GateRef(gate) if isinstance(gate, str) else gate
