"""Helpers for the sync integration tests, the fault tests' child processes and the benches."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.events import Event, EventFactory
from edge.store import Store
from sync.config import MqttConfig
from sync.ingest import IngestWorker
from sync.topics import Topics
from tests.support.children import child_env, start_gatehouse

SITE, GATEWAY = "oak-court", "gw-1"
KEY = "7a" * 32


class EventTap:
    """A subscriber to one gateway's events on a broker: every event it received, in arrival
    order, and the size, topic and event types of each message."""

    def __init__(self, port: int, gateway: str, site: str = SITE) -> None:
        self._sizes: list[int] = []
        self._messages: list[tuple[str, list[str]]] = []
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"{Topics(site, gateway).base}/events/#", qos=1)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        items = body if isinstance(body, list) else [body]
        with self._lock:
            self._sizes.append(len(message.payload))
            self._messages.append((message.topic, [item["type"] for item in items]))
            self._items.extend(items)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def count(self) -> int:
        with self._lock:
            return len(self._items)

    def position(self, event_type: str) -> int | None:
        """Where the first event of `event_type` arrived, None before it has."""
        with self._lock:
            return next((i for i, item in enumerate(self._items) if item["type"] == event_type), None)

    def sizes(self) -> list[int]:
        with self._lock:
            return list(self._sizes)

    def messages(self) -> list[tuple[str, list[str]]]:
        """(topic, the type of each event it carried) of every message, in arrival order."""
        with self._lock:
            return list(self._messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> EventTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_ingest_worker(db_url: str, port: int, ready: Any, name: str) -> None:
    """A bench's ingest worker, in a child process of its own: set `ready` once connected."""
    worker = IngestWorker(db_url, MqttConfig(port=port), name=name).start()
    worker.connected.wait(10)
    ready.set()
    worker.run_forever()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def produce(store: Store, factory: EventFactory, count: int, kind: str = "occupancy.sample") -> list[Event]:
    made = []
    for index in range(count):
        if kind == "occupancy.sample":
            event = factory.make(kind, {"zone": "court", "count": index % 40}, device="cam-1")
        elif kind == "alert.raised":
            event = factory.make(
                kind, {"alert_id": f"a{index}", "kind": "gate.forced_open", "key": f"k{index}"}
            )
        else:
            event = factory.make(kind, {"gate": "north-in", "reason": "resident", "plate": "津A12345"})
        made.append(store.append(event))
    return made


def outbox_ids(store_path: Path) -> set[str]:
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM outbox")}


def spawn(script: Path, *args: str) -> subprocess.Popen[bytes]:
    """Run a helper script in a child process with the repository importable."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def telemetry(factory: EventFactory, index: int) -> Event:
    return factory.make("occupancy.sample", {"zone": "court", "count": index % 40}, device="cam-1")


def produce_fast(store: Store, factory: EventFactory, count: int, chunk: int = 1000) -> None:
    """Append many telemetry events, `chunk` at a time so that the store commits them in groups."""
    import asyncio

    async def fill() -> None:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            await asyncio.gather(*(store.append_async(telemetry(factory, start + i)) for i in range(size)))

    asyncio.run(fill())


def stop_child(process: subprocess.Popen[bytes]) -> None:
    """End a child process that a test left running (a failed assertion on the way): ask, then
    kill; close its output pipe."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def start_cli(config: Path, *argv: str, stderr: int = subprocess.STDOUT) -> subprocess.Popen[bytes]:
    """`gatehouse --config CONFIG ARGV` of this checkout as a child process, its output piped."""
    return start_gatehouse("--config", str(config), *argv, stdout=subprocess.PIPE, stderr=stderr)


def wait_for_line(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """Read the child's output until a line contains `marker`, and return that line. Reads the
    pipe's file descriptor directly: a buffered reader can hold lines that select() no longer
    sees."""
    import selectors

    assert process.stdout is not None
    fd = process.stdout.fileno()
    pending = _unread.get(process, b"")
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    seen = b""
    try:
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                seen += line + b"\n"
                if marker in line:
                    _unread[process] = pending
                    return line
            if time.monotonic() >= deadline or not selector.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
    finally:
        selector.close()
    _unread[process] = pending
    raise AssertionError(f"the child did not print {marker!r} in {timeout} s; it printed:\n{seen.decode()}")


_unread: weakref.WeakKeyDictionary[subprocess.Popen[bytes], bytes] = weakref.WeakKeyDictionary()
