"""Uplink drain throughput against raw paho, and the delay of live alerts during a drain.

Starts mosquitto on a free port and an ingest worker (SQLite) in a child process, fills an
outbox with 200,000 telemetry events, then:
1. raw baseline: paho alone publishes the same payloads, batched the same way (50 events per
   message), QoS 1, the same in-flight window, no store; three runs, the median counts (the
   ingest worker stores each run before the next starts);
2. the uplink drains the outbox while live alerts are appended every 50 ms; each alert's delay
   is measured from `append()` to its arrival at a subscriber;
3. waits for the ingest worker to hold every event and counts lost and duplicated ones.

    .venv/bin/python bench/sync.py [--events 200000]

Last line: sync: drain_eps=<n> raw_eps=<n> ratio=<r> live_p99_ms=<x> lost=<n> dup=<n>
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.events import EventFactory
from edge.store import Store
from sync.broker import Mosquitto
from sync.config import MqttConfig
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from sync.uplink import Uplink
from tests.support.sync_helpers import GATEWAY, SITE, produce_fast

BATCH = 50
WINDOW = 20


RAW_RUNS = 3


def ingest_main(db_url: str, port: int, ready: Any, messages: Any) -> None:
    worker = IngestWorker(db_url, MqttConfig(port=port), name="bench").start()
    worker.connected.wait(10)
    ready.set()

    def report() -> None:
        while True:
            messages.value = worker.stats.messages
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    worker.run_forever()


def wait_consumed(counter: Any, count: int, timeout: float) -> None:
    """Wait until the ingest worker has stored `count` messages (events, status and all)."""
    deadline = time.monotonic() + timeout
    while counter.value < count and time.monotonic() < deadline:
        time.sleep(0.05)


def raw_baseline(port: int, messages: list[tuple[str, str]]) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) to publish every message and get its PUBACK."""
    acked = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.on_publish = lambda *args: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.5)
    started = time.perf_counter()
    cpu = time.process_time()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    for _ in messages:
        if not acked.acquire(timeout=120):
            raise RuntimeError("raw baseline: PUBACKs stopped coming")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return elapsed, cpu


def batched_payloads(store: Store) -> list[tuple[str, str]]:
    topics = Topics(SITE, GATEWAY)
    rows = store.read().execute("SELECT type, body FROM outbox ORDER BY rowid").fetchall()
    return [
        (topics.event(rows[i][0]), "[" + ",".join(body for _, body in rows[i : i + BATCH]) + "]")
        for i in range(0, len(rows), BATCH)
    ]


class AlertWatch:
    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-watch", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(Topics(SITE, GATEWAY).event("alert.raised"), qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(message.payload)
        with self.cond:
            for item in body if isinstance(body, list) else [body]:
                self.arrived.setdefault(item["id"], now)
            self.cond.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker").start()
        db_url = f"sqlite:///{workdir / 'community.db'}"
        open_database(db_url).close()
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        consumed = context.Value("q", 0)
        consumer = context.Process(
            target=ingest_main, args=(db_url, broker.port, ready, consumed), daemon=True
        )
        consumer.start()
        try:
            if not ready.wait(20):
                raise RuntimeError("the ingest worker did not connect")
            store = Store(workdir / "gateway" / "gatehouse.db", quota_bytes=4 << 30)
            factory = EventFactory(SITE, GATEWAY)
            started = time.perf_counter()
            produce_fast(store, factory, args.events, chunk=2000)
            print(f"filled the outbox with {args.events} events in {time.perf_counter() - started:.1f} s")
            messages = batched_payloads(store)
            runs = []
            for run in range(RAW_RUNS):
                runs.append(raw_baseline(broker.port, messages))
                wait_consumed(consumed, len(messages) * (run + 1), 300)
            raw_s, raw_cpu = sorted(runs)[len(runs) // 2]
            raw_eps = args.events / raw_s
            print(
                f"raw paho: {len(messages)} messages of {BATCH} events in "
                f"{', '.join(f'{r:.2f}' for r, _ in runs)} s; median {raw_s:.2f} s, "
                f"{raw_cpu:.2f} s of CPU in this process"
            )
            db = open_database(db_url)
            db.execute("DELETE FROM events")

            watch = AlertWatch(broker.port)
            config = MqttConfig(
                port=broker.port, batch_size=BATCH, inflight_window=WINDOW, max_rate_msgs_s=100_000
            )
            uplink = Uplink(store, config, site=SITE, gateway=GATEWAY)
            sent_at: dict[str, float] = {}
            committed: list[float] = []
            stop_alerts = threading.Event()

            def alerts() -> None:
                index = 0
                while not stop_alerts.wait(0.05):
                    event = factory.make(
                        "alert.raised", {"alert_id": f"a{index}", "kind": "bench", "key": f"k{index}"}
                    )
                    sent_at[str(event.id)] = time.perf_counter()
                    store.append(event)
                    committed.append((time.perf_counter() - sent_at[str(event.id)]) * 1000)
                    index += 1

            started = time.perf_counter()
            cpu = time.process_time()
            uplink.start()
            injector = threading.Thread(target=alerts)
            injector.start()
            while uplink.metrics.acked < args.events * 0.98 and time.perf_counter() - started < 600:
                time.sleep(0.01)
            stop_alerts.set()
            injector.join()
            if not uplink.wait_synced(120):
                raise RuntimeError("the uplink did not drain")
            drain_s = time.perf_counter() - started
            drain_cpu = time.process_time() - cpu
            drain_eps = args.events / drain_s
            uplink.stop()
            with watch.cond:
                watch.cond.wait_for(lambda: set(sent_at) <= set(watch.arrived), 30)
            watch.close()
            delays = sorted((watch.arrived[i] - t) * 1000 for i, t in sent_at.items() if i in watch.arrived)
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan")
            print(
                f"uplink: drained {args.events} events in {drain_s:.2f} s, {drain_cpu:.2f} s of CPU; "
                f"{len(sent_at)} live alerts, p50 {delays[len(delays) // 2]:.1f} ms, "
                f"of which the store's commit: p50 {sorted(committed)[len(committed) // 2]:.1f} ms, "
                f"max {max(committed):.1f} ms"
            )

            expected = {row[0] for row in store.read().execute("SELECT id FROM outbox")}
            started = time.perf_counter()
            deadline = time.monotonic() + 600
            while db.one("SELECT count(*) FROM events")[0] < len(expected) and time.monotonic() < deadline:  # type: ignore[index]
                time.sleep(0.2)
            print(f"ingest caught up {time.perf_counter() - started:.1f} s after the drain")
            ids = db.event_ids()
            lost = len(expected - set(ids))
            dup = len(ids) - len(set(ids)) + len(set(ids) - expected)
            db.close()
            store.close()
        finally:
            consumer.terminate()
            consumer.join(10)
            broker.stop()
    print(
        f"sync: drain_eps={drain_eps:.0f} raw_eps={raw_eps:.0f} ratio={drain_eps / raw_eps:.2f} "
        f"live_p99_ms={p99:.1f} lost={lost} dup={dup}"
    )


if __name__ == "__main__":
    main()
