"""The community side of the downlink: allow-lists and passes kept in the community database,
turned into signed commands for a gateway, and sent over MQTT.

An allow-list has a version per gateway. Each change (an add, a removal, a CSV import) makes
one new version, recorded in `allowlist_changes`; the gateway is sent the delta N → N+1. A
gateway that holds another version answers `version_gap`, and the ingest service then sends
the whole list at the current version.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from edge.allowlist import CSV_SEMICOLONS, csv_records, normalise_plate, pass_state
from edge.errors import ConfigError
from edge.privacy import credential_hash, normalise_credential
from sync import commands, signing
from sync import mqtt as mqttc
from sync.commands import AllowEntry, AllowKey, PassIssueArgs
from sync.config import MqttConfig
from sync.db import Database, now_iso
from sync.topics import Topics

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNER_KEY_ENV = "GATEHOUSE_COMMAND_SIGNER_KEY"
SIGNER_CREDENTIAL = "community-commands.pem"
DELTA_TTL_S = 6 * 3600
OPEN_GATE_TTL_S = 30
PASS_TTL_S = 6 * 3600
CSV_COLUMNS = ("kind", "value", "subject", "gates", "valid_until")
"""the columns of `gatehouse admin allow import`; the first three are required"""


def signer_key_path(given: str | None) -> str | None:
    """Where the community's Ed25519 signing key is: `given` (--signer-key), else
    $GATEHOUSE_COMMAND_SIGNER_KEY, else the credential SIGNER_CREDENTIAL that systemd loaded for
    the ingest service (LoadCredential=); None when there is none."""
    credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / SIGNER_CREDENTIAL
    return given or os.environ.get(SIGNER_KEY_ENV) or (str(credential) if credential.is_file() else None)


def load_signer(path: Path) -> Ed25519PrivateKey:
    """The community's Ed25519 signing key from its PEM file; ConfigError saying what is wrong."""
    try:
        return signing.read_private_key(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the signing key ({err.strerror or err})") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not an unencrypted Ed25519 private key in PEM ({err})") from err


class Community:
    """Allow-lists, passes and commands for the gateways of the community database."""

    def __init__(self, db: Database, signer_key: str | None = None) -> None:
        """`signer_key`: the PEM file of the community's Ed25519 signing key, for gateways
        registered with `--ed25519`; default $GATEHOUSE_COMMAND_SIGNER_KEY, else the credential
        SIGNER_CREDENTIAL that systemd loaded for the ingest service (LoadCredential=)."""
        self.db = db
        self.signer_key = signer_key_path(signer_key)
        self._signer: Ed25519PrivateKey | None = None

    # sites and gateways

    def add_site(self, site: str, *, name: str = "", salt: str | None = None) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO sites(id, name, salt, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "salt = COALESCE(excluded.salt, sites.salt)",
                (site, name, salt, now_iso()),
            )

    def register_gateway(self, site: str, gateway: str, key: str | None) -> None:
        """Commands to this gateway are signed with its HMAC `key`, or, with None, with the
        community's Ed25519 key (the gateway has its public key as gateway.command_public_key)."""
        alg = signing.ED25519 if key is None else signing.HMAC
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO gateways(site_id, id, signing_key, signing_alg) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site_id, id) DO UPDATE SET signing_key = excluded.signing_key, "
                "signing_alg = excluded.signing_alg",
                (site, gateway, key, alg),
            )

    def key(self, site: str, gateway: str) -> signing.SigningKey:
        """What signs commands to this gateway: its HMAC key, or the community's Ed25519 key;
        ConfigError when the gateway is not registered or the Ed25519 key was not given."""
        row = self.db.one(
            "SELECT signing_alg, signing_key FROM gateways WHERE site_id = ? AND id = ?", (site, gateway)
        )
        if row is not None and row[0] == signing.ED25519:
            return self.signer()
        register = f"`gatehouse admin gateway add {site} {gateway} --key-env NAME` (or --ed25519)"
        if row is None:
            # most often a typo: registering it would record and sign for a gateway nobody runs
            known = [f"{s}/{g}" for s, g in self.db.query("SELECT site_id, id FROM gateways")]
            near = difflib.get_close_matches(f"{site}/{gateway}", known, n=1)
            raise ConfigError(
                f"no gateway {site}/{gateway} in the community database"
                + (f" (did you mean {near[0]}?)" if near else "")
                + f"; `gatehouse admin gateway list` shows the gateways it knows, and {register} "
                "registers a new one"
            )
        if not row[1]:
            raise ConfigError(
                f"gateway {site}/{gateway} is not registered: the community database has its status "
                f"but no key to sign its commands with; register it with {register}"
            )
        return str(row[1])

    def signer(self) -> Ed25519PrivateKey:
        """The community's Ed25519 signing key, read once; ConfigError saying what to give."""
        if self._signer is None:
            if not self.signer_key:
                raise ConfigError(
                    "this gateway takes commands signed with the community's Ed25519 key: give its PEM "
                    f"file with --signer-key FILE or ${SIGNER_KEY_ENV} (make one with "
                    "`gatehouse admin signer new FILE`)"
                )
            self._signer = load_signer(Path(self.signer_key))
        return self._signer

    def salt(self, site: str) -> str:
        row = self.db.one("SELECT salt FROM sites WHERE id = ?", (site,))
        if row is None or not row[0]:
            raise ConfigError(
                f"site {site} has no credential salt in the community database; add it with "
                f"`gatehouse admin gateway add {site} GATEWAY --key-env NAME --salt-env NAME`"
            )
        return str(row[0])

    def credential(self, site: str, kind: str, raw: str) -> tuple[str, str | None]:
        """The value an allow-list or pass carries for a raw credential: plates as the gateway
        normalises them, cards and QR tokens as the site-salted hash (with their last 4).
        ConfigError for a plate the gateway would refuse, an unknown kind or an empty value."""
        if kind == "plate":
            return _plate(raw), None
        if kind not in ("card", "qr", "pin"):
            raise ConfigError(f"kind {kind!r}: expected card, qr, pin or plate")
        normalised = normalise_credential(raw, kind)
        if not normalised:
            raise ConfigError(f"empty {kind}")
        return credential_hash(normalised, self.salt(site), kind), normalised[-4:]

    def gates_of(self, site: str, gateway: str) -> list[str]:
        """The gates the gateway reported in its status (none before its first one)."""
        rows = self.db.query("SELECT id FROM gates WHERE site_id = ? AND gateway_id = ?", (site, gateway))
        return sorted(str(row[0]) for row in rows)

    # allow-lists

    def allowlist_version(self, site: str, gateway: str) -> int:
        row = self.db.one(
            "SELECT allowlist_version FROM gateways WHERE site_id = ? AND id = ?", (site, gateway)
        )
        return int(row[0]) if row else 0

    def _change(
        self, site: str, gateway: str, adds: Sequence[AllowEntry], removes: Sequence[AllowKey]
    ) -> int:
        self.key(site, gateway)  # a change nobody can sign is not recorded
        # An entry the gateway refuses would hold it at its version for good: every later delta
        # answers version_gap, and the full list sent then is refused for the same entry.
        adds = [_checked(entry) for entry in adds]
        known = self.gates_of(site, gateway)
        for entry in adds:
            refuse_unknown_gates(site, gateway, known, entry.gates)
        with self.db.transaction():
            version = self.allowlist_version(site, gateway) + 1
            for entry in adds:
                body = entry.model_dump_json(exclude_none=True)
                self.db.execute(
                    "INSERT INTO allowlist_entries(site_id, gateway_id, kind, value, entry, version) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, gateway_id, kind, value) "
                    "DO UPDATE SET entry = excluded.entry, version = excluded.version",
                    (site, gateway, entry.kind, entry.value, body, version),
                )
                self.db.execute(
                    "INSERT INTO allowlist_changes(site_id, gateway_id, version, op, kind, value, entry) "
                    "VALUES (?, ?, ?, 'add', ?, ?, ?) ON CONFLICT DO NOTHING",
                    (site, gateway, version, entry.kind, entry.value, body),
                )
            for key in removes:
                self.db.execute(
                    "DELETE FROM allowlist_entries WHERE site_id = ? AND gateway_id = ? AND kind = ? "
                    "AND value = ?",
                    (site, gateway, key.kind, key.value),
                )
                self.db.execute(
                    "INSERT INTO allowlist_changes(site_id, gateway_id, version, op, kind, value) "
                    "VALUES (?, ?, ?, 'remove', ?, ?) ON CONFLICT DO NOTHING",
                    (site, gateway, version, key.kind, key.value),
                )
            self.db.execute(
                "UPDATE gateways SET allowlist_version = ? WHERE site_id = ? AND id = ?",
                (version, site, gateway),
            )
        return version

    def allow_add(self, site: str, gateway: str, entries: Iterable[AllowEntry]) -> int:
        return self._change(site, gateway, list(entries), [])

    def allow_remove(self, site: str, gateway: str, keys: Iterable[AllowKey]) -> int:
        return self._change(site, gateway, [], list(keys))

    def allow_import(self, site: str, gateway: str, path: Path) -> tuple[int, int]:
        """Add every row of a CSV file with a header row (columns kind,value,subject[,gates]
        [,valid_until]; gates separated by spaces; valid_until with its time zone; card and qr
        values are raw and hashed here), all or nothing. Returns (version, rows); ConfigError
        naming the file, line and what to fix."""
        entries = []
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                # strict: a quote left open would otherwise take the lines after it into one value
                reader = csv.DictReader(handle, strict=True)
                columns = [name.strip().lower() for name in reader.fieldnames or ()]
                reader.fieldnames = columns
                expected = "kind,value,subject[,gates][,valid_until]"
                missing = [name for name in CSV_COLUMNS[:3] if name not in columns]
                if missing:
                    semicolons = len(columns) == 1 and ";" in columns[0]
                    raise ConfigError(
                        f"{path}:1: the header row needs the columns {expected}; {', '.join(missing)} missing"
                        + (f"; {CSV_SEMICOLONS}" if semicolons else "")
                    )
                twice = sorted({name for name in columns if columns.count(name) > 1})
                if twice:
                    # a reader keeps the last of two columns of one name: the first would be lost
                    raise ConfigError(
                        f"{path}:1: the column {', '.join(map(repr, twice))} twice; keep one of them"
                    )
                unknown = [name for name in columns if name not in CSV_COLUMNS]
                if unknown:
                    raise ConfigError(
                        f"{path}:1: unknown column {', '.join(map(repr, unknown))}; "
                        f"the columns are {expected}"
                    )

                def unpaired(problem: str) -> None:
                    raise ConfigError(f"{path}:{problem}")

                known = self.gates_of(site, gateway)

                # the line each credential is first on: a second line for it with other details
                # is a mistake to fix (which of the two is meant?), the same line again is not
                first: dict[tuple[str, str], tuple[int, AllowEntry]] = {}
                for row in csv_records(reader, unpaired):
                    try:
                        entry = self._csv_entry(site, row, len(columns))
                        refuse_unknown_gates(site, gateway, known, entry.gates)
                    except ConfigError as err:
                        raise ConfigError(f"{path}:{reader.line_num}: {err}") from err
                    line, seen = first.setdefault((entry.kind, entry.value), (reader.line_num, entry))
                    if seen == entry:
                        continue
                    shown = (
                        f"plate {entry.value}" if entry.kind == "plate" else f"{entry.kind} …{entry.last4}"
                    )
                    raise ConfigError(
                        f"{path}:{reader.line_num}: {shown} is also on line {line}, for someone else or "
                        "with other details; keep one of the two lines"
                    )
                entries = [entry for _, entry in first.values()]
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text ({err.reason}); save it as CSV UTF-8") from err
        except csv.Error as err:
            raise ConfigError(f"{path}: not a CSV file ({err})") from err
        except OSError as err:
            raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from err
        if not entries:
            raise ConfigError(f"{path}: no rows below the header row; nothing imported")
        return self.allow_add(site, gateway, entries), len(entries)

    def _csv_entry(self, site: str, row: dict[str | None, Any], columns: int) -> AllowEntry:
        if None in row:
            raise ConfigError(f"{columns + len(row[None])} fields, the header row names {columns}")
        fields = {name: (text or "").strip() for name, text in row.items() if name is not None}
        missing = [name for name in CSV_COLUMNS[:3] if not fields.get(name)]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        kind = fields["kind"].lower()
        value, last4 = self.credential(site, kind, fields["value"])
        return _entry(
            kind=kind,
            value=value,
            last4=last4,
            subject=fields["subject"],
            gates=tuple(fields.get("gates", "").split()),
            valid_until=_aware(fields.get("valid_until", ""), "valid_until"),
        )

    def allowlist_delta(self, site: str, gateway: str, version: int | None = None) -> dict[str, Any]:
        """The signed delta that takes the gateway from version-1 to version (default: latest)."""
        version = version or self.allowlist_version(site, gateway)
        rows = self.db.query(
            "SELECT op, kind, value, entry FROM allowlist_changes WHERE site_id = ? AND gateway_id = ? "
            "AND version = ? ORDER BY op, kind, value",
            (site, gateway, version),
        )
        args = {
            "from_version": version - 1,
            "to_version": version,
            "add": [_json(entry) for op, _, _, entry in rows if op == "add"],
            "remove": [{"kind": kind, "value": value} for op, kind, value, _ in rows if op == "remove"],
        }
        return self.command(site, gateway, "allowlist.apply", args, DELTA_TTL_S)

    def allowlist_full(self, site: str, gateway: str) -> dict[str, Any]:
        with self.db.transaction():
            version = self.allowlist_version(site, gateway)
            rows = self.db.query(
                "SELECT entry FROM allowlist_entries WHERE site_id = ? AND gateway_id = ? "
                "ORDER BY kind, value",
                (site, gateway),
            )
        args = {"full": True, "to_version": max(version, 1), "add": [_json(row[0]) for row in rows]}
        return self.command(site, gateway, "allowlist.apply", args, DELTA_TTL_S)

    # passes and gates

    def pass_issue(self, site: str, gateway: str, args: PassIssueArgs) -> dict[str, Any]:
        self.key(site, gateway)  # a pass nobody can sign is not recorded
        refuse_unknown_gates(site, gateway, self.gates_of(site, gateway), args.gates)
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO passes(id, site_id, gateway_id, kind, plate, credential, host, valid_from, "
                "valid_until, max_uses, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    args.pass_id,
                    site,
                    gateway,
                    args.kind,
                    args.plate,
                    args.credential.model_dump_json() if args.credential else None,
                    args.host,
                    args.valid_from.isoformat(),
                    args.valid_until.isoformat(),
                    args.max_uses,
                    now_iso(),
                ),
            )
        return self.command(site, gateway, "pass.issue", args, PASS_TTL_S)

    def passes_to_restore(self, site: str, gateway: str) -> list[dict[str, Any]]:
        """Signed pass.issue commands that give a gateway whose store was replaced the passes it
        held: each one still to be used (not revoked, not ended, entries left), as it was issued,
        less the entries the gateway reported with it."""
        now = datetime.now(UTC)
        issued = {
            document["args"]["pass_id"]: document["args"]
            for document in (
                _json(row[0])
                for row in self.db.query(
                    "SELECT document FROM commands WHERE site_id = ? AND gateway_id = ? "
                    "AND name = 'pass.issue'",
                    (site, gateway),
                )
            )
        }
        documents = []
        for held in self.passes(site, gateway):
            if held.pass_id not in issued or held.state(now) not in ("valid", "not yet valid"):
                continue
            args = PassIssueArgs.model_validate(issued[held.pass_id])
            if args.max_uses is not None:
                args = args.model_copy(update={"max_uses": args.max_uses - held.entries})
            documents.append(self.command(site, gateway, "pass.issue", args, PASS_TTL_S))
        return documents

    def pass_revoke(self, site: str, gateway: str, pass_id: str, reason: str = "") -> dict[str, Any]:
        """Mark a pass issued to this gateway revoked and return the signed pass.revoke;
        ConfigError when the community database issued no such pass there."""
        self.key(site, gateway)  # a revocation nobody can sign is not recorded
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE passes SET revoked_at = COALESCE(revoked_at, ?) "
                "WHERE id = ? AND site_id = ? AND gateway_id = ?",
                (now_iso(), pass_id, site, gateway),
            )
        if not changed:
            raise ConfigError(
                f"no pass {pass_id} for {site}/{gateway} in the community database; "
                "`gatehouse admin pass issue` printed the id of each pass it issued"
            )
        return self.command(site, gateway, "pass.revoke", {"pass_id": pass_id, "reason": reason}, PASS_TTL_S)

    def allow_entries(
        self, site: str, gateway: str, *, subject: str | None = None
    ) -> list[tuple[AllowEntry, int]]:
        """The gateway's allow-list as the community database holds it (with the version each
        entry came in), by subject then kind; only `subject`'s entries when given."""
        rows = self.db.query(
            "SELECT entry, version FROM allowlist_entries WHERE site_id = ? AND gateway_id = ? "
            "ORDER BY kind, value",
            (site, gateway),
        )
        entries = [(AllowEntry.model_validate(_json(entry)), int(version)) for entry, version in rows]
        entries = [(e, v) for e, v in entries if subject is None or e.subject == subject]
        return sorted(entries, key=lambda item: (item[0].subject or "", item[0].kind))

    def passes(self, site: str, gateway: str) -> list[IssuedPass]:
        """The passes issued to the gateway, by start, each with the entries the gateway
        reported for it (its access.granted events that name the pass)."""
        rows = self.db.query(
            "SELECT id, kind, plate, credential, host, valid_from, valid_until, max_uses, revoked_at "
            "FROM passes WHERE site_id = ? AND gateway_id = ? ORDER BY valid_from, id",
            (site, gateway),
        )
        if not rows:
            return []
        starts = [int(datetime.fromisoformat(row[5]).timestamp() * 1000) for row in rows]
        marks = ", ".join("?" * len(rows))
        used = {
            pass_id: (int(count), int(last))
            for pass_id, count, last in self.db.query(
                "SELECT payload ->> 'pass_id', count(*), max(ts_ms) FROM events "
                "WHERE type = 'access.granted' AND ts_ms >= ? AND site_id = ? AND gateway_id = ? "
                f"AND payload ->> 'pass_id' IN ({marks}) "
                "GROUP BY payload ->> 'pass_id'",
                (min(starts), site, gateway, *[row[0] for row in rows]),
            )
        }
        return [
            IssuedPass(
                pass_id=pass_id,
                kind=kind,
                plate=plate,
                token=credential is not None,
                host=host,
                valid_from=datetime.fromisoformat(valid_from),
                valid_until=datetime.fromisoformat(valid_until),
                max_uses=int(max_uses) if max_uses is not None else None,
                revoked_at=revoked_at,
                entries=used.get(pass_id, (0, 0))[0],
                last_entry_ms=used.get(pass_id, (0, None))[1],
            )
            for pass_id, kind, plate, credential, host, valid_from, valid_until, max_uses, revoked_at in rows
        ]

    def new_pass(
        self,
        site: str,
        *,
        plate: str | None = None,
        qr: str | None = None,
        hours: float = 4.0,
        kind: str = "visitor",
        host: str | None = None,
        max_uses: int | None = None,
        gates: tuple[str, ...] = (),
    ) -> PassIssueArgs:
        """The arguments of a new pass; ConfigError for a plate the gateway would refuse or
        arguments out of range."""
        start = datetime.now(UTC).replace(microsecond=0)
        credential = None
        if qr is not None:
            value, _ = self.credential(site, "qr", qr)
            credential = AllowKey(kind="qr", value=value)
        try:
            return PassIssueArgs(
                pass_id=f"p-{uuid.uuid4().hex[:12]}",
                kind=kind,  # type: ignore[arg-type]
                plate=_plate(plate) if plate else None,
                credential=credential,
                host=host,
                gates=gates,
                valid_from=start,
                valid_until=start + timedelta(hours=hours),
                max_uses=max_uses,
            )
        except ValidationError as err:
            raise ConfigError(f"pass: {_errors(err)}") from err

    def command(
        self, site: str, gateway: str, name: str, args: Any, ttl_s: float = OPEN_GATE_TTL_S
    ) -> dict[str, Any]:
        """A command signed with the gateway's key and recorded in `commands`."""
        document = commands.build(
            name, args, site=site, gateway=gateway, key=self.key(site, gateway), ttl_s=ttl_s
        )
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO commands(id, site_id, gateway_id, name, issued_at, expires_at, document) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    document["id"],
                    site,
                    gateway,
                    name,
                    document["issued_at"],
                    document["expires_at"],
                    json.dumps(document, ensure_ascii=False),
                ),
            )
        return document


@dataclass(frozen=True)
class IssuedPass:
    """A pass the community database issued, with what the gateway reported of its use."""

    pass_id: str
    kind: str
    plate: str | None
    token: bool
    """issued for a QR token (kept only as its hash)"""
    host: str | None
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None
    revoked_at: str | None
    entries: int
    last_entry_ms: int | None

    def state(self, now: datetime) -> str:
        def ms(moment: datetime) -> int:
            return int(moment.timestamp() * 1000)

        return pass_state(
            ms(now),
            ms(self.valid_from),
            ms(self.valid_until),
            self.entries,
            self.max_uses,
            revoked=self.revoked_at is not None,
        )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _plate(raw: str) -> str:
    """The plate as the gateway normalises it (ConfigError for one it refuses), so that an entry
    added as 津a 12345 is removed as 津A12345."""
    try:
        return normalise_plate(raw)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _errors(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
        for error in err.errors()
    )


def _entry(**fields: Any) -> AllowEntry:
    try:
        return AllowEntry(**fields)
    except ValidationError as err:
        raise ConfigError(_errors(err)) from err


def _checked(entry: AllowEntry) -> AllowEntry:
    """The entry as the gateway takes it: a subject, and a plate in the gateway's form."""
    shown = entry.value if entry.kind == "plate" else f"…{entry.last4 or entry.value[-4:]}"
    if not entry.subject:
        raise ConfigError(
            f"{entry.kind} {shown}: an allowed entry needs a subject (the resident or household it "
            "belongs to); the gateway refuses one without"
        )
    if entry.kind == "plate":
        return entry.model_copy(update={"value": _plate(entry.value)})
    return entry


def _aware(text: str, name: str) -> datetime | None:
    """A time with its zone from text ('' is None); ConfigError naming `name` otherwise: the
    community database does not know the site's time zone, so a bare time would be a guess."""
    if not text:
        return None
    example = "2027-06-30T23:59:59+08:00"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise ConfigError(f"{name} {text!r}: not a date and time (e.g. {example})") from err
    if moment.tzinfo is None:
        raise ConfigError(f"{name} {text!r} has no time zone: write it with its offset, e.g. {example}")
    return moment


def publish_command(
    client: mqtt.Client, config: MqttConfig, document: dict[str, Any]
) -> mqtt.MQTTMessageInfo:
    """Send a command; under MQTT 5 it names `…/cmd/{name}/reply` as its response topic and its
    id as correlation data (3.1.1 gateways reply there anyway)."""
    topics = Topics(document["site"], document["gateway"], config.topic_prefix)
    properties = None
    if mqttc.is_v5(config):
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = topics.reply(document["name"])
        properties.CorrelationData = document["id"].encode()
    return client.publish(
        topics.cmd(document["name"]), json.dumps(document, ensure_ascii=False), qos=1, properties=properties
    )


def send_and_wait(config: MqttConfig, document: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Publish a command and wait for its reply (None when none came in time)."""
    topics = Topics(document["site"], document["gateway"], config.topic_prefix)
    session = mqttc.Session()
    client = mqttc.new_client(config, f"admin-{uuid.uuid4().hex[:8]}", clean=True)
    client.on_connect = session.on_connect
    client.on_disconnect = session.on_disconnect
    replies: list[dict[str, Any]] = []
    arrived = threading.Event()

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if body.get("id") == document["id"]:
            replies.append(body)
            arrived.set()

    client.on_message = on_message
    mqttc.connect(
        client, config, clean=True, session_expiry_s=0, connack=session.connack, outcome=session.outcome
    )
    try:
        subscribed = threading.Event()
        client.on_subscribe = lambda *a: subscribed.set()
        client.subscribe(topics.reply(document["name"]), qos=1)
        subscribed.wait(timeout)
        publish_command(client, config, document).wait_for_publish(timeout)
        arrived.wait(timeout)
    finally:
        mqttc.stop(client)
    return replies[0] if replies else None


def refuse_unknown_gates(site: str, gateway: str, known: list[str], gates: Iterable[str]) -> None:
    """ConfigError for a gate the gateway has not reported (an entry or pass for it would never
    match), naming the nearest; before the gateway's first status there is nothing to check."""
    unknown = [gate for gate in gates if gate not in known]
    if not known or not unknown:
        return
    near = difflib.get_close_matches(unknown[0], known, n=1)
    raise ConfigError(
        f"gate {unknown[0]!r} is not one of {site}/{gateway}'s gates ({', '.join(known)})"
        + (f"; did you mean {near[0]!r}?" if near else "")
        + " (an entry for a gate the gateway does not have never matches)"
    )
