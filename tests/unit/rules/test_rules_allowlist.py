"""The allow-list: versioned deltas applied atomically and idempotently, full lists that keep
local entries, CSV import all-or-nothing, passes from upstream by token hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.allowlist import ALLOWLIST_VERSION_KEY, VersionGap, to_ms
from edge.errors import UsageError
from edge.privacy import credential_hash
from sync.commands import AllowlistApplyArgs
from sync.downlink import ALLOWLIST_VERSION_KEY as DOWNLINK_VERSION_KEY
from tests.unit.rules.conftest import SALT, Rig

GATE = "north-in"


def card(number: str) -> dict[str, str]:
    return {"kind": "card", "value": credential_hash(number, SALT, "card"), "last4": number[-4:]}


def decide_card(rig: Rig, number: str) -> str:
    return rig.rules.decider.credential("card", number, GATE, int(rig.clock() * 1000))[0].reason


def test_the_version_lives_where_the_downlink_reads_it():
    assert ALLOWLIST_VERSION_KEY == DOWNLINK_VERSION_KEY


def test_deltas_apply_in_order_and_a_repeat_changes_nothing(rig: Rig):
    first = AllowlistApplyArgs(
        from_version=0,
        to_version=1,
        add=[
            {**card("10000001"), "subject": "p-1", "valid_until": "2030-01-01T00:00:00Z"},
            {"kind": "plate", "value": "津A12345", "subject": "p-1"},
        ],
    )
    assert rig.allow.apply(first) == {"applied": True, "version": 1, "added": 2, "removed": 0}
    assert decide_card(rig, "10000001") == "resident"
    assert rig.allow.apply(first) == {"applied": False, "version": 1, "added": 0, "removed": 0}
    second = {"from_version": 1, "to_version": 2, "remove": [{"kind": "plate", "value": "津A12345"}]}
    assert rig.allow.apply(second)["removed"] == 1
    assert rig.allow.version() == 2
    assert rig.rules.decider.plate("津A12345", GATE, int(rig.clock() * 1000))[0].reason == "unknown"


def test_a_gap_is_refused_and_changes_nothing(rig: Rig):
    with pytest.raises(VersionGap) as gap:
        rig.allow.apply({"from_version": 4, "to_version": 5, "add": [{**card("1"), "subject": "p"}]})
    assert gap.value.have == 0
    assert rig.allow.version() == 0 and rig.allow.counts()["credentials"] == 0


def test_one_bad_entry_applies_nothing(rig: Rig):
    bad = {
        "from_version": 0,
        "to_version": 1,
        "add": [{**card("1"), "subject": "p"}, {"kind": "card", "value": "12345678", "subject": "p"}],
    }
    with pytest.raises(ValueError, match="site-salted SHA-256"):
        rig.allow.apply(bad)
    assert rig.allow.version() == 0 and rig.allow.counts()["credentials"] == 0


def test_a_delta_carries_households_and_blocks(rig: Rig):
    rig.allow.apply(
        {
            "from_version": 0,
            "to_version": 1,
            "add": [
                {**card("20000002"), "subject": "p-2", "household": "5-101", "building": "5", "unit": "101"},
                {"kind": "plate", "value": "津B66666", "list": "block", "reason": "stolen"},
            ],
        }
    )
    granted = rig.rules.decider.credential("card", "20000002", GATE, int(rig.clock() * 1000))[0]
    assert granted.household == "5-101"
    assert rig.rules.decider.plate("津B66666", GATE, int(rig.clock() * 1000))[0].reason == "blocklisted"
    listed = {(e.list, e.kind, e.shown, e.source) for e in rig.allow.entries()}
    assert listed == {("allow", "card", "…0002", "sync"), ("block", "plate", "津B66666", "sync")}


def test_a_full_list_replaces_upstream_rows_and_keeps_local_ones(rig: Rig):
    rig.allow.add_credential("30000003", "guard-1")
    rig.allow.apply({"from_version": 0, "to_version": 1, "add": [{**card("40000004"), "subject": "p-4"}]})
    result = rig.allow.apply({"full": True, "to_version": 7, "add": [{**card("50000005"), "subject": "p-5"}]})
    assert result["applied"] and result["version"] == 7 and result["replaced"] >= 1
    assert decide_card(rig, "40000004") == "unknown"
    assert decide_card(rig, "50000005") == "resident"
    assert decide_card(rig, "30000003") == "resident", "what the gatehouse added itself stays"


def test_csv_import_all_or_nothing(rig: Rig, tmp_path: Path):
    good = tmp_path / "residents.csv"
    good.write_text(
        "person,household,building,unit,card,plate,valid_until,gates\n"
        "p-1,3-402,3,402,61000001,津A10001,,\n"
        "p-2,3-402,3,402,61000002,,2030-01-01T00:00,north-in;north-out\n"
        "p-3,,,,,津B66666,,\n",
        encoding="utf-8",
    )
    result = rig.allow.import_csv(good)
    assert (result.residents, result.credentials, result.plates, result.households) == (3, 2, 2, {"3-402"})
    assert decide_card(rig, "61000002") == "resident"
    people = tmp_path / "people.csv"
    people.write_text(
        "person,household,card,list\n"
        "p-4,5-101,,\n"  # a resident with no credential yet
        "p-5,5-102,,\n"
        ",5-103,61000005,\n"  # a household's own card
        "p-6,5-104,61000006,block\n",  # a blocked card is no household of the compound's
        encoding="utf-8",
    )
    assert rig.allow.import_csv(people).households == {"5-101", "5-102", "5-103"}
    bad = tmp_path / "bad.csv"
    bad.write_text("person,card,plate\np-7,62000007,\np-8,,not a plate!\n,62000009,\n", encoding="utf-8")
    with pytest.raises(UsageError) as problem:
        rig.allow.import_csv(bad)
    text = str(problem.value)
    assert f"{bad}:3: plate:" in text and f"{bad}:4: person or household" in text
    assert decide_card(rig, "62000007") == "unknown", "nothing of a bad file is imported"
    with pytest.raises(UsageError, match="unknown column"):
        wrong = tmp_path / "wrong.csv"
        wrong.write_text("person,cardnumber\np,1\n", encoding="utf-8")
        rig.allow.import_csv(wrong)


def test_csv_column_names_as_a_spreadsheet_has_them(rig: Rig, tmp_path: Path):
    """Capitals and spaces in the header are how people type it; semicolons are how Excel saves
    CSV where the comma is the decimal mark."""
    sheet = tmp_path / "residents.csv"
    sheet.write_text("Person, Card ,Plate\np-1,67000001,津A67001\n", encoding="utf-8")
    assert (rig.allow.import_csv(sheet).credentials, decide_card(rig, "67000001")) == (1, "resident")
    sheet.write_text("person;card;plate\np-2;67000002;\n", encoding="utf-8")
    with pytest.raises(UsageError, match="separated by semicolons, as Excel saves CSV in some languages"):
        rig.allow.import_csv(sheet)


def test_a_bare_date_until_is_the_whole_of_that_day(rig: Rig, tmp_path: Path):
    """`valid_until 2027-06-30` in a resident list means the card still opens on the 30th."""
    day = datetime.fromtimestamp(rig.clock(), UTC).date()
    sheet = tmp_path / "residents.csv"
    sheet.write_text(f"person,card,valid_until\np-1,66000001,{day.isoformat()}\n", encoding="utf-8")
    rig.allow.import_csv(sheet)
    assert decide_card(rig, "66000001") == "resident", "valid through the end of today"
    assert to_ms(day.isoformat(), UTC, until=True) == to_ms((day + timedelta(days=1)).isoformat(), UTC)
    assert to_ms(f"{day.isoformat()}T18:00", UTC, until=True) == to_ms(f"{day.isoformat()}T18:00", UTC)


def test_csv_import_skips_empty_rows_and_names_the_physical_line(rig: Rig, tmp_path: Path):
    """Excel saves empty rows as ",,," and a trailing comma as a column with no name."""
    sheet = tmp_path / "excel.csv"
    sheet.write_bytes(
        "person,household,card,plate,\r\np-1,1-101,63000001,津A63001,\r\n\r\n,,,,\r\n"
        "p-2,1-102,63000002,,\r\n,,,,\r\n".encode("utf-8-sig")
    )
    result = rig.allow.import_csv(sheet)
    assert (result.residents, result.credentials, result.plates) == (2, 2, 1)
    assert decide_card(rig, "63000002") == "resident"
    bad = tmp_path / "bad.csv"
    bad.write_text("person,plate\n\np-3,津A64003\n\np-4,??\n", encoding="utf-8")
    with pytest.raises(UsageError, match=f"{bad}:5: plate"):
        rig.allow.import_csv(bad)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("person,name,card\np-5,Wang, Li,65000005\n", ":2: more values than the header has columns"),
        ("person,card,\np-5,65000005,x\n", ":2: a value under a column with no name"),
        ("person,card\np-5,65000005\np-6,65000005\n", ":3: card …0005 is also on line 2"),
        # A quote left open would swallow every line after it into one name, silently.
        ('person,card,name\np-5,65000005,"Li\np-6,65000006,Zhao\n', ":2: a quote opens a value"),
        ('person,card,name\np-5,65000005,"Li" Wang\n', ":2: a quote opens a value"),
        ("person,card,valid_from,valid_until\np-5,65000005,2026-01-01,2027-13-01\n", ":2: valid_until: "),
        ("person,card,valid_from\np-5,65000005,yesterday\n", ":2: valid_from: "),
    ],
)
def test_csv_import_refuses_shifted_unnamed_and_conflicting_values(rig: Rig, tmp_path: Path, text, problem):
    sheet = tmp_path / "residents.csv"
    sheet.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=problem):
        rig.allow.import_csv(sheet)
    assert decide_card(rig, "65000005") == "unknown", "nothing of a bad file is imported"


def test_csv_import_counts_a_repeated_line_once(rig: Rig, tmp_path: Path):
    sheet = tmp_path / "residents.csv"
    sheet.write_text("person,household,card\np-7,1-107,66000007\np-7,1-107,66000007\n", encoding="utf-8")
    result = rig.allow.import_csv(sheet)
    assert (result.residents, result.credentials) == (1, 1)


def test_a_pass_from_upstream_by_token_hash(rig: Rig):
    token_hash = credential_hash("GHTOKEN42", SALT, "qr")
    now = int(rig.clock() * 1000)
    rig.allow.issue_pass(token_hash=token_hash, valid_until_ms=now + 60_000, pass_id="up-1", source="sync")
    assert rig.allow.issue_pass(token_hash=token_hash, valid_until_ms=now + 60_000, pass_id="up-1") == "up-1"
    assert len(rig.allow.passes(now_ms=now)) == 1
    decision = rig.rules.decider.credential("qr", "ghtoken42", GATE, now)[0]
    assert (decision.reason, decision.pass_id) == ("pass", "up-1")
    with pytest.raises(ValueError, match="end after"):
        rig.allow.issue_pass(plate="津A1", valid_from_ms=now, valid_until_ms=now)


def test_a_card_number_typed_with_its_printed_spaces_is_the_card_the_reader_sends(rig: Rig, tmp_path: Path):
    """`0012 3456 78`, as printed on the card, is the 0012345678 a reader reports."""
    rig.allow.add_resident("p-1")
    rig.allow.add_credential("0012 3456 78", "p-1")
    sheet = tmp_path / "residents.csv"
    sheet.write_text("person,card\np-2,0099 8877 66\n", encoding="utf-8")
    rig.allow.import_csv(sheet)
    assert (decide_card(rig, "0012345678"), decide_card(rig, "0099887766")) == ("resident", "resident")
