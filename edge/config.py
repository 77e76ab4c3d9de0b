"""The whole configuration: one YAML file, validated by these models.

Sections live beside the code that uses them (`sync.config`, `models.config`, each driver's
`config.py`) and are collected here."""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from drivers.registry import device_config_models
from edge.config_base import SECRET, Identifier, StrictModel
from edge.rules.config import RulesConfig
from models.config import InferenceConfig
from sync import signing
from sync.config import MqttConfig

DEFAULT_CONFIG_PATH = Path("/etc/gatehouse/gatehouse.yaml")
DEFAULT_CREDENTIALS_DIR = Path("/etc/gatehouse/credentials")
"""Where `gatehouse init` writes the secrets and the service's LoadCredential= lines read them."""


Path_ = tuple[str | int, ...]


class MisplacedValue(ValueError):
    """A problem the whole configuration shows (a gate naming a missing device, two devices on
    one port that cannot share it), with the path of the value to point the installer at."""

    def __init__(self, path: Path_, message: str) -> None:
        super().__init__(message)
        self.path = path


class SiteConfig(StrictModel):
    id: Identifier = Field(
        description="compound id, as the community database knows it",
    )
    name: str = Field(default="", description="compound name for people")
    timezone: str = Field(default="UTC", description="IANA time zone of the compound, e.g. Asia/Shanghai")
    home_province: str | None = Field(
        default=None,
        max_length=1,
        description="province character of local plates, e.g. 津; settles near-ties in plate reading",
    )
    salt: str = Field(
        min_length=16,
        description="site-wide secret salt for hashing card numbers and QR tokens; write ${NAME}",
        json_schema_extra=SECRET,
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from err
        return value


class GatewayConfig(StrictModel):
    id: Identifier = Field(
        description="this gateway's id; also its MQTT client id",
    )
    state_dir: str = Field(
        default="/var/lib/gatehouse",
        description="where the store, snapshots and counters live; a relative path is taken from the "
        "configuration file's folder",
    )
    signing_key: str | None = Field(
        default=None,
        min_length=32,
        description="HMAC key (hex or text) that signs commands to this gateway; write ${NAME}",
        json_schema_extra=SECRET,
    )
    command_public_key: str | None = Field(
        default=None,
        description="the community database's Ed25519 public key (64 hex digits or a PEM block): "
        "commands it signs (alg ed25519) are accepted too; not a secret",
    )

    @field_validator("command_public_key")
    @classmethod
    def _ed25519_public_key(cls, value: str | None) -> str | None:
        if value is not None:
            signing.public_key(value)
        return value


class RetentionConfig(StrictModel):
    plates_days: int = Field(default=90, ge=1, description="days plate text is kept in local events")
    snapshots_days: int = Field(default=30, ge=1, description="days JPEG snapshots and crops are kept")


class StoreConfig(StrictModel):
    file: str = Field(default="gatehouse.db", description="SQLite file name inside the state directory")
    quota_mb: float = Field(
        default=512,
        gt=0,
        description="most disk the event store may use; beyond it synced rows, then telemetry, are dropped",
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="full: each commit survives power loss; normal: survives a process crash only",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="how long personal data is kept"
    )


class GateConfig(StrictModel):
    id: Identifier = Field(description="gate or lane id, e.g. north-in")
    name: str = Field(default="", description="what the guards call it")
    kind: Literal["vehicle", "pedestrian"] = Field(description="vehicle lane or pedestrian door")
    direction: Literal["in", "out", "both"] = Field(
        default="both", description="which way people or vehicles pass"
    )
    barrier: str | None = Field(default=None, description="device id of the barrier or door lock")
    readers: tuple[str, ...] = Field(default=(), description="device ids of card/QR readers at this gate")
    cameras: tuple[str, ...] = Field(
        default=(), description="device ids of cameras watching this gate's lane"
    )
    open_on_plate: bool = Field(
        default=True,
        description="open the barrier for an allowed plate read by this gate's cameras",
    )


class SupervisorConfig(StrictModel):
    queue_size: int = Field(
        default=1000,
        ge=10,
        description="observations waiting for the rules before new ones are dropped (and counted)",
    )
    restart_min_s: float = Field(default=1.0, gt=0, description="first restart delay of a failed driver")
    restart_max_s: float = Field(default=60.0, gt=0, description="longest restart delay")
    offline_alert_after: int = Field(
        default=3,
        ge=1,
        description="failed restarts in a row before a device.offline becomes an alert",
    )
    shutdown_timeout_s: float = Field(
        default=5.0, gt=0, description="SIGTERM drains and closes within this time"
    )


DeviceConfigUnion = Annotated[
    Union[device_config_models()],  # noqa: UP007 - the members are discovered at import
    Field(discriminator="kind"),
]


LINE_ADDRESSES: dict[str, tuple[str, str, str]] = {
    "osdp": ("address", "OSDP address", "give each reader its own address (its setup card or DIP switches)"),
    "modbus_gate": (
        "unit_id",
        "Modbus unit",
        "give each board its own unit id (DIP switches or its setup tool)",
    ),
}
"""For the kinds that share a line: the setting that tells the devices on it apart, its name for
people, and how to make two different."""


def _distinct_line_addresses(sharing: list[tuple[int, Any]]) -> None:
    """The devices of one line (one kind, checked before) each answer at their own address: two
    at one address would both take every poll, and the driver refuses the second at run time."""
    kind = sharing[0][1].kind
    if kind not in LINE_ADDRESSES:
        return
    setting, what, fix = LINE_ADDRESSES[kind]
    seen: dict[int, str] = {}
    for index, device in sharing:
        value = getattr(device, setting)
        if value in seen:
            raise MisplacedValue(
                ("devices", index, setting),
                f"devices {seen[value]} and {device.id} share the serial port {device.serial.port} and "
                f"both use {what} {value}; {fix}",
            )
        seen[value] = device.id


class GatehouseConfig(StrictModel):
    """The gateway's configuration file."""

    site: SiteConfig = Field(description="the compound")
    gateway: GatewayConfig = Field(description="this gateway")
    store: StoreConfig = Field(default_factory=StoreConfig, description="the local event store")
    mqtt: MqttConfig | None = Field(
        default=None, description="the uplink to the community database; absent: events stay local"
    )
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig, description="how drivers are run")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="on-device inference")
    gates: tuple[GateConfig, ...] = Field(default=(), description="vehicle lanes and pedestrian doors")
    rules: RulesConfig = Field(
        default_factory=RulesConfig,
        description="access rules (anti-passback) and alert thresholds and outputs",
    )
    devices: tuple[DeviceConfigUnion, ...] = Field(default=(), description="readers, barriers, cameras")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _references(self) -> GatehouseConfig:
        device_ids = [device.id for device in self.devices]
        for index, device_id in enumerate(device_ids):
            if device_id in device_ids[:index]:
                raise MisplacedValue(("devices", index, "id"), f"device id {device_id!r} is used twice")
        gate_ids = [gate.id for gate in self.gates]
        for index, gate_id in enumerate(gate_ids):
            if gate_id in gate_ids[:index]:
                raise MisplacedValue(("gates", index, "id"), f"gate id {gate_id!r} is used twice")
        known = ", ".join(sorted(device_ids)) or "none"
        for index, gate in enumerate(self.gates):
            named: list[tuple[Path_, str]] = (
                [(("gates", index, "barrier"), gate.barrier)] if gate.barrier else []
            )
            for slot in ("readers", "cameras"):
                named += [(("gates", index, slot, i), device) for i, device in enumerate(getattr(gate, slot))]
            for path, device_id in named:
                if device_id not in device_ids:
                    raise MisplacedValue(
                        path,
                        f"gate {gate.id!r} names device {device_id!r}, which is not in devices "
                        f"(known: {known})",
                    )
        for index, pair in enumerate(self.rules.anti_passback):
            for end in ("entry", "exit"):
                if getattr(pair, end) not in gate_ids:
                    raise MisplacedValue(
                        ("rules", "anti_passback", index, end),
                        f"anti-passback gate {getattr(pair, end)!r} is not in gates "
                        f"(known: {', '.join(sorted(gate_ids)) or 'none'})",
                    )
        devices_by_id = {device.id: device for device in self.devices}
        for index, output in enumerate(self.rules.alerts.outputs):
            if output.device not in device_ids:
                raise MisplacedValue(
                    ("rules", "alerts", "outputs", index, "device"),
                    f"alert output device {output.device!r} is not in devices (known: {known})",
                )
            # Only a relay board switches outputs, those its profile names: any other would
            # leave the guards without a siren and nothing but a line in the log.
            device = devices_by_id[output.device]
            relays = getattr(getattr(device, "profile", None), "outputs", None)
            if relays is None or output.output not in relays:
                have = (
                    f"its profile.outputs: {', '.join(sorted(relays)) or 'none'}"
                    if relays is not None
                    else (
                        f"a {device.kind} has none; sirens and strobes are relays of a modbus_gate board, "
                        "named in its profile.outputs"
                    )
                )
                raise MisplacedValue(
                    ("rules", "alerts", "outputs", index, "output"),
                    f"device {output.device!r} has no output {output.output!r} ({have})",
                )
        self._shared_ports()
        return self

    def _shared_ports(self) -> None:
        """Devices on one serial port: one protocol, a kind that can share a line (OSDP readers
        by address, Modbus boards by unit, each its own), and the same serial settings (one port
        is opened once, with one set of settings)."""
        by_port: dict[str, list[tuple[int, Any]]] = {}
        for index, device in enumerate(self.devices):
            serial = getattr(device, "serial", None)
            if serial is not None:
                by_port.setdefault(os.path.realpath(serial.port), []).append((index, device))
        for adapter, sharing in by_port.items():
            (_, first), *others = sharing
            port = first.serial.port
            for index, other in others:
                where: Path_ = ("devices", index, "serial", "port")
                if other.serial.port != port:
                    raise MisplacedValue(
                        where,
                        f"devices {first.id} and {other.id} name one adapter ({adapter}) by two paths, "
                        f"{port} and {other.serial.port}; write the same path for both, the stable "
                        "/dev/serial/by-id/… one",
                    )
                both = f"devices {first.id} and {other.id} share the serial port {port}"
                if other.kind != first.kind:
                    raise MisplacedValue(
                        where,
                        f"{both} but speak different protocols ({first.kind}, {other.kind}); give each "
                        "protocol its own adapter",
                    )
                if not type(first).shares_line:
                    raise MisplacedValue(where, f"{both}; a {first.kind} needs a port of its own")
                differ = [
                    name
                    for name in type(first.serial).model_fields
                    if getattr(first.serial, name) != getattr(other.serial, name)
                ]
                if differ:
                    raise MisplacedValue(
                        ("devices", index, "serial", differ[0]),
                        f"{both} but their serial settings differ ({', '.join(differ)}); devices on one "
                        "line need the same",
                    )
            _distinct_line_addresses(sharing)

    def inventory(self) -> dict[str, list[dict[str, Any]]]:
        """The devices and gates as the gateway's status and registration tell the community
        database (which keeps them as that gateway's whole list)."""
        return {
            "devices": [
                {"id": d.id, "kind": d.kind, "name": d.name, "enabled": d.enabled} for d in self.devices
            ],
            "gates": [{"id": g.id, "kind": g.kind, "name": g.name} for g in self.gates],
        }

    def device(self, device_id: str) -> Any:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)

    def gate_of(self, device_id: str) -> GateConfig | None:
        for gate in self.gates:
            if device_id in (gate.barrier, *gate.readers, *gate.cameras):
                return gate
        return None

    @property
    def state_path(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def store_path(self) -> Path:
        return self.state_path / self.store.file
