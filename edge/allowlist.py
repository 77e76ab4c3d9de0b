"""Who may pass: resident cards, QR tokens and plates, and visitor or delivery passes, as kept in
the local store. Raw credentials never reach the store: only their salted hash and last 4."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from edge.ids import uuid7
from edge.privacy import credential_hash
from edge.store import Store


def _gates(gates: Iterable[str] | None) -> str | None:
    chosen = sorted(set(gates or ()))
    return json.dumps(chosen) if chosen else None


@dataclass(frozen=True)
class PassRecord:
    id: str
    kind: str
    plate: str | None
    token_last4: str | None
    holder: str | None
    valid_from_ms: int
    valid_until_ms: int
    gates: tuple[str, ...]
    max_entries: int | None
    used: int
    revoked: bool


class AllowList:
    def __init__(self, store: Store, salt: str) -> None:
        self.store = store
        self.salt = salt

    def add_credential(
        self,
        raw: str,
        subject: str,
        *,
        kind: str = "card",
        valid_from_ms: int | None = None,
        valid_until_ms: int | None = None,
        gates: Iterable[str] | None = None,
    ) -> str:
        normalised = raw.strip().upper()
        digest = credential_hash(normalised, self.salt, kind)
        row = (digest, kind, normalised[-4:], subject, valid_from_ms, valid_until_ms, _gates(gates))
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO allow_cards(hash, kind, last4, subject, valid_from_ms, valid_until_ms, gates) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(hash) DO UPDATE SET subject=excluded.subject, "
                "valid_from_ms=excluded.valid_from_ms, valid_until_ms=excluded.valid_until_ms, "
                "gates=excluded.gates",
                row,
            )
        )
        return digest

    def add_plate(
        self,
        plate: str,
        subject: str,
        *,
        valid_from_ms: int | None = None,
        valid_until_ms: int | None = None,
        gates: Iterable[str] | None = None,
    ) -> None:
        row = (plate.strip().upper(), subject, valid_from_ms, valid_until_ms, _gates(gates))
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO allow_plates(plate, subject, valid_from_ms, valid_until_ms, gates) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(plate) DO UPDATE SET subject=excluded.subject, "
                "valid_from_ms=excluded.valid_from_ms, valid_until_ms=excluded.valid_until_ms, "
                "gates=excluded.gates",
                row,
            )
        )

    def remove_credential(self, raw: str, kind: str = "card") -> bool:
        digest = credential_hash(raw, self.salt, kind)
        return self.store.write(
            lambda c: c.execute("DELETE FROM allow_cards WHERE hash=?", (digest,)).rowcount > 0
        )

    def remove_plate(self, plate: str) -> bool:
        return self.store.write(
            lambda c: (
                c.execute("DELETE FROM allow_plates WHERE plate=?", (plate.strip().upper(),)).rowcount > 0
            )
        )

    def issue_pass(
        self,
        *,
        kind: str = "visitor",
        plate: str | None = None,
        token: str | None = None,
        holder: str | None = None,
        valid_from_ms: int | None = None,
        valid_until_ms: int,
        gates: Iterable[str] | None = None,
        max_entries: int | None = None,
        pass_id: str | None = None,
    ) -> str:
        if not plate and not token:
            raise ValueError("a pass needs a plate or a QR token")
        now = int(time.time() * 1000)
        identifier = pass_id or f"pass-{uuid7()}"
        token_hash = credential_hash(token, self.salt, "qr") if token else None
        row = (
            identifier,
            kind,
            plate.strip().upper() if plate else None,
            token_hash,
            token.strip().upper()[-4:] if token else None,
            holder,
            valid_from_ms if valid_from_ms is not None else now,
            valid_until_ms,
            _gates(gates),
            max_entries,
            now,
        )
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO passes(id, kind, plate, token_hash, token_last4, holder, valid_from_ms, "
                "valid_until_ms, gates, max_entries, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO NOTHING",
                row,
            )
        )
        return identifier

    def revoke_pass(self, pass_id: str) -> bool:
        now = int(time.time() * 1000)
        return self.store.write(
            lambda c: (
                c.execute(
                    "UPDATE passes SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL", (now, pass_id)
                ).rowcount
                > 0
            )
        )

    def passes(self, include_ended: bool = False, now_ms: int | None = None) -> list[PassRecord]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        sql = (
            "SELECT id, kind, plate, token_last4, holder, valid_from_ms, valid_until_ms, gates, "
            "max_entries, used, revoked_ms FROM passes"
        )
        params: tuple[int, ...] = ()
        if not include_ended:
            sql += " WHERE revoked_ms IS NULL AND valid_until_ms > ?"
            params = (now,)
        rows = self.store.read().execute(sql + " ORDER BY valid_from_ms", params).fetchall()
        return [_pass_record(row) for row in rows]

    def counts(self) -> dict[str, int]:
        conn = self.store.read()
        return {
            "credentials": conn.execute("SELECT count(*) FROM allow_cards").fetchone()[0],
            "plates": conn.execute("SELECT count(*) FROM allow_plates").fetchone()[0],
            "passes": conn.execute("SELECT count(*) FROM passes WHERE revoked_ms IS NULL").fetchone()[0],
        }


def _pass_record(row: sqlite3.Row | tuple[object, ...]) -> PassRecord:
    (pid, kind, plate, last4, holder, start, end, gates, max_entries, used, revoked) = row
    return PassRecord(
        str(pid),
        str(kind),
        plate,  # type: ignore[arg-type]
        last4,  # type: ignore[arg-type]
        holder,  # type: ignore[arg-type]
        int(start),  # type: ignore[call-overload]
        int(end),  # type: ignore[call-overload]
        tuple(json.loads(gates)) if gates else (),  # type: ignore[arg-type]
        max_entries,  # type: ignore[arg-type]
        int(used),  # type: ignore[call-overload]
        revoked is not None,
    )
