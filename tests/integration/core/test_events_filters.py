"""`gatehouse events` asked what a property manager asks: by gate, plate, person or household,
between two times, and as a spreadsheet; on a real store, in the site's time zone (UTC+8)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.events import Attachment, Event, EventFactory
from edge.store import Store
from edge.store.queries import EventFilter, select_events
from tests.support.children import REPO, child_env, gatehouse_argv
from tests.support.sync_helpers import start_cli, wait_for_line

CONFIG = """\
site: {{id: test-site, salt: test-salt-long-enough, timezone: Asia/Shanghai}}
gateway: {{id: gw-test, state_dir: {state}}}
gates:
  - {{id: north-in, kind: vehicle}}
  - {{id: north-out, kind: vehicle}}
  - {{id: east-door, kind: pedestrian}}
"""
CARD = {"kind": "card", "hash": "ab" * 32, "last4": "5678"}


def at(local: str) -> datetime:
    """A time on 2026-11-24 at the compound (UTC+8), e.g. at("08:15")."""
    return datetime.fromisoformat(f"2026-11-24T{local}+08:00")


def access(kind: str, gate: str, reason: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return f"access.{kind}", {"gate": gate, "reason": reason, **fields}


# (local time, device, type, payload): yesterday at the compound.
HISTORY: list[tuple[str, str, tuple[str, dict[str, Any]]]] = [
    (
        "07:50",
        "north-cam",
        access("granted", "north-in", "resident", plate="津B22222", subject="p-0020", household="1-101"),
    ),
    (
        "08:15",
        "north-cam",
        access(
            "granted",
            "north-in",
            "resident",
            plate="津A12345",
            subject="p-0012",
            household="3-402",
            detail="plate 津A12345 of resident p-0012 (3-402, building 3, unit 402)",
        ),
    ),
    ("08:16", "north-barrier", ("gate.state", {"gate": "north-in", "state": "open", "previous": "opening"})),
    (
        "09:00",
        "east-reader",
        access(
            "denied",
            "east-door",
            "unknown",
            credential=CARD,
            detail='card …5678, "lost", is not on the allow-list and has no pass',
        ),
    ),
    ("09:05", "lot-cam", ("occupancy.sample", {"zone": "lot", "count": 3})),
    (
        "09:30",
        "north-reader",
        access(
            "denied",
            "north-in",
            "expired",
            credential=CARD,
            subject="p-0013",
            household="3-402",
            detail="card …5678 of resident p-0013 (3-402): expired 2026-11-01",
        ),
    ),
    (
        "09:40",
        "east-reader",
        access("granted", "east-door", "pass", subject="v-7", household="3-402", pass_id="v-7"),
    ),
    (
        "10:30",
        "north-out-cam",
        ("vehicle.plate", {"plate": "津A12345", "confidence": 0.93, "lane": "north-out"}),
    ),
    (
        "10:45",
        "north-barrier",
        (
            "alert.raised",
            {"alert_id": "a-1", "kind": "gate.held_open", "key": "k", "message": "=1+2 held open"},
        ),
    ),
    (
        "11:00",
        "north-out-cam",
        (
            "alert.raised",
            {
                "alert_id": "a-2",
                "kind": "plate.blocklisted",
                "key": "plate.blocklisted:津A12345",
                "severity": "critical",
                "message": "blocklisted plate 津A12345",
                "detail": {"plate": "津A12345", "crop": None},
            },
        ),
    ),
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The configuration of a compound whose store holds HISTORY."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        for local, device, (event_type, payload) in HISTORY:
            store.append(factory.make(event_type, payload, device=device, ts=at(local)))
    return config


def listed(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> list[Event]:
    """The events `gatehouse events --json ARGV` lists (it must succeed)."""
    assert main(["--config", str(config), "events", "--json", *argv]) == 0
    return [Event.model_validate_json(line) for line in capsys.readouterr().out.splitlines()]


def times(events: list[Event]) -> list[str]:
    return [event.ts.astimezone(at("00:00").tzinfo).strftime("%H:%M") for event in events]


def refused(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> str:
    """The error of `gatehouse events ARGV`, which must exit 2 without a traceback."""
    assert main(["--config", str(config), "events", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err


def test_gate_takes_a_gates_events_and_a_lanes_plate_reads(site: Path, capsys):
    assert times(listed(capsys, site, "--gate", "north-in")) == ["07:50", "08:15", "08:16", "09:30"]
    assert times(listed(capsys, site, "--gate", "north-out")) == ["10:30"]
    both = listed(capsys, site, "--gate", "north-in", "-g", "east-door", "--gate", "north-in")
    assert times(both) == ["07:50", "08:15", "08:16", "09:00", "09:30", "09:40"]


def test_plate_is_normalised_as_the_allow_list_does(site: Path, capsys):
    for typed in ("津A12345", "津a 12345", "津A·12345"):
        found = listed(capsys, site, "--plate", typed)
        assert [(e.type, times([e])[0]) for e in found] == [
            ("access.granted", "08:15"),
            ("vehicle.plate", "10:30"),
            ("alert.raised", "11:00"),
        ], "its entries, its reads and the alert about it"
    last_entry = listed(capsys, site, "--plate", "津a12345", "--type", "access.granted", "--limit", "1")
    assert times(last_entry) == ["08:15"]
    assert listed(capsys, site, "--plate", "津C00000") == []


def test_subject_and_household(site: Path, capsys):
    assert times(listed(capsys, site, "--subject", "p-0013")) == ["09:30"]
    assert times(listed(capsys, site, "--household", "3-402")) == ["08:15", "09:30", "09:40"], (
        "a household's residents and the visitors it hosts"
    )
    assert times(listed(capsys, site, "--household", " 3-402 ", "--type", "access.denied")) == ["09:30"]
    assert listed(capsys, site, "--household", "3-40") == [], "a household is matched whole"


def test_since_and_until_are_read_in_the_site_time_zone(site: Path, capsys):
    between = listed(capsys, site, "--since", "2026-11-24T08:00", "--until", "2026-11-24T10:00")
    assert times(between) == ["08:15", "08:16", "09:00", "09:05", "09:30", "09:40"]
    assert times(listed(capsys, site, "--until", "2026-11-24T08:15")) == ["07:50"], "--until is exclusive"
    whole_day = listed(capsys, site, "--since", "2026-11-24", "--until", "2026-11-24")
    assert len(whole_day) == len(HISTORY), "a date alone in --until takes in that whole day"
    assert listed(capsys, site, "--until", "2026-11-23") == []
    in_utc = listed(capsys, site, "--since", "2026-11-24T01:01Z", "--until", "2026-11-24T01:30Z")
    assert times(in_utc) == ["09:05"], "a time with a zone is taken as given"
    assert len(listed(capsys, site, "--until", "1s")) == len(HISTORY), "durations are ago, as for --since"


def test_filters_combine(site: Path, capsys):
    """Who came through the north gate between 8 and 10; every denial of 3-402 that day."""
    morning = ("--since", "2026-11-24T08:00", "--until", "2026-11-24T10:00")
    assert times(listed(capsys, site, "--gate", "north-in", *morning)) == ["08:15", "08:16", "09:30"]
    granted = listed(capsys, site, "--gate", "north-in", "--type", "access.granted", *morning)
    assert [e.payload.plate for e in granted] == ["津A12345"]  # type: ignore[attr-defined]
    denials = listed(capsys, site, "--household", "3-402", "--type", "access.denied", "--since", "2026-11-24")
    assert [e.payload.subject for e in denials] == ["p-0013"]  # type: ignore[attr-defined]
    assert times(listed(capsys, site, "--household", "3-402", "--gate", "east-door")) == ["09:40"]
    assert listed(capsys, site, "--plate", "津A12345", "--gate", "east-door") == []
    assert times(
        listed(capsys, site, "--plate", "津A12345", "--gate", "north-out", "--type", "vehicle.*")
    ) == ["10:30"]
    assert times(listed(capsys, site, "--subject", "p-0012", "--household", "3-402")) == ["08:15"]
    assert listed(capsys, site, "--subject", "p-0012", "--household", "1-101") == []
    assert times(listed(capsys, site, "--gate", "north-in", "--limit", "2")) == ["08:16", "09:30"]
    assert capsys.readouterr().err == "", "the note on a cut listing went to stderr of the call above"


def test_csv_is_a_spreadsheet_of_every_event_in_the_site_time_zone(site: Path, capsys):
    assert main(["--config", str(site), "events", "--csv"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("\ufeff"), "Excel reads UTF-8 only with the byte order mark"
    rows = list(csv.reader(io.StringIO(captured.out[1:], newline="")))
    assert rows[0] == [
        "time",
        "type",
        "gate",
        "device",
        "credential",
        "subject",
        "household",
        "reason",
        "detail",
    ]
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(records) == len(HISTORY)
    assert records[1] == {
        "time": "2026-11-24 08:15:00",
        "type": "access.granted",
        "gate": "north-in",
        "device": "north-cam",
        "credential": "津A12345",
        "subject": "p-0012",
        "household": "3-402",
        "reason": "resident",
        "detail": "plate 津A12345 of resident p-0012 (3-402, building 3, unit 402)",
    }
    card = records[3]
    assert (card["credential"], card["subject"], card["household"], card["reason"]) == (
        "card …5678",
        "",
        "",
        "unknown",
    )
    assert card["detail"] == 'card …5678, "lost", is not on the allow-list and has no pass', (
        "quoted, and back"
    )
    assert records[2]["gate"] == "north-in" and records[2]["detail"] == "north-in: opening → open"
    assert (records[4]["gate"], records[4]["detail"]) == ("", "lot: 3")
    assert (records[7]["gate"], records[7]["credential"]) == ("north-out", "津A12345")
    assert (records[8]["gate"], records[8]["detail"]) == ("", "[warning] =1+2 held open")
    assert [r["time"][11:16] for r in records] == [local for local, _, _ in HISTORY], "oldest first"


def test_csv_keeps_a_cell_a_spreadsheet_would_run_as_text(tmp_path: Path, capsys):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        payload = {
            "gate": "north-in",
            "reason": "operator",
            "subject": '=HYPERLINK("http://x")',
            "detail": "-2+3",
        }
        store.append(factory.make("access.granted", payload))
    assert main(["--config", str(config), "events", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out.lstrip("\ufeff"), newline="")))
    assert (rows[0]["subject"], rows[0]["detail"]) == ('\'=HYPERLINK("http://x")', "'-2+3")


def test_csv_filters_and_its_limit(site: Path, capsys):
    assert main(["--config", str(site), "events", "--csv", "--gate", "north-in", "--type", "access.*"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out.lstrip("\ufeff"), newline="")))
    assert [(r["time"][11:16], r["type"]) for r in rows] == [
        ("07:50", "access.granted"),
        ("08:15", "access.granted"),
        ("09:30", "access.denied"),
    ]
    assert main(["--config", str(site), "events", "--csv", "--limit", "2", "--plate", "津A12345"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out.lstrip("\ufeff"), newline="")))
    assert [(r["type"], r["credential"]) for r in rows] == [
        ("vehicle.plate", "津A12345"),
        ("alert.raised", "津A12345"),
    ]
    assert "older events not shown" in captured.err
    assert main(["--config", str(site), "events", "--csv", "--plate", "津C00000"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "\ufefftime,type,gate,device,credential,subject,household,reason,detail"
    ]


def test_csv_has_no_default_limit_where_the_table_has_one(tmp_path: Path, capsys):
    """Last month as a spreadsheet must be all of last month, not its last 50 events."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        for minute in range(70):
            store.append(
                factory.make(
                    "gate.state", {"gate": "north-in", "state": "open"}, ts=at(f"08:{minute % 60:02}")
                )
            )
    assert main(["--config", str(config), "events", "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 70
    assert main(["--config", str(config), "events"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 50 and "raise --limit" in captured.err


def test_csv_is_utf8_whatever_the_locale_says(site: Path):
    """Written by the real process into a pipe, with Python told the terminal speaks Latin-1."""
    result = subprocess.run(
        gatehouse_argv("--config", str(site), "events", "--csv", "--plate", "津A12345"),
        cwd=REPO,
        env=child_env(PYTHONIOENCODING="latin-1"),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith(b"\xef\xbb\xbftime,type,")
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8-sig"), newline="")))
    assert [r["credential"] for r in rows] == ["津A12345", "津A12345", "津A12345"]
    assert result.stdout.count(b"\r\n") == 4, "RFC 4180 line ends"


def test_table_shows_the_filtered_events(site: Path, capsys):
    assert main(["--config", str(site), "events", "--household", "3-402", "--type", "access.denied"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("11-24 09:30:00")
    assert "north-in: card …5678 → expired (p-0013)" in lines[1]


def test_a_gate_known_only_from_the_store_is_found(site: Path, capsys):
    """A gate since removed from the configuration keeps its history."""
    factory = EventFactory("test-site", "gw-test")
    with Store(site.parent / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        store.append(factory.make("gate.state", {"gate": "old-west", "state": "closed"}, ts=at("11:00")))
    assert times(listed(capsys, site, "--gate", "old-west")) == ["11:00"]


def test_bad_values_are_named_and_exit_2(site: Path, capsys):
    err = refused(capsys, site, "--gate", "nort-in")
    assert "--gate 'nort-in': no such gate, and no event names it; did you mean 'north-in'?" in err
    assert "gates: north-in, north-out, east-door" in err
    assert "gates: north-in, north-out, east-door" in refused(
        capsys, site, "--gate", "north-in", "--gate", "gym"
    )
    err = refused(capsys, site, "--since", "2026-11-24T10:00", "--until", "2026-11-24T08:00")
    assert "--until '2026-11-24T08:00' is not after --since '2026-11-24T10:00'" in err
    assert "is not after" in refused(
        capsys, site, "--since", "2026-11-24T08:00", "--until", "2026-11-24T08:00"
    )
    err = refused(capsys, site, "--until", "yesterday 10:00")
    assert "--until 'yesterday 10:00': expected 10m, 2h, 1d or an ISO time" in err
    assert "--since '2026-11-31': expected" in refused(capsys, site, "--since", "2026-11-31")
    assert "--plate 'A12?45' does not look like a plate (e.g. 津A12345)" in refused(
        capsys, site, "--plate", "A12?45"
    )
    assert "--household must not be blank" in refused(capsys, site, "--household", " ")
    assert "--subject must not be blank" in refused(capsys, site, "--subject", "")
    err = refused(capsys, site, "--plate", "津A12345", "--type", "gate.state")
    assert "--plate looks only at access.denied, access.granted, alert.raised, vehicle.plate events" in err
    assert "--type gate.state asks for none of them" in err
    assert "--until ends the listing and --follow never does" in refused(
        capsys, site, "--follow", "--until", "1h"
    )
    assert "did you mean 'access.*'?" in refused(capsys, site, "--type", "access", "--gate", "north-in")
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(site), "events", "--csv", "--json"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_values_are_named_even_without_a_gate_configured(tmp_path: Path, capsys):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.split("gates:")[0].format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory).close()
    assert "--gate 'north-in': no such gate, and no event names it; no gates are configured" in refused(
        capsys, config, "--gate", "north-in"
    )


def test_follow_prints_only_what_the_filters_let_through(site: Path):
    factory = EventFactory("test-site", "gw-test")
    process = start_cli(site, "events", "--follow", "--plate", "津A12345", "--gate", "north-in", "--json")
    try:
        first = json.loads(wait_for_line(process, b'"type":"access.granted"', 30))
        assert first["payload"]["plate"] == "津A12345" and first["payload"]["gate"] == "north-in"
        with Store(site.parent / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
            for gate, plate in (
                ("north-out", "津A12345"),
                ("north-in", "津B22222"),
                ("north-in", "津A12345"),
            ):
                store.append(
                    factory.make(*access("denied", gate, "anti_passback", plate=plate), device="cam")
                )
            followed = json.loads(wait_for_line(process, b"access.", 30))
        assert followed["type"] == "access.denied", "the later events that do not pass are not printed"
        assert (followed["payload"]["gate"], followed["payload"]["plate"]) == ("north-in", "津A12345")
    finally:
        process.terminate()
        process.wait(10)


def test_type_and_payload_filters_take_the_type_index(site: Path):
    """The query names exact types, so the planner reads the outbox by `outbox_type`; the JSON body
    is looked at only for those rows."""
    conn = sqlite3.connect(site.parent / "state" / "gatehouse.db")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    filters = EventFilter(
        types=("access.denied",), since_ms=0, until_ms=2**62, gates=("north-in",), household="3-402"
    )
    assert [e.payload.subject for e in select_events(conn, filters)] == ["p-0013"]  # type: ignore[attr-defined]
    plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statements[-1]}"))
    assert "USING INDEX outbox_type (type=? AND seq>?)" in plan and "SCAN" not in plan, plan
    for wanted in (EventFilter(plate="津A12345"), EventFilter(types=("access.granted", "access.denied"))):
        list(select_events(conn, wanted, limit=5))
        plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statements[-1]}"))
        assert "USING INDEX outbox_type" in plan, plan
    conn.close()


def test_photos_are_written_out_with_the_listing(tmp_path: Path, capsys):
    """A property manager's question "show me that car": the plate crops of the listed events
    written into a folder, named so that they sort by time and say where and what, and named
    in the listing; one that retention already removed is counted, not an error."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    crops = [b"\xff\xd8 first crop \xff\xd9", b"\xff\xd8 second crop \xff\xd9"]
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        for index, (data, local) in enumerate(zip(crops, ("08:15", "09:30"), strict=True)):
            digest, size = store.put_attachment(data)
            payload = {"plate": "津A12345", "confidence": 0.9, "lane": "north-in", "crop": digest}
            attachment = Attachment(sha256=digest, size=size, role="crop")
            store.append(factory.make("vehicle.plate", payload, attachments=(attachment,), ts=at(local)))
            if index == 0:
                expired = store.attachment_path(digest)
    photos = tmp_path / "photos"
    assert main(["--config", str(config), "events", "--csv", "--photos", str(photos)]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out.lstrip("\ufeff"), newline="")))
    names = [row["photos"] for row in rows]
    assert names[0].startswith("20261124-081500_north-in_津A12345_crop_") and names[0].endswith(".jpg")
    assert [(photos / name).read_bytes() for name in names] == crops
    assert captured.err == f"2 pictures in {photos}\n"

    expired.unlink()
    assert (
        main(["--config", str(config), "events", "--plate", "津A12345", "--photos", str(tmp_path / "p2")])
        == 0
    )
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].endswith("north-in: 津A12345 0.90"), "no colour, no gap for it"
    assert lines[2].endswith(f"[{names[1]}]")
    assert "1 picture in" in captured.err and "1 no longer kept" in captured.err
