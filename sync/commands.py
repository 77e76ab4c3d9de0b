"""Commands to a gateway: the signed envelope, the arguments of each command, the reply and the
machine-readable error codes.

On the wire a command is one JSON object:

    {"v": 1, "id": "<uuid>", "name": "open_gate", "site": "…", "gateway": "…",
     "issued_at": "2026-05-01T08:00:00.000Z", "expires_at": "2026-05-01T08:00:30.000Z",
     "nonce": "<32 hex>", "args": {…}, "alg": "hmac-sha256", "sig": "<64 hex>"}

(`"alg": "ed25519"` with a 128-hex `sig` when the community signs with its Ed25519 key).

and its reply is `{"v": 1, "id": …, "name": …, "ok": true, "result": {…}}` or
`{"v": 1, "id": …, "name": …, "ok": false, "error": {"code": "expired", "message": …}}`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

from sync import signing

COMMAND_VERSION = 1


class ErrorCode(enum.StrEnum):
    """Why a command was not executed (or failed while executing)."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    UNKNOWN_COMMAND = "unknown_command"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    INVALID = "invalid"
    WRONG_GATEWAY = "wrong_gateway"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    VERSION_GAP = "version_gap"
    REJECTED = "rejected"
    EXECUTION_FAILED = "execution_failed"
    UNAVAILABLE = "unavailable"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenGateArgs(_Args):
    gate: str = Field(min_length=1, max_length=63, description="gate or lane id")
    reason: str = Field(default="operator", max_length=200, description="why, for the log")
    by: str = Field(default="operator", max_length=100, description="who asked")


class AllowEntry(_Args):
    """One allowed credential or plate."""

    kind: Literal["card", "qr", "pin", "plate"]
    value: str = Field(
        min_length=1,
        max_length=128,
        description="plate text, or the credential's site-salted hash (hex)",
    )
    last4: str | None = Field(default=None, max_length=4)
    subject: str | None = Field(default=None, max_length=100, description="resident or household")
    gates: tuple[str, ...] = Field(default=(), description="empty: every gate")
    valid_until: AwareDatetime | None = None


class AllowKey(_Args):
    kind: Literal["card", "qr", "pin", "plate"]
    value: str = Field(min_length=1, max_length=128)


class AllowlistApplyArgs(_Args):
    """A delta from version N to N+1, or (full=true) the whole list at a version."""

    full: bool = False
    from_version: int | None = Field(default=None, ge=0)
    to_version: int = Field(ge=1)
    add: tuple[AllowEntry, ...] = ()
    remove: tuple[AllowKey, ...] = ()

    @model_validator(mode="after")
    def _versions(self) -> AllowlistApplyArgs:
        if self.full:
            if self.remove or self.from_version is not None:
                raise ValueError("a full allow-list has no from_version and no removals")
        elif self.from_version is None or self.to_version != self.from_version + 1:
            raise ValueError("a delta goes from version N to N+1")
        return self


class PassIssueArgs(_Args):
    pass_id: str = Field(min_length=1, max_length=64)
    kind: Literal["visitor", "delivery", "contractor"] = "visitor"
    plate: str | None = Field(default=None, max_length=16)
    credential: AllowKey | None = Field(default=None, description="QR token or card, hashed")
    host: str | None = Field(default=None, max_length=100, description="household visited")
    gates: tuple[str, ...] = ()
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    max_uses: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _window(self) -> PassIssueArgs:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.plate is None and self.credential is None:
            raise ValueError("a pass needs a plate or a credential")
        return self


class PassRevokeArgs(_Args):
    pass_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=200)


class AlertAckArgs(_Args):
    alert_id: str = Field(min_length=1, max_length=64)
    by: str = Field(default="operator", max_length=100)


class SnapshotArgs(_Args):
    camera: str = Field(min_length=1, max_length=63, description="camera device id")


class ConfigReloadArgs(_Args):
    """No arguments: the gateway reads its own configuration file again."""


ARGS: dict[str, type[_Args]] = {
    "open_gate": OpenGateArgs,
    "allowlist.apply": AllowlistApplyArgs,
    "pass.issue": PassIssueArgs,
    "pass.revoke": PassRevokeArgs,
    "alert.ack": AlertAckArgs,
    "snapshot": SnapshotArgs,
    "config.reload": ConfigReloadArgs,
}
COMMAND_NAMES = tuple(ARGS)


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Command(BaseModel):
    """A verified command as the executor receives it; `args` is the typed model of its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = COMMAND_VERSION
    id: uuid.UUID
    name: str
    site: str
    gateway: str
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    nonce: str = Field(min_length=16, max_length=64, pattern=r"^[0-9a-f]+$")
    args: Any
    alg: Literal["hmac-sha256", "ed25519"] = "hmac-sha256"
    sig: str = Field(pattern=r"^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{128})$")

    @model_validator(mode="before")
    @classmethod
    def _typed_args(cls, data: Any) -> Any:
        if isinstance(data, dict):
            model = ARGS.get(data.get("name", ""))
            if model is None:
                raise ValueError(f"unknown command {data.get('name')!r}")
            args = data.get("args", {})
            if not isinstance(args, model):
                data = {**data, "args": model.model_validate(args)}
        return data

    @model_validator(mode="after")
    def _aware(self) -> Command:
        if self.issued_at.tzinfo is None or self.expires_at.tzinfo is None:
            raise ValueError("issued_at and expires_at need a time zone (write Z for UTC)")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    @field_serializer("issued_at", "expires_at")
    def _times(self, moment: datetime) -> str:
        return _iso_ms(moment)


def build(
    name: str,
    args: BaseModel | dict[str, Any],
    *,
    site: str,
    gateway: str,
    key: signing.SigningKey,
    ttl_s: float = 30.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A signed command document, ready to be sent as JSON."""
    model = ARGS[name]
    typed = args if isinstance(args, model) else model.model_validate(args)
    issued = now or datetime.now(UTC)
    document = {
        "v": COMMAND_VERSION,
        "id": str(uuid.uuid4()),
        "name": name,
        "site": site,
        "gateway": gateway,
        "issued_at": _iso_ms(issued),
        "expires_at": _iso_ms(issued + timedelta(seconds=ttl_s)),
        "nonce": signing.new_nonce(),
        "args": typed.model_dump(mode="json", exclude_defaults=False),
    }
    return signing.sign(document, key)


class ReplyError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: ErrorCode
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Reply(BaseModel):
    """What the gateway answers to a command."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = COMMAND_VERSION
    id: str | None = None
    name: str | None = None
    ok: bool
    result: dict[str, Any] | None = None
    error: ReplyError | None = None

    @classmethod
    def failure(
        cls,
        code: ErrorCode,
        message: str,
        *,
        command_id: str | None = None,
        name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Reply:
        return cls(
            id=command_id,
            name=name,
            ok=False,
            error=ReplyError(code=code, message=message, detail=detail or {}),
        )
