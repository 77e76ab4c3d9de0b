"""Every refusal of the downlink: the reply's error code, and proof that nothing executed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.store import Store
from sync import commands, signing
from sync.commands import Command, ErrorCode, Reply
from sync.config import MqttConfig
from sync.downlink import CommandRejected, Downlink

SITE, GATEWAY = "oak-court", "gw-1"
KEY = "5e" * 32
NOW = datetime(2026, 5, 1, 8, 0, 0, tzinfo=UTC)


class RecordingExecutor:
    def __init__(self) -> None:
        self.calls: list[Command] = []

    async def execute(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        if command.name == "snapshot":
            raise CommandRejected("camera cam-9 is not configured", detail={"camera": "cam-9"})
        return {"done": command.name}


def make_downlink(
    store: Store, executor: RecordingExecutor, public_key: Ed25519PublicKey | None = None, **config: Any
) -> Downlink:
    return Downlink(
        store,
        executor,
        site=SITE,
        gateway=GATEWAY,
        key=KEY,
        public_key=public_key,
        config=MqttConfig(**config),
        clock=lambda: NOW.timestamp(),
    )


def command(name: str = "open_gate", args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return commands.build(
        name,
        args if args is not None else {"gate": "north-in"},
        site=kw.pop("site", SITE),
        gateway=kw.pop("gateway", GATEWAY),
        key=kw.pop("key", KEY),
        ttl_s=kw.pop("ttl_s", 30),
        now=kw.pop("now", NOW),
    )


def run(downlink: Downlink, document: dict[str, Any] | bytes, topic_name: str | None = None) -> Reply:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    name = topic_name or (document["name"] if isinstance(document, dict) else "open_gate")
    reply = asyncio.run(downlink.process(name, payload))
    # the reply is machine-readable JSON that parses back into the model
    return Reply.model_validate_json(reply.model_dump_json())


@pytest.fixture
def executor() -> RecordingExecutor:
    return RecordingExecutor()


@pytest.fixture
def downlink(store: Store, executor: RecordingExecutor) -> Downlink:
    return make_downlink(store, executor)


def test_valid_command_executes_once(downlink: Downlink, executor: RecordingExecutor) -> None:
    document = command()
    reply = run(downlink, document)
    assert reply.ok and reply.result == {"done": "open_gate"} and reply.id == document["id"]
    assert [c.args.gate for c in executor.calls] == ["north-in"]


def refused(
    downlink: Downlink,
    executor: RecordingExecutor,
    document: Any,
    code: ErrorCode,
    topic: str | None = None,
) -> Reply:
    reply = run(downlink, document, topic)
    assert not reply.ok
    assert reply.error is not None and reply.error.code == code
    assert executor.calls == []
    return reply


def test_oversized(store: Store, executor: RecordingExecutor) -> None:
    small = make_downlink(store, executor, max_command_bytes=1024)
    document = command("alert.ack", {"alert_id": "a1", "by": "x" * 100})
    document["args"]["pad"] = "y" * 2000
    reply = refused(small, executor, document, ErrorCode.OVERSIZED)
    assert reply.error is not None and reply.error.detail == {"max": 1024}


def test_malformed(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, b"{not json", ErrorCode.MALFORMED, "open_gate")
    refused(downlink, executor, b"[1, 2]", ErrorCode.MALFORMED, "open_gate")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name": "open_gate", "n": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "open_gate", "args": {"gate": "north-in", "hold_s": NaN}}',
        b'{"name": "open_gate", "args": {"gate": "north-in", "hold_s": -Infinity}}',
    ],
    ids=["a-5000-digit-number", "nesting-100000-deep", "NaN", "Infinity"],
)
def test_json_python_cannot_hold_or_json_does_not_have_is_malformed(
    downlink: Downlink, executor: RecordingExecutor, payload: bytes
) -> None:
    refused(downlink, executor, payload, ErrorCode.MALFORMED, "open_gate")


def test_a_name_that_is_not_text_is_an_unknown_command(
    downlink: Downlink, executor: RecordingExecutor
) -> None:
    refused(downlink, executor, {**command(), "name": ["open_gate"]}, ErrorCode.UNKNOWN_COMMAND, "open_gate")


def test_every_check_answers_through_the_reply_topic(store: Store, executor: RecordingExecutor) -> None:
    """What the checks trip over still gets an error reply: the sender is never left waiting."""
    downlink = make_downlink(store, executor)
    sent: list[tuple[str, bytes]] = []
    loop = asyncio.new_event_loop()
    downlink.bind(lambda topic, payload, correlation: sent.append((topic, payload)), loop)

    async def broken(name: str, payload: bytes) -> Reply:
        raise KeyError("surprise")

    downlink.process = broken  # type: ignore[assignment,method-assign]
    try:
        loop.run_until_complete(downlink._handle("x/cmd/open_gate", b"{}", None, None))
    finally:
        loop.close()
    assert len(sent) == 1
    reply = Reply.model_validate_json(sent[0][1])
    assert reply.error is not None and reply.error.code == ErrorCode.MALFORMED
    assert executor.calls == []


def test_unknown_command(downlink: Downlink, executor: RecordingExecutor) -> None:
    document = signing.sign({**command(), "name": "self_destruct"}, KEY)
    reply = refused(downlink, executor, document, ErrorCode.UNKNOWN_COMMAND)
    assert reply.error is not None and "open_gate" in reply.error.detail["known"]


def test_name_must_match_topic(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, command(), ErrorCode.UNKNOWN_COMMAND, "config.reload")


def test_unsigned(downlink: Downlink, executor: RecordingExecutor) -> None:
    document = command()
    del document["sig"]
    refused(downlink, executor, document, ErrorCode.UNSIGNED)


def test_badly_signed(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, command(key="ab" * 32), ErrorCode.BAD_SIGNATURE)
    tampered = command()
    tampered["args"]["gate"] = "south-out"
    refused(downlink, executor, tampered, ErrorCode.BAD_SIGNATURE)
    refused(downlink, executor, {**command(), "sig": "zz"}, ErrorCode.BAD_SIGNATURE)
    refused(downlink, executor, {**command(), "sig": "é" * 64}, ErrorCode.BAD_SIGNATURE)
    surrogate = command("alert.ack", {"alert_id": "a1"})
    surrogate["args"]["by"] = "\ud800"  # no UTF-8 form: nobody can have signed it
    refused(downlink, executor, surrogate, ErrorCode.BAD_SIGNATURE)


def test_a_signature_in_upper_case_hex_is_accepted(downlink: Downlink, executor: RecordingExecutor) -> None:
    document = command()
    assert run(downlink, {**document, "sig": document["sig"].upper()}).ok
    assert len(executor.calls) == 1


def test_times_without_a_time_zone_are_invalid(downlink: Downlink, executor: RecordingExecutor) -> None:
    window = {
        "pass_id": "p1",
        "plate": "津A12345",
        "valid_from": "2026-05-01T08:00:00+08:00",
        "valid_until": "2026-05-01T18:00:00+08:00",
    }
    document = command("pass.issue", window)
    document["args"]["valid_from"] = "2026-05-01T08:00:00"
    reply = refused(downlink, executor, signing.sign(document, KEY), ErrorCode.INVALID)
    assert reply.error is not None and reply.error.detail["errors"][0]["loc"] == "args.valid_from"


def test_no_key_configured_refuses_everything(store: Store, executor: RecordingExecutor) -> None:
    keyless = Downlink(store, executor, site=SITE, gateway=GATEWAY, key=None)
    refused(keyless, executor, command(), ErrorCode.BAD_SIGNATURE)


COMMUNITY = Ed25519PrivateKey.generate()


def test_commands_signed_by_the_community_ed25519_key_run(store: Store, executor: RecordingExecutor) -> None:
    """A gateway given the community's public key runs what the community signs, and still
    runs commands signed with its own HMAC key."""
    both = make_downlink(store, executor, public_key=COMMUNITY.public_key())
    document = command(key=COMMUNITY)
    assert document["alg"] == "ed25519" and len(document["sig"]) == 128
    assert run(both, document).ok
    assert run(both, command()).ok
    assert [c.alg for c in executor.calls] == ["ed25519", "hmac-sha256"]


def test_ed25519_refusals(store: Store, executor: RecordingExecutor) -> None:
    gateway = Downlink(
        store, executor, site=SITE, gateway=GATEWAY, key=KEY, public_key=COMMUNITY.public_key()
    )
    impostor = command(key=Ed25519PrivateKey.generate())
    assert (
        "signature does not match"
        in refused(gateway, executor, impostor, ErrorCode.BAD_SIGNATURE).error.message
    )
    tampered = command(key=COMMUNITY)
    tampered["args"]["gate"] = "south-out"
    refused(gateway, executor, tampered, ErrorCode.BAD_SIGNATURE)
    # the algorithm is signed: an HMAC signature relabelled as ed25519, or the reverse, fails
    refused(gateway, executor, {**command(), "alg": "ed25519"}, ErrorCode.BAD_SIGNATURE)
    refused(gateway, executor, {**command(key=COMMUNITY), "alg": "hmac-sha256"}, ErrorCode.BAD_SIGNATURE)
    reply = refused(gateway, executor, {**command(), "alg": "none"}, ErrorCode.BAD_SIGNATURE)
    assert reply.error is not None and reply.error.detail == {"known": ["hmac-sha256", "ed25519"]}
    hmac_only = make_downlink(store, executor)
    reply = refused(hmac_only, executor, command(key=COMMUNITY), ErrorCode.BAD_SIGNATURE)
    assert reply.error is not None and reply.error.message == "this gateway has no ed25519 key configured"


def test_schema_violation_even_when_signed(downlink: Downlink, executor: RecordingExecutor) -> None:
    document = command()
    document["args"] = {"gate": "north-in", "unexpected": 1}
    reply = refused(downlink, executor, signing.sign(document, KEY), ErrorCode.INVALID)
    assert reply.error is not None
    assert reply.error.detail["errors"][0]["loc"] == "args.unexpected"
    missing = command()
    missing["args"] = {}
    refused(downlink, executor, signing.sign(missing, KEY), ErrorCode.INVALID)
    no_nonce = command()
    del no_nonce["nonce"]
    refused(downlink, executor, signing.sign(no_nonce, KEY), ErrorCode.INVALID)


def test_wrong_gateway(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, command(gateway="gw-2"), ErrorCode.WRONG_GATEWAY)


def test_expired(downlink: Downlink, executor: RecordingExecutor) -> None:
    stale = command(now=NOW - timedelta(minutes=5), ttl_s=60)
    refused(downlink, executor, stale, ErrorCode.EXPIRED)


def test_issued_in_the_future(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, command(now=NOW + timedelta(minutes=5)), ErrorCode.NOT_YET_VALID)


def test_lifetime_too_long(downlink: Downlink, executor: RecordingExecutor) -> None:
    refused(downlink, executor, command(ttl_s=7 * 86400), ErrorCode.LIFETIME_TOO_LONG)


def test_replayed_even_after_a_restart(tmp_path: Path) -> None:
    document = command()
    first = RecordingExecutor()
    with Store(tmp_path / "g.db") as store:
        assert run(make_downlink(store, first), document).ok
        refused(
            make_downlink(store, RecordingExecutor()),
            RecordingExecutor(),
            document,
            ErrorCode.REPLAYED,
        )
    again = RecordingExecutor()
    with Store(tmp_path / "g.db") as reopened:
        refused(make_downlink(reopened, again), again, document, ErrorCode.REPLAYED)
    assert len(first.calls) == 1


def test_allowlist_delta_with_a_gap_asks_for_the_full_list(
    downlink: Downlink, executor: RecordingExecutor
) -> None:
    delta = {"from_version": 3, "to_version": 4, "add": [{"kind": "plate", "value": "津A12345"}]}
    reply = refused(downlink, executor, command("allowlist.apply", delta), ErrorCode.VERSION_GAP)
    assert reply.error is not None and reply.error.detail == {"have": 0, "snapshot_required": True}
    full = {"full": True, "to_version": 3, "add": [{"kind": "plate", "value": "津A12345"}]}
    assert run(downlink, command("allowlist.apply", full)).result == {
        "done": "allowlist.apply",
        "version": 3,
    }
    assert run(downlink, command("allowlist.apply", delta)).ok
    assert downlink.allowlist_version() == 4
    assert [c.args.to_version for c in executor.calls] == [3, 4]


class SlowAllowlistExecutor(RecordingExecutor):
    """Writes the allow-list off the event loop, as the gateway's executor does."""

    async def execute(self, command: Command) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return await super().execute(command)


def test_deltas_arriving_back_to_back_apply_in_order(store: Store) -> None:
    executor = SlowAllowlistExecutor()
    downlink = make_downlink(store, executor)
    first = command("allowlist.apply", {"from_version": 0, "to_version": 1, "add": []})
    second = command("allowlist.apply", {"from_version": 1, "to_version": 2, "add": []})

    async def both() -> list[Reply]:
        return list(
            await asyncio.gather(
                downlink.process("allowlist.apply", json.dumps(first).encode()),
                downlink.process("allowlist.apply", json.dumps(second).encode()),
            )
        )

    replies = asyncio.run(both())
    assert [r.ok for r in replies] == [True, True], [r.error for r in replies]
    assert [c.args.to_version for c in executor.calls] == [1, 2]
    assert downlink.allowlist_version() == 2


def test_a_delta_must_step_by_one() -> None:
    with pytest.raises(ValueError, match="N to N\\+1"):
        commands.AllowlistApplyArgs(from_version=1, to_version=3)


def test_executor_refusal_is_a_machine_readable_error(
    downlink: Downlink, executor: RecordingExecutor
) -> None:
    reply = run(downlink, command("snapshot", {"camera": "cam-9"}))
    assert reply.error is not None and reply.error.code == ErrorCode.REJECTED
    assert reply.error.detail == {"camera": "cam-9"}


def test_every_command_has_a_model() -> None:
    assert set(commands.COMMAND_NAMES) == {
        "open_gate",
        "allowlist.apply",
        "pass.issue",
        "pass.revoke",
        "alert.ack",
        "snapshot",
        "config.reload",
    }
