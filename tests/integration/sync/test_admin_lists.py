"""A property manager looks at what the community database holds for a gateway and sends it:
its allow-list (`admin allow list`) and its passes with the entries each was used for (`admin
pass list`), on both engines."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path

import pytest

from edge.cli import main
from sync.db import now_iso, open_database

SITE = "oak-court"


@pytest.fixture
def gateway(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("GW_KEY", "k" * 40)
    monkeypatch.setenv("SITE_SALT", "a-site-salt-of-some-length")
    name = f"gw-lists-{uuid.uuid4().hex[:6]}"
    add = ["gateway", "add", SITE, name, "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]
    assert main(["admin", "--db", db_url, *add]) == 0
    capsys.readouterr()
    return name


def admin(capsys: pytest.CaptureFixture[str], db_url: str, *argv: str) -> tuple[int, str, str]:
    code = main(["admin", "--db", db_url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_allow_list_as_the_database_holds_it(
    db_url: str, gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = [SITE, gateway]
    for credential in (
        ["--plate", "津a 12345", "--subject", "unit-3-402", "--gate", "north-in"],
        ["--card", "0012345678", "--subject", "unit-5-101"],
    ):
        assert admin(capsys, db_url, "allow", "add", *target, *credential, "--no-send")[0] == 0
    residents = tmp_path / "residents.csv"
    residents.write_text(
        "kind,value,subject,gates,valid_until\nplate,津B00001,=cmd(),,2027-06-30T23:59:00+08:00\n"
    )
    assert admin(capsys, db_url, "allow", "import", *target, str(residents), "--no-send")[0] == 0

    code, out, err = admin(capsys, db_url, "allow", "list", *target, "--tz", "Asia/Shanghai")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["KIND", "CREDENTIAL", "SUBJECT", "GATES", "VALID", "UNTIL", "SINCE", "VERSION"]
    assert rows[1:] == [
        ["plate", "津B00001", "=cmd()", "every", "gate", "2027-06-30", "23:59", "3"],
        ["plate", "津A12345", "unit-3-402", "north-in", "-", "1"],
        ["card", "…5678", "unit-5-101", "every", "gate", "-", "2"],
    ], "by subject; a card shows its last 4 only, never its hash"
    assert err.strip() == "3 entries; the allow-list is at version 3"

    code, out, _ = admin(capsys, db_url, "allow", "list", *target, "--subject", "unit-3-402", "--csv")
    records = list(csv.DictReader(io.StringIO(out.lstrip("\ufeff"))))
    assert out.startswith("\ufeffkind,credential,subject,gates,valid_until,version")
    assert [(r["credential"], r["gates"], r["version"]) for r in records] == [("津A12345", "north-in", "1")]
    assert records[0]["valid_until"] == "", "no end is an empty cell, not the table's '-' made text ('-)"
    code, out, _ = admin(capsys, db_url, "allow", "list", *target, "--subject", "=cmd()", "--csv")
    (record,) = csv.DictReader(io.StringIO(out.lstrip("\ufeff")))
    assert record["subject"] == "'=cmd()", "a spreadsheet would run it as a formula"

    code, _, err = admin(capsys, db_url, "allow", "list", SITE, "gw-nowhere")
    assert code == 2 and "no gateway oak-court/gw-nowhere in the community database" in err


def test_passes_in_force_with_their_entries(
    db_url: str, gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = [SITE, gateway]
    issued = []
    for extra in (
        ["--plate", "津C22222", "--max-uses", "2", "--host", "3-402"],
        ["--qr", "tok-9"],
        ["--plate", "津D33333"],
    ):
        code, out, _ = admin(capsys, db_url, "pass", "issue", *target, *extra, "--hours", "2", "--no-send")
        assert code == 0
        issued.append(out.split()[1])
    assert admin(capsys, db_url, "pass", "revoke", *target, issued[2], "--no-send")[0] == 0

    def entry(pass_id: str) -> None:
        with open_database(db_url) as db:
            db.execute(
                "INSERT INTO events (id, site_id, gateway_id, type, ts, ts_ms, seq, payload, received_at) "
                "VALUES (?, ?, ?, 'access.granted', ?, ?, 1, ?, ?)",
                (
                    str(uuid.uuid4()),
                    SITE,
                    gateway,
                    now_iso(),
                    int(time.time() * 1000),
                    json.dumps({"gate": "north-in", "reason": "pass", "pass_id": pass_id}),
                    now_iso(),
                ),
            )

    entry(issued[0])
    code, out, _ = admin(capsys, db_url, "pass", "list", *target)
    header, *lines = out.splitlines()
    assert header.split() == ["PASS", "KIND", "FOR", "HOST", "FROM", "UNTIL", "ENTRIES", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) == {issued[0], issued[1]}, "the revoked pass is not in force"
    assert rows[issued[0]][1:4] == ["visitor", "津C22222", "3-402"] and rows[issued[0]][-2:] == [
        "1/2",
        "valid",
    ]
    assert rows[issued[1]][1:5] == ["visitor", "QR", "token", "-"] and rows[issued[1]][-2:] == ["0", "valid"]

    entry(issued[0])
    code, out, _ = admin(capsys, db_url, "pass", "list", *target, "--all", "--json")
    states = {item["pass_id"]: (item["state"], item["entries"]) for item in map(json.loads, out.splitlines())}
    assert states == {issued[0]: ("used up", 2), issued[1]: ("valid", 0), issued[2]: ("revoked", 0)}
