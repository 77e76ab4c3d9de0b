"""The alert engine: dedup by key, raised → acknowledged → cleared with an event for each step,
a rate limit per kind, moments that clear by themselves, sirens on relay outputs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Command, SetOutput
from edge.errors import StoreError
from edge.rules.alerts import KINDS, OUTPUT_RETRY_S, UnknownAlert
from tests.support.store_faults import failing_inserts, working_inserts
from tests.unit.rules.conftest import Rig, make_rig

SIREN = """\
rules:
  alerts:
    max_per_kind_per_min: 3
    momentary_clear_min: 10
    outputs:
      - {device: relay, output: siren, severities: [critical], hold_s: 60}
"""


def test_one_open_alert_per_key_and_the_whole_lifecycle(rig: Rig):
    async def scenario() -> None:
        raised = await rig.alerts.raise_(
            "gate.forced_open", "gate.forced_open:north-in", "forced", gate="north-in"
        )
        assert raised is not None and raised.payload.severity == "critical"
        assert await rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "again") is None
        (open_alert,) = rig.alerts.open_alerts()
        assert (open_alert.repeats, open_alert.state, open_alert.gate) == (0, "raised", "north-in")
        acked = await rig.alerts.acknowledge(open_alert.alert_id, by="guard-7")
        assert acked is not None and acked.payload.by == "guard-7"
        assert await rig.alerts.acknowledge(open_alert.alert_id) is None, "a second ack changes nothing"
        assert rig.alerts.find(open_alert.alert_id).state == "acknowledged"  # type: ignore[union-attr]
        cleared = await rig.alerts.clear("gate.forced_open:north-in", reason="closed")
        assert cleared is not None and cleared.payload.alert_id == open_alert.alert_id
        assert rig.alerts.open_alerts() == []
        again = await rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced again")
        assert again is not None and again.payload.alert_id != open_alert.alert_id
        with pytest.raises(UnknownAlert):
            await rig.alerts.acknowledge("no-such-alert")

    asyncio.run(scenario())
    types = [e.type for e in rig.events("alert.*")]
    assert types == ["alert.raised", "alert.acknowledged", "alert.cleared", "alert.raised"]


def test_a_moment_again_after_the_guards_acknowledged_it_is_raised_anew(rig: Rig):
    """The blocked card tried once more after a guard dealt with the first attempt is news: a new
    alert (and siren), the acknowledged one cleared; a condition still so stays acknowledged."""
    key = "card.blocklisted:…1234"

    async def scenario() -> tuple[Any, Any]:
        first = await rig.alerts.raise_("card.blocklisted", key, "blocklisted card at north-in")
        await rig.alerts.raise_("device.offline", "device.offline:reader", "reader offline")
        await rig.alerts.acknowledge(first.payload.alert_id, by="guard-7")  # type: ignore[union-attr]
        await rig.alerts.acknowledge("device.offline:reader", by="guard-7")
        again = await rig.alerts.raise_("card.blocklisted", key, "blocklisted card at east-door")
        assert await rig.alerts.raise_("device.offline", "device.offline:reader", "reader offline") is None
        return first, again

    first, again = asyncio.run(scenario())
    assert again is not None and again.payload.alert_id != first.payload.alert_id
    states = {a.key: a.state for a in rig.alerts.open_alerts()}
    assert states == {key: "raised", "device.offline:reader": "acknowledged"}
    card = [(e.type, e.payload.alert_id) for e in rig.events("alert.*") if e.payload.key == key]
    assert card == [
        ("alert.raised", first.payload.alert_id),
        ("alert.acknowledged", first.payload.alert_id),
        ("alert.cleared", first.payload.alert_id),
        ("alert.raised", again.payload.alert_id),
    ]


def test_a_moment_again_is_counted_but_a_condition_still_so_is_not(rig: Rig):
    """`×35` on a device offline for three minutes would read as 35 outages: the checks that
    find it still offline are not repeats. A blocklisted card tried again is one."""

    async def scenario() -> None:
        for _ in range(3):
            await rig.alerts.raise_("device.offline", "device.offline:reader", "reader offline")
            await rig.alerts.raise_("card.blocklisted", "card.blocklisted:…1234", "blocklisted card")
            rig.clock.advance(5)

    asyncio.run(scenario())
    repeats = {alert.kind: (alert.repeats, alert.last_seen_ms) for alert in rig.alerts.open_alerts()}
    last_ms = int((rig.clock() - 5) * 1000)
    assert repeats == {"device.offline": (0, last_ms), "card.blocklisted": (2, last_ms)}


def test_the_acknowledgement_and_the_clearing_carry_how_often_the_moment_happened_again(rig: Rig):
    """The community sees the alert's events, not the gateway's table: its `×3` comes with them."""
    key = "card.blocklisted:…1234"

    async def scenario() -> None:
        for _ in range(3):
            await rig.alerts.raise_("card.blocklisted", key, "blocklisted card")
        (open_alert,) = rig.alerts.open_alerts()
        await rig.alerts.acknowledge(open_alert.alert_id, by="guard-7")
        await rig.alerts.clear(key, reason="quiet")
        await rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced")
        await rig.alerts.clear("gate.forced_open:north-in", reason="closed")

    asyncio.run(scenario())
    acked, *cleared = rig.events("alert.acknowledged") + rig.events("alert.cleared")
    assert acked.payload.repeats == 2
    assert [(e.payload.key, e.payload.repeats) for e in cleared] == [
        (key, 2),
        ("gate.forced_open:north-in", 0),
    ]


def test_the_acknowledgement_and_the_clearing_name_the_alerts_gate(rig: Rig):
    """A guard following one gate (`events --gate north-in --type 'alert.*'`) sees its alert end."""
    key = "gate.forced_open:north-in"

    async def scenario() -> None:
        raised = await rig.alerts.raise_("gate.forced_open", key, "forced", gate="north-in")
        assert raised is not None
        await rig.alerts.acknowledge(raised.payload.alert_id, by="guard-7")
        await rig.alerts.clear(key, reason="closed")

    asyncio.run(scenario())
    assert [e.payload.gate for e in rig.events("alert.*")] == ["north-in", "north-in", "north-in"]


def test_an_alert_state_change_whose_event_cannot_be_written_does_not_happen(rig: Rig):
    """The guards' list and the community database never disagree: an acknowledgement or a
    clearing that cannot be recorded leaves the alert as it was, to be done again."""

    async def scenario() -> None:
        raised = await rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced")
        assert raised is not None
        alert_id = raised.payload.alert_id  # type: ignore[union-attr]
        for change in (
            lambda: rig.alerts.acknowledge(alert_id, by="guard-7"),
            lambda: rig.alerts.clear("gate.forced_open:north-in", reason="closed"),
        ):
            failing_inserts(rig.store, "alert.%", "disk I/O error")
            with pytest.raises(StoreError, match="disk I/O error"):
                await change()
            assert rig.alerts.find(alert_id).state == "raised"  # type: ignore[union-attr]
            working_inserts(rig.store)
        assert await rig.alerts.acknowledge(alert_id, by="guard-7") is not None
        assert await rig.alerts.clear("gate.forced_open:north-in", reason="closed") is not None

    asyncio.run(scenario())
    assert [e.type for e in rig.events("alert.*")] == ["alert.raised", "alert.acknowledged", "alert.cleared"]


def test_every_kind_has_a_severity_and_says_what_clears_it():
    for kind, spec in KINDS.items():
        assert spec.severity in ("info", "warning", "critical"), kind
        assert spec.clears, kind


def test_rate_limit_per_kind_raises_one_flood_alert(tmp_path: Path):
    rig = make_rig(tmp_path, SIREN)

    async def scenario() -> None:
        for index in range(6):
            await rig.alerts.raise_(
                "plate.unknown_repeat", f"plate.unknown_repeat:P{index}", f"plate {index}"
            )
        rig.clock.advance(61)
        assert await rig.alerts.raise_("plate.unknown_repeat", "plate.unknown_repeat:P9", "later") is not None

    try:
        asyncio.run(scenario())
        kinds = rig.alert_kinds()
        assert kinds.count("plate.unknown_repeat") == 4 and kinds.count("alerts.flood") == 1
        assert rig.store.counter("alerts.suppressed") == 3
    finally:
        rig.store.close()


def test_moments_clear_after_a_quiet_spell_and_conditions_do_not(tmp_path: Path):
    rig = make_rig(tmp_path, SIREN)

    async def scenario() -> None:
        await rig.alerts.raise_("gate.tailgating", "gate.tailgating:north-in", "tailgating")
        await rig.alerts.raise_("fire_lane.blocked", "zone.blocked:cam:lane", "blocked")
        rig.clock.advance(9 * 60)
        await rig.alerts.raise_("gate.tailgating", "gate.tailgating:north-in", "again")
        rig.clock.advance(9 * 60)
        await rig.alerts.check()
        assert {a.kind for a in rig.alerts.open_alerts()} == {"gate.tailgating", "fire_lane.blocked"}
        rig.clock.advance(2 * 60)
        await rig.alerts.check()
        assert {a.kind for a in rig.alerts.open_alerts()} == {"fire_lane.blocked"}

    try:
        asyncio.run(scenario())
    finally:
        rig.store.close()


def test_siren_follows_unacknowledged_critical_alerts(tmp_path: Path):
    rig = make_rig(tmp_path, SIREN)

    def switched() -> list[bool]:
        return [
            c.on for d, c in rig.commands if d == "relay" and isinstance(c, SetOutput) and c.output == "siren"
        ]

    async def scenario() -> None:
        await rig.alerts.raise_("sync.backlog_old", "sync.backlog_old:uplink", "old backlog")
        assert switched() == [False], "a warning does not sound the siren (first set: off)"
        event = await rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced")
        assert switched() == [False, True]
        await rig.alerts.acknowledge(event.payload.alert_id)  # type: ignore[union-attr]
        assert switched() == [False, True, False]
        await rig.alerts.raise_("fire_lane.blocked", "zone.blocked:cam:lane", "blocked")
        assert switched() == [False, True, False, True]
        rig.clock.advance(61)
        await rig.alerts.check()
        assert switched() == [False, True, False, True, False], "off after hold_s even without an ack"

    try:
        asyncio.run(scenario())
    finally:
        rig.store.close()


def test_a_siren_left_on_by_a_gateway_that_stopped_is_switched_off_after_the_restart(tmp_path: Path):
    """The relay board keeps its output while the gateway restarts (a crash, an update): the
    new process does not know the siren is sounding and must not assume it is off."""
    before = make_rig(tmp_path, SIREN)
    asyncio.run(before.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced"))
    assert [c for _, c in before.commands] == [SetOutput("siren", True)]
    before.store.close()
    after = make_rig(tmp_path, SIREN, clock=before.clock)
    try:
        after.clock.advance(61)
        asyncio.run(after.alerts.check())
        assert [(d, c) for d, c in after.commands] == [("relay", SetOutput("siren", False))]
    finally:
        after.store.close()


def test_a_siren_command_that_fails_is_sent_again_later_not_on_every_alert(tmp_path: Path):
    """A relay board that times out when told to switch the siren off must not leave the engine
    believing it is off (the siren would sound until the next alert), nor hold up every alert in
    between by its timeout: it is tried again OUTPUT_RETRY_S later, or at once when the siren
    should now go the other way."""
    rig = make_rig(tmp_path, SIREN)
    answers = iter([True, False, True, False, True])
    sent: list[bool] = []

    async def relay(device: str, command: Command) -> bool:
        assert isinstance(command, SetOutput)
        sent.append(command.on)
        return next(answers)

    rig.alerts.commander = relay
    event = asyncio.run(rig.alerts.raise_("gate.forced_open", "gate.forced_open:north-in", "forced"))
    asyncio.run(rig.alerts.acknowledge(event.payload.alert_id))  # type: ignore[union-attr]
    assert sent == [True, False] and rig.alerts.output_states() == {}, "off failed: not known to be off"
    asyncio.run(rig.alerts.raise_("sync.backlog_old", "sync.backlog_old:uplink", "old backlog"))
    asyncio.run(rig.alerts.check())
    assert sent == [True, False], "a warning and a check soon after do not wait on the board again"
    rig.clock.advance(OUTPUT_RETRY_S)
    asyncio.run(rig.alerts.check())
    assert sent == [True, False, False] and rig.alerts.output_states() == {("relay", "siren"): False}
    asyncio.run(rig.alerts.check())
    assert sent == [True, False, False], "once it is known to be off, nothing more is sent"

    asyncio.run(rig.alerts.raise_("gate.forced_open", "gate.forced_open:south-in", "forced"))
    assert sent == [True, False, False, True], "on failed"
    asyncio.run(rig.alerts.acknowledge(rig.alerts.find("gate.forced_open:south-in").alert_id))  # type: ignore[union-attr]
    assert sent == [True, False, False, True, False], "the other way is tried at once"
    rig.store.close()


def test_a_flapping_gate_does_not_hide_another_gates_critical_alert(tmp_path: Path):
    """The rate limit (3 a minute here) holds back a gate whose sensor flaps between forced open
    and closed, not the first forced opening of another gate."""
    rig = make_rig(tmp_path, SIREN)

    async def scenario() -> None:
        for _ in range(4):
            await rig.alerts.raise_(
                "gate.forced_open", "gate.forced_open:north-in", "forced", gate="north-in"
            )
            await rig.alerts.clear("gate.forced_open:north-in", reason="closed")
        assert rig.store.counter("alerts.suppressed") == 1
        raised = await rig.alerts.raise_(
            "gate.forced_open", "gate.forced_open:north-out", "forced", gate="north-out"
        )
        assert raised is not None and raised.payload.gate == "north-out"

    try:
        asyncio.run(scenario())
        assert rig.commands[-1] == ("relay", SetOutput("siren", True))
        assert rig.alert_kinds().count("alerts.flood") == 1
    finally:
        rig.store.close()


def test_each_flapping_gate_has_its_own_flood_alert(tmp_path: Path):
    """A critical alert is limited per key: the flood alert that says so names that key, and a
    second gate flapping is not counted as a repeat of the first gate's flood."""
    rig = make_rig(tmp_path, SIREN)

    async def scenario() -> None:
        for gate in ("north-in", "north-out"):
            for _ in range(4):
                await rig.alerts.raise_("gate.forced_open", f"gate.forced_open:{gate}", "forced", gate=gate)
                await rig.alerts.clear(f"gate.forced_open:{gate}", reason="closed")

    try:
        asyncio.run(scenario())
        floods = [e.payload.message for e in rig.events("alert.raised") if e.payload.kind == "alerts.flood"]
        assert [m.split(" for ")[1].split(";")[0] for m in floods] == [
            "gate.forced_open:north-in",
            "gate.forced_open:north-out",
        ]
    finally:
        rig.store.close()


def test_a_moment_that_happens_again_while_the_quiet_ones_are_cleared_stays_open(tmp_path: Path):
    """The periodic check clears the moments it found quiet one by one; a blocklisted plate read
    again while an earlier one is being cleared is news, counted on its alert, not cleared as
    quiet with the rest."""
    rig = make_rig(tmp_path, SIREN)
    first, second = "plate.blocklisted:津A11111", "plate.blocklisted:津B22222"
    clear = rig.alerts.clear

    async def read_again_meanwhile(key: str, reason: str = "", **kwargs: Any) -> Any:
        if key == first:
            await rig.alerts.raise_("plate.blocklisted", second, "plate 津B22222 blocklisted")
        return await clear(key, reason, **kwargs)

    async def scenario() -> None:
        await rig.alerts.raise_("plate.blocklisted", first, "plate 津A11111 blocklisted")
        await rig.alerts.raise_("plate.blocklisted", second, "plate 津B22222 blocklisted")
        rig.clock.advance(11 * 60)
        rig.alerts.clear = read_again_meanwhile  # type: ignore[method-assign]
        await rig.alerts.check()

    try:
        asyncio.run(scenario())
        assert [(a.key, a.repeats) for a in rig.alerts.open_alerts()] == [(second, 1)]
    finally:
        rig.store.close()
