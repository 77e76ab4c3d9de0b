"""Forward migrations of the local store, applied in order; `PRAGMA user_version` records how many
have run. Never edit a released migration: append a new one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)

    return run


INITIAL_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    device TEXT,
    body TEXT NOT NULL,
    synced_ms INTEGER
);
-- Each index costs a page written per commit, so the outbox keeps only three. seq is the row id
-- (commit order), and ids are UUIDv7 made here: unique without an index.
-- What the uplink reads: unsynced rows of one class in commit order. Partial, and no plain index
-- on (priority, ...) exists beside it, so the planner uses it (a test checks the plan).
CREATE INDEX outbox_pending ON outbox(priority, seq) WHERE synced_ms IS NULL;
CREATE INDEX outbox_synced ON outbox(synced_ms) WHERE synced_ms IS NOT NULL;
CREATE INDEX outbox_type ON outbox(type, seq);
CREATE TABLE attachments (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mime TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX attachments_created ON attachments(created_ms);
CREATE TABLE allow_cards (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    last4 TEXT NOT NULL,
    subject TEXT NOT NULL,
    valid_from_ms INTEGER,
    valid_until_ms INTEGER,
    gates TEXT
);
CREATE TABLE allow_plates (
    plate TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    valid_from_ms INTEGER,
    valid_until_ms INTEGER,
    gates TEXT
);
CREATE TABLE passes (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    plate TEXT,
    token_hash TEXT,
    token_last4 TEXT,
    holder TEXT,
    valid_from_ms INTEGER NOT NULL,
    valid_until_ms INTEGER NOT NULL,
    gates TEXT,
    max_entries INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    revoked_ms INTEGER,
    created_ms INTEGER NOT NULL
);
CREATE INDEX passes_plate ON passes(plate) WHERE plate IS NOT NULL;
CREATE INDEX passes_token ON passes(token_hash) WHERE token_hash IS NOT NULL;
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    last_error TEXT,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO counters(name, value) VALUES ('seq', 0)
"""


ALERTS = """
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    gate TEXT,
    raised_ms INTEGER NOT NULL,
    acked_ms INTEGER,
    acked_by TEXT,
    cleared_ms INTEGER,
    repeats INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX alerts_open_key ON alerts(key) WHERE state != 'cleared';
CREATE INDEX alerts_raised ON alerts(raised_ms)
"""


ACCESS = """
CREATE TABLE residents (
    id TEXT PRIMARY KEY,
    household TEXT,
    building TEXT,
    unit TEXT,
    name TEXT,
    valid_from_ms INTEGER,
    valid_until_ms INTEGER,
    source TEXT NOT NULL DEFAULT 'local'
) WITHOUT ROWID;
CREATE TABLE blocklist (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    last4 TEXT,
    reason TEXT NOT NULL DEFAULT '',
    valid_until_ms INTEGER,
    created_ms INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT 'local',
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
ALTER TABLE allow_cards ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE allow_plates ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE passes ADD COLUMN host TEXT;
ALTER TABLE passes ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE alerts ADD COLUMN device TEXT;
ALTER TABLE alerts ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE alerts ADD COLUMN momentary INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN detail TEXT
"""


SYNC_MARKS = """
-- Delivered rows as a high-water mark per priority class: every row of the class with a seq up
-- to through_seq is synced, whatever its synced_ms says. The uplink drains a backlog in seq
-- order, so one small write records a whole window of acknowledgements. synced_ms is still set
-- for rows acknowledged out of order (live alerts overtaking a backlog).
CREATE TABLE sync_marks (priority INTEGER PRIMARY KEY, through_seq INTEGER NOT NULL)
"""


ATTACHMENT_UPLOADS = """
-- The uplink sends every attachment (plate crops, snapshots) to the community database after
-- the events. uploaded_ms is set on its PUBACK, upload_skipped says why one is never sent (larger
-- than a message may be, its file gone). What waits is found through the partial index.
ALTER TABLE attachments ADD COLUMN uploaded_ms INTEGER;
ALTER TABLE attachments ADD COLUMN upload_skipped TEXT;
CREATE INDEX attachments_to_upload ON attachments(created_ms)
    WHERE uploaded_ms IS NULL AND upload_skipped IS NULL
"""


MIGRATIONS: list[Migration] = [
    Migration("0001_initial", _script(INITIAL_SCHEMA)),
    Migration("0002_alerts", _script(ALERTS)),
    Migration("0003_access", _script(ACCESS)),
    Migration("0004_sync_marks", _script(SYNC_MARKS)),
    Migration("0005_attachment_uploads", _script(ATTACHMENT_UPLOADS)),
]


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply every migration not yet applied, each in its own transaction. Returns the version."""
    steps = MIGRATIONS if migrations is None else migrations
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):
        raise RuntimeError(
            f"the store is at schema version {version}, newer than this gatehouse "
            f"({len(steps)}); upgrade gatehouse or restore an older store"
        )
    for index in range(version, len(steps)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            steps[index].apply(conn)
            conn.execute(f"PRAGMA user_version = {index + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(steps)
