"""The community resource database: one schema for SQLite (embedded, zero set-up) and
PostgreSQL (production), with named forward migrations recorded in `schema_migrations`.

SQL is written once with `?` placeholders, `{json}` where a JSON column goes (TEXT in SQLite,
JSONB in PostgreSQL) and `{blob}` where bytes go (BLOB, BYTEA); `ON CONFLICT … DO
NOTHING/UPDATE` works on both engines.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edge.errors import ConfigError, GatehouseError

DEFAULT_URL = "sqlite:///community.db"
"""sqlite:///relative/path.db or sqlite:////absolute/path.db; postgresql://user@host/db"""


STREAM_ROWS = 2000
"""rows fetched at a time by Database.stream"""
MAX_PARAMETERS = 32_766
"""parameters in one statement: SQLite's default limit since 3.32, within PostgreSQL's 65,535"""


class DatabaseError(GatehouseError):
    """The community database cannot be opened or written."""


MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_people_places_things",
        """
CREATE TABLE property_companies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    company_id TEXT REFERENCES property_companies(id),
    address TEXT,
    salt TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE buildings (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites(id),
    name TEXT NOT NULL
);
CREATE TABLE households (
    id TEXT PRIMARY KEY,
    building_id TEXT REFERENCES buildings(id),
    unit TEXT NOT NULL
);
CREATE TABLE residents (
    id TEXT PRIMARY KEY,
    household_id TEXT REFERENCES households(id),
    name TEXT NOT NULL,
    phone_last4 TEXT
);
CREATE TABLE vehicles (
    plate TEXT PRIMARY KEY,
    household_id TEXT REFERENCES households(id),
    colour TEXT,
    kind TEXT
);
CREATE TABLE gateways (
    site_id TEXT NOT NULL,
    id TEXT NOT NULL,
    signing_key TEXT,
    state TEXT,
    status {json},
    status_at TEXT,
    allowlist_version BIGINT NOT NULL DEFAULT 0,
    applied_version BIGINT,
    PRIMARY KEY (site_id, id)
);
CREATE TABLE gates (
    site_id TEXT NOT NULL,
    id TEXT NOT NULL,
    gateway_id TEXT,
    name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'vehicle',
    PRIMARY KEY (site_id, id)
);
CREATE TABLE lanes (
    site_id TEXT NOT NULL,
    id TEXT NOT NULL,
    gate_id TEXT NOT NULL,
    direction TEXT NOT NULL DEFAULT 'both',
    PRIMARY KEY (site_id, id)
);
CREATE TABLE devices (
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT,
    state TEXT,
    last_seen TEXT,
    PRIMARY KEY (site_id, gateway_id, id)
);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    device_id TEXT,
    type TEXT NOT NULL,
    ts TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    payload {json} NOT NULL,
    attachments {json},
    received_at TEXT NOT NULL
);
CREATE INDEX events_gateway_seq ON events(site_id, gateway_id, seq);
CREATE INDEX events_type_ts ON events(type, ts_ms);
CREATE TABLE rejected_messages (
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT,
    received_at TEXT NOT NULL
);
CREATE TABLE allowlist_entries (
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    entry {json} NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (site_id, gateway_id, kind, value)
);
CREATE TABLE allowlist_changes (
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    op TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    entry {json},
    PRIMARY KEY (site_id, gateway_id, version, kind, value)
);
CREATE TABLE passes (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    plate TEXT,
    credential {json},
    host TEXT,
    valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL,
    max_uses BIGINT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    name TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    document {json} NOT NULL,
    ok BIGINT,
    reply {json},
    replied_at TEXT
)
""",
    ),
    (
        "0002_ed25519_command_signing",
        """
ALTER TABLE gateways ADD COLUMN signing_alg TEXT NOT NULL DEFAULT 'hmac-sha256'
""",
    ),
    (
        "0003_alerts_and_events_by_time",
        # `admin events` lists the newest events of every gateway, or those of a time window:
        # without an index on the time that is a scan of every event ever received.
        # `alerts` is each gateway alert's state, kept by the ingest from the alert.* events
        # (each event sets only its own columns, so their order of arrival does not matter);
        # the migration fills it from the events already received. updated_ms is the ingest's
        # clock (what `admin alerts --follow` follows): 0 for what the migration filled, since a
        # gateway's clock set ahead would put a follower's start in the future.
        """
CREATE INDEX events_ts ON events(ts_ms);
CREATE TABLE alerts (
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    alert_key TEXT,
    kind TEXT,
    severity TEXT,
    message TEXT,
    gate_id TEXT,
    device_id TEXT,
    raised_ms BIGINT,
    acked_ms BIGINT,
    acked_by TEXT,
    cleared_ms BIGINT,
    cleared_reason TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (site_id, gateway_id, alert_id)
);
CREATE INDEX alerts_open ON alerts(raised_ms) WHERE cleared_ms IS NULL;
CREATE INDEX alerts_updated ON alerts(updated_ms);
INSERT INTO alerts (site_id, gateway_id, alert_id, alert_key, kind, severity, message, gate_id,
    device_id, raised_ms, updated_ms)
SELECT site_id, gateway_id, payload ->> 'alert_id', min(payload ->> 'key'), min(payload ->> 'kind'),
    min(payload ->> 'severity'), min(payload ->> 'message'), min(payload ->> 'gate'), min(device_id),
    min(ts_ms), 0
FROM events WHERE type = 'alert.raised' GROUP BY site_id, gateway_id, payload ->> 'alert_id';
INSERT INTO alerts (site_id, gateway_id, alert_id, alert_key, acked_ms, acked_by, updated_ms)
SELECT site_id, gateway_id, payload ->> 'alert_id', min(payload ->> 'key'), min(ts_ms),
    min(payload ->> 'by'), 0
FROM events WHERE type = 'alert.acknowledged' GROUP BY site_id, gateway_id, payload ->> 'alert_id'
ON CONFLICT (site_id, gateway_id, alert_id) DO UPDATE SET acked_ms = excluded.acked_ms,
    acked_by = excluded.acked_by, updated_ms = excluded.updated_ms;
INSERT INTO alerts (site_id, gateway_id, alert_id, alert_key, cleared_ms, cleared_reason, updated_ms)
SELECT site_id, gateway_id, payload ->> 'alert_id', min(payload ->> 'key'), min(ts_ms),
    min(payload ->> 'reason'), 0
FROM events WHERE type = 'alert.cleared' GROUP BY site_id, gateway_id, payload ->> 'alert_id'
ON CONFLICT (site_id, gateway_id, alert_id) DO UPDATE SET cleared_ms = excluded.cleared_ms,
    cleared_reason = excluded.cleared_reason, updated_ms = excluded.updated_ms
""",
    ),
    (
        "0004_attachments",
        # The bytes of the gateways' attachments (plate crops, snapshots), by sha256 as the
        # events name them: `admin events --photos` writes them out for property managers.
        """
CREATE TABLE attachments (
    sha256 TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    data {blob} NOT NULL,
    received_at TEXT NOT NULL
)
""",
    ),
    (
        "0005_gateway_state_since",
        # When a gateway's state last changed (status_at is when its last status came, every
        # 30 s while online, and again for a retained offline status each time an ingest starts).
        """
ALTER TABLE gateways ADD COLUMN state_since TEXT;
UPDATE gateways SET state_since = status_at
""",
    ),
    (
        "0006_alert_repeats",
        # How often a moment (a blocklisted card tried again) happened while its alert was open,
        # as the gateway's alert.acknowledged and alert.cleared events carry it. Events from
        # before gateways sent it carry none, so there is nothing to fill from them.
        """
ALTER TABLE alerts ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0
""",
    ),
]


def now_iso() -> str:
    moment = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


def now_ms() -> int:
    return int(time.time() * 1000)


class Database:
    """A connection to the community database, SQLite or PostgreSQL, used from one thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = urlparse(url)
        if parsed.scheme == "sqlite":
            self.dialect = "sqlite"
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
            if not path:
                raise ConfigError(f"{url}: give a file, e.g. sqlite:///community.db")
            self.path: Path | None = Path(path)
            self._conn: Any = _open_sqlite(self.path)
        elif parsed.scheme in ("postgresql", "postgres"):
            import psycopg

            self.dialect = "postgresql"
            self.path = None
            try:
                self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            except psycopg.Error as err:
                raise DatabaseError(
                    f"cannot open {parsed.hostname}/{parsed.path.lstrip('/')}: {err}"
                ) from err
        else:
            raise ConfigError(f"{url}: the database URL must start with sqlite:/// or postgresql://")
        self._in_transaction = False

    def sql(self, text: str) -> str:
        text = text.replace("{json}", "JSONB" if self.dialect == "postgresql" else "TEXT")
        text = text.replace("{blob}", "BYTEA" if self.dialect == "postgresql" else "BLOB")
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:
            yield
            return
        self._in_transaction = True
        try:
            if self.dialect == "sqlite":
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            else:
                with self._conn.transaction():
                    yield
        finally:
            self._in_transaction = False

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: what fails in the block is undone, the rest of the transaction
        stays (PostgreSQL aborts the whole transaction on a failed statement without one)."""
        if self.dialect == "postgresql":
            with self._conn.transaction():
                yield
            return
        self._conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO part")
            self._conn.execute("RELEASE part")
            raise
        self._conn.execute("RELEASE part")

    def unavailable(self, err: BaseException) -> bool:
        """Whether `err` says the database cannot be written now (the connection is gone, the
        server is shutting down, the file is locked or the disk is full), as opposed to a value
        it refuses: the first is worth trying again, the second never succeeds."""
        if self.dialect == "postgresql":
            import psycopg

            return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError) or bool(
                self._conn.closed or self._conn.broken
            )
        return isinstance(err, sqlite3.OperationalError)

    def reconnect(self) -> None:
        """Open the connection again when the server dropped it (a restart, a failover)."""
        if self.dialect != "postgresql" or not (self._conn.closed or self._conn.broken):
            return
        import psycopg

        with contextlib.suppress(Exception):
            self._conn.close()
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as err:
            raise DatabaseError(f"cannot reopen the database: {err}") from err

    def execute(self, text: str, params: Sequence[Any] = ()) -> int:
        cursor = self._conn.execute(self.sql(text), tuple(params))
        return int(cursor.rowcount or 0)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        if self.dialect == "sqlite":
            before = self._conn.total_changes
            self._conn.executemany(self.sql(text), rows)
            return int(self._conn.total_changes - before)
        with self._conn.cursor() as cursor:
            cursor.executemany(self.sql(text), rows)
            return int(cursor.rowcount or 0)

    def insert_many(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> int:
        """Multi-row INSERTs (`head` VALUES (…), (…) `tail`), as few as the drivers' limits on
        parameters per statement allow; returns the rows inserted."""
        if not rows:
            return 0
        one = "(" + ",".join("?" * len(rows[0])) + ")"
        per_statement = max(1, MAX_PARAMETERS // len(rows[0]))
        inserted = 0
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [value for row in chunk for value in row]
            inserted += self.execute(f"{head} VALUES {','.join([one] * len(chunk))} {tail}", params)
        return inserted

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._conn.execute(self.sql(text), tuple(params)).fetchall()]

    def stream(
        self, text: str, params: Sequence[Any] = (), size: int = STREAM_ROWS
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of a query `size` at a time, for results too large to hold at once (a year of
        events as a spreadsheet). PostgreSQL sends a client cursor's whole result at once, so a
        server-side cursor is used, in a transaction of its own while the rows are read."""
        if self.dialect == "sqlite":
            cursor = self._conn.execute(self.sql(text), tuple(params))
            while rows := cursor.fetchmany(size):
                yield from (tuple(row) for row in rows)
            return
        with self._conn.transaction(), self._conn.cursor(name="gatehouse_stream") as cursor:
            cursor.execute(self.sql(text), tuple(params))
            while rows := cursor.fetchmany(size):
                yield from (tuple(row) for row in rows)

    def one(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(text, params)
        return rows[0] if rows else None

    def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; returns their names."""
        with self.transaction():
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_lock(74021)")
        try:
            done = {row[0] for row in self.query("SELECT name FROM schema_migrations")}
            applied = []
            for name, script in MIGRATIONS:
                if name in done:
                    continue
                with self.transaction():
                    for statement in script.split(";"):
                        if statement.strip():
                            self.execute(statement)
                    self.execute(
                        "INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)", (name, now_iso())
                    )
                applied.append(name)
            return applied
        finally:
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_unlock(74021)")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # what the fault tests and `gatehouse admin gaps` ask

    def event_ids(self) -> list[str]:
        return [row[0] for row in self.query("SELECT id FROM events")]

    def seq_gaps(self, site: str, gateway: str) -> list[tuple[int, int]]:
        """Missing seq ranges (first, last) between the lowest and highest seq received."""
        rows = self.query(
            "SELECT seq + 1, next_seq - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS next_seq "
            "FROM events WHERE site_id = ? AND gateway_id = ?) AS ordered WHERE next_seq > seq + 1 "
            "ORDER BY seq",
            (site, gateway),
        )
        return [(int(a), int(b)) for a, b in rows]


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """The SQLite file at `path` (made with its folder when missing); DatabaseError naming the
    file when it cannot be opened or is not a database."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
        except sqlite3.Error:
            conn.close()
            raise
    except OSError as err:
        raise DatabaseError(f"cannot open {path}: {err.strerror or err}") from err
    except sqlite3.Error as err:
        raise DatabaseError(f"cannot open {path}: {err}") from err
    return conn


def open_database(url: str) -> Database:
    db = Database(url)
    db.migrate()
    return db
