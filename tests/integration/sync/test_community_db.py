"""One schema on both engines: migrations, insert-or-ignore by event id, seq gap report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.db import MIGRATIONS, Database, open_database

TABLES = (
    "property_companies",
    "sites",
    "buildings",
    "households",
    "residents",
    "vehicles",
    "gateways",
    "gates",
    "lanes",
    "devices",
    "events",
    "allowlist_entries",
    "passes",
    "commands",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'community.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    opened = open_database(url)
    for table in ("events", "gateways"):
        opened.execute(f"DELETE FROM {table}")
    yield opened
    opened.close()


def insert(db: Database, event_id: str, seq: int) -> int:
    with db.transaction():
        return db.executemany(
            "INSERT INTO events (id, site_id, gateway_id, type, ts, ts_ms, seq, payload, received_at) "
            "VALUES (?, 's', 'g', 'gate.state', '2026-01-01T00:00:00.000Z', 0, ?, ?, 'now') "
            "ON CONFLICT (id) DO NOTHING",
            [(event_id, seq, json.dumps({"gate": "n", "state": "open"}))],
        )


def test_schema_and_migrations_are_idempotent(db: Database) -> None:
    assert db.migrate() == []
    names = {row[0] for row in db.query("SELECT name FROM schema_migrations")}
    assert names == {name for name, _ in MIGRATIONS}
    for table in TABLES:
        assert db.query(f"SELECT count(*) FROM {table}")[0][0] >= 0


def test_insert_or_ignore_and_gaps(db: Database) -> None:
    assert [insert(db, f"id-{seq}", seq) for seq in (1, 2, 3, 6, 7, 10)] == [1] * 6
    assert insert(db, "id-2", 2) == 0
    assert db.seq_gaps("s", "g") == [(4, 5), (8, 9)]
    assert len(db.event_ids()) == 6


def test_a_batch_larger_than_one_statement_takes_is_inserted_whole(db: Database) -> None:
    """PostgreSQL takes at most 65,535 parameters per statement (SQLite 32,766 unless built with
    more): 6,000 events of eleven columns need several statements."""
    head = (
        "INSERT INTO events (id, site_id, gateway_id, device_id, type, ts, ts_ms, seq, payload, "
        "attachments, received_at)"
    )
    rows = [
        (f"big-{n}", "s", "g", None, "gate.state", "2026-01-01T00:00:00.000Z", 0, n, "{}", None, "now")
        for n in range(1, 6001)
    ]
    with db.transaction():
        assert db.insert_many(head, rows, "ON CONFLICT (id) DO NOTHING") == 6000
        assert db.insert_many(head, rows[:10], "ON CONFLICT (id) DO NOTHING") == 0
    assert len(db.event_ids()) == 6000
    assert db.seq_gaps("s", "g") == []


def test_bad_urls_say_what_is_expected() -> None:
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="sqlite:///"):
        Database("mysql://x")
    with pytest.raises(ConfigError, match="give a file"):
        Database("sqlite://")
