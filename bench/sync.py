"""Uplink drain throughput against raw paho, and the delay of live alerts during a drain.

Starts mosquitto on a free port and an ingest worker (SQLite) in a child process, fills an
outbox with 200,000 telemetry events, then:
1. raw baseline: paho alone publishes the same payloads, batched the same way (50 events per
   message), QoS 1, the same in-flight window, no store;
2. the uplink drains the outbox while live alerts are appended every 50 ms; each alert's delay
   is measured from `append()` to its arrival at a subscriber;
3. waits for the ingest worker to hold every event and counts lost and duplicated ones; then
   makes every row unsynced again and empties the community database for the next run.
Raw and drain runs alternate (three of each by default), so that both see the machine in the
same state; medians count, live alert delays of all runs are pooled.

    .venv/bin/python bench/sync.py [--events 200000] [--runs 3]

Last line: sync: drain_eps=<n> raw_eps=<n> ratio=<r> live_p99_ms=<x> lost=<n> dup=<n>
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
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
from sync.topics import Topics
from sync.uplink import Uplink
from tests.support.measure import percentile
from tests.support.sync_helpers import GATEWAY, SITE, produce_fast, run_ingest_worker

BATCH = 50
WINDOW = 20


def wait_stored(db: Any, count: int, timeout: float) -> None:
    """Wait until the community database holds `count` events."""
    deadline = time.monotonic() + timeout
    while db.one("SELECT count(*) FROM events")[0] < count and time.monotonic() < deadline:
        time.sleep(0.1)


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


def drain_once(
    store: Store, factory: EventFactory, port: int, watch: AlertWatch, events: int
) -> tuple[float, float, list[float], list[float]]:
    """Drain the outbox once while live alerts are appended every 50 ms: (seconds, CPU seconds
    of this process, each alert's delay from append() to its arrival, each alert's commit)."""
    config = MqttConfig(port=port, batch_size=BATCH, inflight_window=WINDOW, max_rate_msgs_s=100_000)
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
    while uplink.metrics.acked < events * 0.98 and time.perf_counter() - started < 600:
        time.sleep(0.01)
    stop_alerts.set()
    injector.join()
    if not uplink.wait_synced(120):
        raise RuntimeError("the uplink did not drain")
    drain_s = time.perf_counter() - started
    drain_cpu = time.process_time() - cpu
    uplink.stop()
    with watch.cond:
        watch.cond.wait_for(lambda: set(sent_at) <= set(watch.arrived), 30)
    delays = [(watch.arrived[i] - t) * 1000 for i, t in sent_at.items() if i in watch.arrived]
    delays += [float("inf")] * (len(sent_at) - len(delays))
    return drain_s, drain_cpu, delays, committed


def count_delivered(db: Any, store: Store) -> tuple[int, int]:
    """Wait for the ingest to hold every outbox event; (lost, duplicated)."""
    expected = {row[0] for row in store.read().execute("SELECT id FROM outbox")}
    wait_stored(db, len(expected), 600)
    ids = db.event_ids()
    return len(expected - set(ids)), len(ids) - len(set(ids)) + len(set(ids) - expected)


def forget_delivery(store: Store, db: Any) -> None:
    """Make every outbox row unsynced again and empty the community database, for another run."""
    store.write(lambda conn: conn.execute("UPDATE outbox SET synced_ms = NULL"))
    store.write(lambda conn: conn.execute("DELETE FROM sync_marks"))
    db.execute("DELETE FROM events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="raw and drain runs, alternated; medians count")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker").start()
        db_url = f"sqlite:///{workdir / 'community.db'}"
        open_database(db_url).close()
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        consumer = context.Process(
            target=run_ingest_worker, args=(db_url, broker.port, ready, "bench"), daemon=True
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
            db = open_database(db_url)
            watch = AlertWatch(broker.port)
            raw_runs, drain_runs, delays, lost, dup = [], [], [], 0, 0
            for run in range(args.runs):
                db.execute("DELETE FROM events")
                raw_runs.append(raw_baseline(broker.port, messages))
                wait_stored(db, args.events, 300)
                forget_delivery(store, db)
                drain_s, drain_cpu, run_delays, committed = drain_once(
                    store, factory, broker.port, watch, args.events
                )
                drain_runs.append((drain_s, drain_cpu))
                delays.extend(run_delays)
                run_lost, run_dup = count_delivered(db, store)
                lost, dup = lost + run_lost, dup + run_dup
                print(
                    f"run {run + 1}: raw paho {len(messages)} messages of {BATCH} events in "
                    f"{raw_runs[-1][0]:.2f} s ({raw_runs[-1][1]:.2f} s CPU in this process); uplink "
                    f"{drain_s:.2f} s ({drain_cpu:.2f} s CPU), {len(run_delays)} live alerts p50 "
                    f"{statistics.median(run_delays):.1f} ms, slowest {max(run_delays):.1f} ms, "
                    f"their commit p50 {statistics.median(committed):.1f} ms, "
                    f"slowest {max(committed):.1f} ms; "
                    f"lost {run_lost}, dup {run_dup}"
                )
            watch.close()
            db.close()
            store.close()
        finally:
            consumer.terminate()
            consumer.join(10)
            broker.stop()
    raw_eps = args.events / statistics.median([r for r, _ in raw_runs])
    drain_eps = args.events / statistics.median([d for d, _ in drain_runs])
    p99 = percentile(delays, 0.99)
    print(
        f"sync: drain_eps={drain_eps:.0f} raw_eps={raw_eps:.0f} ratio={drain_eps / raw_eps:.2f} "
        f"live_p99_ms={p99:.1f} lost={lost} dup={dup}"
    )


if __name__ == "__main__":
    main()
