"""The event model: what the gateway records, keeps and sends upstream.

Every event has an id (UUIDv7), a schema version, the site and gateway, the device, a type,
a UTC timestamp in milliseconds, a per-gateway sequence number (given by the store when the
event is committed), a typed payload and content-addressed attachments.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_serializer,
    model_validator,
)

from edge.ids import uuid7

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
"""The largest event (its JSON) the store records: every event must fit one MQTT message, and a
broker's max_packet_size is set at no less than 256 KiB (docs/sync.md); one that could never be
delivered would hold up its whole class."""


class Priority(enum.IntEnum):
    """Send order: alerts first, then access decisions, then state, then telemetry.
    Telemetry is the only class the store may drop to make room."""

    ALERT = 0
    ACCESS = 1
    STATE = 2
    TELEMETRY = 3


class Payload(BaseModel):
    """Base of every type-specific payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Attachment(BaseModel):
    """A JPEG (or other) blob kept on disk under its sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    mime: str = "image/jpeg"
    role: str = Field(default="snapshot", description="what the picture shows: crop, snapshot")


class CredentialRef(BaseModel):
    """A card number, QR token or PIN as it may be stored: a keyed hash and the last 4."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["card", "qr", "pin", "plate"]
    hash: str = Field(description="HMAC-SHA256 of the credential with the site's salt, hex")
    last4: str = Field(max_length=4)
    format: str | None = Field(default=None, description="card format, e.g. wiegand26")


AccessReason = Literal[
    "resident",
    "pass",
    "operator",
    "expired",
    "not_yet_valid",
    "exhausted",
    "blocklisted",
    "unknown",
    "wrong_gate",
    "anti_passback",
    "revoked",
]


class AccessPayload(Payload):
    gate: str
    credential: CredentialRef | None = None
    plate: str | None = None
    subject: str | None = Field(default=None, description="person, household or pass id")
    reason: AccessReason
    direction: Literal["in", "out"] | None = None
    household: str | None = Field(default=None, description="the resident's household")
    pass_id: str | None = Field(default=None, description="the visitor or delivery pass used")
    detail: str = Field(default="", description="why, in words a guard can read")


GateState = Literal["closed", "opening", "open", "closing", "fault", "unknown"]


class GateStatePayload(Payload):
    gate: str
    state: GateState
    previous: GateState | None = None
    commanded: bool = Field(default=False, description="the change follows a command we sent")
    detail: str | None = None


class PlatePayload(Payload):
    plate: str | None = Field(description="plate text; blanked locally once the retention limit passes")
    colour: str | None = None
    confidence: float = Field(ge=0, le=1)
    lane: str | None = None
    direction: Literal["in", "out"] | None = None
    box: tuple[int, int, int, int] | None = None
    frames: int = Field(default=1, ge=1, description="frames that voted for this reading")
    crop: str | None = Field(default=None, description="sha256 of the best crop attachment")


class OccupancyPayload(Payload):
    zone: str
    count: int = Field(ge=0, description="vehicles or people seen in the zone")
    occupied: int | None = Field(default=None, ge=0, description="occupied spaces")
    capacity: int | None = Field(default=None, ge=0)


Severity = Literal["info", "warning", "critical"]


class AlertPayload(Payload):
    alert_id: str
    kind: str = Field(description="what happened, e.g. gate.forced_open, plate.blocklisted")
    key: str = Field(description="dedup key: one open alert per key")
    severity: Severity = "warning"
    message: str = ""
    gate: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


REPEATS_DESCRIPTION = "how many times the moment happened again while the alert was open, up to this event"
ALERT_GATE_DESCRIPTION = "the alert's gate, as alert.raised named it (so that a gate's events show its end)"


class AlertAckPayload(Payload):
    alert_id: str
    key: str
    by: str = Field(default="operator", description="who acknowledged it")
    repeats: int = Field(default=0, ge=0, description=REPEATS_DESCRIPTION)
    gate: str | None = Field(default=None, description=ALERT_GATE_DESCRIPTION)


class AlertClearedPayload(Payload):
    alert_id: str
    key: str
    reason: str = ""
    repeats: int = Field(default=0, ge=0, description=REPEATS_DESCRIPTION)
    gate: str | None = Field(default=None, description=ALERT_GATE_DESCRIPTION)


class DevicePayload(Payload):
    kind: str | None = None
    reason: str = ""
    restarts: int = 0


class DeviceHealthPayload(Payload):
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict)


class EventType:
    """A known event type: its payload model and its send priority."""

    registry: ClassVar[dict[str, EventType]] = {}

    def __init__(self, name: str, payload: type[Payload], priority: Priority) -> None:
        self.name = name
        self.payload = payload
        self.priority = priority
        EventType.registry[name] = self


for _name, _payload, _priority in (
    ("access.granted", AccessPayload, Priority.ACCESS),
    ("access.denied", AccessPayload, Priority.ACCESS),
    ("gate.state", GateStatePayload, Priority.STATE),
    ("vehicle.plate", PlatePayload, Priority.STATE),
    ("occupancy.sample", OccupancyPayload, Priority.TELEMETRY),
    ("device.health", DeviceHealthPayload, Priority.TELEMETRY),
    ("alert.raised", AlertPayload, Priority.ALERT),
    ("alert.acknowledged", AlertAckPayload, Priority.ALERT),
    ("alert.cleared", AlertClearedPayload, Priority.ALERT),
    ("device.online", DevicePayload, Priority.STATE),
    ("device.offline", DevicePayload, Priority.STATE),
):
    EventType(_name, _payload, _priority)


def priority_of(event_type: str) -> Priority:
    return EventType.registry[event_type].priority


def utc_now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Event(BaseModel):
    """One thing that happened at the gate, as stored and sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID = Field(default_factory=uuid7)
    v: int = SCHEMA_VERSION
    site: str
    gateway: str
    device: str | None = None
    type: str
    ts: AwareDatetime = Field(default_factory=utc_now_ms)
    seq: int = Field(default=0, ge=0, lt=2**63, description="per-gateway sequence, given at commit")
    payload: SerializeAsAny[Payload]
    attachments: tuple[Attachment, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, data: Any) -> Any:
        if isinstance(data, dict):
            event_type = EventType.registry.get(data.get("type", ""))
            if event_type is None:
                raise ValueError(f"unknown event type {data.get('type')!r}")
            payload = data.get("payload")
            if not isinstance(payload, event_type.payload):
                if isinstance(payload, BaseModel):
                    payload = payload.model_dump()
                data = {**data, "payload": event_type.payload.model_validate(payload)}
        return data

    @field_serializer("ts")
    def _ts_iso_ms(self, ts: datetime) -> str:
        return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def priority(self) -> Priority:
        return priority_of(self.type)

    @property
    def ts_ms(self) -> int:
        return int(self.ts.timestamp() * 1000)


class EventFactory:
    """Makes events for one site and gateway."""

    def __init__(self, site: str, gateway: str) -> None:
        self.site = site
        self.gateway = gateway

    def make(
        self,
        event_type: str,
        payload: Payload | dict[str, Any],
        device: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        ts: datetime | None = None,
    ) -> Event:
        fields: dict[str, Any] = {
            "site": self.site,
            "gateway": self.gateway,
            "device": device,
            "type": event_type,
            "payload": payload,
            "attachments": attachments,
        }
        if ts is not None:
            fields["ts"] = ts
        return Event.model_validate(fields)
