"""What property managers and the guard room read from the community database, on both engines:
`gatehouse admin events` lists the events of every gateway with `gatehouse events`'s filters, and
`gatehouse admin alerts` the alerts open at every gateway, kept by the ingest from the alert.*
events however they arrive (redelivered, an acknowledgement before its raise)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import sync.reports
from edge.cli import main
from edge.events import Event, EventFactory
from sync.community import Community
from sync.db import MIGRATIONS, Database, open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, wait_until

NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Makers:
    """Events of some gateways at chosen moments, numbered as each gateway would."""

    def __init__(self, *gateways: str) -> None:
        self.factories = {gateway: EventFactory(SITE, gateway) for gateway in gateways}
        self.seqs = dict.fromkeys(gateways, 0)

    def make(self, gateway: str, event_type: str, payload: dict[str, object], minutes: float) -> Event:
        self.seqs[gateway] += 1
        event = self.factories[gateway].make(event_type, payload, device="dev-1")
        return event.model_copy(update={"ts": NOON + timedelta(minutes=minutes), "seq": self.seqs[gateway]})


class Gateways(Makers):
    """Two gateways of one site publishing events, as their uplinks would, to an ingest."""

    def __init__(self, publisher: mqtt.Client, db: Database) -> None:
        tag = uuid.uuid4().hex[:6]
        self.north, self.south = f"gw-north-{tag}", f"gw-south-{tag}"
        super().__init__(self.north, self.south)
        self.publisher = publisher
        self.db = db
        self.sent = 0

    def send(self, *events: Event) -> None:
        for event in events:
            topic = Topics(SITE, event.gateway).event(event.type)
            self.publisher.publish(topic, event.model_dump_json(), qos=1).wait_for_publish(5)
        self.sent += len(events)
        stored = "SELECT count(*) FROM events WHERE gateway_id IN (?, ?)"
        wait_until(lambda: self.db.query(stored, (self.north, self.south)) == [(self.sent,)], 10, "stored")


@pytest.fixture
def ingest(shared_broker: TestBroker, db_url: str) -> Iterator[IngestWorker]:
    with IngestWorker(
        db_url, shared_broker.mqtt_config(), name=f"reports-{uuid.uuid4().hex[:6]}", session_expiry_s=0
    ) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        yield worker


@pytest.fixture
def gateways(ingest: IngestWorker, publisher: mqtt.Client, db_url: str) -> Iterator[Gateways]:
    with open_database(db_url) as db:
        yield Gateways(publisher, db)


def run(capsys: pytest.CaptureFixture[str], db_url: str, *argv: str) -> tuple[int, str, str]:
    code = main(["admin", "--db", db_url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def access(
    gw: Gateways, gateway: str, gate: str, plate: str, minutes: float, reason: str = "resident"
) -> Event:
    event_type = "access.granted" if reason in ("resident", "pass") else "access.denied"
    payload = {"gate": gate, "plate": plate, "reason": reason, "subject": "h-12", "household": "h-12"}
    return gw.make(gateway, event_type, payload, minutes)


def test_events_of_every_gateway_filtered_as_on_a_gateway(
    gateways: Gateways, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = gateways
    north_in = access(gw, gw.north, "north-in", "津A12345", 1)
    south_in = access(gw, gw.south, "south-in", "津A12345", 2)
    stranger = access(gw, gw.south, "south-in", "京B99999", 3, reason="unknown")
    health = gw.make(gw.north, "device.health", {"metrics": {"cpu": 3}}, 4)
    alert = {"alert_id": "b-1", "kind": "plate.blocklisted", "key": "k", "detail": {"plate": "津A12345"}}
    blocklisted = gw.make(gw.south, "alert.raised", alert, 5)
    late = access(gw, gw.north, "north-in", "津A12345", 0.5)  # a backlog that arrives last
    gw.send(north_in, south_in, stranger, health, blocklisted, late)

    code, out, _ = run(capsys, db_url, "events", "--site", SITE, "--tz", "UTC", "--plate", "津a 12345")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["time", "site/gateway", "type"]
    assert [line.split()[2:4] for line in lines[1:]] == [
        [f"{SITE}/{gw.north}", "access.granted"],
        [f"{SITE}/{gw.north}", "access.granted"],
        [f"{SITE}/{gw.south}", "access.granted"],
        [f"{SITE}/{gw.south}", "alert.raised"],
    ], "every gateway's entries of the plate and alerts about it, by the gateways' clocks"
    assert lines[1].startswith("05-01 12:00:30") and "north-in: 津A12345 → resident" in lines[1]

    code, out, _ = run(capsys, db_url, "events", "--gateway", gw.south, "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [
        str(south_in.id),
        str(stranger.id),
        str(blocklisted.id),
    ]

    code, out, _ = run(capsys, db_url, "events", "--gate", "south-in", "--type", "access.denied", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [str(stranger.id)]

    window = ["--since", "2026-05-01T12:01:30Z", "--until", "2026-05-01T12:03:30Z", "--gateway", gw.south]
    code, out, _ = run(capsys, db_url, "events", *window, "--csv")
    rows = list(csv.reader(io.StringIO(out.lstrip("\ufeff"))))
    assert rows[0][:4] == ["site", "gateway", "time", "type"]
    assert [(r[1], r[3], r[6]) for r in rows[1:]] == [
        (gw.south, "access.granted", "津A12345"),
        (gw.south, "access.denied", "京B99999"),
    ]

    code, out, err = run(
        capsys, db_url, "events", "--site", SITE, "--gateway", gw.north, "--limit", "2", "--json"
    )
    assert [json.loads(line)["id"] for line in out.splitlines()] == [str(north_in.id), str(health.id)]
    assert "older events not shown" in err


def test_a_spreadsheet_of_every_event_is_written_as_the_events_are_read(
    gateways: Gateways, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--csv` writes every match, a year of a compound's events: each row goes out before the
    next event is read from the database, none are gathered in memory first."""
    gw = gateways
    gw.send(*(access(gw, gw.north, "north-in", "津A12345", minute) for minute in range(4)))
    output = io.StringIO()
    lines_written_at_each_read: list[int] = []
    decode = sync.reports._event

    def counting(row: tuple[object, ...]) -> Event:
        lines_written_at_each_read.append(output.getvalue().count("\n"))
        return decode(row)

    monkeypatch.setattr("sync.reports._event", counting)
    monkeypatch.setattr(sys, "stdout", output)
    assert main(["admin", "--db", db_url, "events", "--gateway", gw.north, "--tz", "UTC", "--csv"]) == 0
    assert lines_written_at_each_read == [1, 2, 3, 4], "the header, then one row per event read"
    rows = list(csv.reader(io.StringIO(output.getvalue().lstrip("\ufeff"))))
    assert [row[2] for row in rows] == ["time", *(f"2026-05-01 12:0{minute}:00" for minute in range(4))]


def test_unknown_gateways_gates_and_zones_are_named(
    gateways: Gateways, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gateways.send(access(gateways, gateways.north, "north-in", "津A12345", 1))
    code, _, err = run(capsys, db_url, "events", "--gateway", "gw-nowhere")
    assert code == 2 and "--gateway 'gw-nowhere': the community database has no such gateway" in err
    code, _, err = run(capsys, db_url, "alerts", "--site", "no-such-court")
    assert code == 2 and "--site 'no-such-court'" in err
    # a site the ingest knows from a gateway's status only (not registered, no events yet)
    lone = f"lone-court-{gateways.north}"
    gateways.db.execute("INSERT INTO gateways (site_id, id, state) VALUES (?, 'gw-lone', 'online')", (lone,))
    code, out, err = run(capsys, db_url, "alerts", "--site", lone)
    assert (code, out, err) == (0, "no open alerts\n", ""), "gateway list shows it: no unknown site"
    code, _, err = run(capsys, db_url, "events", "--gate", "nowhere-in", "--gateway", gateways.north)
    assert code == 2 and "--gate 'nowhere-in': no such gate, and no event names it" in err
    gateways.db.execute(
        "INSERT INTO gates (site_id, id, gateway_id) VALUES (?, 'south-in', ?)", (SITE, gateways.south)
    )
    code, _, err = run(capsys, db_url, "events", "--gate", "sotuh-in", "--site", SITE)
    assert code == 2 and "did you mean 'south-in'?" in err
    code, out, _ = run(capsys, db_url, "events", "--gate", "north-in", "--gateway", gateways.north, "--json")
    assert code == 0 and len(out.splitlines()) == 1, "a gate only events name is known"
    code, _, err = run(capsys, db_url, "events", "--tz", "Mars/Olympus")
    assert code == 2 and "--tz 'Mars/Olympus': not a time zone" in err


def test_the_table_makes_room_for_long_gateway_names(
    gateways: Gateways, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = gateways
    subject = f"visitor-{uuid.uuid4().hex[:6]}"
    long_name = f"{gw.north}-east-service-entrance"
    entry = {"gate": "east-in", "plate": "津A12345", "reason": "pass", "subject": subject}
    late = Makers(long_name).make(long_name, "access.granted", entry, 1)
    gw.publisher.publish(
        Topics(SITE, long_name).event(late.type), late.model_dump_json(), qos=1
    ).wait_for_publish(5)
    gw.send(gw.make(gw.north, "access.granted", {**entry, "gate": "north-in"}, 2))
    wait_until(
        lambda: gw.db.one("SELECT 1 FROM events WHERE id = ?", (str(late.id),)) is not None, 10, "stored"
    )
    code, out, _ = run(capsys, db_url, "events", "--subject", subject)
    assert code == 0
    header, *rows = out.splitlines()
    assert [row.split()[2] for row in rows] == [f"{SITE}/{long_name}", f"{SITE}/{gw.north}"]
    assert [row.index("access.granted") for row in rows] == [header.index("type")] * 2, out


def test_a_gateway_of_another_site_is_named_not_listed_as_empty(
    gateways: Gateways, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--site and --gateway both known, but not together: the listing would be empty for a
    reason the reader cannot see."""
    gateways.send(access(gateways, gateways.north, "north-in", "津A12345", 1))
    Community(gateways.db).add_site("other-court")
    for command in ("events", "alerts"):
        code, out, err = run(capsys, db_url, command, "--site", "other-court", "--gateway", gateways.north)
        assert (code, out) == (2, "")
        assert f"--gateway '{gateways.north}' is not a gateway of --site 'other-court'" in err
    code, out, _ = run(capsys, db_url, "events", "--site", SITE, "--gateway", gateways.north, "--json")
    assert code == 0 and len(out.splitlines()) == 1


def alert_events(
    gw: Makers, gateway: str, alert_id: str, minutes: float, repeats: tuple[int, int] = (0, 0)
) -> tuple[Event, Event, Event]:
    """An alert's raise, acknowledgement and clearing; `repeats`: the count each of the last two
    carries."""
    key = f"gate.forced_open:{alert_id}"
    raised = gw.make(
        gateway,
        "alert.raised",
        {
            "alert_id": alert_id,
            "kind": "gate.forced_open",
            "key": key,
            "severity": "critical",
            "message": "north-in forced open",
            "gate": "north-in",
        },
        minutes,
    )
    acked = gw.make(
        gateway,
        "alert.acknowledged",
        {"alert_id": alert_id, "key": key, "by": "guard 2", "repeats": repeats[0]},
        minutes + 1,
    )
    cleared = gw.make(
        gateway,
        "alert.cleared",
        {"alert_id": alert_id, "key": key, "reason": "closed", "repeats": repeats[1]},
        minutes + 2,
    )
    return raised, acked, cleared


def alert_states(out: str) -> dict[str, tuple[str, str | None, int | None]]:
    alerts = [json.loads(line) for line in out.splitlines()]
    return {a["alert_id"]: (a["state"], a["acked_by"], a["cleared_ms"]) for a in alerts}


def test_the_alerts_of_every_gateway_whatever_order_their_events_arrive_in(
    gateways: Gateways, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = gateways
    a_raised, a_acked, a_cleared = alert_events(gw, gw.north, f"a-{gw.north}", 1, repeats=(2, 4))
    b_raised, b_acked, _ = alert_events(gw, gw.south, f"b-{gw.south}", 2)
    c_raised, _, _ = alert_events(gw, gw.south, f"c-{gw.south}", 3)
    # the acknowledgement of b overtakes its raise (a backlog drained after an outage), and a's
    # raise is delivered twice
    gw.send(a_raised, b_acked, c_raised)
    gw.send(b_raised)
    gw.publisher.publish(Topics(SITE, gw.north).event("alert.raised"), a_raised.model_dump_json(), qos=1)
    code, out, _ = run(capsys, db_url, "alerts", "--site", SITE, "--json")
    states = {k: v for k, v in alert_states(out).items() if k.endswith((gw.north, gw.south))}
    assert states == {
        f"a-{gw.north}": ("raised", None, None),
        f"b-{gw.south}": ("acknowledged", "guard 2", None),
        f"c-{gw.south}": ("raised", None, None),
    }
    b = next(json.loads(line) for line in out.splitlines() if json.loads(line)["alert_id"] == f"b-{gw.south}")
    assert b["message"] == "north-in forced open" and b["severity"] == "critical" and b["gateway"] == gw.south
    assert "last_seen_ms" not in b, "what only the gateway knows is not made up"
    assert b["repeats"] == 0

    # the clearing (four repeats by then) overtakes the acknowledgement (two by then): the
    # count does not go back
    gw.send(a_cleared, a_acked)
    code, out, _ = run(capsys, db_url, "alerts", "--gateway", gw.north, "--json")
    assert out == "", "a cleared alert is no longer open"
    code, out, _ = run(capsys, db_url, "alerts", "--gateway", gw.north, "--all", "--tz", "UTC")
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith(f"{SITE}/{gw.north}  a-{gw.north}  05-01 12:01:00  critical  cleared")
    assert "north-in forced open ×5 (ack guard 2 05-01 12:02:00) (cleared 05-01 12:03:00)" in line


def test_the_help_of_admin_alerts_says_what_it_lists(capsys: pytest.CaptureFixture[str]) -> None:
    """Acknowledged alerts are open and listed without --all (the test above); --all adds only the
    cleared ones. The listing reads no times, so --tz only shows them."""
    with pytest.raises(SystemExit):
        main(["admin", "alerts", "--help"])
    options = " ".join(capsys.readouterr().out.split())
    assert (
        "--all also the alerts that are over (cleared); open ones, raised or acknowledged, are always listed"
        in (options)
    )
    assert "--tz ZONE show times in this time zone" in options


def test_follow_prints_each_alert_as_the_ingest_receives_it(gateways: Gateways, db_url: str) -> None:
    """The guard room's screen: every change at any gateway, once, within seconds."""
    gw = gateways
    old_raised, _, old_cleared = alert_events(gw, gw.south, f"old-{gw.south}", 0)
    gw.send(old_raised, old_cleared)
    command = [sys.executable, "-m", "edge.cli", "admin", "--db", db_url, "alerts", "--follow"]
    follower = subprocess.Popen(
        [*command, "--gateway", gw.south, "--tz", "UTC"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    lines: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(lambda: lines == ["no open alerts\n"], 20, "the empty listing")
        raised, acked, cleared = alert_events(gw, gw.south, f"new-{gw.south}", 5)
        gw.send(raised)
        wait_until(lambda: len(lines) == 2, 10, "the raise printed")
        gw.send(acked)
        wait_until(lambda: len(lines) == 3, 10, "the acknowledgement printed")
        gw.send(cleared)
        wait_until(lambda: len(lines) == 4, 10, "the clearing printed")
        assert [line.split()[5] for line in lines[1:]] == ["raised", "acknowledged", "cleared"]
        assert all(line.startswith(f"{SITE}/{gw.south}  new-{gw.south}") for line in lines[1:])
        topic = Topics(SITE, gw.south).event("alert.raised")
        gw.publisher.publish(topic, raised.model_dump_json(), qos=1).wait_for_publish(5)
        gw.send(access(gw, gw.south, "south-in", "津A12345", 9))
        gw.send(*alert_events(gw, gw.north, f"other-{gw.north}", 6))
        time.sleep(2.5)  # the follower polls every second
    finally:
        follower.terminate()
        follower.wait(10)
    assert len(lines) == 4, "a redelivered raise, other gateways and other events print nothing"


@pytest.fixture
def empty_pg_url(pg_url: str) -> Iterator[str]:
    """A database of its own, to migrate step by step."""
    import psycopg

    name = f"{pg_url.rsplit('/', 1)[1]}_steps"
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_migration_fills_the_alerts_from_the_events_received_before(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'community.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("empty_pg_url")
    )
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if m[0] == "0003_alerts_and_events_by_time"))
    monkeypatch.setattr("sync.db.MIGRATIONS", MIGRATIONS[:before])
    gw = Makers("gw-old")
    raised, acked, cleared = alert_events(gw, "gw-old", "x", 1)
    open_raised, _, _ = alert_events(gw, "gw-old", "y", 5)
    with open_database(url) as db, db.transaction():
        for event in (raised, acked, cleared, open_raised):
            document = json.loads(event.model_dump_json())
            db.execute(
                "INSERT INTO events (id, site_id, gateway_id, device_id, type, ts, ts_ms, seq, payload, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'then')",
                (
                    document["id"],
                    SITE,
                    "gw-old",
                    event.device,
                    event.type,
                    document["ts"],
                    event.ts_ms,
                    event.seq,
                    json.dumps(document["payload"]),
                ),
            )
    monkeypatch.undo()
    with open_database(url) as db:
        rows = db.query(
            "SELECT alert_id, kind, severity, raised_ms, acked_by, acked_ms, cleared_ms, cleared_reason, "
            "updated_ms FROM alerts ORDER BY alert_id"
        )
    assert [tuple(row) for row in rows] == [
        (
            "x",
            "gate.forced_open",
            "critical",
            raised.ts_ms,
            "guard 2",
            acked.ts_ms,
            cleared.ts_ms,
            "closed",
            0,
        ),
        ("y", "gate.forced_open", "critical", open_raised.ts_ms, None, None, None, None, 0),
    ], "updated_ms is the ingest's clock: none for history (a gateway's clock may run ahead)"
