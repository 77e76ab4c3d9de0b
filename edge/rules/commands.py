"""What the gateway does for the verified commands the downlink hands over.

`CommandExecutor(rules, allowlist)` is a `sync.downlink.Executor`:

    downlink = Downlink(store, CommandExecutor(gateway.rules, AllowList(store, salt)), ...)

It carries out `allowlist.apply`, `pass.issue`, `pass.revoke`, `alert.ack` and `open_gate`
and answers the reply's `result`, or raises `CommandRejected` with a machine-readable code.
Each step is also a plain method with typed arguments, for the CLI and for tests."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.allowlist import AllowList, VersionGap, to_ms
from edge.rules.alerts import UnknownAlert
from edge.rules.engine import Rules
from sync.commands import (
    AlertAckArgs,
    AllowlistApplyArgs,
    Command,
    ErrorCode,
    OpenGateArgs,
    PassIssueArgs,
    PassRevokeArgs,
)
from sync.downlink import CommandRejected


class CommandExecutor:
    def __init__(self, rules: Rules, allowlist: AllowList) -> None:
        self.rules = rules
        self.allowlist = allowlist

    async def execute(self, command: Command) -> dict[str, Any]:
        args = command.args
        match args:
            case AllowlistApplyArgs():
                return await self.apply_allowlist(args)
            case PassIssueArgs():
                return await self.issue_pass(args)
            case PassRevokeArgs():
                return await self.revoke_pass(args)
            case AlertAckArgs():
                return await self.ack_alert(args)
            case OpenGateArgs():
                return await self.open_gate(args)
        raise CommandRejected(f"{command.name} is not carried out by the rules", ErrorCode.UNKNOWN_COMMAND)

    async def apply_allowlist(self, args: AllowlistApplyArgs) -> dict[str, Any]:
        """A delta N → N+1 or a full list, atomically; a repeated delta changes nothing. A delta
        that does not continue the held version is refused with `version_gap` and
        `snapshot_required` (the community side then sends the full list)."""
        try:
            return await asyncio.to_thread(self.allowlist.apply, args)
        except VersionGap as err:
            raise CommandRejected(
                str(err), ErrorCode.VERSION_GAP, {"have": err.have, "snapshot_required": True}
            ) from err
        except ValueError as err:
            raise CommandRejected(str(err), ErrorCode.INVALID) from err

    async def issue_pass(self, args: PassIssueArgs) -> dict[str, Any]:
        """Issue a pass; issuing the same pass_id again changes nothing."""
        credential = args.credential
        by_plate = credential is not None and credential.kind == "plate"
        try:
            pass_id = await asyncio.to_thread(
                self.allowlist.issue_pass,
                kind=args.kind,
                plate=args.plate or (credential.value if by_plate and credential else None),
                token_hash=credential.value if credential and not by_plate else None,
                host=args.host,
                valid_from_ms=to_ms(args.valid_from),
                valid_until_ms=to_ms(args.valid_until) or 0,
                gates=args.gates,
                max_entries=args.max_uses,
                pass_id=args.pass_id,
                source="sync",
            )
        except ValueError as err:
            raise CommandRejected(str(err), ErrorCode.INVALID) from err
        return {"pass_id": pass_id}

    async def revoke_pass(self, args: PassRevokeArgs) -> dict[str, Any]:
        """Revoke a pass; revoking one already revoked is not an error (`revoked` says whether
        this command did it). An unknown pass is refused."""
        if await asyncio.to_thread(self.allowlist.get_pass, args.pass_id) is None:
            raise CommandRejected(
                f"no pass {args.pass_id!r} on this gateway", detail={"pass_id": args.pass_id}
            )
        revoked = await asyncio.to_thread(self.allowlist.revoke_pass, args.pass_id)
        return {"pass_id": args.pass_id, "revoked": revoked}

    async def ack_alert(self, args: AlertAckArgs) -> dict[str, Any]:
        """Acknowledge an alert (recorded as alert.acknowledged); acknowledging one already
        acknowledged or cleared is not an error (`acknowledged` says whether this command did
        it). An unknown alert is refused."""
        try:
            event = await self.rules.alerts.acknowledge(args.alert_id, by=args.by)
        except UnknownAlert as err:
            raise CommandRejected(str(err), detail={"alert_id": args.alert_id}) from err
        found = self.rules.alerts.find(args.alert_id)
        return {
            "alert_id": found.alert_id if found else args.alert_id,
            "acknowledged": event is not None,
            "state": found.state if found else "unknown",
        }

    async def open_gate(self, args: OpenGateArgs) -> dict[str, Any]:
        try:
            event = await self.rules.open_gate(args.gate, by=args.by, reason=args.reason)
        except KeyError as err:
            raise CommandRejected(str(err.args[0]), detail={"gate": args.gate}) from err
        return {"gate": args.gate, "event": str(event.id)}
