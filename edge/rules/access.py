"""Access decisions, entirely offline, from the allow-lists and passes in the local store.
Every decision explains itself with a reason."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from edge.events import AccessReason
from edge.privacy import credential_hash
from edge.store import Store


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: AccessReason
    subject: str | None = None
    pass_id: str | None = None


def _gate_allowed(gates_json: str | None, gate: str) -> bool:
    if not gates_json:
        return True
    gates = json.loads(gates_json)
    return not gates or gate in gates


def _window(valid_from: int | None, valid_until: int | None, now_ms: int) -> AccessReason | None:
    if valid_from is not None and now_ms < valid_from:
        return "not_yet_valid"
    if valid_until is not None and now_ms >= valid_until:
        return "expired"
    return None


class AccessDecider:
    """Decides for a card, QR token, PIN or plate at a gate."""

    def __init__(self, store: Store, salt: str) -> None:
        self.store = store
        self.salt = salt

    def credential(self, kind: str, raw: str, gate: str, now_ms: int) -> Decision:
        """A card number, QR token or PIN: resident entries first, then passes (which are
        consumed atomically on a grant)."""
        digest = credential_hash(raw, self.salt, kind)
        row = (
            self.store.read()
            .execute(
                "SELECT subject, valid_from_ms, valid_until_ms, gates FROM allow_cards WHERE hash=?",
                (digest,),
            )
            .fetchone()
        )
        if row is not None:
            return self._resident(row, gate, now_ms)
        return self._use_pass("token_hash", digest, gate, now_ms)

    def plate(self, plate: str, gate: str, now_ms: int) -> Decision:
        row = (
            self.store.read()
            .execute(
                "SELECT subject, valid_from_ms, valid_until_ms, gates FROM allow_plates WHERE plate=?",
                (plate,),
            )
            .fetchone()
        )
        if row is not None:
            return self._resident(row, gate, now_ms)
        return self._use_pass("plate", plate, gate, now_ms)

    @staticmethod
    def _resident(row: tuple[Any, ...], gate: str, now_ms: int) -> Decision:
        subject, valid_from, valid_until, gates = row
        refused = _window(valid_from, valid_until, now_ms)
        if refused:
            return Decision(False, refused, subject)
        if not _gate_allowed(gates, gate):
            return Decision(False, "wrong_gate", subject)
        return Decision(True, "resident", subject)

    def _use_pass(self, column: str, value: str, gate: str, now_ms: int) -> Decision:
        def decide(conn: sqlite3.Connection) -> Decision:
            rows = conn.execute(
                f"SELECT id, holder, valid_from_ms, valid_until_ms, gates, max_entries, used, revoked_ms "
                f"FROM passes WHERE {column}=? ORDER BY valid_until_ms DESC",
                (value,),
            ).fetchall()
            if not rows:
                return Decision(False, "unknown")
            refusal: Decision | None = None
            for pass_id, holder, valid_from, valid_until, gates, max_entries, used, revoked in rows:
                subject = holder or pass_id
                if revoked is not None:
                    refusal = refusal or Decision(False, "revoked", subject, pass_id)
                    continue
                window = _window(valid_from, valid_until, now_ms)
                if window:
                    refusal = refusal or Decision(False, window, subject, pass_id)
                    continue
                if not _gate_allowed(gates, gate):
                    refusal = refusal or Decision(False, "wrong_gate", subject, pass_id)
                    continue
                if max_entries is not None and used >= max_entries:
                    refusal = refusal or Decision(False, "exhausted", subject, pass_id)
                    continue
                conn.execute("UPDATE passes SET used = used + 1 WHERE id=?", (pass_id,))
                return Decision(True, "pass", subject, pass_id)
            assert refusal is not None
            return refusal

        return self.store.write(decide)
