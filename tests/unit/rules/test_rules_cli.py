"""`gatehouse allow`, `gatehouse pass` and `gatehouse alerts` on a real store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from edge.cli import main
from edge.events import EventFactory, Priority
from edge.rules.alerts import AlertEngine
from edge.store import Store
from tests.support.sync_helpers import start_cli, wait_for_line

CONFIG = """\
site: {{id: test-site, salt: test-salt-long-enough}}
gateway: {{id: gw-test, state_dir: {state}}}
store: {{synchronous: normal}}
gates:
  - {{id: north-in, kind: vehicle, direction: in, barrier: barrier}}
devices:
  - {{kind: sim_lane, id: barrier}}
"""


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "gatehouse.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(path), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    run.store_path = tmp_path / "state" / "gatehouse.db"  # type: ignore[attr-defined]
    return run


def test_allow_add_list_remove(cli):
    code, out, _ = cli(
        "allow", "add", "--person", "p-1", "--household", "3-402", "--card", "12345678", "--plate", "津A12345"
    )
    assert code == 0 and "allowed card …5678 for p-1" in out and "allowed plate 津A12345" in out
    assert cli("allow", "add", "--block", "--plate", "津B66666", "--reason", "stolen")[0] == 0
    assert (
        cli("allow", "add", "--block", "--card", "87654321", "--reason", "lost card, reported 11-26")[0] == 0
    )
    code, out, _ = cli("allow", "list")
    assert "…5678" in out and "3-402" in out and "津B66666" in out and "stolen" in out
    assert "12345678" not in out, "card numbers are never shown whole"
    from edge.cli.common import width_of

    owned = [line for line in out.splitlines() if " p-1 " in line]
    starts = {width_of(line.split(" p-1 ")[0]) for line in owned}
    assert len(owned) == 2 and len(starts) == 1, "the plate's 津 takes two columns: its row still aligns"
    table = out.splitlines()[1:]
    sources = {width_of(line[: line.rindex(" ")]) for line in table}
    assert len(table) == 5 and len(sources) == 1, "a long reason widens its column instead of pushing its row"
    code, out, _ = cli("allow", "list", "--blocked", "--json")
    assert [json.loads(line)["shown"] for line in out.splitlines()] == ["…4321", "津B66666"]
    assert cli("allow", "remove", "--card", "12345678")[0] == 0
    code, out, _ = cli("allow", "remove", "--card", "12345678")
    assert code == 1 and "not on the allow-list" in out
    code, out, _ = cli("allow", "remove", "--person", "p-l")
    assert code == 1 and out == "not on the allow-list: resident p-l\n", "a mistyped id removes nothing"
    code, out, _ = cli("allow", "remove", "--person", "p-1")
    assert code == 0 and "removed resident p-1 and 1 credentials and plates" in out


def test_allow_errors_name_the_fix(cli, tmp_path: Path):
    code, _, err = cli("allow", "add", "--person", "p-1", "--card", "1", "--gate", "north-ln")
    assert code == 2 and "did you mean 'north-in'" in err
    code, _, err = cli("allow", "add", "--card", "1")
    assert code == 2 and "--person" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("person,plate\np-1,??\n")
    code, _, err = cli("allow", "import", str(bad))
    assert code == 2 and f"{bad}:2: plate" in err and "nothing imported" in err


@pytest.mark.parametrize("block", [[], ["--block"]])
def test_allow_add_with_one_bad_value_adds_nothing(cli, block):
    code, _, err = cli("allow", "add", *block, "--person", "p-4", "--card", "44445555", "--plate", "BAD!")
    assert code == 2 and "'BAD!' does not look like a plate" in err
    _, out, _ = cli("allow", "list", "--json")
    assert out == "", "the good card before the bad plate is not added either"


def test_allow_import(cli, tmp_path: Path):
    good = tmp_path / "residents.csv"
    good.write_text("person,household,card,plate\np-1,1-101,70000001,津A70001\np-2,1-101,70000002,\n")
    code, out, _ = cli("allow", "import", str(good))
    assert code == 0 and "2 residents in 1 households, 2 cards/tokens/PINs, 1 plates" in out


def test_allow_import_reads_excel_csv_in_utf8_with_bom_and_in_gbk(cli, tmp_path: Path):
    for name, data in [
        ("gbk.csv", "person,name,card\np-21,张三,88889991\n".encode("gbk")),
        ("bom.csv", "person,name,card\np-22,李四,88889992\n".encode("utf-8-sig")),
    ]:
        (tmp_path / name).write_bytes(data)
        code, out, err = cli("allow", "import", str(tmp_path / name))
        assert code == 0, err
        assert "1 residents" in out
    names = dict(sqlite3.connect(cli.store_path).execute("SELECT id, name FROM residents"))
    assert names == {"p-21": "张三", "p-22": "李四"}


def test_allow_import_refuses_unknown_gates_with_the_line(cli, tmp_path: Path):
    csv = tmp_path / "gates.csv"
    csv.write_text("person,card,gates\np-1,33334441,north-in\np-2,33334442,south\n")
    code, _, err = cli("allow", "import", str(csv))
    assert code == 2
    assert f"{csv}:3: gates: no such gate 'south' in the configuration (known gates: north-in)" in err
    _, out, _ = cli("allow", "list")
    assert "p-1" not in out, "nothing of a bad file is imported"


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (["--from", "2037-01-01", "--until", "2036-01-01"], "--until must be after --from"),
        (["--until", "2020-01-01"], "--until is already past"),
    ],
)
def test_allow_add_refuses_a_window_that_is_backwards_or_over(cli, window, message):
    code, _, err = cli("allow", "add", "--person", "p-3", "--card", "22345679", *window)
    assert code == 2 and message in err
    _, out, _ = cli("allow", "list")
    assert "p-3" not in out


@pytest.mark.parametrize("hours", ["nan", "1e300", "0"])
def test_pass_issue_refuses_hours_that_are_not_a_sensible_duration(cli, hours):
    code, _, err = cli("pass", "issue", "--plate", "津A12345", "--hours", hours)
    assert code == 2 and "--hours must be more than 0 and at most 8784" in err


@pytest.mark.parametrize(
    "window",
    [["--from", "2020-01-01T08:00", "--until", "2020-01-01T10:00"], ["--from", "2020-01-01", "--hours", "2"]],
)
def test_pass_issue_refuses_a_pass_that_is_already_over(cli, window):
    code, _, err = cli("pass", "issue", "--plate", "津A12345", *window)
    assert code == 2 and "which is already past" in err
    _, out, _ = cli("pass", "list", "--all", "--json")
    assert out == ""


def test_pass_issue_with_qr_list_and_revoke(cli):
    code, out, _ = cli(
        "pass", "issue", "--qr", "--hours", "2", "--gate", "north-in", "--entries", "2", "--host", "3-402"
    )
    assert code == 0 and "QR token: GH" in out and "█" in out, "the QR code is drawn in the terminal"
    pass_id = out.split("pass ", 1)[1].split()[0]
    code, out, _ = cli("pass", "issue", "--plate", "津A12345", "--kind", "delivery", "--json")
    assert json.loads(out)["kind"] == "delivery"
    code, out, _ = cli("pass", "list")
    assert pass_id in out and "0/2 entries" in out and "valid" in out
    assert cli("pass", "revoke", pass_id)[0] == 0
    code, out, _ = cli("pass", "list", "--all", "--json")
    states = {json.loads(line)["id"]: json.loads(line)["state"] for line in out.splitlines()}
    assert states[pass_id] == "revoked"
    assert cli("pass", "revoke", "nope")[0] == 2
    assert cli("pass", "issue", "--hours", "1")[0] == 2


def test_pass_revoke_takes_enough_of_an_id_to_tell_it_apart(cli):
    """As docs/access.md shows it (`pass revoke pass-01a2…`): people shorten the ids they type."""
    ids = []
    for plate in ("津A12345", "津B12345"):
        code, out, _ = cli("pass", "issue", "--plate", plate, "--hours", "2", "--json")
        ids.append(json.loads(out)["id"])
    common = next(i for i in range(len(ids[0])) if ids[0][i] != ids[1][i])
    code, _, err = cli("pass", "revoke", ids[0][:common])
    assert code == 2 and "fits 2 pass ids" in err and ids[0] in err and ids[1] in err
    code, out, _ = cli("pass", "revoke", ids[1][: common + 1])
    assert code == 0 and out.strip() == f"revoked pass {ids[1]}"
    _, out, _ = cli("pass", "list", "--all", "--json")
    states = {json.loads(line)["id"]: json.loads(line)["state"] for line in out.splitlines()}
    assert states == {ids[0]: "valid", ids[1]: "revoked"}


def test_pass_revoke_takes_the_end_of_an_id_and_never_a_blank_or_tiny_piece(cli):
    """Pass ids issued in the same minute begin alike; their end is the random part, as with
    `alerts ack`. A blank or too short piece revokes nothing, even when only one pass is there."""
    code, out, _ = cli("pass", "issue", "--plate", "津A12345", "--hours", "2", "--json")
    pass_id = json.loads(out)["id"]
    for piece in ("", " ", "pass-", pass_id[:7], pass_id[-3:]):
        code, _, err = cli("pass", "revoke", piece)
        assert code == 2 and "4 or more characters" in err, piece
    _, out, _ = cli("pass", "list", "--json")
    assert json.loads(out)["state"] == "valid"
    code, out, _ = cli("pass", "revoke", pass_id[-4:].upper())
    assert code == 0 and out.strip() == f"revoked pass {pass_id}"


@pytest.mark.parametrize("command", [["allow", "list"], ["pass", "list"], ["pass", "list", "--json"]])
def test_listings_read_the_store_and_never_create_one(cli, command):
    """A mistyped state_dir, or a gateway not started yet, must not get an empty store made by a
    listing that then reports 'nothing'."""
    code, out, err = cli(*command)
    assert code == 1 and "no store at" in err and out == ""
    assert not cli.store_path.exists()


def test_alerts_list_and_ack_records_an_event(cli):
    code, _, err = cli("alerts")
    assert code == 1 and "no store" in err
    factory = EventFactory("test-site", "gw-test")
    with Store(cli.store_path, synchronous="normal", events=factory) as store:
        raised = asyncio.run(
            AlertEngine(store, factory).raise_("gate.stuck", "gate.stuck:north-in", "north-in stuck")
        )
        card = "card.blocklisted:…1234"
        for _ in range(3):
            asyncio.run(AlertEngine(store, factory).raise_("card.blocklisted", card, "blocklisted card"))
    assert raised is not None
    alert_id = raised.payload.alert_id
    code, out, _ = cli("alerts")
    assert code == 0 and alert_id in out and "critical" in out and "north-in stuck" in out
    code, out, _ = cli("status")
    assert "open alerts: 2 (2 not acknowledged)" in out
    assert f"  [critical] raised {alert_id}: north-in stuck\n" in out
    assert ": blocklisted card ×3\n" in out, "status counts a moment's repeats as alerts does"
    code, out, _ = cli("alerts", "ack", alert_id, "--by", "guard-3")
    assert code == 0 and "acknowledged" in out
    code, out, _ = cli("status")
    assert "open alerts: 2 (1 not acknowledged)" in out and f"acknowledged {alert_id}" in out
    code, out, _ = cli("alerts", "ack", alert_id)
    assert "already acknowledged" in out
    code, out, _ = cli("alerts", "--all", "--json")
    assert json.loads(out.splitlines()[0])["acked_by"] == "guard-3"
    with Store(cli.store_path, synchronous="normal", events=factory) as store:
        (ack,) = store.events(types=["alert.acknowledged"])
    assert ack.payload.alert_id == alert_id and ack.payload.by == "guard-3"
    code, _, err = cli("alerts", "ack", "missing")
    assert code == 2 and "no alert 'missing'" in err, "a mistyped id is a usage error, like `pass revoke`"


def test_alerts_ack_takes_a_piece_of_the_id_and_says_who_did_it_first(cli):
    """A guard types the end of the id as listed, not all 36 characters; a second guard is told
    who acknowledged it and when; a piece that fits two alerts names both and changes nothing."""
    factory = EventFactory("test-site", "gw-test")
    with Store(cli.store_path, synchronous="normal", events=factory) as store:
        engine = AlertEngine(store, factory, clock=lambda: 1893456000.0)
        raised = [
            asyncio.run(engine.raise_("gate.stuck", f"gate.stuck:{gate}", f"{gate} stuck"))
            for gate in ("north-in", "south-out")
        ]
    first, second = (event.payload.alert_id for event in raised if event is not None)
    code, out, err = cli("alerts", "ack", first[:4])
    assert code == 2 and first in err and second in err and "give more of the id" in err
    code, out, err = cli("alerts", "ack", first[-3:])
    assert code == 2 and "its first or last 4 or more characters" in err, "too short a piece: say so"
    code, out, _ = cli("alerts", "ack", first[-6:], "--by", "张保安")
    assert code == 0 and out.startswith(f"acknowledged {first}: north-in stuck")
    code, out, _ = cli("alerts", "ack", first[-6:], "--by", "guard-4")
    assert code == 0 and "already acknowledged by 张保安 at" in out
    with pytest.raises(SystemExit) as refused:
        cli("alerts", "ack", second, "--by", "  ")
    assert refused.value.code == 2, "the record must say who acknowledged"
    with Store(cli.store_path, synchronous="normal", events=factory) as store:
        acks = store.events(types=["alert.acknowledged"])
    assert [(a.payload.alert_id, a.payload.by) for a in acks] == [(first, "张保安")]


def test_times_are_typed_and_shown_in_the_site_time_zone(cli, tmp_path: Path):
    """The compound is in Asia/Shanghai (UTC+8): 08:00 there is 00:00 UTC."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(config.read_text().replace("}", ", timezone: Asia/Shanghai}", 1))
    midnight_utc = 1893456000_000  # 2030-01-01T00:00Z
    code, out, _ = cli("pass", "issue", "--plate", "津A12345", "--from", "2030-01-01T08:00", "--hours", "2")
    assert code == 0 and "2030-01-01 08:00 CST → 2030-01-01 10:00 CST" in out
    code, out, _ = cli("pass", "list", "--json")
    assert json.loads(out)["valid_from_ms"] == midnight_utc
    assert cli("allow", "add", "--person", "p-5", "--card", "55556666", "--until", "2030-01-01T08:00")[0] == 0
    sheet = tmp_path / "residents.csv"
    sheet.write_text("person,plate,valid_until\np-6,津A66666,2030-01-01T08:00\n", encoding="utf-8")
    assert cli("allow", "import", str(sheet))[0] == 0
    code, out, _ = cli("allow", "list", "--json")
    assert [json.loads(line)["valid_until_ms"] for line in out.splitlines()] == [midnight_utc] * 2
    code, out, _ = cli("allow", "list")
    assert out.count("2030-01-01 08:00") == 2
    factory = EventFactory("test-site", "gw-test")
    with Store(cli.store_path, synchronous="normal", events=factory) as store:
        engine = AlertEngine(store, factory, clock=lambda: midnight_utc / 1000)
        asyncio.run(engine.raise_("gate.stuck", "gate.stuck:north-in", "north-in stuck"))
    code, out, _ = cli("alerts")
    assert code == 0 and "01-01 08:00:00" in out


def test_alerts_follow_prints_new_alert_events(tmp_path: Path):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    store = Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory)
    process = start_cli(config, "alerts", "--follow")
    try:
        wait_for_line(process, b"no open alerts", 30)
        asyncio.run(
            AlertEngine(store, factory).raise_("gate.stuck", "gate.stuck:north-in", "north-in arm stuck")
        )
        wait_for_line(process, b"north-in arm stuck", 30)
    finally:
        process.terminate()
        process.wait(10)
        store.close()


def test_alerts_follow_json_prints_alert_records_as_each_event_left_them(tmp_path: Path):
    """One shape for a guard screen reading --json: the listing's alert records, each followed
    change the same record as of that change (raised, then acknowledged, then cleared)."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        engine = AlertEngine(store, factory)
        asyncio.run(engine.raise_("gate.held_open", "gate.held_open:east", "east door held open"))
        process = start_cli(config, "alerts", "--follow", "--json")
        try:
            listed = json.loads(wait_for_line(process, b"east door held open", 30))
            asyncio.run(engine.raise_("gate.stuck", "gate.stuck:north-in", "north-in arm stuck"))
            stuck = engine.find("gate.stuck:north-in")
            assert stuck is not None
            asyncio.run(engine.acknowledge(stuck.alert_id, by="guard-2"))
            asyncio.run(engine.clear("gate.stuck:north-in", reason="arm freed"))
            followed = [json.loads(wait_for_line(process, b"north-in arm stuck", 30)) for _ in range(3)]
        finally:
            process.terminate()
            process.wait(10)
    assert listed["state"] == "raised" and "event" not in listed
    assert [(r["event"], r["state"]) for r in followed] == [
        ("alert.raised", "raised"),
        ("alert.acknowledged", "acknowledged"),
        ("alert.cleared", "cleared"),
    ]
    assert set(followed[0]) == set(listed) | {"event", "seq"}
    assert followed[0]["acked_by"] is None and followed[1]["acked_by"] == "guard-2"


def fill_until(store: Store, factory: EventFactory, event_type: str) -> None:
    """Append occupancy samples until the store has recorded a store.quota event of `event_type`."""
    for count in range(20_000):
        store.append(factory.make("occupancy.sample", {"zone": "lot", "count": count % 50}))
        if count % 100 == 0 and any(
            e.payload.key == "store.quota" for e in store.events(types=[event_type], limit=5)
        ):
            return
    raise AssertionError(f"no store.quota {event_type} after 20,000 samples")


def test_alerts_follow_prints_the_alerts_the_store_raises_itself(tmp_path: Path):
    """The store raises and clears store.quota (and store.corrupt) itself, not through the alert
    engine: a guard following the alerts must see them raised and cleared all the same."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    factory = EventFactory("test-site", "gw-test")
    path = tmp_path / "state" / "gatehouse.db"
    with Store(path, synchronous="normal", events=factory, quota_bytes=1_000_000) as store:
        asyncio.run(AlertEngine(store, factory).raise_("gate.stuck", "gate.stuck:north-in", "north-in stuck"))
        process = start_cli(config, "alerts", "--follow", "--json")
        try:
            wait_for_line(process, b"north-in stuck", 30)
            fill_until(store, factory, "alert.raised")  # unsynced telemetry dropped: raised
            store.mark_synced(through={int(Priority.TELEMETRY): store.last_seq})
            fill_until(store, factory, "alert.cleared")  # only synced rows to drop: cleared
            (quota,) = [e for e in store.events(types=["alert.raised"]) if e.payload.kind == "store.quota"]
            followed = [json.loads(wait_for_line(process, b"store.quota", 30)) for _ in range(2)]
        finally:
            process.terminate()
            process.wait(10)
    assert [(r["event"], r["state"], r["kind"], r["alert_id"]) for r in followed] == [
        ("alert.raised", "raised", "store.quota", quota.payload.alert_id),
        ("alert.cleared", "cleared", "store.quota", quota.payload.alert_id),
    ]
    assert followed[0]["cleared_ms"] is None and followed[1]["cleared_ms"] is not None
