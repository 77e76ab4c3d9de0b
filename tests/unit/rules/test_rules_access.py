"""Offline access decisions: every reason, the blocklist first, passes used up, anti-passback."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.rules.access import AccessDecider, GateRef
from edge.rules.config import AntiPassbackPair
from tests.unit.rules.conftest import Rig, make_rig

HOUR_MS = 3600_000
IN, OUT = GateRef("north-in", "in"), GateRef("north-out", "out")


def now_ms(rig: Rig) -> int:
    return int(rig.clock() * 1000)


def test_a_resident_is_granted_and_the_decision_says_whose_card_it_is(rig: Rig):
    rig.allow.add_resident("p-1", household="3-402", building="3", unit="402")
    rig.allow.add_credential("12345678", "p-1")
    decision = rig.rules.decider.credential("card", "12345678", IN, now_ms(rig))[0]
    assert (decision.granted, decision.reason, decision.subject, decision.household) == (
        True,
        "resident",
        "p-1",
        "3-402",
    )
    assert decision.detail == "card …5678 of resident p-1 (3-402, building 3, unit 402)"


def test_unknown_card_and_plate(rig: Rig):
    assert rig.rules.decider.credential("card", "555", IN, now_ms(rig))[0].reason == "unknown"
    denied = rig.rules.decider.plate("京B99999", IN, now_ms(rig))[0]
    assert (denied.granted, denied.reason) == (False, "unknown")
    assert "not on the allow-list" in denied.detail


def test_blocklist_wins_over_the_allow_list(rig: Rig):
    rig.allow.add_plate("津A12345", "p-1")
    rig.allow.block("plate", "津A12345", reason="stolen car")
    decision = rig.rules.decider.plate("津a 12345", IN, now_ms(rig))[0]
    assert (decision.granted, decision.reason, decision.blocked) == (False, "blocklisted", True)
    assert decision.detail == "plate 津A12345 is on the blocklist: stolen car"
    rig.allow.unblock("plate", "津A12345")
    assert rig.rules.decider.plate("津A12345", IN, now_ms(rig))[0].granted


def test_a_residents_blocked_card_is_refused_under_its_owner(rig: Rig):
    """A lost card, blocked, is still the resident's: its refusal is found by the household
    (`events --household 3-402`); a blocked card nobody owns has no subject."""
    rig.allow.add_resident("p-1", household="3-402")
    rig.allow.add_credential("12345678", "p-1")
    rig.allow.block("card", "12345678", reason="lost card")
    rig.allow.block("card", "99990000", reason="found at the gate")
    lost = rig.rules.decider.credential("card", "12345678", IN, now_ms(rig))[0]
    assert (lost.reason, lost.subject, lost.household, lost.blocked) == ("blocklisted", "p-1", "3-402", True)
    stray = rig.rules.decider.credential("card", "99990000", IN, now_ms(rig))[0]
    assert (stray.reason, stray.subject, stray.household) == ("blocklisted", None, None)


def test_a_block_with_an_end_lapses(rig: Rig):
    rig.allow.add_credential("777", "p-1")
    rig.allow.block("card", "777", valid_until_ms=now_ms(rig) + HOUR_MS)
    assert rig.rules.decider.credential("card", "777", IN, now_ms(rig))[0].reason == "blocklisted"
    rig.clock.advance(3601)
    assert rig.rules.decider.credential("card", "777", IN, now_ms(rig))[0].reason == "resident"


def test_validity_windows_of_the_card_and_of_the_resident(rig: Rig):
    start = now_ms(rig)
    rig.allow.add_credential("111", "p-1", valid_from_ms=start + HOUR_MS)
    assert rig.rules.decider.credential("card", "111", IN, start)[0].reason == "not_yet_valid"
    rig.allow.add_credential("222", "p-2", valid_until_ms=start)
    expired = rig.rules.decider.credential("card", "222", IN, start)[0]
    assert expired.reason == "expired" and "expired 2026-11-24 18:30 UTC" in expired.detail
    rig.allow.add_resident("p-3", valid_until_ms=start - 1)
    rig.allow.add_credential("333", "p-3")
    moved_out = rig.rules.decider.credential("card", "333", IN, start)[0]
    assert moved_out.reason == "expired" and moved_out.detail.startswith("p-3")


def test_a_credential_only_for_another_gate(rig: Rig):
    rig.allow.add_credential("444", "p-1", gates=["north-out"])
    assert rig.rules.decider.credential("card", "444", IN, now_ms(rig))[0].reason == "wrong_gate"
    assert rig.rules.decider.credential("card", "444", OUT, now_ms(rig))[0].reason == "resident"


def test_a_pass_is_used_up_by_entries_not_by_exits(rig: Rig):
    until = now_ms(rig) + 2 * HOUR_MS
    rig.allow.issue_pass(plate="津C11111", valid_until_ms=until, max_entries=2, host="3-402", pass_id="v-1")
    first = rig.rules.decider.plate("津C11111", IN, now_ms(rig))[0]
    assert (first.granted, first.reason, first.pass_id, first.household) == (True, "pass", "v-1", "3-402")
    assert first.detail == "plate 津C11111: visitor pass v-1 for 3-402, entry 1 of 2"
    assert rig.rules.decider.plate("津C11111", OUT, now_ms(rig))[0].granted
    assert rig.rules.decider.plate("津C11111", IN, now_ms(rig))[0].granted
    third = rig.rules.decider.plate("津C11111", IN, now_ms(rig))[0]
    assert (third.granted, third.reason) == (False, "exhausted")
    assert "all 2 entries used" in third.detail
    assert rig.allow.get_pass("v-1").used == 2  # type: ignore[union-attr]


def test_revoked_and_expired_passes(rig: Rig):
    until = now_ms(rig) + HOUR_MS
    rig.allow.issue_pass(token="QR-TOKEN-1", valid_until_ms=until, pass_id="d-1", kind="delivery")
    assert rig.rules.decider.credential("qr", "qr-token-1", IN, now_ms(rig))[0].reason == "pass"
    assert rig.allow.revoke_pass("d-1") and not rig.allow.revoke_pass("d-1")
    assert rig.rules.decider.credential("qr", "QR-TOKEN-1", IN, now_ms(rig))[0].reason == "revoked"
    rig.allow.issue_pass(plate="津D22222", valid_until_ms=until, pass_id="v-2")
    rig.clock.advance(3600)
    assert rig.rules.decider.plate("津D22222", IN, now_ms(rig))[0].reason == "expired"


def test_an_exit_gate_lets_out_whoever_overstayed_and_says_so(rig: Rig):
    """A visitor whose pass expired (or was revoked) while inside, or a resident whose card ran
    out, is let out at an exit gate rather than trapped; the detail records the overstay. The
    entry gate still refuses them, and a pass never valid yet still opens nothing."""
    until = now_ms(rig) + HOUR_MS
    rig.allow.issue_pass(plate="津D22222", valid_until_ms=until, pass_id="v-2")
    rig.allow.issue_pass(token="QR-TOKEN-2", valid_until_ms=until, pass_id="d-2", kind="delivery")
    rig.allow.issue_pass(plate="津F55555", valid_from_ms=until, valid_until_ms=until + HOUR_MS, pass_id="v-5")
    rig.allow.add_resident("p-9", valid_until_ms=until)
    rig.allow.add_credential("99999999", "p-9")
    assert rig.allow.revoke_pass("d-2")
    rig.clock.advance(3600)
    out = rig.rules.decider.plate("津D22222", OUT, now_ms(rig))[0]
    assert (out.granted, out.reason) == (True, "pass")
    assert "let out although it expired" in out.detail
    revoked = rig.rules.decider.credential("qr", "QR-TOKEN-2", OUT, now_ms(rig))[0]
    assert revoked.granted and "let out although it was revoked" in revoked.detail
    resident = rig.rules.decider.credential("card", "99999999", OUT, now_ms(rig))[0]
    assert resident.granted and "let out although p-9 expired 2026-11-24 19:30 UTC" in resident.detail
    assert rig.rules.decider.plate("津D22222", IN, now_ms(rig))[0].reason == "expired"
    assert rig.rules.decider.credential("card", "99999999", IN, now_ms(rig))[0].reason == "expired"
    rig.clock.advance(-7200)
    assert rig.rules.decider.plate("津F55555", OUT, now_ms(rig))[0].reason == "not_yet_valid"


def test_anti_passback_refuses_a_second_entry_until_an_exit(tmp_path: Path):
    rig = make_rig(tmp_path)
    try:
        pair = AntiPassbackPair(entry="north-in", exit="north-out", reset_after_h=12)
        decider = AccessDecider(rig.store, rig.config.site.salt, [pair])
        rig.allow.add_credential("900", "p-9")
        decide = lambda gate: decider.credential("card", "900", gate, now_ms(rig))[0]  # noqa: E731
        assert decide(IN).reason == "resident"
        again = decide(IN)
        assert (again.granted, again.reason) == (False, "anti_passback")
        assert "already passed in at north-in" in again.detail
        assert decide(OUT).reason == "resident"
        assert decide(OUT).reason == "anti_passback"
        assert decide(IN).reason == "resident"
        rig.clock.advance(13 * 3600)
        assert decide(IN).reason == "resident", "state older than reset_after_h is forgotten"
        rig.allow.issue_pass(plate="津E33333", valid_until_ms=now_ms(rig) + HOUR_MS, pass_id="v-3")
        assert decider.plate("津E33333", IN, now_ms(rig))[0].granted
        refused = decider.plate("津E33333", IN, now_ms(rig))[0]
        assert refused.reason == "anti_passback"
        assert rig.allow.get_pass("v-3").used == 1, "a refused entry does not use the pass"  # type: ignore[union-attr]
    finally:
        rig.store.close()


def test_two_entrances_sharing_one_exit_are_one_area(tmp_path: Path):
    """North and east entrances, one exit: in by east, out by the shared exit, in by north, out
    by the exit again. Kept per pair, the north pair still remembered the first exit and refused
    the second as 'already passed out'."""
    rig = make_rig(tmp_path)
    try:
        pairs = [
            AntiPassbackPair(entry="north-in", exit="north-out"),
            AntiPassbackPair(entry="east-in", exit="north-out"),
            AntiPassbackPair(entry="garage-in", exit="garage-out"),
        ]
        decider = AccessDecider(rig.store, rig.config.site.salt, pairs)
        rig.allow.add_credential("901", "p-9")
        east = GateRef("east-in", "in")
        garage_in, garage_out = GateRef("garage-in", "in"), GateRef("garage-out", "out")
        decide = lambda gate: decider.credential("card", "901", gate, now_ms(rig))[0]  # noqa: E731
        assert [decide(g).reason for g in (east, OUT, IN, OUT)] == ["resident"] * 4
        assert decide(OUT).reason == "anti_passback", "out twice in a row is still refused"
        assert decide(east).reason == "resident"
        assert decide(IN).reason == "anti_passback", "in by the other entrance while inside"
        assert [decide(g).reason for g in (garage_in, garage_out)] == ["resident"] * 2, "a separate area"
    finally:
        rig.store.close()


def test_a_resident_decision_commits_nothing(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    rig.allow.add_credential("12121212", "p-1")
    rig.allow.issue_pass(plate="津G44444", valid_until_ms=now_ms(rig) + HOUR_MS, pass_id="v-4")

    def no_write(fn: object) -> None:
        raise AssertionError("a commit on the way to the barrier")

    monkeypatch.setattr(rig.store, "write_with_event", no_write)
    assert rig.rules.decider.credential("card", "12121212", IN, now_ms(rig))[0].reason == "resident"
    assert rig.rules.decider.credential("card", "99", IN, now_ms(rig))[0].reason == "unknown"
    with pytest.raises(AssertionError, match="commit"):
        rig.rules.decider.plate("津G44444", IN, now_ms(rig))[0]


def test_a_plate_typed_as_people_type_it_matches_what_the_camera_reads(rig: Rig):
    """Cameras report plates fitted to the Chinese format (never the letter O or I in a serial,
    half-width characters). A guard typing the letter O for a zero, or a manager whose Chinese
    input method writes full-width characters, must still block or allow that car."""
    rig.allow.block("plate", "津B6666O", reason="reported stolen")
    rig.allow.add_plate("津Ａ１２３４５", "p-1")
    blocked = rig.rules.decider.plate("津B66660", IN, now_ms(rig))[0]
    assert (blocked.granted, blocked.reason) == (False, "blocklisted")
    assert rig.rules.decider.plate("津A12345", IN, now_ms(rig))[0].reason == "resident"
    assert {e.shown for e in rig.allow.entries()} == {"津B66660", "津A12345"}
