"""Commands from the community side: verify, then execute through the gateway's executor.

A command is checked in this order, and the first failure is the reply's error code; nothing is
executed for any of them:

    oversized → malformed (not a JSON object) → unknown_command (or a topic/name mismatch)
    → unsigned → bad_signature → invalid (schema) → wrong_gateway → lifetime_too_long
    → not_yet_valid → expired → replayed → version_gap (allowlist.apply only)

A nonce is remembered (in the store, so across restarts) until its command expires; expired
commands are refused anyway, so the window never has to be longer than the longest lifetime.
The nonce is recorded before the executor runs: a crash mid-command never runs it twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from edge.errors import GatehouseError
from edge.store import Store
from sync import signing, strict_json
from sync.commands import ARGS, AllowlistApplyArgs, Command, ErrorCode, Reply
from sync.config import MqttConfig
from sync.topics import Topics

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

ALLOWLIST_VERSION_KEY = "sync.allowlist_version"
EXECUTE_TIMEOUT_S = 15.0
PRUNE_EVERY_S = 600.0

ReplyPublisher = Callable[[str, bytes, bytes | None], None]
"""publish(topic, payload, correlation_data): sends a reply at QoS 1."""


class CommandRejected(GatehouseError):
    """Raised by an executor that refuses a valid command (unknown gate, camera offline…)."""

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.REJECTED,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail or {}


class Executor(Protocol):
    """What the gateway implements to carry out verified commands.

    `execute` returns the reply's `result` (a JSON-able dict) or raises CommandRejected.
    For `allowlist.apply` the downlink has already checked the version: a delta always
    continues the list the gateway holds, and a `full` list replaces it."""

    async def execute(self, command: Command) -> dict[str, Any]: ...


class ReplayWindow:
    """Nonces seen, each kept until its command expires; persisted in the store."""

    TABLE = "sync_command_nonces"

    def __init__(self, store: Store) -> None:
        self.store = store
        store.write(
            lambda c: c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} "
                "(nonce TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL, command_id TEXT)"
            )
        )
        self._last_prune = 0.0

    def remember(self, nonce: str, command_id: str, expires_ms: int) -> bool:
        """Record the nonce; False when it was already there (a replay)."""

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"INSERT INTO {self.TABLE}(nonce, expires_ms, command_id) VALUES (?, ?, ?) "
                "ON CONFLICT(nonce) DO NOTHING",
                (nonce, expires_ms, command_id),
            )
            return cursor.rowcount == 1

        return self.store.write(insert)

    def prune(self, now_ms: int) -> None:
        self.store.write(lambda c: c.execute(f"DELETE FROM {self.TABLE} WHERE expires_ms < ?", (now_ms,)))

    def maybe_prune(self, now_ms: int) -> None:
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.prune(now_ms)


class Downlink:
    """Verifies and executes the commands addressed to one gateway."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        site: str,
        gateway: str,
        key: str | bytes | None,
        public_key: Ed25519PublicKey | None = None,
        config: MqttConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.executor = executor
        self.site = site
        self.gateway = gateway
        self.keys: dict[str, signing.VerifyingKey] = {
            alg: value
            for alg, value in ((signing.HMAC, key), (signing.ED25519, public_key))
            if value is not None and value != ""
        }
        """The keys commands may be signed with, by algorithm: the gateway's HMAC key and the
        community's Ed25519 public key, whichever are configured."""
        self.config = config or MqttConfig()
        self.topics = Topics(site, gateway, self.config.topic_prefix)
        self.clock = clock
        self.replay = ReplayWindow(store)
        self.executed = 0
        self.rejected: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publish: ReplyPublisher | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._allowlist_lock = asyncio.Lock()

    # Wiring: the uplink's MQTT client delivers, the executor's event loop runs

    def bind(self, publish: ReplyPublisher, loop: asyncio.AbstractEventLoop) -> None:
        self._publish = publish
        self._loop = loop
        self._allowlist_lock = asyncio.Lock()

    def submit(
        self,
        topic: str,
        payload: bytes,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        """Called from the MQTT thread for each message on `…/cmd/+`; returns at once."""
        if self._loop is None or self._loop.is_closed():
            log.warning("command on %s dropped: the downlink is not bound to an event loop", topic)
            return
        future = asyncio.run_coroutine_threadsafe(
            self._handle(topic, payload, response_topic, correlation), self._loop
        )
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("command handling failed", exc_info=future.exception())

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait (from a thread other than the loop's) until submitted commands are answered."""
        with self._lock:
            pending = list(self._pending)
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        return not not_done

    async def _handle(
        self, topic: str, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> None:
        name = topic.rsplit("/", 1)[-1]
        try:
            reply = await self.process(name, payload)
        except Exception as err:
            # Whatever checking a command trips over, the sender hears about it.
            log.exception("command on %s could not be checked", topic)
            reply = self._fail(ErrorCode.MALFORMED, f"the command could not be read: {type(err).__name__}")
        reply_topic = response_topic or self.topics.reply(name if name in ARGS else "unknown")
        publish = self._publish
        if publish is not None:
            publish(reply_topic, reply.model_dump_json(exclude_none=True).encode(), correlation)

    # Verification and dispatch

    def _fail(
        self,
        code: ErrorCode,
        message: str,
        document: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Reply:
        self.rejected[code.value] = self.rejected.get(code.value, 0) + 1
        command_id = document.get("id") if document else None
        name = document.get("name") if document else None
        log.warning("command %s refused: %s (%s)", name or "?", code.value, message)
        return Reply.failure(
            code,
            message,
            command_id=command_id if isinstance(command_id, str) else None,
            name=name if isinstance(name, str) else None,
            detail=detail,
        )

    async def process(self, topic_name: str, payload: bytes) -> Reply:
        """Verify one command that arrived on `…/cmd/{topic_name}` and run it if it passes."""
        limit = self.config.max_command_bytes
        if len(payload) > limit:
            return self._fail(
                ErrorCode.OVERSIZED, f"{len(payload)} bytes; at most {limit}", detail={"max": limit}
            )
        try:
            document = strict_json.loads(payload)
        except (ValueError, RecursionError) as err:
            return self._fail(ErrorCode.MALFORMED, f"not JSON: {err}")
        if not isinstance(document, dict):
            return self._fail(ErrorCode.MALFORMED, "a command is a JSON object")
        name = document.get("name")
        if not isinstance(name, str) or name not in ARGS:
            return self._fail(
                ErrorCode.UNKNOWN_COMMAND,
                f"unknown command {name!r}",
                document,
                detail={"known": sorted(ARGS)},
            )
        if name != topic_name:
            return self._fail(
                ErrorCode.UNKNOWN_COMMAND, f"{name!r} sent on the {topic_name!r} topic", document
            )
        if "sig" not in document:
            return self._fail(ErrorCode.UNSIGNED, "the command carries no signature", document)
        alg = document.get(signing.ALG_FIELD, signing.HMAC)
        if alg not in signing.ALGORITHMS:
            return self._fail(
                ErrorCode.BAD_SIGNATURE,
                f"unknown signature algorithm {alg!r}",
                document,
                detail={"known": list(signing.ALGORITHMS)},
            )
        key = self.keys.get(alg)
        if key is None:
            return self._fail(ErrorCode.BAD_SIGNATURE, f"this gateway has no {alg} key configured", document)
        if not signing.verify(document, key):
            return self._fail(ErrorCode.BAD_SIGNATURE, "the signature does not match", document)
        try:
            args = ARGS[name].model_validate(document.get("args", {}))
        except ValidationError as err:
            return self._fail(
                ErrorCode.INVALID,
                "the command's arguments do not match its schema",
                document,
                {"errors": _problems(err, "args.")},
            )
        try:
            command = Command.model_validate({**document, "args": args})
        except ValidationError as err:
            problems = _problems(err, "")
            return self._fail(
                ErrorCode.INVALID,
                "the command does not match its schema",
                document,
                {"errors": problems},
            )
        if command.site != self.site or command.gateway != self.gateway:
            return self._fail(
                ErrorCode.WRONG_GATEWAY,
                f"addressed to {command.site}/{command.gateway}; this is {self.site}/{self.gateway}",
                document,
            )
        now_ms = int(self.clock() * 1000)
        issued_ms = int(command.issued_at.timestamp() * 1000)
        expires_ms = int(command.expires_at.timestamp() * 1000)
        lifetime_s = (expires_ms - issued_ms) / 1000
        if lifetime_s > self.config.max_command_lifetime_s:
            return self._fail(
                ErrorCode.LIFETIME_TOO_LONG,
                f"valid for {lifetime_s:.0f} s; at most {self.config.max_command_lifetime_s} s",
                document,
            )
        if issued_ms > now_ms + self.config.clock_skew_s * 1000:
            return self._fail(
                ErrorCode.NOT_YET_VALID,
                f"issued at {command.issued_at.isoformat()}, in the future; check the clocks",
                document,
            )
        if expires_ms <= now_ms:
            return self._fail(
                ErrorCode.EXPIRED,
                f"expired at {command.expires_at.isoformat()}",
                document,
                detail={"now": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()},
            )
        self.replay.maybe_prune(now_ms)
        if not self.replay.remember(command.nonce, str(command.id), expires_ms):
            return self._fail(ErrorCode.REPLAYED, "this nonce was already used", document)
        if not isinstance(command.args, AllowlistApplyArgs):
            return await self._execute(command)
        # Allow-list changes apply one at a time, in arrival order: a delta N+1 -> N+2 that
        # arrives while N -> N+1 is being written is checked against N+1, not N.
        async with self._allowlist_lock:
            have = self.allowlist_version()
            if not command.args.full and command.args.from_version != have:
                return self._fail(
                    ErrorCode.VERSION_GAP,
                    f"the gateway holds allow-list version {have}, the delta starts at "
                    f"{command.args.from_version}; send the full list",
                    document,
                    detail={"have": have, "snapshot_required": True},
                )
            return await self._execute(command)

    async def _execute(self, command: Command) -> Reply:
        try:
            result = await asyncio.wait_for(self.executor.execute(command), EXECUTE_TIMEOUT_S)
        except CommandRejected as err:
            return Reply.failure(
                err.code, str(err), command_id=str(command.id), name=command.name, detail=err.detail
            )
        except TimeoutError:
            return Reply.failure(
                ErrorCode.EXECUTION_FAILED,
                f"not done within {EXECUTE_TIMEOUT_S:.0f} s",
                command_id=str(command.id),
                name=command.name,
            )
        except Exception as err:
            log.exception("command %s failed", command.name)
            return Reply.failure(
                ErrorCode.EXECUTION_FAILED,
                f"{type(err).__name__}: {err}",
                command_id=str(command.id),
                name=command.name,
            )
        self.executed += 1
        if isinstance(command.args, AllowlistApplyArgs):
            self.store.kv_set(ALLOWLIST_VERSION_KEY, str(command.args.to_version))
            result = {**result, "version": command.args.to_version}
        return Reply(id=str(command.id), name=command.name, ok=True, result=result)

    def allowlist_version(self) -> int:
        value = self.store.kv_get(ALLOWLIST_VERSION_KEY)
        return int(value) if value is not None else 0


def _problems(err: ValidationError, prefix: str) -> list[dict[str, str]]:
    return [{"loc": prefix + ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in err.errors()]
