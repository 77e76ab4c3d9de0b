"""One schema on both engines: migrations, insert-or-ignore by event id, seq gap report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli import main
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
    "alerts",
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


def test_a_large_result_is_streamed_in_pieces(db: Database) -> None:
    """Rows come `size` at a time (on PostgreSQL from a server-side cursor), all of them, in
    order, and the connection serves other queries afterwards."""
    for seq in range(1, 12):
        insert(db, f"stream-{seq}", seq)
    rows = db.stream("SELECT id, seq FROM events WHERE id LIKE ? ORDER BY seq", ("stream-%",), size=4)
    first = next(rows)
    assert first == ("stream-1", 1)
    if db.dialect == "postgresql":
        assert db.one("SELECT name FROM pg_cursors") == ("gatehouse_stream",), "the rest waits at the server"
    assert [seq for _, seq in rows] == list(range(2, 12))
    assert db.one("SELECT count(*) FROM events WHERE id LIKE ?", ("stream-%",)) == (11,)


def test_bad_urls_say_what_is_expected() -> None:
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="sqlite:///"):
        Database("mysql://x")
    with pytest.raises(ConfigError, match="give a file"):
        Database("sqlite://")


@pytest.mark.parametrize("url", ["sqlite:////proc/no/such/community.db", "sqlite:////proc/community.db"])
def test_a_sqlite_file_that_cannot_be_opened_is_named(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped --db path (of `gatehouse admin` or `gatehouse ingest`): an error naming the
    file, not an internal error, and no empty database made where it pointed."""
    path = url.removeprefix("sqlite:///")
    assert main(["admin", "--db", url, "gateway", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no community database at {path}; `gatehouse admin gateway add`")
    monkeypatch.setenv("GW_KEY", "k" * 40)
    monkeypatch.setenv("SITE_SALT", "a-site-salt-of-some-length")
    add = ["gateway", "add", "oak-court", "gw-1", "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]
    assert main(["admin", "--db", url, *add]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open /proc/") and "internal error" not in err


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text("site:\n  id: oak-court\n" * 200)
    assert main(["admin", "--db", f"sqlite:///{config}", "gaps", "oak-court", "gw-1"]) == 1
    assert f"cannot open {config}: file is not a database" in capsys.readouterr().err
    assert config.read_text().startswith("site:"), "the file is left as it was"


def test_a_mistyped_database_path_is_not_made_into_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "comunity.db"
    for command in (["gateway", "list"], ["gaps", "oak-court", "gw-1"]):
        assert main(["admin", "--db", f"sqlite:///{typo}", *command]) == 2
        assert f"no community database at {typo}" in capsys.readouterr().err
    assert not typo.exists()


def test_admin_alert_ack_signs_an_ack_for_an_alert_the_database_holds(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Staff at the community side acknowledge a gateway's alert (its siren stops) by the id
    `admin alerts` shows, or its first or last characters as on the gateway; an id the database
    never received is refused, exit 2; one acknowledged or over already is not sent again."""
    monkeypatch.setenv("GW_KEY", "k" * 40)
    monkeypatch.setenv("SITE_SALT", "a-site-salt-of-some-length")
    admin = ["admin", "--db", db_url]
    add = ["gateway", "add", "oak-court", "gw-ack", "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]
    assert main([*admin, *add]) == 0
    alert_id = "019a0000-0000-7000-8000-00000000ac01"
    with open_database(db_url) as db:
        db.execute("DELETE FROM alerts WHERE gateway_id = 'gw-ack'")
        with db.transaction():
            db.executemany(
                "INSERT INTO alerts (site_id, gateway_id, alert_id, alert_key, kind, message, raised_ms, "
                "acked_ms, acked_by, cleared_ms, updated_ms) VALUES ('oak-court', 'gw-ack', ?, ?, "
                "'gate.forced_open', ?, 1000, ?, ?, ?, 1000)",
                [
                    (alert_id, "gate.forced_open:north-in", "north-in forced", None, None, None),
                    ("019a0000-0000-7000-8000-00000000ac02", "k2", "seen to", 2000, "guard 2", None),
                    ("019a0000-0000-7000-8000-0000000000c3", "k3", "over", None, None, 3000),
                ],
            )
    capsys.readouterr()
    ack = ["alert-ack", "oak-court", "gw-ack"]
    for given in (alert_id, "ac01", "019A0000-0000-7000-8000-00000000ac01", "gate.forced_open:north-in"):
        assert main([*admin, *ack, given, "--by", "control-room", "--no-send"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["name"] == "alert.ack" and document["sig"]
        assert document["args"] == {"alert_id": alert_id, "by": "control-room"}
    for blank_or_long in ("  ", "g" * 101):
        with pytest.raises(SystemExit) as refused:
            main([*admin, *ack, alert_id, "--by", blank_or_long, "--no-send"])
        assert refused.value.code == 2 and "give who acknowledges" in capsys.readouterr().err
    assert main([*admin, *ack, "019a0000-0000-7000-8000-0000000000ff", "--no-send"]) == 2
    assert "no alert 019a0000-0000-7000-8000-0000000000ff from oak-court/gw-ack" in capsys.readouterr().err
    assert main([*admin, *ack, "019a", "--no-send"]) == 2
    assert "'019a' fits 2 alerts" in capsys.readouterr().err, "the open ones; the one over does not count"
    assert main([*admin, *ack, "ac02", "--no-send", "--tz", "UTC"]) == 0
    assert "already acknowledged by guard 2 at 01-01 00:00:02" in capsys.readouterr().out
    assert main([*admin, *ack, "00c3", "--no-send", "--tz", "UTC"]) == 0
    assert "is over (cleared at 01-01 00:00:03); nothing to acknowledge" in capsys.readouterr().out
