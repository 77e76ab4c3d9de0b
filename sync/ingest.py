"""The ingest service: gateway events and statuses from MQTT into the community database.

Each worker subscribes to `$share/ingest/gatehouse/v1/+/+/events/#` (the broker spreads the
events over the workers of the group), to every gateway's retained `status`, and to command
replies (shared as well). Events are validated with the gateway's own models and inserted by
id (insert-or-ignore), so redeliveries are harmless. A message is acknowledged only after its
transaction committed (manual PUBACKs); whatever arrived while the last transaction ran is
stored in the next one.

Sessions: a worker connects with its own client id, `clean_start=False` and a short session
expiry (60 s by default). Mosquitto keeps a shared-subscription member in the group while its
session lives and goes on queueing that member's share of the messages: with a long session a
dead worker would sit on its share until it came back (or the session expired, losing it);
with a clean session, the messages in flight to a worker that is killed are dropped with its
session. A short session is the middle way: a worker restarted by systemd within the expiry
picks up its share and its unacknowledged messages; a worker gone for good holds its share for
at most the expiry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge.errors import AuthFailed, ConfigError
from edge.events import Event
from sync import mqtt as mqttc
from sync import strict_json, topics
from sync.broker import BrokerHandle, ensure_broker
from sync.commands import ErrorCode, Reply
from sync.community import Community, publish_command
from sync.config import MqttConfig
from sync.db import Database, DatabaseError, now_iso, now_ms, open_database

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 60
BATCH_MESSAGES = 200

INSERT_EVENTS = (
    "INSERT INTO events (id, site_id, gateway_id, device_id, type, ts, ts_ms, seq, payload, "
    "attachments, received_at)"
)
ON_CONFLICT = "ON CONFLICT (id) DO NOTHING"


@dataclass
class IngestStats:
    messages: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    replies: int = 0
    attachments: int = 0


class IngestWorker:
    """One member of the `ingest` shared-subscription group (`shared=False` for a broker without
    shared subscriptions, such as amqtt; then run one worker only)."""

    def __init__(
        self,
        db_url: str,
        config: MqttConfig,
        *,
        name: str = "0",
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        shared: bool = True,
        signer_key: str | None = None,
    ) -> None:
        """`signer_key`: the community's Ed25519 key (PEM file), for the full allow-lists it
        sends to gateways registered with --ed25519 (default: $GATEHOUSE_COMMAND_SIGNER_KEY)."""
        self.db_url = db_url
        self.signer_key = signer_key
        self.config = config
        self.client_id = f"ingest-{name}"
        self.session_expiry_s = session_expiry_s
        self.shared = shared
        self.stats = IngestStats()
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._inbox: queue.Queue[tuple[mqtt.Client, mqtt.MQTTMessage]] = queue.Queue()
        self._db: Database | None = None
        self._rng = random.Random()
        self._backoff = mqttc.Backoff(config, self._rng)
        self.last_error: str | None = None

    # lifecycle

    def start(self) -> IngestWorker:
        self._db = open_database(self.db_url)
        self._stopping.clear()
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.client_id}-db", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._run, name=self.client_id, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def run_forever(self) -> None:
        """Run until stopped (SIGTERM in the CLI); starts the worker unless already started."""
        if self._thread is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(1.0)
        finally:
            self.stop()

    def __enter__(self) -> IngestWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the reconnect loop

    def _run(self) -> None:
        while not self._stopping.is_set():
            session = mqttc.Session()
            client = mqttc.new_client(self.config, self.client_id, clean=False)
            client.on_connect = session.on_connect
            client.on_disconnect = session.on_disconnect
            client.on_message = self._on_message
            client.manual_ack_set(True)
            # before connecting: a resumed session delivers at once, and those messages must be
            # acknowledged on this client
            self._client = client
            try:
                mqttc.connect(
                    client,
                    self.config,
                    clean=False,
                    session_expiry_s=self.session_expiry_s,
                    connack=session.connack,
                    outcome=session.outcome,
                )
            except (mqttc.MqttError, AuthFailed) as err:
                if self.last_error != str(err):
                    log.warning("ingest %s: %s", self.client_id, err)
                self.last_error = str(err)
                self._backoff.wait(self._stopping)
                continue
            self._backoff.connected()
            self.last_error = None
            prefix = self.config.topic_prefix
            client.subscribe(
                [
                    (topics.events_filter(prefix, self.shared), 1),
                    (topics.status_filter(prefix), 1),
                    (topics.reply_filter(prefix, self.shared), 1),
                    (topics.attachments_filter(prefix, self.shared), 1),
                ]
            )
            self.connected.set()
            log.info("ingest %s: connected to %s:%s", self.client_id, self.config.host, self.config.port)
            while not self._stopping.is_set() and not session.closed.is_set():
                session.closed.wait(0.2)
            self.connected.clear()
            self._client = None
            mqttc.stop(client)
            if not self._stopping.is_set():
                log.warning(
                    "ingest %s: lost the broker (%s); connecting again",
                    self.client_id,
                    session.outcome.get("disconnect"),
                )
            self._backoff.wait(self._stopping)

    # messages: paho's network thread queues them, the writer stores them in groups

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((client, message))

    def _write_loop(self) -> None:
        """Store what has arrived in one transaction, then acknowledge it (manual PUBACKs): a
        message is acknowledged only once it is committed, and a busy worker commits many
        messages at a time."""
        while not self._stopping.is_set():
            try:
                batch = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < BATCH_MESSAGES:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._store_batch(batch)

    def _store_batch(self, batch: list[tuple[mqtt.Client, mqtt.MQTTMessage]]) -> None:
        """Store the batch, then acknowledge it. While the database cannot be written (the
        connection dropped, the file locked, the disk full), keep the batch unacknowledged and
        try again, opening a dropped connection again: the broker sends this worker nothing new
        while its in-flight window is full, and a worker that dies meanwhile gets the batch again
        from its session. (Reconnecting to have the broker resend it would lose it for a worker
        without a session.)"""
        db = self._db
        if db is None:
            return
        attempt = 0
        while True:
            try:
                after = self._store(db, batch)
                break
            except Exception as err:
                if attempt == 0:
                    log.error(
                        "ingest %s: cannot store %d messages (%s); trying again until the database answers",
                        self.client_id,
                        len(batch),
                        err,
                    )
                delay = mqttc.backoff_delay(
                    attempt, self.config.reconnect_min_s, self.config.reconnect_max_s, self._rng
                )
                attempt += 1
                if self._stopping.wait(delay):
                    return
                try:
                    db.reconnect()
                except DatabaseError as reopen:
                    log.debug("ingest %s: %s", self.client_id, reopen)
        if attempt:
            log.info("ingest %s: the database answers again; %d messages stored", self.client_id, len(batch))
        for client, message in batch:
            if message.qos > 0 and client is self._client:
                client.ack(message.mid, message.qos)
        self.stats.messages += len(batch)
        for action in after:
            action()

    def _store(
        self, db: Database, batch: list[tuple[mqtt.Client, mqtt.MQTTMessage]]
    ) -> list[Callable[[], None]]:
        """The batch in one transaction; when the database refuses something in it (a value it
        cannot hold), the messages one at a time, so that the refused one is put aside in
        rejected_messages and the others are kept. Returns what to do once acknowledged."""
        after: list[Callable[[], None]] = []
        try:
            with self._counting(), db.transaction():
                for client, message in batch:
                    self._handle(db, client, message, after)
            return after
        except Exception as err:
            if db.unavailable(err):
                raise
            log.warning(
                "ingest %s: a message in a batch of %d was refused (%s)", self.client_id, len(batch), err
            )
        after = []
        for client, message in batch:
            self._store_alone(db, client, message, after)
        return after

    def _store_alone(
        self, db: Database, client: mqtt.Client, message: mqtt.MQTTMessage, after: list[Callable[[], None]]
    ) -> None:
        """One message in its own transaction; put aside when the database refuses it."""
        own: list[Callable[[], None]] = []
        try:
            with self._counting(), db.transaction():
                self._handle(db, client, message, own)
        except Exception as err:
            if db.unavailable(err):
                raise
            with db.transaction():
                self._reject(db, message.topic, f"the database refused it: {err}", message.payload)
            return
        after.extend(own)

    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        """What a transaction that fails counted in `stats` is taken back."""
        before = dataclasses.replace(self.stats)
        try:
            yield
        except BaseException:
            self.stats = before
            raise

    def _handle(
        self, db: Database, client: mqtt.Client, message: mqtt.MQTTMessage, after: list[Callable[[], None]]
    ) -> None:
        parsed = topics.parse(message.topic, self.config.topic_prefix)
        if parsed is None:
            self._reject(db, message.topic, "not a gatehouse topic", message.payload)
        elif parsed.kind == "event":
            self._events(db, parsed, message.topic, message.payload)
        elif parsed.kind == "status":
            self._status(db, parsed, message.payload, client, after)
        elif parsed.kind == "reply":
            self._reply(db, parsed, message.payload, client, after)
        elif parsed.kind == "attachment":
            self._attachment(db, parsed, message)

    def _attachment(self, db: Database, parsed: topics.ParsedTopic, message: mqtt.MQTTMessage) -> None:
        """An attachment's bytes, kept under the sha256 its topic names once they match it
        (a redelivery, or the same crop sent by two gateways, is kept once)."""
        payload = bytes(message.payload)
        digest = hashlib.sha256(payload).hexdigest()
        if digest != parsed.name:
            self._reject(db, message.topic, f"the bytes' sha256 is {digest}, not the topic's", b"")
            return
        props = getattr(message, "properties", None)
        mime = _text(getattr(props, "ContentType", None)) or "image/jpeg"
        db.execute(
            "INSERT INTO attachments (sha256, site_id, gateway_id, mime, size, data, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            (digest, parsed.site, parsed.gateway, mime[:100], len(payload), payload, now_iso()),
        )
        self.stats.attachments += 1

    def _reject(self, db: Database, topic: str, reason: str, payload: bytes) -> None:
        self.stats.rejected += 1
        log.warning("ingest: rejected a message on %s: %s", topic, reason)
        with db.transaction():
            db.execute(
                "INSERT INTO rejected_messages(topic, reason, payload, received_at) VALUES (?, ?, ?, ?)",
                (
                    _storable(topic),
                    _storable(reason[:2000]),
                    _storable(payload[:65536].decode("utf-8", "replace")),
                    now_iso(),
                ),
            )

    def _events(self, db: Database, parsed: topics.ParsedTopic, topic: str, payload: bytes) -> None:
        try:
            document = strict_json.loads(payload)
        except (ValueError, RecursionError) as err:
            self._reject(db, topic, f"not JSON: {err}", payload)
            return
        items = document if isinstance(document, list) else [document]
        rows: list[tuple[tuple[Any, ...], Any]] = []
        received = now_iso()
        for item in items:
            try:
                event = Event.model_validate(item)
                row = (
                    str(event.id),
                    event.site,
                    event.gateway,
                    event.device,
                    event.type,
                    _iso(event.ts),
                    event.ts_ms,
                    event.seq,
                    json.dumps(item["payload"], ensure_ascii=False),
                    json.dumps(item["attachments"]) if event.attachments else None,
                    received,
                )
            except (ValidationError, TypeError, ValueError, OverflowError) as err:
                self._reject(db, topic, f"invalid event: {err}", json.dumps(item).encode())
                continue
            if (event.site, event.gateway, event.type) != (parsed.site, parsed.gateway, parsed.name):
                self._reject(
                    db,
                    topic,
                    "the event's site, gateway or type differ from its topic",
                    json.dumps(item).encode(),
                )
                continue
            rows.append((row, item))
        if not rows:
            return
        with db.transaction():
            inserted = self._insert_events(db, topic, rows)
            for row, item in rows:
                if row[4] in DEVICE_STATES:
                    self._device_seen(db, row, DEVICE_STATES[row[4]], item)
                elif row[4] in ALERT_UPDATES:
                    self._alert_seen(db, row, item)
        self.stats.events += len(rows)
        self.stats.inserted += inserted
        self.stats.duplicates += len(rows) - inserted

    def _device_seen(self, db: Database, row: tuple[Any, ...], state: str, item: Any) -> None:
        """A device.online/offline event sets the device's state, unless a later one already did
        (a backlog drains alerts first, so events of a device can arrive out of order). A value
        the database refuses costs the state, never the batch."""
        site, gateway, device, ts = row[1], row[2], row[3], row[5]
        if not device:
            return
        kind = item["payload"].get("kind") if isinstance(item.get("payload"), dict) else None
        try:
            with db.savepoint():
                db.execute(
                    "INSERT INTO devices(site_id, gateway_id, id, kind, state, last_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, gateway_id, id) DO UPDATE SET "
                    "state = excluded.state, last_seen = excluded.last_seen, "
                    "kind = COALESCE(devices.kind, excluded.kind) "
                    "WHERE devices.last_seen IS NULL OR devices.last_seen < excluded.last_seen",
                    (site, gateway, device, _text(kind), state, ts),
                )
        except Exception as err:
            if db.unavailable(err):
                raise
            log.warning("ingest: cannot record the state of device %r: %s", device, err)

    def _alert_seen(self, db: Database, row: tuple[Any, ...], item: Any) -> None:
        """An alert.raised/acknowledged/cleared event sets its part of the alert's row in
        `alerts` (what `gatehouse admin alerts` lists), the first time it arrives: a redelivered
        event changes nothing, and an acknowledgement that overtook its alert.raised (a backlog
        drained after an outage) keeps its part when the raise comes. `repeats` (how often a
        moment happened again while open, carried by the acknowledgement and the clearing) only
        grows, whichever of the two arrives first. A value the database refuses costs the row,
        never the batch."""
        payload = item["payload"]
        repeats = payload.get("repeats") or 0
        columns = {
            "alert.raised": {
                "kind": payload.get("kind"),
                "severity": payload.get("severity"),
                "message": payload.get("message"),
                "gate_id": payload.get("gate"),
                "device_id": row[3],
                "raised_ms": row[6],
            },
            "alert.acknowledged": {"acked_ms": row[6], "acked_by": payload.get("by"), "repeats": repeats},
            "alert.cleared": {
                "cleared_ms": row[6],
                "cleared_reason": payload.get("reason"),
                "repeats": repeats,
            },
        }[row[4]]
        names = ["site_id", "gateway_id", "alert_id", "alert_key", *columns, "updated_ms"]
        values = [row[1], row[2], payload["alert_id"], payload.get("key"), *columns.values(), now_ms()]
        updates = ", ".join(
            REPEATS_ONLY_GROW if name == "repeats" else f"{name} = excluded.{name}"
            for name in [*columns, "updated_ms"]
        )
        first = ALERT_UPDATES[row[4]]
        try:
            with db.savepoint():
                db.execute(
                    f"INSERT INTO alerts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                    f"ON CONFLICT (site_id, gateway_id, alert_id) DO UPDATE SET {updates} "
                    f"WHERE alerts.{first} IS NULL",
                    values,
                )
        except Exception as err:
            if db.unavailable(err):
                raise
            log.warning("ingest: cannot record alert %r: %s", payload.get("alert_id"), err)

    def _insert_events(self, db: Database, topic: str, rows: list[tuple[tuple[Any, ...], Any]]) -> int:
        """Insert the rows in one statement; when the database refuses one of them (a value
        this engine cannot hold), insert them one by one and put aside the refused ones."""
        try:
            with db.savepoint():
                return db.insert_many(INSERT_EVENTS, [row for row, _ in rows], ON_CONFLICT)
        except Exception as err:
            if db.unavailable(err):
                raise
        inserted = 0
        for row, item in rows:
            try:
                with db.savepoint():
                    inserted += db.insert_many(INSERT_EVENTS, [row], ON_CONFLICT)
            except Exception as err:
                if db.unavailable(err):
                    raise
                self._reject(db, topic, f"the database refused the event: {err}", json.dumps(item).encode())
        return inserted

    def _status(
        self,
        db: Database,
        parsed: topics.ParsedTopic,
        payload: bytes,
        client: mqtt.Client,
        after: list[Callable[[], None]],
    ) -> None:
        where = f"{parsed.site}/{parsed.gateway}/status"
        try:
            status = strict_json.loads(payload) if payload else {"state": "removed"}
        except (ValueError, RecursionError):
            self._reject(db, where, "status is not JSON", payload)
            return
        if not isinstance(status, dict):
            self._reject(db, where, "status is not a JSON object", payload)
            return
        self.stats.statuses += 1
        devices, gates = _listed(status.get("devices")), _listed(status.get("gates"))
        received = now_iso()
        state = str(status.get("state"))
        # An online gateway says since when it is connected; another state dates from the
        # status that changed it (the same state again, a retained status an ingest receives
        # at its start, keeps the date).
        since = _aware_iso(status.get("connected_since")) if state == "online" else None
        with db.transaction():
            # Every worker gets every status: the one whose update finds the gateway not yet
            # online is the one that catches it up.
            came_online = state == "online" and (
                db.execute(
                    "UPDATE gateways SET state = 'online', state_since = ? WHERE site_id = ? AND id = ? "
                    "AND coalesce(state, '') <> 'online'",
                    (since or received, parsed.site, parsed.gateway),
                )
                == 1
            )
            kept = (
                "excluded.state_since"
                if since
                else "CASE WHEN coalesce(gateways.state, '') = excluded.state THEN "
                "coalesce(gateways.state_since, excluded.state_since) ELSE excluded.state_since END"
            )
            db.execute(
                "INSERT INTO gateways(site_id, id, state, status, status_at, state_since) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, id) DO UPDATE SET state = excluded.state, "
                f"status = excluded.status, status_at = excluded.status_at, state_since = {kept}",
                (parsed.site, parsed.gateway, state, json.dumps(status), received, since or received),
            )
            if devices is not None:
                self._registered_devices(db, parsed, devices)
            if gates is not None:
                self._registered_gates(db, parsed, gates)
            behind = came_online and db.one(
                "SELECT 1 FROM gateways WHERE site_id = ? AND id = ? "
                "AND allowlist_version > coalesce(applied_version, 0)",
                (parsed.site, parsed.gateway),
            )
            # A gateway holding an older version than it confirmed lost its allow-list (its store
            # was moved aside as corrupt, or replaced): the one worker whose update lowers the
            # version it is known to hold sends it the whole list.
            held = status.get("allowlist_version") if state == "online" else None
            lost = _is_bigint(held) and (
                db.execute(
                    "UPDATE gateways SET applied_version = ? WHERE site_id = ? AND id = ? "
                    "AND coalesce(applied_version, 0) > ?",
                    (held, parsed.site, parsed.gateway, held),
                )
                == 1
            )
        if behind:
            # an allow-list change sent while it was away (or while the broker was down) has not
            # been applied: send the whole list rather than wait for the next change
            self._send_full_allowlist(db, parsed, client, after, "is online behind the allow-list")
        elif lost:
            self._send_full_allowlist(
                db, parsed, client, after, f"holds allow-list version {held}, older than it had confirmed"
            )
            self._restore_passes(db, parsed, client, after)

    @staticmethod
    def _registered_devices(db: Database, parsed: topics.ParsedTopic, devices: list[dict[str, Any]]) -> None:
        """A status that lists the gateway's devices (the registration `provision` publishes) is
        the whole list: listed devices are added or updated, the others of that gateway go."""
        listed = [_storable(device["id"]) for device in devices]
        for device_id, device in zip(listed, devices, strict=True):
            db.execute(
                "INSERT INTO devices(site_id, gateway_id, id, kind) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site_id, gateway_id, id) DO UPDATE SET kind = excluded.kind",
                (parsed.site, parsed.gateway, device_id, _text(device.get("kind"))),
            )
        _forget_unlisted(db, "devices", parsed, listed)

    @staticmethod
    def _registered_gates(db: Database, parsed: topics.ParsedTopic, gates: list[dict[str, Any]]) -> None:
        """As for devices: the listed gates are this gateway's, the others it had go."""
        listed = [_storable(gate["id"]) for gate in gates]
        for gate_id, gate in zip(listed, gates, strict=True):
            db.execute(
                "INSERT INTO gates(site_id, id, gateway_id, name, kind) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (site_id, id) DO UPDATE SET gateway_id = excluded.gateway_id, "
                "name = excluded.name, kind = excluded.kind",
                (
                    parsed.site,
                    gate_id,
                    parsed.gateway,
                    _text(gate.get("name")) or "",
                    _text(gate.get("kind")) or "vehicle",
                ),
            )
        _forget_unlisted(db, "gates", parsed, listed)

    def _reply(
        self,
        db: Database,
        parsed: topics.ParsedTopic,
        payload: bytes,
        client: mqtt.Client,
        after: list[Callable[[], None]],
    ) -> None:
        try:
            reply = Reply.model_validate_json(payload)
        except ValidationError as err:
            self._reject(db, f"{parsed.site}/{parsed.gateway}/reply", f"invalid reply: {err}", payload)
            return
        self.stats.replies += 1
        with db.transaction():
            if reply.id is not None:
                db.execute(
                    "UPDATE commands SET ok = ?, reply = ?, replied_at = ? WHERE id = ?",
                    (int(reply.ok), reply.model_dump_json(), now_iso(), reply.id),
                )
            version = reply.result.get("version") if reply.result else None
            if reply.ok and reply.name == "allowlist.apply" and _is_bigint(version):
                db.execute(
                    "UPDATE gateways SET applied_version = ? WHERE site_id = ? AND id = ?",
                    (version, parsed.site, parsed.gateway),
                )
        if reply.error is not None and reply.error.code == ErrorCode.VERSION_GAP:
            self._send_full_allowlist(db, parsed, client, after, "asks for the full allow-list")

    def _send_full_allowlist(
        self,
        db: Database,
        parsed: topics.ParsedTopic,
        client: mqtt.Client,
        after: list[Callable[[], None]],
        why: str,
    ) -> None:
        """Sign the gateway's whole allow-list and publish it once the batch is committed."""
        log.info("ingest: %s/%s %s; sending the whole list", parsed.site, parsed.gateway, why)
        try:
            document = Community(db, self.signer_key).allowlist_full(parsed.site, parsed.gateway)
        except ConfigError as err:
            log.warning("ingest: cannot send the full allow-list: %s", err)
            return
        after.append(lambda: publish_command(client, self.config, document))

    def _restore_passes(
        self, db: Database, parsed: topics.ParsedTopic, client: mqtt.Client, after: list[Callable[[], None]]
    ) -> None:
        """Sign again the passes a gateway that lost its store still needs, and publish them once
        the batch is committed."""
        try:
            documents = Community(db, self.signer_key).passes_to_restore(parsed.site, parsed.gateway)
        except ConfigError as err:
            log.warning("ingest: cannot send the passes again: %s", err)
            return
        if documents:
            log.info("ingest: %s/%s: sending %d passes again", parsed.site, parsed.gateway, len(documents))
        for document in documents:
            after.append(lambda document=document: publish_command(client, self.config, document))


DEVICE_STATES = {"device.online": "online", "device.offline": "offline"}
ALERT_UPDATES = {"alert.raised": "raised_ms", "alert.acknowledged": "acked_ms", "alert.cleared": "cleared_ms"}
"""the alert events the ingest keeps `alerts` by: the column each sets first"""
REPEATS_ONLY_GROW = (
    "repeats = CASE WHEN excluded.repeats > alerts.repeats THEN excluded.repeats ELSE alerts.repeats END"
)


def _listed(value: Any) -> list[dict[str, Any]] | None:
    """The entries of a registration's `devices` or `gates` list that name an id; None when the
    status carries no such list (a plain online/offline status)."""
    if not isinstance(value, list):
        return None
    return [
        entry
        for entry in value
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and 0 < len(entry["id"]) <= 64
    ]


def _forget_unlisted(db: Database, table: str, parsed: topics.ParsedTopic, listed: list[str]) -> None:
    """The rows of this gateway in `table` (devices or gates) whose id it no longer lists go."""
    db.execute(
        f"DELETE FROM {table} WHERE site_id = ? AND gateway_id = ?"
        + (f" AND id NOT IN ({','.join('?' * len(listed))})" if listed else ""),
        (parsed.site, parsed.gateway, *listed),
    )


def _text(value: Any) -> str | None:
    return _storable(value) if isinstance(value, str) else None


def _storable(text: str) -> str:
    """Text any engine stores: no lone surrogates, no NUL (PostgreSQL refuses both)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _is_bigint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _aware_iso(value: Any) -> str | None:
    """An ISO time with its zone from a status, as UTC ISO text; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _iso(moment) if moment.tzinfo is not None else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_ingest(db_url: str, config: MqttConfig | None = None) -> tuple[BrokerHandle, IngestWorker]:
    """The community side on this machine, for the demo: a broker (`ensure_broker`) and one
    ingest worker writing into `db_url`. Give the gateway's uplink `handle.config`; close the
    worker, then the handle. The worker subscribes plainly, under a name of its own: on a broker
    that already serves ingest workers (the local mosquitto), joining their shared group would
    take a share of their events into the demo's database and leave the demo's own events
    half in theirs."""
    handle = ensure_broker(config)
    worker = IngestWorker(
        db_url, handle.config, name=f"local-{os.getpid()}", session_expiry_s=0, shared=False
    )
    try:
        worker.start()
    except Exception:
        handle.close()
        raise
    return handle, worker
