"""`gatehouse admin` given what an operator mistypes: each mistake is refused with the file,
line or option to fix, exit 2, no traceback, and nothing is recorded. An allow-list entry the
gateway would refuse is refused here too: once recorded it would hold the gateway at its version
for good (every later delta answers version_gap, and the full list is refused for that entry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.allowlist import AllowList
from edge.cli import main
from edge.errors import ConfigError
from edge.store import Store
from sync.commands import AllowEntry, AllowlistApplyArgs
from sync.community import Community
from sync.db import open_database

SITE = "oak-court"
GATEWAY = "gw-1"
SALT = "a-site-salt-of-some-length"
GOOD_CSV = (
    "kind,value,subject,gates,valid_until\n"
    "plate,津a 12345,unit-3-402,north-in,2027-06-30T23:59:59+08:00\n"
    "card,0012345678,unit-3-402,,\n"
)


@pytest.fixture
def admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The admin command line for a community database with one registered gateway."""
    monkeypatch.setenv("GW_KEY", "k" * 40)
    monkeypatch.setenv("SITE_SALT", SALT)
    args = ["admin", "--db", f"sqlite:///{tmp_path / 'community.db'}"]
    assert (
        main([*args, "gateway", "add", SITE, GATEWAY, "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]) == 0
    )
    capsys.readouterr()
    return args


def refused_by_argparse(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def community(admin: list[str]) -> Community:
    return Community(open_database(admin[2]))


def imported(admin: list[str], tmp_path: Path, text: str | bytes, capsys: pytest.CaptureFixture[str]) -> str:
    """Import `text` as a CSV file with --no-send; the exit code must be 2 and nothing recorded.
    Returns what was printed on stderr."""
    csv_file = tmp_path / "residents.csv"
    if isinstance(text, bytes):
        csv_file.write_bytes(text)
    else:
        csv_file.write_text(text, encoding="utf-8")
    before = community(admin).allowlist_version(SITE, GATEWAY)
    assert main([*admin, "allow", "import", SITE, GATEWAY, str(csv_file), "--no-send"]) == 2
    assert community(admin).allowlist_version(SITE, GATEWAY) == before
    err = capsys.readouterr().err
    assert "internal error" not in err and "pydantic" not in err
    return err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("kind,value,subject\nplate,津B00001,\n", "residents.csv:2: missing subject"),
        ("kind,value\nplate,津B00001\n", "residents.csv:1: the header row needs the columns"),
        ("plate,津B00001,unit-1\n", "kind, value, subject missing"),
        ("kind,value,subject,plate_colour\nplate,津B00001,u,blue\n", "unknown column 'plate_colour'"),
        (
            "kind,value,subject\nplate,津B00001,u,north-in\n",
            "residents.csv:2: 4 fields, the header row names 3",
        ),
        ("kind,value,subject\n\nplate,津B00001,u\nbadge,123,u\n", "residents.csv:4: kind 'badge'"),
        ("kind,value,subject\nplate,hello!,u\n", "'hello!' does not look like a plate"),
        (
            "kind,value,subject,valid_until\nplate,津B00001,u,2027-06-30\n",
            "valid_until '2027-06-30' has no time zone: write it with its offset",
        ),
        ("kind,value,subject,valid_until\nplate,津B00001,u,2027-13-40\n", "not a date and time"),
        ("kind,value,subject\n", "no rows below the header row; nothing imported"),
        (
            'kind,value,subject\nplate,津B00001,"unit-1\nplate,津B00002,unit-2\n',
            "residents.csv:2: a quote opens a value that does not close where the value ends",
        ),
        (b"\xff\xfekind,value,subject\n", "not UTF-8 text"),
        (
            "kind,value,subject\nplate,津B00001,u1\nplate,津b 00001,u2\n",
            "residents.csv:3: plate 津B00001 is also on line 2, for someone else or with other details",
        ),
        (
            "kind,value,subject\ncard,0099,u1\nqr,0099,u1\ncard, 0099 ,u2\n",
            "residents.csv:4: card …0099 is also on line 2",
        ),
        (
            "kind,value,subject,gates\ncard,0099,u1,\ncard,0099,u1,east-door\n",
            "residents.csv:3: card …0099 is also on line 2",
        ),
        ("kind,value,subject,Kind\nplate,津B00001,u1,card\n", "residents.csv:1: the column 'kind' twice"),
        ("kind;value;subject\nplate;津B00001;u1\n", "separated by semicolons"),
    ],
)
def test_a_bad_csv_is_refused_whole_naming_the_line(
    admin: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, says: str
) -> None:
    assert main([*admin, "allow", "import", SITE, GATEWAY, _write(tmp_path, GOOD_CSV), "--no-send"]) == 0
    capsys.readouterr()
    assert says in imported(admin, tmp_path, text, capsys)
    kept = community(admin).db.query("SELECT kind, value FROM allowlist_entries ORDER BY kind")
    assert [kind for kind, _ in kept] == ["card", "plate"], "what was imported before stays"
    assert ("plate", "津A12345") in kept


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "first.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_what_the_community_records_the_gateway_applies(
    admin: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The full list after a CSV import and an add from the command line, applied by the
    gateway's own allow-list: the plate typed with a space is the plate the gateway reads."""
    assert main([*admin, "allow", "import", SITE, GATEWAY, _write(tmp_path, GOOD_CSV), "--no-send"]) == 0
    assert (
        main([*admin, "allow", "add", SITE, GATEWAY, "--qr", "tok-1", "--subject", "u-7", "--no-send"]) == 0
    )
    capsys.readouterr()
    full = community(admin).allowlist_full(SITE, GATEWAY)
    with Store(tmp_path / "gatehouse.db", synchronous="normal") as store:
        allow = AllowList(store, SALT)
        result = allow.apply(AllowlistApplyArgs.model_validate(full["args"]))
        assert result == {"applied": True, "version": 2, "added": 3, "removed": 0, "replaced": 0}
        plate, _ = allow.key("plate", "津A 12345")
        card, _ = allow.key("card", "0012345678")
    values = {entry["value"] for entry in full["args"]["add"]}
    assert plate in values and card in values


def test_an_entry_the_gateway_would_refuse_is_not_recorded(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    refused_by_argparse([*admin, "allow", "add", SITE, GATEWAY, "--qr", "tok-1", "--no-send"])
    assert "--subject" in capsys.readouterr().err
    assert (
        main([*admin, "allow", "add", SITE, GATEWAY, "--plate", "hello!", "--subject", "u", "--no-send"]) == 2
    )
    assert "does not look like a plate" in capsys.readouterr().err
    held = community(admin)
    with pytest.raises(ConfigError, match="needs a subject"):
        held.allow_add(SITE, GATEWAY, [AllowEntry(kind="plate", value="津B00001")])
    assert held.allowlist_version(SITE, GATEWAY) == 0
    assert held.db.one("SELECT count(*) FROM allowlist_changes") == (0,)


def test_a_pass_the_gateway_would_refuse_is_not_recorded(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*admin, "pass", "issue", SITE, GATEWAY, "--plate", "hello!", "--no-send"]) == 2
    err = capsys.readouterr()
    assert "does not look like a plate" in err.err and "valid until" not in err.out
    refused_by_argparse([*admin, "pass", "issue", SITE, GATEWAY, "--plate", "津D00003", "--max-uses", "0"])
    assert "'0' is not a whole number of 1 or more" in capsys.readouterr().err
    assert community(admin).db.one("SELECT count(*) FROM passes") == (0,)


def test_a_pass_is_revoked_by_its_id(admin: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*admin, "pass", "issue", SITE, GATEWAY, "--plate", "津d 00003", "--no-send"]) == 0
    issued = json.loads(capsys.readouterr().out.splitlines()[-1])
    pass_id = issued["args"]["pass_id"]
    assert issued["args"]["plate"] == "津D00003"
    assert main([*admin, "pass", "revoke", SITE, GATEWAY, "p-unknown", "--no-send"]) == 2
    assert "no pass p-unknown for oak-court/gw-1" in capsys.readouterr().err
    assert main([*admin, "pass", "revoke", SITE, GATEWAY, pass_id, "--reason", "left", "--no-send"]) == 0
    revoke = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert revoke["name"] == "pass.revoke" and revoke["args"] == {"pass_id": pass_id, "reason": "left"}
    row = community(admin).db.one("SELECT revoked_at FROM passes WHERE id = ?", (pass_id,))
    assert row is not None and row[0]


def test_gaps_of_a_gateway_the_database_does_not_know(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*admin, "gaps", SITE, "gw-typo"]) == 2
    assert "no gateway oak-court/gw-typo" in capsys.readouterr().err
    assert main([*admin, "gaps", SITE, GATEWAY]) == 0
    assert "no events received yet" in capsys.readouterr().out


def test_gateway_add_prints_the_fingerprint_that_provision_printed(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatehouse provision` prints the signing key's fingerprint and asks the operator to compare
    it with what registering the key shows: a key mistyped or mixed up shows here, not as every
    command refused `bad_signature` later."""
    from edge.cli.provision import fingerprint

    assert main([*admin, "gateway", "add", SITE, "gw-2", "--key-env", "GW_KEY"]) == 0
    assert f"signing key fingerprint: {fingerprint('k' * 40)}" in capsys.readouterr().out


def test_a_mistyped_gateway_is_named_as_unknown_not_offered_for_registration(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in the gateway or site id is not a gateway to register: the operator is told it is
    unknown and which one was meant, and nothing is recorded."""
    for site, gateway in ((SITE, "gw-l"), ("oak-crt", GATEWAY)):
        argv = [*admin, "allow", "add", site, gateway, "--plate", "津A12345", "--subject", "u", "--no-send"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"no gateway {site}/{gateway} in the community database" in err
        assert f"did you mean {SITE}/{GATEWAY}?)" in err
        assert "gatehouse admin gateway list" in err
    assert main([*admin, "open-gate", SITE, "gw-l", "north-in", "--no-send"]) == 2
    assert "(did you mean oak-court/gw-1?)" in capsys.readouterr().err
    assert community(admin).db.one("SELECT count(*) FROM allowlist_changes") == (0,)


def test_a_gateway_known_only_from_its_status_is_listed_as_not_registered(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The ingest records a gateway from its first status, before the operator registered its
    key: the listing does not say its commands are signed, and a command says what is missing."""
    held = community(admin)
    with held.db.transaction():
        held.db.execute(
            "INSERT INTO gateways(site_id, id, state, status_at) VALUES (?, ?, 'provisioned', ?)",
            (SITE, "gw-new", "2026-11-26T08:00:00Z"),
        )
    assert main([*admin, "gateway", "list", "--tz", "UTC"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "hmac-sha256" in rows[GATEWAY]
    assert "hmac-sha256" not in rows["gw-new"] and "not registered" in rows["gw-new"]
    assert main([*admin, "open-gate", SITE, "gw-new", "north-in", "--no-send"]) == 2
    err = capsys.readouterr().err
    assert "gateway oak-court/gw-new is not registered" in err
    assert "gatehouse admin gateway add oak-court gw-new --key-env NAME" in err


def test_a_line_repeated_as_it_is_is_imported_once(
    admin: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "kind,value,subject\nplate,津B00001,u1\nplate,津b 00001,u1\ncard,0099,u1\n"
    assert main([*admin, "allow", "import", SITE, GATEWAY, _write(tmp_path, text), "--no-send"]) == 0
    assert "imported 2 entries" in capsys.readouterr().out
    delta = community(admin).allowlist_delta(SITE, GATEWAY)
    assert [entry["kind"] for entry in delta["args"]["add"]] == ["card", "plate"]


def test_a_gate_the_gateway_does_not_have_is_refused_with_the_nearest(
    admin: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry or a pass for `north-inn` would never match: once the gateway has reported its
    gates (its status), a gate not among them is refused everywhere an operator types one."""
    db = community(admin).db
    for gate in ("north-in", "east-door"):
        db.execute("INSERT INTO gates (site_id, id, gateway_id) VALUES (?, ?, ?)", (SITE, gate, GATEWAY))
    says = f"gate 'north-inn' is not one of {SITE}/{GATEWAY}'s gates (east-door, north-in); did you mean"
    plate = ["--plate", "津B00001", "--subject", "u"]
    for argv in (
        ["allow", "add", SITE, GATEWAY, *plate, "--gate", "north-in", "--gate", "north-inn"],
        ["pass", "issue", SITE, GATEWAY, "--plate", "津B00001", "--gate", "north-inn"],
    ):
        assert main([*admin, *argv, "--no-send"]) == 2
        assert says in capsys.readouterr().err
    err = imported(admin, tmp_path, "kind,value,subject,gates\nplate,津B00001,u,north-in north-inn\n", capsys)
    assert f"residents.csv:2: {says}" in err
    assert main([*admin, "allow", "add", SITE, GATEWAY, *plate, "--gate", "north-in", "--no-send"]) == 0
    assert community(admin).db.one("SELECT count(*) FROM passes") == (0,), "no pass for a gate it lacks"


def test_a_card_number_with_spaces_is_hashed_as_the_reader_sends_it(admin: list[str]) -> None:
    """The community hashes `0012 3456 78` as the gateway hashes the 0012345678 its reader reads."""
    from edge.privacy import credential_hash

    value, last4 = community(admin).credential(SITE, "card", "0012 3456 78")
    assert (value, last4) == (credential_hash("0012345678", SALT, "card"), "5678")


def test_a_pass_restored_to_a_replaced_store_keeps_only_the_entries_left(
    admin: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A pass of 3 entries used once, as the gateway reported, goes again with 2; one used up
    does not go again."""
    import uuid

    for plate in ("津G00001", "津G00002"):
        argv = [*admin, "pass", "issue", SITE, GATEWAY, "--plate", plate, "--max-uses", "3", "--no-send"]
        assert main(argv) == 0
    ids = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("pass ")]
    db = community(admin).db
    for pass_id, used in zip(ids, (1, 3), strict=True):
        for seq in range(used):
            db.execute(
                "INSERT INTO events (id, site_id, gateway_id, type, ts, ts_ms, seq, payload, received_at) "
                "VALUES (?, ?, ?, 'access.granted', '', ?, ?, ?, '')",
                (str(uuid.uuid4()), SITE, GATEWAY, 4_102_444_800_000, seq, json.dumps({"pass_id": pass_id})),
            )
    restored = community(admin).passes_to_restore(SITE, GATEWAY)
    assert [(d["args"]["pass_id"], d["args"]["max_uses"]) for d in restored] == [(ids[0], 2)]
