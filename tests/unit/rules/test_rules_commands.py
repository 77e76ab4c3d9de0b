"""The gateway side of the downlink's commands, through the real verifier: signed commands in,
replies out, effects in the store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.privacy import credential_hash
from edge.rules.commands import CommandExecutor
from sync import commands
from sync.downlink import Downlink
from tests.unit.rules.conftest import SALT, Rig

KEY = "5e" * 32


def downlink(rig: Rig) -> Downlink:
    return Downlink(
        rig.store,
        CommandExecutor(rig.rules, rig.allow),
        site=rig.config.site.id,
        gateway=rig.config.gateway.id,
        key=KEY,
    )


def send(link: Downlink, name: str, args: dict[str, Any]) -> dict[str, Any]:
    document = commands.build(name, args, site="test-site", gateway="gw-test", key=KEY)
    reply = asyncio.run(link.process(name, json.dumps(document).encode()))
    return reply.model_dump(mode="json", exclude_none=True)


def entry(number: str, subject: str) -> dict[str, Any]:
    return {
        "kind": "card",
        "value": credential_hash(number, SALT, "card"),
        "last4": number[-4:],
        "subject": subject,
    }


def test_allowlist_delta_then_gap_then_full_list(rig: Rig):
    link = downlink(rig)
    first = send(
        link, "allowlist.apply", {"from_version": 0, "to_version": 1, "add": [entry("11110001", "p-1")]}
    )
    assert first["ok"] and first["result"]["applied"] and first["result"]["version"] == 1
    gap = send(link, "allowlist.apply", {"from_version": 3, "to_version": 4, "add": []})
    assert gap["error"]["code"] == "version_gap" and gap["error"]["detail"]["snapshot_required"]
    full = send(link, "allowlist.apply", {"full": True, "to_version": 4, "add": [entry("11110002", "p-2")]})
    assert full["ok"] and link.allowlist_version() == rig.allow.version() == 4
    bad = send(
        link,
        "allowlist.apply",
        {"from_version": 4, "to_version": 5, "add": [{"kind": "pin", "value": "1234"}]},
    )
    assert bad["error"]["code"] == "invalid" and rig.allow.version() == 4


def test_pass_issue_and_revoke(rig: Rig):
    link = downlink(rig)
    start = datetime.fromtimestamp(rig.clock(), UTC)
    args = {
        "pass_id": "up-7",
        "kind": "delivery",
        "credential": {"kind": "qr", "value": credential_hash("GH7777", SALT, "qr")},
        "host": "5-101",
        "valid_from": start.isoformat(),
        "valid_until": (start + timedelta(hours=1)).isoformat(),
        "max_uses": 1,
    }
    issued = send(link, "pass.issue", args)
    assert issued["result"] == {"pass_id": "up-7"}
    record = rig.allow.get_pass("up-7")
    assert record is not None and (record.kind, record.host, record.source) == ("delivery", "5-101", "sync")
    decision = rig.rules.decider.credential("qr", "GH7777", "north-in", int(rig.clock() * 1000))[0]
    assert (decision.reason, decision.household) == ("pass", "5-101")
    assert send(link, "pass.revoke", {"pass_id": "up-7"})["result"] == {"pass_id": "up-7", "revoked": True}
    assert send(link, "pass.revoke", {"pass_id": "up-7"})["result"]["revoked"] is False
    assert send(link, "pass.revoke", {"pass_id": "nope"})["error"]["code"] == "rejected"


def test_alert_ack_records_the_acknowledgement(rig: Rig):
    link = downlink(rig)
    raised = asyncio.run(rig.alerts.raise_("gate.stuck", "gate.stuck:north-in", "stuck"))
    assert raised is not None
    alert_id = raised.payload.alert_id
    reply = send(link, "alert.ack", {"alert_id": alert_id, "by": "control-room"})
    assert reply["result"] == {"alert_id": alert_id, "acknowledged": True, "state": "acknowledged"}
    (ack,) = rig.events("alert.acknowledged")
    assert ack.payload.by == "control-room"
    assert send(link, "alert.ack", {"alert_id": alert_id})["result"]["acknowledged"] is False
    assert send(link, "alert.ack", {"alert_id": "missing"})["error"]["code"] == "rejected"


def test_open_gate(rig: Rig):
    reply = send(downlink(rig), "open_gate", {"gate": "north-in", "by": "manager"})
    assert reply["ok"] and rig.events("access.granted")[0].payload.reason == "operator"
    assert send(downlink(rig), "open_gate", {"gate": "nowhere"})["error"]["code"] == "rejected"


def test_a_pass_whose_credential_is_a_plate(rig: Rig):
    start = datetime.fromtimestamp(rig.clock(), UTC)
    args = {
        "pass_id": "up-8",
        "credential": {"kind": "plate", "value": "津H55555"},
        "valid_from": start.isoformat(),
        "valid_until": (start + timedelta(hours=1)).isoformat(),
    }
    assert send(downlink(rig), "pass.issue", args)["ok"]
    decision = rig.rules.decider.plate("津H55555", "north-in", int(rig.clock() * 1000))[0]
    assert (decision.reason, decision.pass_id) == ("pass", "up-8")
