"""The rules on observations and on time: decisions recorded with their reasons, reader and
barrier driven, tailgating, blocklisted and returning unknown plates, held-open barriers, fire
lanes, offline devices, disk and backlog."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.base import (
    CardPresented,
    GateStateChanged,
    OpenGate,
    PlateRead,
    ReaderFeedback,
    Tamper,
    VehiclePassage,
    ZoneSample,
)
from edge.config_loader import parse_config
from edge.errors import StoreError, StoreFull
from edge.events import EventFactory
from edge.rules.alerts import AlertEngine
from edge.rules.engine import Rules
from edge.store import Store
from tests.support.pty import eventually
from tests.support.store_faults import failing_inserts, working_inserts
from tests.unit.rules.conftest import CONFIG, SALT, Clock, Rig, make_rig


def run(rig: Rig, *observations: Any) -> None:
    async def feed() -> None:
        for observation in observations:
            await rig.rules.handle(observation)
        await rig.rules.settled()

    asyncio.run(feed())


def test_a_grant_is_recorded_then_opens_the_barrier_and_lights_the_reader(rig: Rig):
    rig.allow.add_resident("p-1", household="3-402")
    rig.allow.add_credential("12345678", "p-1")
    run(rig, CardPresented("reader", "12345678"), CardPresented("reader", "87654321"))
    granted, denied = rig.events("access.*")
    assert (granted.type, granted.payload.reason, granted.payload.household) == (
        "access.granted",
        "resident",
        "3-402",
    )
    assert granted.payload.detail.startswith("card …5678 of resident p-1")
    assert (denied.type, denied.payload.reason) == ("access.denied", "unknown")
    assert [(d, type(c).__name__) for d, c in rig.commands] == [
        ("barrier", "OpenGate"),
        ("reader", "ReaderFeedback"),
        ("reader", "ReaderFeedback"),
    ]
    assert [c.granted for _, c in rig.commands if isinstance(c, ReaderFeedback)] == [True, False]


def test_a_blocklisted_card_is_denied_and_raises_a_critical_alert(rig: Rig):
    rig.allow.block("card", "66666666", reason="reported stolen")
    run(rig, CardPresented("reader", "66666666"))
    (denied,) = rig.events("access.denied")
    (alert,) = rig.events("alert.raised")
    assert denied.payload.reason == "blocklisted"
    assert (alert.payload.kind, alert.payload.severity, alert.payload.gate) == (
        "card.blocklisted",
        "critical",
        "north-in",
    )
    assert "66666666" not in alert.model_dump_json(), "raw card numbers never leave the reader"


def test_tailgating_is_more_passages_than_grants(rig: Rig):
    rig.allow.add_plate("津A12345", "p-1")
    run(rig, PlateRead("cam", "津A12345", 0.97), VehiclePassage("barrier"))
    assert rig.alert_kinds() == []
    run(rig, VehiclePassage("barrier"))
    assert rig.alert_kinds() == ["gate.tailgating"]
    rig.clock.advance(5)
    run(rig, PlateRead("cam", "津A12345", 0.97))
    rig.clock.advance(31)
    run(rig, VehiclePassage("barrier"))
    (alert,) = [a for a in rig.alerts.open_alerts() if a.kind == "gate.tailgating"]
    assert alert.repeats == 1, "a grant older than the window does not cover a passage"


def test_a_restart_between_a_grant_and_its_passage_is_not_tailgating(tmp_path: Path):
    """The gateway restarts (or reloads its configuration) while the granted car is still
    under the barrier: its passage is the grant's, read back from the store; a second car
    behind it is still a tailgater, and a grant older than the window covers nothing."""
    first = make_rig(tmp_path, clock=Clock(time.time()))
    first.allow.add_plate("津A12345", "p-1")
    run(first, PlateRead("cam", "津A12345", 0.97))

    def restarted(rig: Rig) -> Rig:
        return dataclasses.replace(
            rig,
            rules=Rules(
                rig.config, rig.store, rig.factory, rig.alerts, lambda *a: asyncio.sleep(0), clock=rig.clock
            ),
        )

    second = restarted(first)
    run(second, VehiclePassage("barrier"))
    assert second.alert_kinds() == []
    run(second, VehiclePassage("barrier"))
    assert second.alert_kinds() == ["gate.tailgating"]
    run(second, PlateRead("cam", "津A12345", 0.97))
    second.clock.advance(31)
    third = restarted(second)
    run(third, VehiclePassage("barrier"))
    (alert,) = [a for a in third.alerts.open_alerts() if a.kind == "gate.tailgating"]
    assert alert.repeats == 1, "a grant older than the window is not read back"
    first.store.close()


def test_an_unknown_plate_returning_raises_once(rig: Rig):
    for _ in range(4):
        run(rig, PlateRead("cam", "京Q55555", 0.93))
        rig.clock.advance(600)
    assert rig.alert_kinds() == ["plate.unknown_repeat"]
    (alert,) = rig.alerts.open_alerts()
    assert alert.repeats == 1 and "京Q55555" in alert.message


def test_a_barrier_opened_without_a_command_then_held_open(rig: Rig):
    run(rig, GateStateChanged("barrier", "open", "closed", commanded=False))
    assert rig.alert_kinds() == ["gate.forced_open"]
    rig.clock.advance(30)
    asyncio.run(rig.rules.tick())
    assert rig.alert_kinds() == ["gate.forced_open"]
    rig.clock.advance(31)
    asyncio.run(rig.rules.tick())
    assert rig.alert_kinds() == ["gate.forced_open", "gate.held_open"]
    run(rig, GateStateChanged("barrier", "closed", "closing", commanded=True))
    assert rig.alerts.open_alerts() == []
    assert [e.payload.key for e in rig.events("alert.cleared")] == [
        "gate.forced_open:north-in",
        "gate.held_open:north-in",
    ]


def test_a_barrier_reopened_as_it_closes_starts_a_new_opening(rig: Rig):
    """Busy traffic: the arm starts down and the next car's grant lifts it again before it is
    closed. That is two openings of 40 s, not one of 80 s held open."""
    run(rig, GateStateChanged("barrier", "open", "opening", commanded=True))
    rig.clock.advance(40)
    run(rig, GateStateChanged("barrier", "closing", "open", commanded=True))
    run(rig, GateStateChanged("barrier", "opening", "closing", commanded=True))
    run(rig, GateStateChanged("barrier", "open", "opening", commanded=True))
    rig.clock.advance(40)
    asyncio.run(rig.rules.tick())
    assert rig.alert_kinds() == []
    rig.clock.advance(21)
    asyncio.run(rig.rules.tick())
    assert rig.alert_kinds() == ["gate.held_open"], "the second opening is held open all the same"


def test_a_commanded_opening_is_not_forced(rig: Rig):
    run(rig, GateStateChanged("barrier", "opening", "closed", commanded=True))
    assert rig.alert_kinds() == []


def test_the_fire_lane_is_watched_by_dwell_time(tmp_path: Path):
    rig = make_rig(tmp_path, "rules: {fire_lanes: [fire-lane]}")
    try:
        run(rig, ZoneSample("yard-cam", "fire-lane", 1, plate="津F00001"))
        rig.clock.advance(9 * 60)
        run(rig, ZoneSample("yard-cam", "fire-lane", 1))
        asyncio.run(rig.rules.tick())
        assert rig.alert_kinds() == []
        rig.clock.advance(60)
        asyncio.run(rig.rules.tick())
        assert rig.alert_kinds() == ["fire_lane.blocked"]
        run(rig, ZoneSample("yard-cam", "fire-lane", 0))
        assert rig.alerts.open_alerts() == []
        run(rig, ZoneSample("yard-cam", "parking", 3))
        assert len(rig.events("occupancy.sample")) == 4
    finally:
        rig.store.close()


def test_telemetry_does_not_wait_for_its_commit(rig: Rig):
    """A zone sample is handed to the store and the rules go on to the next observation: with
    the store's writer held, handling it still returns; it is committed once the writer is
    free, before anything submitted after it."""
    release = threading.Event()
    holder = threading.Thread(target=rig.store.write, args=(lambda conn: release.wait(10),))
    holder.start()

    async def feed() -> None:
        await asyncio.wait_for(rig.rules.handle(ZoneSample("yard-cam", "parking", 3)), 2)
        assert rig.events("occupancy.sample") == []
        release.set()
        await rig.rules.settled()

    try:
        asyncio.run(feed())
    finally:
        release.set()
        holder.join(10)
    assert [e.payload.count for e in rig.events("occupancy.sample")] == [3]


def test_offline_after_a_grace_period_by_device_role(rig: Rig):
    asyncio.run(rig.rules.device_availability("cam", False, "rtsp timeout"))
    asyncio.run(rig.rules.device_availability("reader", False, "no answer"))
    assert rig.alert_kinds() == []
    rig.clock.advance(31)
    asyncio.run(rig.rules.tick())
    assert sorted(rig.alert_kinds()) == ["camera.offline", "device.offline"]
    asyncio.run(rig.rules.device_availability("cam", True, "frames again"))
    assert [a.kind for a in rig.alerts.open_alerts()] == ["device.offline"]
    asyncio.run(rig.rules.device_availability("barrier", False, "gave up", alert=True))
    assert rig.alert_kinds()[-1] == "device.offline"


def test_tamper_kind_follows_the_device(rig: Rig):
    run(rig, Tamper("reader", True, "cover open"), Tamper("cam", True, "picture black"))
    assert rig.alert_kinds() == ["reader.tamper", "camera.tampered"]
    run(rig, Tamper("reader", False))
    assert [a.kind for a in rig.alerts.open_alerts()] == ["camera.tampered"]


def test_disk_nearly_full(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 95, 5))  # type: ignore[attr-defined]
    asyncio.run(rig.rules.tick())
    assert rig.alert_kinds() == ["disk.nearly_full"]
    (alert,) = rig.alerts.open_alerts()
    assert "once it is full, cards and plates are no longer decided" in alert.message, "the guards know"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 50, 50))  # type: ignore[attr-defined]
    asyncio.run(rig.rules.tick())
    assert rig.alerts.open_alerts() == []


def test_an_old_backlog_raises_when_an_uplink_is_configured(tmp_path: Path):
    rig = make_rig(tmp_path, "mqtt: {host: 127.0.0.1}\nrules: {alerts: {backlog_max_age_min: 30}}")
    try:
        rig.store.append(rig.factory.make("occupancy.sample", {"zone": "yard", "count": 1}))
        rig.clock.now = rig.store.events(limit=1)[0].ts_ms / 1000 + 31 * 60
        asyncio.run(rig.rules.tick())
        assert "sync.backlog_old" in rig.alert_kinds()
        rig.store.mark_synced([r[0] for r in rig.store.read().execute("SELECT seq FROM outbox")])
        asyncio.run(rig.rules.tick())
        assert "sync.backlog_old" not in [a.kind for a in rig.alerts.open_alerts()]
    finally:
        rig.store.close()


def test_operator_open_is_recorded_and_covers_the_passage(rig: Rig):
    event = asyncio.run(rig.rules.open_gate("north-in", by="guard-2", reason="ambulance"))
    assert (event.payload.reason, event.payload.subject) == ("operator", "guard-2")
    from edge.cli.events import summary

    assert summary(event) == "north-in: operator: opened by guard-2: ambulance", "as events lists it"
    assert rig.commands[-1][0] == "barrier" and isinstance(rig.commands[-1][1], OpenGate)
    run(rig, VehiclePassage("barrier"))
    assert rig.alert_kinds() == []
    with pytest.raises(KeyError):
        asyncio.run(rig.rules.open_gate("south"))


def test_a_full_store_is_logged_once_by_the_periodic_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The checks run every few seconds: a disk alert that cannot be recorded because the store
    is full is said once, not with a traceback at every check."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 99, 1))  # type: ignore[attr-defined]
    extra = "rules:\n  alerts:\n    check_interval_s: 0.05\n"
    config = parse_config(CONFIG.format(salt=SALT, state=tmp_path / "state", extra=extra), "test.yaml")
    factory = EventFactory(config.site.id, config.gateway.id)
    store = Store(
        tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory, max_page_count=40
    )
    try:
        with pytest.raises(StoreFull):  # gate states are not telemetry: nothing can be evicted
            for _ in range(5000):
                store.append(factory.make("gate.state", {"gate": "north-in", "state": "open"}, device="arm"))

        async def commander(device: str, command: object) -> None:
            return None

        rules = Rules(config, store, factory, AlertEngine(store, factory), commander)

        async def some_checks() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rules.run_checks(), 0.5)

        with caplog.at_level(logging.INFO, logger="edge.rules.engine"):
            asyncio.run(some_checks())
        said = [r for r in caplog.records if r.name == "edge.rules.engine"]
        assert [r.getMessage().split(":")[0] for r in said] == [
            "periodic rule checks cannot record their alerts"
        ]
    finally:
        store.close()


def test_a_card_read_twice_in_a_second_is_one_entry(rig: Rig):
    """Readers and converters repeat a read while the card is held to them: the repeat is the
    same presentation, not a second entry on the visitor's pass nor a second opening."""
    rig.allow.issue_pass(token="QR-VISIT-1", valid_until_ms=int(rig.clock() * 1000) + 7200_000, max_entries=2)
    run(rig, CardPresented("reader", "QR-VISIT-1", "qr"))
    rig.clock.advance(0.6)
    run(rig, CardPresented("reader", "QR-VISIT-1", "qr"))
    (pass_record,) = rig.allow.passes()
    assert pass_record.used == 1
    assert [e.type for e in rig.events("access.*")] == ["access.granted"]
    assert [type(c).__name__ for _, c in rig.commands].count("OpenGate") == 1
    assert [c.granted for _, c in rig.commands if isinstance(c, ReaderFeedback)] == [True, True]
    rig.clock.advance(600)
    run(rig, CardPresented("reader", "QR-VISIT-1", "qr"))
    assert rig.allow.passes()[0].used == 2, "a later presentation is the second entry"


def test_a_repeated_read_at_an_anti_passback_gate_is_not_refused(tmp_path: Path):
    rig = make_rig(tmp_path, "rules: {anti_passback: [{entry: north-in, exit: north-out}]}")
    try:
        rig.allow.add_credential("900", "p-9")
        run(rig, CardPresented("reader", "900"))
        rig.clock.advance(0.5)
        run(rig, CardPresented("reader", "900"))
        assert [(e.type, e.payload.reason) for e in rig.events("access.*")] == [
            ("access.granted", "resident")
        ]
        assert [c.granted for _, c in rig.commands if isinstance(c, ReaderFeedback)] == [True, True]
        rig.clock.advance(60)
        run(rig, CardPresented("reader", "900"))
        assert rig.events("access.denied")[0].payload.reason == "anti_passback"
    finally:
        rig.store.close()


def test_a_grant_the_store_could_not_record_is_decided_again_at_the_next_read(rig: Rig):
    """A grant that was not recorded was not acted on (the barrier stayed shut): the card held
    to the reader again is a new presentation, decided and recorded, not a repeat answered
    green without the barrier opening."""
    rig.allow.add_credential("12345678", "p-1")
    failing_inserts(rig.store, "access.%", "database or disk is full")

    async def feed() -> None:
        with pytest.raises(StoreFull):
            await rig.rules.handle(CardPresented("reader", "12345678"))
        working_inserts(rig.store)
        rig.clock.advance(0.6)
        await rig.rules.handle(CardPresented("reader", "12345678"))

    asyncio.run(feed())
    assert [e.type for e in rig.events("access.*")] == ["access.granted"]
    assert [(d, type(c).__name__) for d, c in rig.commands] == [
        ("barrier", "OpenGate"),
        ("reader", "ReaderFeedback"),
    ]


def test_a_decision_whose_event_cannot_be_written_changes_nothing(rig: Rig):
    """The pass's entry and the event that records it are one commit: a failed write (a bad
    card, a crash) leaves neither, so the visitor's single entry is still there."""
    now = int(rig.clock() * 1000)
    rig.allow.issue_pass(token="QR-ONCE", valid_until_ms=now + 7200_000, max_entries=1, pass_id="v-1")
    failing_inserts(rig.store, "access.%", "disk I/O error")
    with pytest.raises(StoreError, match="disk I/O error"):
        run(rig, CardPresented("reader", "QR-ONCE", "qr"))
    working_inserts(rig.store)
    assert rig.store.read().execute("SELECT used FROM passes WHERE id = 'v-1'").fetchone() == (0,)
    rig.clock.advance(5)
    run(rig, CardPresented("reader", "QR-ONCE", "qr"))
    granted = rig.events("access.*")
    assert [(e.type, e.payload.reason) for e in granted] == [("access.granted", "pass")]
    assert "entry 1 of 1" in granted[0].payload.detail
    assert [type(c).__name__ for _, c in rig.commands] == ["OpenGate", "ReaderFeedback"]


def test_a_repeated_plate_read_is_one_credit_against_tailgating(rig: Rig):
    rig.allow.add_plate("津A12345", "p-1")
    run(rig, PlateRead("cam", "津A12345", 0.97))
    rig.clock.advance(1)
    run(rig, PlateRead("cam", "津A12345", 0.95))
    assert [type(c).__name__ for _, c in rig.commands] == ["OpenGate"]
    run(rig, VehiclePassage("barrier"), VehiclePassage("barrier"))
    assert rig.alert_kinds() == ["gate.tailgating"], "one car in, the second passage is a tailgater"


def test_a_gate_closing_while_its_held_open_alert_is_being_raised_clears_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
):
    """The periodic checks raise `gate.held_open` while the rules handle the barrier closing:
    the clear must not slip in between the alert's event and its row, or the alert stays open
    for ever (the barrier is closed; nothing would clear it again)."""
    clearing = asyncio.Event()
    append = rig.store.append_async
    clear = rig.alerts.clear

    async def append_then_let_the_gate_close(event: Any) -> Any:
        appended = await append(event)
        if event.type == "alert.raised":
            await clearing.wait()
        return appended

    async def clear_announced(key: str, reason: str = "") -> Any:
        clearing.set()
        return await clear(key, reason)

    monkeypatch.setattr(rig.store, "append_async", append_then_let_the_gate_close)
    monkeypatch.setattr(rig.alerts, "clear", clear_announced)

    async def scenario() -> None:
        await rig.rules.handle(GateStateChanged("barrier", "open", "opening", commanded=True))
        rig.clock.advance(61)
        checks = asyncio.create_task(rig.rules.tick())
        await eventually(lambda: rig.events("alert.raised"), what="the held-open alert's event")
        await rig.rules.handle(GateStateChanged("barrier", "closed", "closing", commanded=True))
        await checks

    asyncio.run(scenario())
    assert rig.alert_kinds() == ["gate.held_open"]
    assert rig.alerts.open_alerts() == [], "the barrier is closed: its held-open alert is over"


def test_a_fire_lane_freed_after_a_restart_clears_its_alert(tmp_path: Path):
    before = make_rig(tmp_path, "rules: {fire_lanes: [fire-lane]}")
    run(before, ZoneSample("yard-cam", "fire-lane", 1, plate="津F00001"))
    before.clock.advance(600)
    asyncio.run(before.rules.tick())
    assert before.alert_kinds() == ["fire_lane.blocked"]
    before.store.close()
    after = make_rig(tmp_path, "rules: {fire_lanes: [fire-lane]}", clock=before.clock)
    try:
        run(after, ZoneSample("yard-cam", "fire-lane", 0))
        assert after.alerts.open_alerts() == [], (
            "the lane is free: the alert raised before the restart is over"
        )
    finally:
        after.store.close()


def test_a_blocklisted_card_is_alerted_before_the_reader_answers(rig: Rig):
    """The reader's red LED is a courtesy; the guards' critical alert must not wait for a reader
    that does not answer (cut, tampered with) or fail with it."""
    rig.allow.block("card", "66666666", reason="reported stolen")

    async def scenario() -> None:
        answered = asyncio.Event()

        async def reader_not_answering(device: str, command: Any) -> None:
            rig.commands.append((device, command))
            await answered.wait()
            raise RuntimeError("the reader did not answer")

        rig.rules.commander = reader_not_answering
        handling = asyncio.create_task(rig.rules.handle(CardPresented("reader", "66666666")))
        await eventually(lambda: rig.commands, what="the red LED to be asked for")
        await eventually(lambda: rig.events("alert.raised"), 5, "the blocklist alert")
        answered.set()
        with pytest.raises(RuntimeError):
            await handling

    asyncio.run(scenario())
    assert rig.alert_kinds() == ["card.blocklisted"]


def test_a_grant_the_full_store_could_not_record_neither_uses_the_pass_nor_counts_as_inside(
    tmp_path: Path,
) -> None:
    """Nothing acts on a decision that is not recorded: the barrier stays shut. Then the visitor
    has not used an entry of the pass, and the resident has not passed in, so that they are let
    in once the store has room again rather than refused as `exhausted` or `anti_passback`."""
    extra = "rules: {anti_passback: [{entry: north-in, exit: north-out}]}"
    config = parse_config(CONFIG.format(salt=SALT, state=tmp_path / "state", extra=extra), "test.yaml")
    factory = EventFactory(config.site.id, config.gateway.id)
    path = tmp_path / "state" / "gatehouse.db"
    rig = make_rig(tmp_path, extra)
    rig.allow.issue_pass(token="QR-VISIT-1", valid_until_ms=int(rig.clock() * 1000) + 7200_000, max_entries=1)
    rig.allow.add_credential("900", "p-9")
    rig.store.close()

    def decide(store: Store, *observations: Any) -> list[tuple[str, Any]]:
        commands: list[tuple[str, Any]] = []

        async def commander(device: str, command: Any) -> None:
            commands.append((device, command))

        rules = Rules(
            config, store, factory, AlertEngine(store, factory, clock=rig.clock), commander, clock=rig.clock
        )

        async def feed() -> None:
            for observation in observations:
                with contextlib.suppress(StoreFull):
                    await rules.handle(observation)

        asyncio.run(feed())
        return commands

    full = Store(path, synchronous="normal", events=factory, max_page_count=40)
    try:
        with pytest.raises(StoreFull):
            for _ in range(5000):
                full.append(factory.make("gate.state", {"gate": "north-in", "state": "open"}, device="arm"))
        commands = decide(full, CardPresented("reader", "QR-VISIT-1", "qr"), CardPresented("reader", "900"))
        assert not [c for _, c in commands if isinstance(c, OpenGate)]
    finally:
        full.close()
    rig.clock.advance(60)
    roomy = Store(path, synchronous="normal", events=factory)
    try:
        decide(roomy, CardPresented("reader", "QR-VISIT-1", "qr"), CardPresented("reader", "900"))
        decisions = [(e.type, e.payload.reason) for e in roomy.events(types=["access.*"], limit=10)]
        assert decisions == [("access.granted", "pass"), ("access.granted", "resident")]
    finally:
        roomy.close()


def test_the_reasons_give_times_in_the_sites_time_zone(tmp_path: Path):
    """Guards in Tianjin read `expired 2026-11-25 02:30 CST`, as `gatehouse pass list` shows the
    pass, not the UTC time eight hours off."""
    text = CONFIG.format(salt=SALT, state=tmp_path / "state", extra="")
    config = parse_config(
        text.replace("home_province: 津}", "home_province: 津, timezone: Asia/Shanghai}"), "t.yaml"
    )
    rig = make_rig(tmp_path)
    try:
        rig.allow.add_credential("222", "p-2", valid_until_ms=int(rig.clock() * 1000))
        rules = Rules(config, rig.store, rig.factory, rig.alerts, rig.rules.commander, clock=rig.clock)
        asyncio.run(rules.handle(CardPresented("reader", "222")))
        (denied,) = rig.events("access.denied")
        assert denied.payload.detail == "card …222: expired 2026-11-25 02:30 CST"
    finally:
        rig.store.close()
