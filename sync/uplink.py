"""The store-and-forward uplink: outbox rows to the broker, at least once.

One thread owns each connection, and it runs paho's network I/O itself (paho's loop_read,
loop_write and loop_misc from one select() over the broker's socket and a wake-up socket):
a PUBACK is settled and the next batch published on the thread that read it. With paho's own
network thread every message cost two thread hand-overs, a wake-up byte and contended locks
(bench/sync.py: 0.68-0.70 s of CPU for 200,000 events then, 0.57-0.71 s now). For each
connection (a fresh paho client, our own jittered backoff between tries):

- every priority class is marked "dirty" and read from the outbox from the start, so rows
  that were sent but not acknowledged before a disconnect or a restart go out again;
- live rows (handed over by the store's commit listener) go out one per message at once when
  they are alerts or access decisions, or when their class has no backlog; otherwise the drain
  picks them up in order;
- the drain sends the lowest dirty class first, `batch_size` events per message (a JSON array,
  grouped by type), within the in-flight window and a rate limit; live messages bypass both
  (paho's own window is LIVE_RESERVE larger, so a live message never waits in paho's queue);
- a row is marked synced only when its PUBACK arrives with a success code. "No matching
  subscribers" (MQTT 5, 0x10) is not a delivery: those rows are tried again later.
- acknowledged rows become a per-class high-water mark in the store (`_Ledger` says how far
  every row is acknowledged), not an update per row: marking row by row cost more than reading
  and publishing together and held the store's writer, delaying live alerts' commits. Rows
  acknowledged above the mark (a live alert overtaking its class's backlog) get synced_ms.
- the marks, the status document and the counters are written by `_Marker`'s thread: the
  sender never waits for a commit, which a slow SD card or a retention purge can make long;
  each status report's backlog count runs on a thread of its own for the same reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import itertools
import json
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import AuthFailed, StoreFull
from edge.events import MAX_EVENT_BYTES, EventType, Priority
from edge.store import Backlog, OutboxRow, Store
from sync import mqtt as mqttc
from sync.backlog import Batch, next_batches, split, without
from sync.config import MqttConfig
from sync.downlink import Downlink
from sync.topics import Topics

log = logging.getLogger(__name__)

LIVE_QUEUE_MAX = 10_000
REPLY_QUEUE_MAX = 1_000
"""command replies waiting for the uplink's thread (they outlive a short outage)"""
LIVE_RESERVE = 5
"""in-flight slots beyond the backlog's window, so that a live alert never queues in paho"""
MARK_DELAY_S = 0.05
"""acknowledgements gathered into one marking transaction, so that the store's writer (which
live alerts' appends share) is not taken for every PUBACK; a crash forgets at most this much
marking, and those rows are sent again"""
MAX_MESSAGE_BYTES = 256 * 1024
PUBLISH_OVERHEAD = 16
"""bytes of a PUBLISH packet besides its topic and payload (fixed header, topic length, packet
id, property length), counted against the broker's Maximum Packet Size"""
NO_SUBSCRIBERS_RETRY_S = 5.0
UPLOAD_WINDOW = 2
"""attachments in flight at once: each is a message of its own, tens of kB"""
UPLOAD_READ = 16
"""attachments listed from the store at a time"""
STATUS_KV = "uplink.status"
COUNTERS = ("sync.sent", "sync.acked", "sync.resent", "sync.nacked")
IDLE_WAIT_S = 0.5
FOREIGN_CHECK_S = 1.0
"""how often an idle uplink looks for rows another process (the CLI) appended"""
NO_MATCHING_SUBSCRIBERS = 0x10
SILENCE_KEEPALIVES = 1.5
"""a connection on which the broker sent nothing for this many keepalive intervals is dead (the
limit MQTT gives the broker for its clients)"""


_serials = itertools.count()


@dataclass
class _Flight:
    """Rows sent as one message (`rowids` ascending)."""

    rowids: Sequence[int]
    priority: int
    live: bool
    sent_at: float
    serial: int = field(default_factory=lambda: next(_serials))
    attachment: str | None = None
    """the sha256 of the attachment the message carries (then `rowids` is empty)"""


class _Ledger:
    """What one connection knows of each class's unsynced rows, so that acknowledgements can be
    recorded as a high-water mark.

    `horizon[p]`: where the next read of class p starts; every row of the class up to it that
    was unsynced when read has been read by this connection. Only reads move it (a read sees
    every row committed before it, whoever committed it, so another process's appends are never
    jumped over); live rows do not. The mark is the horizon, lowered below the first row still
    waiting to be sent (`waiting`) or sent and not acknowledged. A refused flight stays in the
    way until its class is read again."""

    def __init__(self, marks: dict[int, int]) -> None:
        self.horizon = dict(marks)
        self.waiting: dict[int, collections.deque[Batch]] = {p: collections.deque() for p in marks}
        self._open: dict[int, list[tuple[int, int]]] = {p: [] for p in marks}
        self._closed: set[int] = set()
        self._refused: dict[int, list[int]] = {p: [] for p in marks}

    def read(self, priority: int, groups: list[Batch]) -> None:
        self.waiting[priority].extend(groups)
        self.horizon[priority] = max(self.horizon[priority], *(g.last for g in groups))

    def sent(self, flight: _Flight) -> None:
        heapq.heappush(self._open[flight.priority], (flight.rowids[0], flight.serial))

    def acked(self, flight: _Flight) -> int:
        """Close the flight; return its class's mark."""
        self._closed.add(flight.serial)
        return self.mark(flight.priority)

    def refused(self, flight: _Flight) -> None:
        self._refused[flight.priority].append(flight.serial)

    def reread(self, priority: int, mark: int) -> None:
        """The class is read again from its stored mark: refused flights no longer hold it."""
        self._closed.update(self._refused[priority])
        self._refused[priority].clear()
        self.waiting[priority].clear()
        self.horizon[priority] = mark

    def mark(self, priority: int) -> int:
        heap = self._open[priority]
        while heap and heap[0][1] in self._closed:
            self._closed.discard(heapq.heappop(heap)[1])
        mark = self.horizon[priority]
        if heap:
            mark = min(mark, heap[0][0] - 1)
        waiting = self.waiting[priority]
        if waiting:  # read in seq order, sent from the left
            mark = min(mark, waiting[0].first - 1)
        return mark


class _Uploads:
    """The attachments one connection sends once no class of events waits: the oldest first, at
    most UPLOAD_WINDOW in flight, listed from the store when the list runs out (at most once a
    second while none waits). A refused one (no ingest subscribed) holds them all for a retry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: collections.deque[tuple[str, str]] = collections.deque()
        self.in_flight: set[str] = set()
        self.next_read = 0.0
        self.retry_at = 0.0

    def next(self, marking: set[str]) -> tuple[str, str] | None:
        """(sha256, mime) of the next attachment to send, if one may go now."""
        now = time.monotonic()
        if now < self.retry_at or len(self.in_flight) >= UPLOAD_WINDOW:
            return None
        if not self.queue and now >= self.next_read:
            waiting = self.store.attachments_to_upload(UPLOAD_READ)
            # membership tests only: the marker's thread changes `marking` meanwhile
            self.queue.extend(
                item for item in waiting if item[0] not in self.in_flight and item[0] not in marking
            )
            if not self.queue:
                self.next_read = now + FOREIGN_CHECK_S
        return self.queue.popleft() if self.queue else None

    def refused(self, sha256: str) -> None:
        self.in_flight.discard(sha256)
        self.queue.clear()
        self.retry_at = time.monotonic() + NO_SUBSCRIBERS_RETRY_S


@dataclass
class Metrics:
    sent: int = 0
    acked: int = 0
    resent: int = 0
    nacked: int = 0
    messages: int = 0
    connects: int = 0
    last_puback_ms: int | None = None
    connected_since_ms: int | None = None
    flushed: dict[str, int] = field(default_factory=dict)


class _Marker:
    """Records the uplink's bookkeeping in the store on a thread of its own: acknowledged rows,
    and the status document and counters of each status report. The sender never waits for a
    commit, so a slow one (an SD card's fsync, a retention purge holding the writer) does not
    hold up live alerts; whatever was acknowledged or reported meanwhile goes into the next
    transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: set[int] = set()
        self.pending_uploads: set[str] = set()
        """attachments acknowledged and not yet recorded (not to be sent again meanwhile)"""
        self._uploaded: list[str] = []
        self._skipped: dict[str, str] = {}
        self._acked: list[int] = []
        self._above: list[int] = []
        self._marks: dict[int, int] = {}
        self._status: str | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._values: dict[str, int] = {}
        self._report_due = False
        self._cond = threading.Condition()
        self._busy = False
        self._flushing = 0
        self._hurry = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="uplink-marker", daemon=True)
        self._thread.start()

    def put(self, priority: int, rowids: Sequence[int], mark: int) -> None:
        """`rowids` (ascending) were acknowledged; every row of the class up to `mark` is."""
        with self._cond:
            self.pending.update(rowids)
            was_idle = not self._acked
            self._acked.extend(rowids)
            if rowids[-1] > mark:
                self._above.extend(r for r in rowids if r > mark)
            if mark > self._marks.get(priority, 0):
                self._marks[priority] = mark
            if was_idle:
                self._cond.notify_all()

    def uploaded(self, sha256: str) -> None:
        """The attachment was acknowledged: the community database has it."""
        with self._cond:
            self.pending_uploads.add(sha256)
            self._uploaded.append(sha256)
            self._cond.notify_all()

    def skipped(self, sha256: str, why: str) -> None:
        """The attachment is never to be sent (too large, its file gone)."""
        with self._cond:
            self.pending_uploads.add(sha256)
            self._skipped[sha256] = why
            self._cond.notify_all()

    def report(
        self,
        status: str | None = None,
        add: Mapping[str, int] | None = None,
        values: Mapping[str, int] | None = None,
    ) -> None:
        """A status report to record: the status document (the latest wins), counter increments
        and counter values. What a failed write (a full disk) could not record is kept and
        written with the next report."""
        with self._cond:
            if status is not None:
                self._status = status
            self._counts.update(add or {})
            self._values.update(values or {})
            self._report_due = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._work() and not self._stopping:
                    self._cond.wait()
                if not self._work():
                    return
                deadline = time.monotonic() + MARK_DELAY_S
                while (
                    self._acked
                    and not (self._stopping or self._flushing or self._hurry)
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                self._hurry = False
                batch, self._acked = self._acked, []
                above, self._above = self._above, []
                marks = dict(self._marks) if batch else {}
                status, self._status = self._status, None
                counts, self._counts = self._counts, collections.Counter()
                values, self._values = self._values, {}
                uploaded, self._uploaded = self._uploaded, []
                skipped, self._skipped = self._skipped, {}
                self._report_due = False
                self._busy = True
            try:
                self.store.mark_synced(above, marks)
            except Exception:
                log.exception("uplink: cannot mark %d rows synced; they will be sent again", len(batch))
            try:
                self.store.mark_uploaded(uploaded, skipped)
            except Exception:
                log.exception("uplink: cannot record %d attachments sent; they go again", len(uploaded))
            if status is not None or counts or values:
                try:
                    self.store.update_state(
                        kv={STATUS_KV: status} if status is not None else None, add=counts, values=values
                    )
                except Exception as err:
                    if isinstance(err, StoreFull):  # the disk: said by the store and the alerts already
                        log.warning(
                            "uplink: cannot record the status report (%s); it goes with the next one", err
                        )
                    else:
                        log.exception("uplink: cannot record the status report; it goes with the next one")
                    with self._cond:
                        self._status = self._status or status
                        self._counts.update(counts)
                        self._values = {**values, **self._values}
            with self._cond:
                self.pending.difference_update(batch)
                self.pending_uploads.difference_update(uploaded)
                self.pending_uploads.difference_update(skipped)
                self._busy = False
                self._cond.notify_all()

    def _work(self) -> bool:
        return bool(self._acked or self._uploaded or self._skipped or self._report_due)

    def hurry(self) -> None:
        """Commit what was acknowledged without waiting for more (the uplink is idle)."""
        with self._cond:
            if self._acked:
                self._hurry = True
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._work() and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def stop(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)


class _Connection:
    """One MQTT session: a paho client and what is in flight on it."""

    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.connack = threading.Event()
        self.outcome: dict[str, Any] = {}
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.flights: dict[int, _Flight | None] = {}
        self._counts = {False: 0, True: 0}
        """flights awaiting PUBACK by `live`"""
        self.early: dict[int, int] = {}
        self.acks: collections.deque[tuple[_Flight, int]] = collections.deque()
        self.max_packet: int | None = None
        """the broker's Maximum Packet Size (MQTT 5 CONNACK): a larger packet gets us disconnected"""
        config = uplink.config
        self.heard: float | None = None
        """when the broker last sent anything (from CONNACK on)"""
        self.silence_limit_s = SILENCE_KEEPALIVES * config.keepalive_s
        client = mqttc.new_client(config, uplink.gateway, clean=False)
        client.max_inflight_messages_set(config.inflight_window + LIVE_RESERVE)
        client.max_queued_messages_set(0)
        client.will_set(
            uplink.topics.status,
            json.dumps({"state": "offline", "reason": "lost"}),
            qos=1,
            retain=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    # the network I/O, on the uplink's thread; paho's callbacks run from inside it

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` for the broker's socket or a wake-up, then let paho read, write
        and keep the connection alive (what paho's own loop does, with our wake-up socket)."""
        client = self.client
        sock = client.socket()
        if sock is None:
            self._lost()
            return
        buffered = getattr(sock, "pending", None)
        tls_buffered = buffered is not None and buffered() > 0
        wake = self.uplink._wake_r
        watched = [sock] if wake is None else [sock, wake]
        try:
            readable, writable, _ = select.select(
                watched, [sock] if client.want_write() else [], [], 0.0 if tls_buffered else timeout
            )
        except (OSError, ValueError, TypeError):
            self._lost()
            return
        if wake is not None and wake in readable:
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or tls_buffered:
            if self.heard is not None:
                self.heard = time.monotonic()
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and client.socket() is not None and sock in writable:
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost()
        elif self.heard is not None and time.monotonic() - self.heard > self.silence_limit_s:
            # A pulled cable or a frozen broker: paho's keepalive would notice only after twice
            # the keepalive; a healthy broker answers paho's PINGREQ, sent after one keepalive
            # without a packet, well within half of another.
            self.outcome["disconnect"] = f"nothing from the broker in {self.silence_limit_s:.1f} s"
            self._lost()

    def _lost(self) -> None:
        """The socket is gone (paho has usually said so through on_disconnect already)."""
        self.outcome.setdefault("reason", None)
        self.closed.set()
        self.connack.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.outcome["reason"] = reason
        self.outcome["session_present"] = getattr(flags, "session_present", False)
        self.max_packet = getattr(props, "MaximumPacketSize", None)
        self.heard = time.monotonic()
        self.connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.outcome.setdefault("reason", None)
        self.outcome["disconnect"] = reason
        self.closed.set()
        self.connack.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        code = int(getattr(reason, "value", 0))
        with self.lock:
            if mid not in self.flights:
                self.early[mid] = code
                return
            flight = self.flights.pop(mid)
            if flight is not None:
                self._counts[flight.live] -= 1
        if flight is not None:
            self.acks.append((flight, code))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        downlink = self.uplink.downlink
        if downlink is None:
            return
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        downlink.submit(message.topic, message.payload, response_topic, correlation)

    # the uplink's thread

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        flight: _Flight | None,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self.lock:
            code = self.early.pop(info.mid, None)
            if code is None:
                self.flights[info.mid] = flight
                if flight is not None:
                    self._counts[flight.live] += 1
                return True
        if flight is not None:
            self.acks.append((flight, code))
        return True

    def unacked(self) -> list[_Flight]:
        with self.lock:
            return [f for f in self.flights.values() if f is not None]

    def in_flight(self) -> tuple[int, int]:
        """(backlog messages, live messages) awaiting PUBACK."""
        with self.lock:
            return self._counts[False], self._counts[True]


class Uplink:
    """Sends the store's outbox to the broker and hands commands to a Downlink.

    `start()` returns at once; `stop()` says goodbye (retained offline status) and joins."""

    def __init__(
        self,
        store: Store,
        config: MqttConfig,
        *,
        site: str,
        gateway: str,
        version: str = "",
        inventory: dict[str, Any] | None = None,
        downlink: Downlink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`inventory`: the gateway's devices and gates, carried in its online status so that
        the community database follows the configuration (a device added, a gate removed)."""
        self.store = store
        self.inventory = inventory or {}
        self.config = config
        self.site = site
        self.gateway = gateway
        self.version = version
        self.downlink = downlink
        self.topics = Topics(site, gateway, config.topic_prefix)
        self._event_topics: dict[str, str] = {}
        self.metrics = Metrics()
        self.connected = threading.Event()
        self._backoff = mqttc.Backoff(config, rng)
        self._handover = threading.Lock()
        """guards what other threads hand over: live rows, replies, the foreign-append flag"""
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._replies: collections.deque[tuple[str, bytes, bytes | None]] = collections.deque(
            maxlen=REPLY_QUEUE_MAX
        )
        self._live: collections.deque[OutboxRow] = collections.deque()
        self._live_overflow: set[int] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: _Connection | None = None
        self._started = time.monotonic()
        self._loop_thread: threading.Thread | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str | None = None
        self._refused = False
        self._foreign = False
        self._foreign_appends = store.foreign_appends
        self._marker = _Marker(store)
        self._status_reader: ThreadPoolExecutor | None = None
        store.add_commit_listener(self._on_commit)

    # lifecycle

    def start(self, command_loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start sending. Commands run on `command_loop` (the gateway's event loop); without one
        the uplink runs a loop of its own for them."""
        if self.downlink is not None:
            if command_loop is None:
                self._own_loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=self._own_loop.run_forever, name="downlink-loop", daemon=True
                )
                self._loop_thread.start()
                command_loop = self._own_loop
            self.downlink.bind(self.publish_reply, command_loop)
        self._stopping.clear()
        self._status_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uplink-status")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink: the sender did not stop within %.1f s", timeout)
            else:
                for end in (self._wake_r, self._wake_w):
                    if end is not None:
                        end.close()
                self._wake_r = self._wake_w = None
                if self._status_reader is not None:
                    self._status_reader.shutdown(wait=False, cancel_futures=True)
                    self._status_reader = None
            self._thread = None
        self._marker.flush(timeout)
        if self._own_loop is not None:
            self._own_loop.call_soon_threadsafe(self._own_loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout)
            self._own_loop.close()
            self._own_loop = None

    def __enter__(self) -> Uplink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # hand-over from the store (writer thread: keep it short)

    def _on_commit(self, rows: list[OutboxRow]) -> None:
        with self._handover:
            if self.store.foreign_appends != self._foreign_appends:
                self._foreign_appends = self.store.foreign_appends
                self._foreign = True
            for row in rows:
                if len(self._live) >= LIVE_QUEUE_MAX:
                    self._live_overflow.add(row.priority)
                else:
                    self._live.append(row)
        self._wake()

    def _wake(self) -> None:
        """Interrupt the uplink thread's select() (from any thread)."""
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    # the reconnect loop

    def _run(self) -> None:
        while not self._stopping.is_set():
            conn = _Connection(self)
            try:
                mqttc.connect(
                    conn.client,
                    self.config,
                    clean=False,
                    session_expiry_s=self.config.session_expiry_s,
                    connack=conn.connack,
                    outcome=conn.outcome,
                    pump=conn.pump,
                )
            except (mqttc.MqttError, AuthFailed) as err:
                if self.last_error != str(err):
                    log.warning("uplink: %s", err)
                    self._record_offline(str(err))
                self.last_error = str(err)
                self._backoff.wait(self._stopping)
                continue
            if self.last_error is not None:
                log.info("uplink: connected to %s:%s again", self.config.host, self.config.port)
            self.last_error = None
            self._backoff.connected()
            self._check_packet_room(conn)
            self._conn = conn
            self.metrics.connects += 1
            self.metrics.connected_since_ms = int(time.time() * 1000)
            self.connected.set()
            try:
                self._serve(conn)
            finally:
                self.connected.clear()
                self._conn = None
                lost = conn.unacked()
                self.metrics.resent += sum(len(f.rowids) for f in lost)
                if not self._stopping.is_set():
                    log.warning(
                        "uplink: connection lost (%s); %d messages unacknowledged",
                        conn.outcome.get("disconnect"),
                        len(lost),
                    )
                    self.metrics.connected_since_ms = None
                    self._record_offline(f"connection lost: {conn.outcome.get('disconnect')}")
                mqttc.stop(conn.client)
                self._flush_metrics()
            self._backoff.wait(self._stopping)

    # one connection

    def _serve(self, conn: _Connection) -> None:
        config = self.config
        if self.downlink is not None:
            conn.client.subscribe(self.topics.cmd_filter, qos=1)
        priorities = [int(p) for p in sorted(Priority)]
        stored = self.store.sync_marks()
        ledger = _Ledger({p: stored.get(p, 0) for p in priorities})
        dirty = set(priorities)
        retry_at: dict[int, float] = {}
        handled: set[int] = set()
        marking = self._marker.pending
        with self._handover:
            self._live.clear()
            self._live_overflow.clear()
        backlog_window = config.inflight_window
        tokens = float(config.inflight_window)
        last_refill = time.monotonic()
        next_status = time.monotonic()  # the first report ("online") as soon as the backlog is counted
        status_reading: Future[Backlog] | None = None
        next_foreign_check = time.monotonic() + FOREIGN_CHECK_S
        foreign_checked = self.store.newest_seq()
        uploads = _Uploads(self.store)
        settle = functools.partial(self._settle, conn, ledger, handled, retry_at, uploads)
        while not self._stopping.is_set() and not conn.closed.is_set():
            settle()
            now = time.monotonic()
            for priority, when in list(retry_at.items()):
                if when <= now:
                    dirty.add(priority)
                    ledger.reread(priority, self.store.sync_marks().get(priority, 0))
                    del retry_at[priority]
            with self._handover:
                live = list(self._live)
                self._live.clear()
                dirty.update(self._live_overflow)
                self._live_overflow.clear()
                if self._foreign:
                    dirty.update(priorities)
                    self._foreign = False
            # A class the broker refused waits for its retry: sending the rest of its backlog
            # meanwhile would only have it refused too, at the full drain rate.
            dirty.difference_update(retry_at)
            for row in live:
                if row.rowid in handled or row.rowid in marking:
                    continue
                if row.priority > Priority.ACCESS and (row.priority in dirty or row.priority in retry_at):
                    continue
                if not self._send(conn, ledger, [row], live=True, handled=handled):
                    break
            tokens = min(float(config.inflight_window), tokens + (now - last_refill) * config.max_rate_msgs_s)
            last_refill = now
            sent_backlog = False
            while dirty and tokens >= 1 and not conn.closed.is_set():
                priority = min(dirty)
                queue = ledger.waiting[priority]
                if not queue:
                    # Read before waiting for the window: the next batch is ready when a PUBACK
                    # frees a slot.
                    groups = next_batches(
                        self.store.read(), priority, ledger.horizon[priority], config.batch_size
                    )
                    if not groups:
                        dirty.discard(priority)
                        continue
                    ledger.read(priority, groups)
                in_backlog, _ = conn.in_flight()
                if in_backlog >= backlog_window:
                    break
                group = queue.popleft()
                if (handled or marking) and not (
                    handled.isdisjoint(group.rowids) and marking.isdisjoint(group.rowids)
                ):
                    group = without(self.store.read(), group, handled | marking)
                if not group.rowids:
                    continue
                for part in split(self.store.read(), group, self._payload_limit(conn, group.type)):
                    tokens -= 1
                    if not self._send_group(conn, ledger, part, handled):
                        break
                sent_backlog = True
                if self._has_live():
                    break
            if not dirty and tokens >= 1:
                tokens -= self._upload(conn, uploads)
            if not dirty and time.monotonic() >= next_foreign_check:
                # Rows another process appended while this one committed nothing: its own
                # commits would have noticed them (Store.foreign_appends).
                newest = self.store.newest_seq()
                if newest > max(self.store.last_seq, foreign_checked):
                    dirty.update(priorities)
                foreign_checked = newest
                next_foreign_check = time.monotonic() + FOREIGN_CHECK_S
            if status_reading is None and time.monotonic() >= next_status:
                status_reading = self._count_backlog()
            if status_reading is not None and status_reading.done():
                self._publish_status(conn, "online", status_reading.result())
                self._flush_metrics()
                status_reading = None
                next_status = time.monotonic() + config.status_interval_s
            if sent_backlog and dirty and tokens >= 1:
                in_backlog, _ = conn.in_flight()
                if in_backlog < backlog_window:
                    continue
            if not dirty and not any(conn.in_flight()):
                self._marker.hurry()
            self._send_replies(conn)
            wait = 0.0
            with self._handover:
                if not self._live and not self._replies and not conn.acks and not conn.closed.is_set():
                    wait = IDLE_WAIT_S
                    if dirty and tokens < 1:
                        wait = min(wait, (1 - tokens) / config.max_rate_msgs_s)
            conn.pump(wait)
        if self._stopping.is_set() and not conn.closed.is_set():
            self._goodbye(conn, settle)
        settle()

    def _has_live(self) -> bool:
        with self._handover:
            return bool(self._live)

    def _check_packet_room(self, conn: _Connection) -> None:
        """Say so when the broker's Maximum Packet Size leaves no room for the largest event: one
        such event would get the uplink disconnected every time it is sent, its class stuck."""
        room = min(self._payload_limit(conn, event_type) for event_type in EventType.registry)
        if room < MAX_EVENT_BYTES + 2:
            log.error(
                "uplink: the broker takes packets of at most %s bytes, too small for an event of "
                "%d bytes (the largest the store records): set its max_packet_size to at least 256 KiB",
                conn.max_packet,
                MAX_EVENT_BYTES,
            )

    def _payload_limit(self, conn: _Connection, event_type: str) -> int:
        """The largest payload a batch of this type may have on this connection."""
        if conn.max_packet is None:
            return MAX_MESSAGE_BYTES
        packet_room = conn.max_packet - len(self._event_topic(event_type).encode()) - PUBLISH_OVERHEAD
        return min(MAX_MESSAGE_BYTES, packet_room)

    def _event_topic(self, event_type: str) -> str:
        """The topic of an event type, checked once per type rather than once per message."""
        topic = self._event_topics.get(event_type)
        if topic is None:
            topic = self._event_topics[event_type] = self.topics.event(event_type)
        return topic

    def _send_group(self, conn: _Connection, ledger: _Ledger, group: Batch, handled: set[int]) -> bool:
        flight = _Flight(group.rowids, group.priority, False, time.monotonic())
        ledger.sent(flight)
        if not conn.publish(self._event_topic(group.type), group.payload, flight):
            conn.closed.set()
            return False
        handled.update(group.rowids)
        self.metrics.sent += len(group.rowids)
        self.metrics.messages += 1
        return True

    def _upload(self, conn: _Connection, uploads: _Uploads) -> int:
        """Send what attachments may go now (after every class of events); returns how many."""
        sent = 0
        while (item := uploads.next(self._marker.pending_uploads)) is not None:
            digest, mime = item
            topic = self.topics.attachment(digest)
            try:
                data = self.store.attachment_path(digest).read_bytes()
            except OSError as err:
                log.warning("uplink: attachment %s is not sent: %s", digest, err.strerror or err)
                self._marker.skipped(digest, f"its file cannot be read: {err.strerror or err}")
                continue
            limit = MAX_MESSAGE_BYTES
            if conn.max_packet is not None:
                limit = min(limit, conn.max_packet - len(topic.encode()) - PUBLISH_OVERHEAD - len(mime) - 3)
            if len(data) > limit:
                log.warning(
                    "uplink: attachment %s (%d bytes) is larger than a message may be", digest, len(data)
                )
                self._marker.skipped(digest, f"{len(data)} bytes, more than a message may carry ({limit})")
                continue
            properties = None
            if mqttc.is_v5(self.config):
                properties = Properties(PacketTypes.PUBLISH)
                properties.ContentType = mime
            flight = _Flight((), int(Priority.TELEMETRY), False, time.monotonic(), attachment=digest)
            if not conn.publish(topic, data, flight, properties=properties):
                conn.closed.set()
                break
            uploads.in_flight.add(digest)
            sent += 1
        return sent

    def _send(
        self, conn: _Connection, ledger: _Ledger, rows: list[OutboxRow], *, live: bool, handled: set[int]
    ) -> bool:
        single = len(rows) == 1 and live
        payload = rows[0].body if single else "[" + ",".join(row.body for row in rows) + "]"
        flight = _Flight(tuple(r.rowid for r in rows), rows[0].priority, live, time.monotonic())
        ledger.sent(flight)
        if not conn.publish(self._event_topic(rows[0].type), payload, flight):
            conn.closed.set()
            return False
        handled.update(flight.rowids)
        self.metrics.sent += len(rows)
        self.metrics.messages += 1
        return True

    def _settle(
        self,
        conn: _Connection,
        ledger: _Ledger,
        handled: set[int],
        retry_at: dict[int, float],
        uploads: _Uploads,
    ) -> None:
        """Hand acknowledged rows and attachments to the marker; schedule a retry for refused ones."""
        while conn.acks:
            flight, code = conn.acks.popleft()
            delivered = code < 0x80 and code != NO_MATCHING_SUBSCRIBERS
            if flight.attachment is not None:
                uploads.in_flight.discard(flight.attachment)
                if delivered:
                    self._marker.uploaded(flight.attachment)
                else:
                    uploads.refused(flight.attachment)
                continue
            if delivered:
                self._marker.put(flight.priority, flight.rowids, ledger.acked(flight))
                handled.difference_update(flight.rowids)
                if self._refused:
                    self._refused = False
                    log.info("uplink: the broker delivers events again")
                self.metrics.acked += len(flight.rowids)
                self.metrics.last_puback_ms = int(time.time() * 1000)
                continue
            self.metrics.nacked += len(flight.rowids)
            ledger.refused(flight)
            handled.difference_update(flight.rowids)
            retry_at[flight.priority] = time.monotonic() + NO_SUBSCRIBERS_RETRY_S
            if not self._refused:
                self._refused = True
                log.warning(
                    "uplink: the broker did not deliver events (reason 0x%02x%s); they stay in "
                    "the outbox and are tried again every %.0f s",
                    code,
                    ": no ingest subscribed" if code == NO_MATCHING_SUBSCRIBERS else "",
                    NO_SUBSCRIBERS_RETRY_S,
                )

    def _goodbye(self, conn: _Connection, settle: Callable[[], None]) -> None:
        """Wait a moment for what is in flight and `settle` it, then say offline."""
        deadline = time.monotonic() + 1.0
        while conn.unacked() and time.monotonic() < deadline and not conn.closed.is_set():
            conn.pump(0.02)
        settle()
        self._marker.flush(5.0)
        self._publish_status(conn, "offline", reason="stopped")

    # status and metrics

    def _count_backlog(self) -> Future[Backlog]:
        """The backlog counted for a status report on a thread of its own: counting a day of
        backlog takes a while on a Pi, and live alerts must not wait for it."""
        assert self._status_reader is not None, "counted only while started"
        reading = self._status_reader.submit(self.store.backlog)
        reading.add_done_callback(lambda _: self._wake())
        return reading

    def status(self, backlog: Backlog | None = None) -> dict[str, Any]:
        """The status document's metrics; `backlog` as counted for it, else counted now."""
        backlog = backlog if backlog is not None else self.store.backlog()
        now_ms = int(time.time() * 1000)
        return {
            "version": self.version,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "backlog": {
                "count": backlog.count,
                "oldest_age_s": None
                if backlog.oldest_ts_ms is None
                else round((now_ms - backlog.oldest_ts_ms) / 1000, 1),
                "by_priority": {Priority(p).name.lower(): n for p, n in backlog.by_priority.items()},
            },
            "sent": self.metrics.sent,
            "acked": self.metrics.acked,
            "resent": self.metrics.resent,
            "nacked": self.metrics.nacked,
            "connects": self.metrics.connects,
            "last_puback": _iso(self.metrics.last_puback_ms),
            "connected_since": _iso(self.metrics.connected_since_ms),
        }

    def _publish_status(
        self, conn: _Connection, state: str, backlog: Backlog | None = None, reason: str | None = None
    ) -> None:
        document = {
            "state": state,
            **self.status(backlog),
            **(self._online_facts() if state == "online" else {}),
        }
        if reason:
            document["reason"] = reason
        body = json.dumps(document)
        conn.publish(self.topics.status, body, None, retain=True)
        self._marker.report(status=body)

    def _online_facts(self) -> dict[str, Any]:
        """What an online status carries besides the metrics: the inventory, and the allow-list
        version held (a store started anew holds none, whatever the gateway confirmed before)."""
        if self.downlink is None:
            return self.inventory
        return {**self.inventory, "allowlist_version": self.downlink.allowlist_version()}

    def _record_offline(self, reason: str) -> None:
        """What `gatehouse status` shows while there is no connection to publish a report on
        (the broker has the Last Will, or whatever it held before)."""
        self._marker.report(status=json.dumps({"state": "offline", "reason": reason, **self.status()}))

    def _flush_metrics(self) -> None:
        current = {
            "sync.sent": self.metrics.sent,
            "sync.acked": self.metrics.acked,
            "sync.resent": self.metrics.resent,
            "sync.nacked": self.metrics.nacked,
        }
        deltas = {name: value - self.metrics.flushed.get(name, 0) for name, value in current.items()}
        self.metrics.flushed.update(current)
        last = self.metrics.last_puback_ms
        self._marker.report(
            add={name: delta for name, delta in deltas.items() if delta},
            values={"sync.last_puback_ms": last} if last is not None else None,
        )

    # replies to commands (called from the command loop)

    def publish_reply(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Queue a command's reply for the uplink's thread (only it may use the connection);
        one queued while the broker is away goes out on the next connection."""
        with self._handover:
            self._replies.append((topic, payload, correlation))
        self._wake()

    def _send_replies(self, conn: _Connection) -> None:
        while True:
            with self._handover:
                if not self._replies:
                    return
                topic, payload, correlation = self._replies.popleft()
            properties = None
            if mqttc.is_v5(self.config):
                properties = Properties(PacketTypes.PUBLISH)
                if correlation is not None:
                    properties.CorrelationData = correlation
                properties.ContentType = "application/json"
            if not conn.publish(topic, payload, None, properties=properties):
                log.warning("reply on %s dropped: the connection is closing", topic)

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the outbox has nothing unsynced (tests, `gatehouse` shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            began = time.monotonic()
            if self.store.backlog().count == 0:
                return True
            # Counting a large backlog is not free: look again after twice what it took.
            time.sleep(max(0.01, 2 * (time.monotonic() - began)))
        return self.store.backlog().count == 0


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sync_status(store: Store) -> dict[str, Any]:
    """What `gatehouse status` shows about the uplink: the last status the uplink published,
    the persisted counters and the backlog as the store sees it now."""
    raw = store.kv_get(STATUS_KV)
    last = json.loads(raw) if raw else {}
    backlog = store.backlog()
    counters = {name.removeprefix("sync."): store.counter(name) for name in COUNTERS}
    last_puback = store.counter("sync.last_puback_ms") or None
    return {
        "state": last.get("state", "never connected"),
        "backlog": backlog.count,
        "backlog_oldest": _iso(backlog.oldest_ts_ms),
        "backlog_by_priority": {Priority(p).name.lower(): n for p, n in backlog.by_priority.items()},
        **counters,
        "last_puback": _iso(last_puback),
    }
