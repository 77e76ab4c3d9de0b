"""`gatehouse backlog`: what waits to be synced, in the order the uplink sends it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.events import EventFactory, Priority
from edge.instance import InstanceLock
from edge.store import Store

CONFIG = (
    "site: {{id: test-site, salt: test-salt-long-enough}}\ngateway: {{id: gw-test, state_dir: {state}}}\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


def test_backlog_shows_what_waits_in_sending_order(config: Path, tmp_path: Path, capsys) -> None:
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        samples = [
            store.append(factory.make("occupancy.sample", {"zone": "lot", "count": n})) for n in range(3)
        ]
        gate = store.append(
            factory.make("gate.state", {"gate": "north-in", "state": "open", "previous": "opening"})
        )
        alert = store.append(
            factory.make("alert.raised", {"alert_id": "a1", "kind": "gate.forced_open", "key": "north-in"})
        )

        assert main(["--config", str(config), "backlog", "--list", "2"]) == 0
        out = capsys.readouterr().out
        assert "5 events wait to be synced" in out
        order = [out.index(t) for t in ("alert.raised", "gate.state", "occupancy.sample")]
        assert order == sorted(order), out
        assert "uplink: none: the configuration has no mqtt: section" in out
        upcoming = out.split("next 2 to be sent:")[1].splitlines()[1:]
        assert [f" {alert.seq} " in upcoming[0], f" {gate.seq} " in upcoming[1]] == [True, True], upcoming

        store.mark_synced(through={int(Priority.TELEMETRY): samples[-1].seq})
        status = {
            "state": "online",
            "sent": 3,
            "acked": 3,
            "resent": 0,
            "last_puback": "2026-11-26T02:00:00Z",
        }
        store.update_state(kv={"uplink.status": json.dumps(status)})

        assert main(["--config", str(config), "backlog", "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["count"] == 2
        assert [(t["type"], t["class"], t["count"]) for t in document["by_type"]] == [
            ("alert.raised", "alert", 1),
            ("gate.state", "state", 1),
        ]
        assert document["uplink"]["state"] == "online"

        store.mark_synced([alert.seq, gate.seq])
        lock = InstanceLock(tmp_path / "state")
        lock.acquire()
        try:
            assert main(["--config", str(config), "backlog"]) == 0
        finally:
            lock.release()
        out = capsys.readouterr().out
        assert "nothing waits" in out
        assert "uplink (last report): online" in out and "last PUBACK 2026-11-26 02:00:00 UTC" in out
        # the gateway killed: its last report still says online, which is no longer so
        assert main(["--config", str(config), "backlog"]) == 0
        assert "uplink (last report, before the gateway stopped): online" in capsys.readouterr().out


def test_backlog_names_the_uplink_times_in_the_site_time_zone_and_a_missing_uplink(
    tmp_path: Path, capsys
) -> None:
    """As `gatehouse status` does; and without `mqtt:` nothing is sent, so the backlog does not
    ask whether a broker was reached."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        "site: {id: test-site, salt: test-salt-long-enough, timezone: Asia/Shanghai}\n"
        f"gateway: {{id: gw-test, state_dir: {tmp_path / 'state'}}}\n"
    )
    factory = EventFactory("test-site", "gw-test")
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory) as store:
        store.append(factory.make("gate.state", {"gate": "north-in", "state": "open", "previous": "opening"}))
        assert main(["--config", str(config), "backlog"]) == 0
        out = capsys.readouterr().out
        assert "has the gateway connected to a broker" not in out
        assert "uplink: none: the configuration has no mqtt: section" in out and "gatehouse provision" in out
        status = {
            "state": "online",
            "connected_since": "2026-11-26T01:30:00.000Z",
            "last_puback": "2026-11-26T02:00:00Z",
        }
        store.update_state(kv={"uplink.status": json.dumps(status)})
        assert main(["--config", str(config), "backlog"]) == 0
        out = capsys.readouterr().out
        assert "connected since 2026-11-26 09:30:00 CST; last PUBACK 2026-11-26 10:00:00 CST" in out


def test_backlog_counts_the_pictures_still_to_send(config: Path, tmp_path: Path, capsys) -> None:
    with Store(tmp_path / "state" / "gatehouse.db", synchronous="normal") as store:
        sent, _ = store.put_attachment(b"a crop the community has")
        store.put_attachment(b"a crop still here" * 100)
        too_large, _ = store.put_attachment(b"a snapshot too large to send")
        store.mark_uploaded([sent], {too_large: "300000 bytes, more than a message may carry (262144)"})
        assert main(["--config", str(config), "backlog"]) == 0
        out = capsys.readouterr().out
        assert "pictures: 1 (0.0 MB) wait to be sent after the events; the oldest for 0 s" in out
        assert "pictures not sent: 1 (too large for a message, or the file gone" in out
        assert main(["--config", str(config), "backlog", "--json"]) == 0
        pictures = json.loads(capsys.readouterr().out)["pictures"]
        assert (pictures["count"], pictures["bytes"], pictures["skipped"]) == (1, 1700, 1)


def test_backlog_refuses_a_negative_count(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "backlog", "--list", "-3"])
    assert exit_info.value.code == 2
    assert "is not a whole number of 0 or more" in capsys.readouterr().err
