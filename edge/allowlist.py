"""Who may pass, as kept in the local store: residents (person, household, building, unit) with
their cards, QR tokens, PINs and plates, each with a validity window; a blocklist; and visitor,
delivery and contractor passes. Raw credentials never reach the store: only their site-salted
hash and last 4.

Rows carry a `source`: `local` for what was entered at the gatehouse (`gatehouse allow …`),
`sync` for what the community database sent (`allowlist.apply`). A full list from upstream
replaces the `sync` rows and leaves the local ones alone.

The community side sends versioned deltas (N → N+1). `apply()` checks the version, applies the
delta and records the new version in one transaction: a delta is applied entirely or not at
all, and a repeated one changes nothing."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal

from edge.errors import GatehouseError, UsageError
from edge.ids import uuid7
from edge.privacy import credential_hash, normalise_credential
from edge.store import Store
from models.plates import grammar

ALLOWLIST_VERSION_KEY = "sync.allowlist_version"
"""The kv key holding the allow-list version; the same key `sync.downlink` reads."""

CREDENTIAL_KINDS = ("card", "qr", "pin")
PASS_KINDS = ("visitor", "delivery", "contractor")
CredentialKind = Literal["card", "qr", "pin"]
EntryKind = Literal["card", "qr", "pin", "plate"]
_HASH = re.compile(r"^[0-9a-f]{64}$")
_PLATE = re.compile(r"^[\w\u4e00-\u9fff·-]{4,12}$")
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


MIN_PASS_ID_PIECE = 4
"""The fewest characters of a pass id (besides `pass-`) that name it: `gatehouse pass revoke 0431`."""


class VersionGap(GatehouseError):
    """A delta that does not continue the version this gateway holds; ask for the full list."""

    def __init__(self, have: int, starts_at: int | None) -> None:
        super().__init__(
            f"this gateway holds allow-list version {have}; the delta starts at {starts_at}: "
            "send the full list"
        )
        self.have = have
        self.starts_at = starts_at


def normalise_plate(plate: str) -> str:
    """The plate as the cameras report it: a Chinese plate fitted to its format (full-width
    characters folded, separators dropped, a look-alike such as the letter O in a serial read
    as 0), else the text upper-cased without spaces and separators; ValueError for no plate."""
    text = grammar.normalise(plate) or grammar.clean(plate)
    if not _PLATE.match(text):
        raise ValueError(f"{plate!r} does not look like a plate (e.g. 津A12345)")
    return text


def to_ms(
    moment: datetime | str | int | float | None, zone: tzinfo = UTC, *, until: bool = False
) -> int | None:
    """Milliseconds since the epoch from a datetime, an ISO 8601 text (in `zone` when it names
    none) or a number of milliseconds. With `until`, a bare date is the end of that day (a card
    valid until 2027-06-30 still opens on the 30th), as people mean it."""
    if moment is None or moment == "":
        return None
    if isinstance(moment, int | float):
        return int(moment)
    if isinstance(moment, str):
        text = moment.strip()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if until and _BARE_DATE.fullmatch(text):
            moment += timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


CSV_QUOTING = (
    "a quote opens a value that does not close where the value ends; write a value with a quote or "
    'a comma in it between quotes, its own quotes doubled ("Li ""Big"" Wang"), as spreadsheets save it'
)


CSV_SEMICOLONS = (
    "the values are separated by semicolons, as Excel saves CSV in some languages: save it as "
    "'CSV UTF-8 (comma delimited)'"
)


def csv_records(
    reader: csv.DictReader[str], unpaired: Callable[[str], None]
) -> Iterator[dict[str | Any, str | Any]]:
    """The records of a strict csv.DictReader, up to a quote that does not pair up: `unpaired` is
    given the problem (the line its value starts on, what to do) and the records end there, since
    what follows it cannot be told apart."""
    while True:
        begins = reader.line_num + 1
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            unpaired(f"{begins}: {CSV_QUOTING} ({err})")
            return


def _csv_time(line: dict[str, str], column: str, zone: tzinfo) -> int | None:
    """A CSV time column in ms (a bare date in valid_until: the end of that day); ValueError naming
    the column."""
    try:
        return to_ms(line.get(column) or None, zone, until=column == "valid_until")
    except ValueError as err:
        raise ValueError(f"{column}: expected an ISO time like 2027-01-31T23:59 ({err})") from err


def _csv_text(source: Path) -> str:
    """The text of a CSV file: UTF-8 (a BOM is dropped), else GB18030 (which covers GBK)."""
    try:
        data = source.read_bytes()
    except OSError as err:
        raise UsageError(f"{source}: cannot read it ({err.strerror})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as utf8:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            line = data.count(b"\n", 0, utf8.start) + 1
            raise UsageError(
                f"{source}:{line}: neither UTF-8 nor GB18030 text (byte 0x{data[utf8.start]:02x}); "
                "save it as 'CSV UTF-8' and import it again"
            ) from utf8


def _gates(gates: Iterable[str] | None) -> str | None:
    chosen = sorted({g for g in gates or () if g})
    return json.dumps(chosen) if chosen else None


@dataclass(frozen=True)
class PassRecord:
    id: str
    kind: str
    plate: str | None
    token_last4: str | None
    holder: str | None
    host: str | None
    valid_from_ms: int
    valid_until_ms: int
    gates: tuple[str, ...]
    max_entries: int | None
    used: int
    revoked: bool
    source: str

    def state(self, now_ms: int) -> str:
        return pass_state(
            now_ms, self.valid_from_ms, self.valid_until_ms, self.used, self.max_entries, revoked=self.revoked
        )


def pass_state(
    now_ms: int, valid_from_ms: int, valid_until_ms: int, used: int, max_entries: int | None, *, revoked: bool
) -> str:
    """A pass's state as the gateway and the community database both show it: revoked, not yet
    valid, expired, used up or valid, the first that holds."""
    if revoked:
        return "revoked"
    if now_ms < valid_from_ms:
        return "not yet valid"
    if now_ms >= valid_until_ms:
        return "expired"
    if max_entries is not None and used >= max_entries:
        return "used up"
    return "valid"


@dataclass(frozen=True)
class Entry:
    """One row of `gatehouse allow list`: a credential or plate of a resident, or a blocked one."""

    list: Literal["allow", "block"]
    kind: str
    shown: str
    subject: str | None
    household: str | None
    building: str | None
    unit: str | None
    valid_from_ms: int | None
    valid_until_ms: int | None
    gates: tuple[str, ...]
    source: str
    reason: str = ""


@dataclass
class ImportResult:
    residents: int = 0
    credentials: int = 0
    plates: int = 0
    blocked: int = 0
    households: set[str] = field(default_factory=set)
    """the residents' households and those allowed a credential, a person named or not"""


@dataclass(frozen=True)
class _Row:
    """A CSV line or a delta entry, checked and ready to write."""

    list: Literal["allow", "block"]
    kind: EntryKind
    value: str
    last4: str
    subject: str | None
    household: str | None = None
    building: str | None = None
    unit: str | None = None
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    gates: str | None = None
    reason: str = ""


def _write_row(conn: sqlite3.Connection, row: _Row, source: str, now_ms: int) -> None:
    if row.list == "block":
        conn.execute(
            "INSERT INTO blocklist(kind, value, last4, reason, valid_until_ms, created_ms, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(kind, value) DO UPDATE SET "
            "last4=excluded.last4, reason=excluded.reason, valid_until_ms=excluded.valid_until_ms, "
            "source=excluded.source",
            (row.kind, row.value, row.last4, row.reason, row.valid_until_ms, now_ms, source),
        )
        return
    subject = row.subject or row.household
    if not subject:
        raise ValueError(f"{row.kind} …{row.last4}: an allowed entry needs a person or a household")
    conn.execute(
        "INSERT INTO residents(id, household, building, unit, source) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET household=coalesce(excluded.household, household), "
        "building=coalesce(excluded.building, building), unit=coalesce(excluded.unit, unit)",
        (subject, row.household, row.building, row.unit, source),
    )
    if row.kind == "plate":
        conn.execute(
            "INSERT INTO allow_plates(plate, subject, valid_from_ms, valid_until_ms, gates, source) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(plate) DO UPDATE SET subject=excluded.subject, "
            "valid_from_ms=excluded.valid_from_ms, valid_until_ms=excluded.valid_until_ms, "
            "gates=excluded.gates, source=excluded.source",
            (row.value, subject, row.valid_from_ms, row.valid_until_ms, row.gates, source),
        )
    else:
        conn.execute(
            "INSERT INTO allow_cards(hash, kind, last4, subject, valid_from_ms, valid_until_ms, gates, "
            "source) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(hash) DO UPDATE SET "
            "kind=excluded.kind, last4=excluded.last4, subject=excluded.subject, "
            "valid_from_ms=excluded.valid_from_ms, valid_until_ms=excluded.valid_until_ms, "
            "gates=excluded.gates, source=excluded.source",
            (
                row.value,
                row.kind,
                row.last4,
                subject,
                row.valid_from_ms,
                row.valid_until_ms,
                row.gates,
                source,
            ),
        )


def _delete(conn: sqlite3.Connection, kind: str, value: str, block: bool, source: str | None) -> int:
    only = " AND source=?" if source else ""
    extra: tuple[str, ...] = (source,) if source else ()
    if block:
        sql, params = f"DELETE FROM blocklist WHERE kind=? AND value=?{only}", (kind, value, *extra)
    elif kind == "plate":
        sql, params = f"DELETE FROM allow_plates WHERE plate=?{only}", (value, *extra)
    else:
        sql, params = f"DELETE FROM allow_cards WHERE hash=?{only}", (value, *extra)
    return int(conn.execute(sql, params).rowcount)


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def version_of(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM kv WHERE key=?", (ALLOWLIST_VERSION_KEY,)).fetchone()
    return int(row[0]) if row else 0


class AllowList:
    def __init__(self, store: Store, salt: str, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.salt = salt
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _credential(self, raw: str, kind: str) -> tuple[str, str]:
        normalised = normalise_credential(raw, kind)
        if kind not in CREDENTIAL_KINDS:
            raise ValueError(f"credential kind {kind!r}: expected one of {', '.join(CREDENTIAL_KINDS)}")
        if not normalised:
            raise ValueError(f"empty {kind}")
        return credential_hash(normalised, self.salt, kind), normalised[-4:]

    def key(self, kind: str, raw: str) -> tuple[str, str]:
        """What the store keeps of a card, QR token, PIN or plate: the plate (normalised) or the
        credential's site-salted hash, and its last 4; ValueError when `raw` is not one."""
        if kind == "plate":
            value = normalise_plate(raw)
            return value, value[-4:]
        return self._credential(raw, kind)

    # residents and their credentials

    def add_resident(
        self,
        person: str,
        *,
        household: str | None = None,
        building: str | None = None,
        unit: str | None = None,
        name: str | None = None,
        valid_from_ms: int | None = None,
        valid_until_ms: int | None = None,
    ) -> None:
        row = (person, household, building, unit, name, valid_from_ms, valid_until_ms)
        self.store.write(lambda c: c.execute(_RESIDENT_UPSERT, row))

    def remove_resident(self, person: str) -> int | None:
        """Remove a resident with every card, token, PIN and plate of theirs; returns the number
        of credentials and plates removed, None when there was no such resident."""

        def write(conn: sqlite3.Connection) -> int | None:
            removed = conn.execute("DELETE FROM allow_cards WHERE subject=?", (person,)).rowcount
            removed += conn.execute("DELETE FROM allow_plates WHERE subject=?", (person,)).rowcount
            known = conn.execute("DELETE FROM residents WHERE id=?", (person,)).rowcount
            return int(removed) if known or removed else None

        return self.store.write(write)

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
        digest, last4 = self._credential(raw, kind)
        row = _Row(
            "allow",
            kind,
            digest,
            last4,
            subject,
            None,
            None,
            None,
            valid_from_ms,
            valid_until_ms,
            _gates(gates),
        )  # type: ignore[arg-type]
        now = self._now_ms()
        self.store.write(lambda c: _write_row(c, row, "local", now))
        return digest

    def add_plate(
        self,
        plate: str,
        subject: str,
        *,
        valid_from_ms: int | None = None,
        valid_until_ms: int | None = None,
        gates: Iterable[str] | None = None,
    ) -> str:
        text = normalise_plate(plate)
        row = _Row(
            "allow",
            "plate",
            text,
            text[-4:],
            subject,
            None,
            None,
            None,
            valid_from_ms,
            valid_until_ms,
            _gates(gates),
        )
        now = self._now_ms()
        self.store.write(lambda c: _write_row(c, row, "local", now))
        return text

    def remove_credential(self, raw: str, kind: str = "card") -> bool:
        digest, _ = self._credential(raw, kind)
        return self.store.write(lambda c: _delete(c, kind, digest, False, None) > 0)

    def remove_plate(self, plate: str) -> bool:
        text = normalise_plate(plate)
        return self.store.write(lambda c: _delete(c, "plate", text, False, None) > 0)

    # the blocklist

    def block(self, kind: str, raw: str, *, reason: str = "", valid_until_ms: int | None = None) -> str:
        """Block a card, QR token, PIN or plate: it is denied (`blocklisted`) and raises an alert,
        even when it is also allowed."""
        value, last4 = self.key(kind, raw)
        row = _Row("block", kind, value, last4, None, valid_until_ms=valid_until_ms, reason=reason)  # type: ignore[arg-type]
        now = self._now_ms()
        self.store.write(lambda c: _write_row(c, row, "local", now))
        return value

    def unblock(self, kind: str, raw: str) -> bool:
        value, _ = self.key(kind, raw)
        return self.store.write(lambda c: _delete(c, kind, value, True, None) > 0)

    # listing

    def entries(self, *, blocked: bool | None = None) -> list[Entry]:
        return list_entries(self.store.read(), blocked=blocked)

    def counts(self) -> dict[str, int]:
        conn = self.store.read()
        return {
            "residents": conn.execute("SELECT count(*) FROM residents").fetchone()[0],
            "credentials": conn.execute("SELECT count(*) FROM allow_cards").fetchone()[0],
            "plates": conn.execute("SELECT count(*) FROM allow_plates").fetchone()[0],
            "blocked": conn.execute("SELECT count(*) FROM blocklist").fetchone()[0],
            "passes": conn.execute("SELECT count(*) FROM passes WHERE revoked_ms IS NULL").fetchone()[0],
        }

    # CSV import

    def import_csv(
        self, path: str | Path, known_gates: Collection[str] | None = None, zone: tzinfo = UTC
    ) -> ImportResult:
        """Import residents from a CSV file with a header line. Columns (any order; all but
        `person` or `household` optional): person, household, building, unit, name, card, qr,
        pin, plate, valid_from, valid_until, gates (separated by spaces or `;`; each one of
        `known_gates` when given), list (allow or block), reason; times without a zone are in
        `zone`. The file is UTF-8 (with or
        without a BOM) or GB18030/GBK, as Excel saves CSV on Chinese Windows. Empty rows and
        empty columns without a name (as spreadsheets save them) are skipped; a card, token, PIN
        or plate on several lines must be on identical lines. Every line is checked first; one
        bad line imports nothing, and the error names the file, line and column."""
        source = Path(path)
        handle = io.StringIO(_csv_text(source), newline="")
        residents: dict[str, tuple[str | None, str | None, str | None, str | None]] = {}
        problems: list[str] = []
        result = ImportResult()
        known = {
            "person", "household", "building", "unit", "name", "card", "qr", "pin", "plate",
            "valid_from", "valid_until", "gates", "list", "reason",
        }  # fmt: skip
        first_line: dict[tuple[str, str, str], tuple[int, _Row]] = {}
        with handle:
            # Strict: a quote left open would otherwise take every line after it into one value.
            reader = csv.DictReader(handle, strict=True)
            try:
                # column names as people type them in a spreadsheet: "Card", "Plate "
                header = [h.strip().lower() for h in reader.fieldnames or []]
            except csv.Error as err:
                raise UsageError(f"{source}:1: {CSV_QUOTING} ({err})") from err
            # A column without a name is what Excel leaves after a trailing comma: ignored
            # while it holds nothing.
            unknown = [h for h in header if h and h not in known]
            if not any(header) or unknown:
                semicolons = len(header) == 1 and ";" in header[0]
                raise UsageError(
                    f"{source}:1: unknown column(s) {', '.join(unknown) or '(no header)'}; "
                    f"expected some of: {', '.join(sorted(known))}"
                    + (f"; {CSV_SEMICOLONS}" if semicolons else "")
                )
            for raw in csv_records(reader, lambda problem: problems.append(f"{source}:{problem}")):
                line_no = reader.line_num
                if raw.get(None):
                    problems.append(
                        f"{source}:{line_no}: more values than the header has columns; "
                        "a value with a comma in it needs quotes"
                    )
                    continue
                if any((raw.get(h) or "").strip() for h in reader.fieldnames or [] if not h.strip()):
                    problems.append(f"{source}:{line_no}: a value under a column with no name")
                    continue
                line = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
                if not any(line.values()):
                    continue  # an empty row, as spreadsheets save them (",,,")
                try:
                    made = self._csv_rows(line, known_gates, zone)
                except ValueError as err:
                    problems.append(f"{source}:{line_no}: {err}")
                    continue
                for row in made:
                    seen = first_line.setdefault((row.list, row.kind, row.value), (line_no, row))
                    if seen[1] == row:
                        continue
                    shown = f"plate {row.value}" if row.kind == "plate" else f"{row.kind} …{row.last4}"
                    problems.append(
                        f"{source}:{line_no}: {shown} is also on line {seen[0]}, for someone else "
                        "or with other details; keep one of the two lines"
                    )
                person = line.get("person") or None
                if person and line.get("list", "allow") != "block":
                    residents[person] = (
                        line.get("household") or None,
                        line.get("building") or None,
                        line.get("unit") or None,
                        line.get("name") or None,
                    )
        rows = [row for _, row in first_line.values()]
        if problems:
            shown = "\n".join(problems[:20])
            more = f"\n… and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise UsageError(f"nothing imported; fix these lines:\n{shown}{more}")
        now = self._now_ms()

        def write(conn: sqlite3.Connection) -> None:
            for row in rows:
                _write_row(conn, row, "local", now)
            for person, (household, building, unit, name) in residents.items():
                conn.execute(_RESIDENT_UPSERT, (person, household, building, unit, name, None, None))

        self.store.write(write)
        result.residents = len(residents)
        for row in rows:
            if row.list == "block":
                result.blocked += 1
            elif row.kind == "plate":
                result.plates += 1
            else:
                result.credentials += 1
            if row.household and row.list == "allow":
                result.households.add(row.household)
        result.households.update(household for household, *_ in residents.values() if household)
        return result

    def _csv_rows(
        self, line: dict[str, str], known_gates: Collection[str] | None, zone: tzinfo
    ) -> list[_Row]:
        listed = line.get("list") or "allow"
        if listed not in ("allow", "block"):
            raise ValueError(f"list: expected allow or block (got {listed!r})")
        person = line.get("person") or None
        household = line.get("household") or None
        if listed == "allow" and not (person or household):
            raise ValueError("person or household: one of them is needed")
        start = _csv_time(line, "valid_from", zone)
        end = _csv_time(line, "valid_until", zone)
        if start is not None and end is not None and end <= start:
            raise ValueError("valid_until must be after valid_from")
        named = [gate for gate in re.split(r"[;\s]+", line.get("gates", "")) if gate]
        unknown = [gate for gate in named if known_gates is not None and gate not in known_gates]
        if unknown:
            known = ", ".join(sorted(known_gates or ())) or "none"
            raise ValueError(
                f"gates: no such gate {unknown[0]!r} in the configuration (known gates: {known})"
            )
        gates = _gates(named)
        made: list[_Row] = []
        for kind in (*CREDENTIAL_KINDS, "plate"):
            raw = line.get(kind)
            if not raw:
                continue
            if kind == "plate":
                try:
                    value = normalise_plate(raw)
                except ValueError as err:
                    raise ValueError(f"plate: {err}") from err
                last4 = value[-4:]
            else:
                value, last4 = self._credential(raw, kind)
            made.append(
                _Row(
                    listed,  # type: ignore[arg-type]
                    kind,  # type: ignore[arg-type]
                    value,
                    last4,
                    person,
                    household,
                    line.get("building") or None,
                    line.get("unit") or None,
                    start,
                    end,
                    gates,
                    line.get("reason", ""),
                )
            )
        if not made and not person:
            raise ValueError("no card, qr, pin or plate on this line")
        return made

    # versioned deltas from the community database

    def version(self) -> int:
        return version_of(self.store.read())

    def apply(self, delta: Any) -> dict[str, Any]:
        """Apply an `allowlist.apply` command's arguments (a `sync.commands.AllowlistApplyArgs`
        or a mapping with the same fields): `full`, `from_version`, `to_version`, `add` and
        `remove`.

        Each entry of `add` has `kind` (card, qr, pin, plate), `value` (the plate, or the
        credential's site-salted hash in hex), `last4`, `subject`, `gates`, `valid_until`, and
        may have `valid_from`, `household`, `building`, `unit`, `list` ("allow" or "block")
        and `reason`. Each of `remove` has `kind`, `value` and may have `list`.

        In one transaction: a delta that is already applied (to_version ≤ the version held)
        changes nothing and says so; one that does not start at the version held raises
        VersionGap; a full list replaces every row that came from upstream. Invalid entries
        raise ValueError and nothing is applied. Returns what changed and the version now held."""
        full = bool(_field(delta, "full", False))
        from_version = _field(delta, "from_version")
        to_version = int(_field(delta, "to_version"))
        additions = [self._delta_row(item) for item in _field(delta, "add", ()) or ()]
        removals = [self._delta_key(item) for item in _field(delta, "remove", ()) or ()]
        now = self._now_ms()

        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            have = version_of(conn)
            if not full:
                if to_version <= have:
                    return {"applied": False, "version": have, "added": 0, "removed": 0}
                if from_version != have:
                    raise VersionGap(have, from_version)
            replaced = 0
            if full:
                for table in ("allow_cards", "allow_plates", "blocklist", "residents"):
                    replaced += conn.execute(f"DELETE FROM {table} WHERE source='sync'").rowcount
            removed = sum(_delete(conn, kind, value, block, "sync") for kind, value, block in removals)
            for row in additions:
                _write_row(conn, row, "sync", now)
            conn.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (ALLOWLIST_VERSION_KEY, str(to_version)),
            )
            result: dict[str, Any] = {
                "applied": True,
                "version": to_version,
                "added": len(additions),
                "removed": removed,
            }
            if full:
                result["replaced"] = replaced
            return result

        return self.store.write(write)

    @staticmethod
    def _delta_key(item: Any) -> tuple[str, str, bool]:
        kind = str(_field(item, "kind"))
        value = str(_field(item, "value"))
        if kind == "plate":
            value = normalise_plate(value)
        elif kind not in CREDENTIAL_KINDS:
            raise ValueError(f"kind {kind!r}: expected card, qr, pin or plate")
        return kind, value, _field(item, "list", "allow") == "block"

    def _delta_row(self, item: Any) -> _Row:
        kind, value, block = self._delta_key(item)
        if kind != "plate" and not _HASH.match(value):
            raise ValueError(
                f"{kind} entries carry the credential's site-salted SHA-256 (64 hex digits), "
                f"not {len(value)} characters"
            )
        last4 = _field(item, "last4") or value[-4:]
        subject = _field(item, "subject")
        household = _field(item, "household")
        if not block and not (subject or household):
            raise ValueError(f"{kind} …{last4}: an allowed entry needs a subject or a household")
        return _Row(
            "block" if block else "allow",
            kind,  # type: ignore[arg-type]
            value,
            str(last4),
            subject,
            household,
            _field(item, "building"),
            _field(item, "unit"),
            to_ms(_field(item, "valid_from")),
            to_ms(_field(item, "valid_until")),
            _gates(_field(item, "gates", ())),
            str(_field(item, "reason", "") or ""),
        )

    # passes

    def issue_pass(
        self,
        *,
        kind: str = "visitor",
        plate: str | None = None,
        token: str | None = None,
        token_hash: str | None = None,
        token_last4: str | None = None,
        holder: str | None = None,
        host: str | None = None,
        valid_from_ms: int | None = None,
        valid_until_ms: int,
        gates: Iterable[str] | None = None,
        max_entries: int | None = None,
        pass_id: str | None = None,
        source: str = "local",
    ) -> str:
        """A pass for a plate and/or a QR token (raw `token`, or its site-salted `token_hash`
        as upstream sends it), valid from–until at the given gates (all when empty), for at most
        `max_entries` entries. Issuing the same `pass_id` again changes nothing."""
        if kind not in PASS_KINDS:
            raise ValueError(f"pass kind {kind!r}: expected one of {', '.join(PASS_KINDS)}")
        if not plate and not token and not token_hash:
            raise ValueError("a pass needs a plate or a QR token")
        if max_entries is not None and max_entries < 1:
            raise ValueError("a pass allows at least one entry")
        now = self._now_ms()
        start = valid_from_ms if valid_from_ms is not None else now
        if valid_until_ms <= start:
            raise ValueError("a pass must end after it starts")
        if token:
            token_hash, token_last4 = self._credential(token, "qr")
        elif token_hash is not None and not _HASH.match(token_hash):
            raise ValueError("token_hash: expected the site-salted SHA-256 (64 hex digits)")
        identifier = pass_id or f"pass-{uuid7()}"
        row = (
            identifier,
            kind,
            normalise_plate(plate) if plate else None,
            token_hash,
            token_last4 or (token_hash[-4:] if token_hash else None),
            holder,
            host,
            start,
            valid_until_ms,
            _gates(gates),
            max_entries,
            now,
            source,
        )
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO passes(id, kind, plate, token_hash, token_last4, holder, host, valid_from_ms, "
                "valid_until_ms, gates, max_entries, created_ms, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO NOTHING",
                row,
            )
        )
        return identifier

    def revoke_pass(self, pass_id: str) -> bool:
        """Revoke a pass; False when there is no such pass or it was already revoked."""
        now = self._now_ms()
        return self.store.write(
            lambda c: (
                c.execute(
                    "UPDATE passes SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL", (now, pass_id)
                ).rowcount
                > 0
            )
        )

    def pass_ids_fitting(self, text: str) -> list[str]:
        """The ids of the passes a person means by `text`: the id itself, else the passes whose id
        begins or ends with it, a piece of at least MIN_PASS_ID_PIECE characters besides `pass-`
        (ids issued in the same minute begin alike: the end is the random part); ValueError for a
        shorter piece, which would fit any pass."""
        if self.store.read().execute("SELECT 1 FROM passes WHERE id = ?", (text,)).fetchone():
            return [text]
        piece = text.strip().lower()
        if len(piece.removeprefix("pass-")) < MIN_PASS_ID_PIECE:
            raise ValueError(
                f"{text!r}: give the pass id, or its first or last {MIN_PASS_ID_PIECE} or more characters"
            )
        rows = self.store.read().execute(
            "SELECT id FROM passes WHERE substr(lower(id), 1, ?) = ? OR substr(lower(id), -?) = ? "
            "ORDER BY id",
            (len(piece), piece, len(piece), piece),
        )
        return [str(row[0]) for row in rows]

    def get_pass(self, pass_id: str) -> PassRecord | None:
        row = self.store.read().execute(_PASS_SELECT + " WHERE id=?", (pass_id,)).fetchone()
        return _pass_record(row) if row else None

    def passes(self, include_ended: bool = False, now_ms: int | None = None) -> list[PassRecord]:
        now = now_ms if now_ms is not None else self._now_ms()
        return list_passes(self.store.read(), include_ended=include_ended, now_ms=now)


def list_entries(conn: sqlite3.Connection, *, blocked: bool | None = None) -> list[Entry]:
    """Allowed credentials and plates with their resident's household (blocked=False), the
    blocklist (blocked=True), or both (None); on the gateway's or a read-only connection."""
    found: list[Entry] = []
    if blocked is not True:
        rows = conn.execute(
            "SELECT e.kind, e.shown, e.subject, r.household, r.building, r.unit, e.valid_from_ms, "
            "e.valid_until_ms, e.gates, e.source FROM ("
            " SELECT kind, '…' || last4 AS shown, subject, valid_from_ms, valid_until_ms, gates, source "
            " FROM allow_cards UNION ALL "
            " SELECT 'plate', plate, subject, valid_from_ms, valid_until_ms, gates, source"
            " FROM allow_plates"
            ") AS e LEFT JOIN residents r ON r.id = e.subject "
            "ORDER BY coalesce(r.household, e.subject), e.subject, e.kind, e.shown"
        ).fetchall()
        for kind, shown, subject, household, building, unit, start, end, gates, source in rows:
            found.append(
                Entry(
                    "allow",
                    kind,
                    shown,
                    subject,
                    household,
                    building,
                    unit,
                    start,
                    end,
                    tuple(json.loads(gates)) if gates else (),
                    source,
                )
            )
    if blocked is not False:
        rows = conn.execute(
            "SELECT kind, value, last4, reason, valid_until_ms, source FROM blocklist ORDER BY kind, value"
        ).fetchall()
        for kind, value, last4, reason, end, source in rows:
            shown = value if kind == "plate" else f"…{last4}"
            found.append(Entry("block", kind, shown, None, None, None, None, None, end, (), source, reason))
    return found


def list_passes(conn: sqlite3.Connection, *, include_ended: bool, now_ms: int) -> list[PassRecord]:
    """Passes not revoked and not over at `now_ms` (every pass with `include_ended`), by start."""
    sql, params = _PASS_SELECT, ()
    if not include_ended:
        sql += " WHERE revoked_ms IS NULL AND valid_until_ms > ?"
        params = (now_ms,)  # type: ignore[assignment]
    rows = conn.execute(sql + " ORDER BY valid_from_ms, id", params).fetchall()
    return [_pass_record(row) for row in rows]


_RESIDENT_UPSERT = (
    "INSERT INTO residents(id, household, building, unit, name, valid_from_ms, valid_until_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "household=coalesce(excluded.household, household), building=coalesce(excluded.building, building), "
    "unit=coalesce(excluded.unit, unit), name=coalesce(excluded.name, name), "
    "valid_from_ms=excluded.valid_from_ms, valid_until_ms=excluded.valid_until_ms"
)
_PASS_SELECT = (
    "SELECT id, kind, plate, token_last4, holder, host, valid_from_ms, valid_until_ms, gates, "
    "max_entries, used, revoked_ms, source FROM passes"
)


def _pass_record(row: tuple[Any, ...]) -> PassRecord:
    (pid, kind, plate, last4, holder, host, start, end, gates, max_entries, used, revoked, source) = row
    return PassRecord(
        str(pid),
        str(kind),
        plate,
        last4,
        holder,
        host,
        int(start),
        int(end),
        tuple(json.loads(gates)) if gates else (),
        max_entries,
        int(used),
        revoked is not None,
        str(source),
    )
