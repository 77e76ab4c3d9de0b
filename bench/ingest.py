"""Ingest throughput: events per second from the broker into SQLite and into PostgreSQL, with one
and with two workers in the shared-subscription group.

Starts mosquitto on a free port, publishes N events as batched messages (50 per message, QoS 1)
while the ingest workers (child processes) consume them, and times from the first publish until
the database holds every event. PostgreSQL runs on a fresh database that is dropped afterwards.

    .venv/bin/python bench/ingest.py [--events 50000] [--pg postgresql://postgres@127.0.0.1/postgres]

Last line: ingest: sqlite_eps=<n> pg_eps=<n> pg2_eps=<n>
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.events import EventFactory
from sync.broker import Mosquitto
from sync.config import MqttConfig
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from tests.support.sync_helpers import GATEWAY, SITE, telemetry

BATCH = 50


def worker_main(db_url: str, port: int, name: str, ready: Any) -> None:
    worker = IngestWorker(db_url, MqttConfig(port=port), name=name, session_expiry_s=0).start()
    worker.connected.wait(10)
    ready.set()
    worker.run_forever()


def payloads(count: int) -> list[str]:
    factory = EventFactory(SITE, GATEWAY)
    events = []
    for index in range(count):
        event = telemetry(factory, index)
        events.append(event.model_copy(update={"seq": index + 1}).model_dump_json())
    return ["[" + ",".join(events[i : i + BATCH]) + "]" for i in range(0, count, BATCH)]


def run(port: int, db_url: str, workers: int, messages: list[str], count: int) -> float:
    db = open_database(db_url)
    db.execute("DELETE FROM events")
    context = multiprocessing.get_context("spawn")
    readies = [context.Event() for _ in range(workers)]
    names = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(workers)]
    children = [
        context.Process(target=worker_main, args=(db_url, port, names[i], readies[i]), daemon=True)
        for i in range(workers)
    ]
    for child in children:
        child.start()
    try:
        for ready in readies:
            if not ready.wait(30):
                raise RuntimeError("an ingest worker did not connect")
        acked = threading.Semaphore(0)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(20)
        client.max_queued_messages_set(0)
        client.on_publish = lambda *args: acked.release()
        client.connect("127.0.0.1", port)
        client.loop_start()
        topic = Topics(SITE, GATEWAY).event("occupancy.sample")
        started = time.perf_counter()
        for payload in messages:
            client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            row = db.one("SELECT count(*) FROM events")
            if row is not None and row[0] >= count:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        for _ in messages:
            acked.acquire(timeout=60)
        client.disconnect()
        client.loop_stop()
        row = db.one("SELECT count(*) FROM events")
        if row is None or row[0] != count:
            raise RuntimeError(f"expected {count} events, the database holds {row}")
        return count / elapsed
    finally:
        for child in children:
            child.terminate()
            child.join(10)
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    import psycopg

    messages = payloads(args.events)
    pg_name = f"gatehouse_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker").start()
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{pg_name}"')
        pg_url = args.pg.rsplit("/", 1)[0] + f"/{pg_name}"
        try:
            sqlite_eps = run(broker.port, f"sqlite:///{Path(tmp) / 'community.db'}", 1, messages, args.events)
            print(f"sqlite, 1 worker: {sqlite_eps:.0f} events/s")
            pg_eps = run(broker.port, pg_url, 1, messages, args.events)
            print(f"postgresql, 1 worker: {pg_eps:.0f} events/s")
            pg2_eps = run(broker.port, pg_url, 2, messages, args.events)
            print(f"postgresql, 2 workers: {pg2_eps:.0f} events/s")
        finally:
            broker.stop()
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    print(f"ingest: sqlite_eps={sqlite_eps:.0f} pg_eps={pg_eps:.0f} pg2_eps={pg2_eps:.0f}")


if __name__ == "__main__":
    main()
