"""Alert delay from the rules to the community database while a backlog drains.

Starts mosquitto on a free port and an ingest worker (SQLite) in a child process, fills the
gateway's outbox with a backlog of telemetry (100,000 events by default), starts the uplink
with its default drain settings, and while the backlog drains raises alerts through the alert
engine (one every 30 ms, each with its own key). Each alert's delay runs from the call to
`AlertEngine.raise_()` to the ingest worker's insert (`received_at`, written by the child on
the same machine's clock). Then, as a baseline measured in the same run, the same number of
alerts with no backlog.

    .venv/bin/python bench/alerts.py [--backlog 100000] [--alerts 100]

Last line: alerts: raise_to_ingest_p99_ms=<x> lost=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.events import EventFactory
from edge.rules.alerts import AlertEngine
from edge.rules.config import AlertsConfig
from edge.store import Store
from sync.broker import Mosquitto
from sync.config import MqttConfig
from sync.db import open_database
from sync.uplink import Uplink
from tests.support.measure import percentile
from tests.support.sync_helpers import GATEWAY, SITE, produce_fast, run_ingest_worker

INTERVAL_S = 0.03
ARRIVAL_TIMEOUT_S = 120.0


async def raise_alerts(engine: AlertEngine, count: int, label: str) -> dict[str, float]:
    """Raise `count` alerts, one every INTERVAL_S; the wall-clock time of each raise by id."""
    raised: dict[str, float] = {}
    for index in range(count):
        started = time.time()
        event = await engine.raise_(
            "gate.forced_open",
            f"bench.{label}:{index}",
            f"bench alert {index} ({label})",
            gate="north-in",
        )
        assert event is not None
        raised[event.payload.alert_id] = started  # type: ignore[attr-defined]
        await asyncio.sleep(INTERVAL_S)
    return raised


def arrivals(db_url: str, ids: set[str], timeout: float) -> dict[str, float]:
    """Wait until the ingest holds every alert in `ids` (or the timeout); their insert times."""
    db = open_database(db_url)
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(found) < len(ids):
            rows = db.query("SELECT payload, received_at FROM events WHERE type = 'alert.raised'")
            for payload, received_at in rows:
                body = payload if isinstance(payload, dict) else json.loads(payload)
                alert_id = body.get("alert_id")
                if alert_id in ids and alert_id not in found:
                    found[alert_id] = datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp()
            time.sleep(0.05)
    finally:
        db.close()
    return found


def caught_up(db_url: str, count: int, timeout: float) -> int:
    """Wait until the ingest holds `count` events (or the timeout); how many it holds."""
    db = open_database(db_url)
    deadline = time.monotonic() + timeout
    try:
        held = 0
        while time.monotonic() < deadline:
            row = db.one("SELECT count(*) FROM events")
            held = int(row[0]) if row else 0
            if held >= count:
                break
            time.sleep(0.1)
        return held
    finally:
        db.close()


def delays_ms(raised: dict[str, float], found: dict[str, float]) -> list[float]:
    return [(found[alert_id] - started) * 1000 for alert_id, started in raised.items() if alert_id in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="telemetry events waiting in the outbox")
    parser.add_argument("--alerts", type=int, default=100, help="alerts raised during the drain")
    parser.add_argument(
        "--rate",
        type=float,
        default=MqttConfig().max_rate_msgs_s,
        help="uplink drain rate limit in messages of 50 events per second (default: the uplink's "
        "default, mqtt.max_rate_msgs_s)",
    )
    args = parser.parse_args()
    logging.getLogger("edge.rules.alerts").setLevel(logging.ERROR)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder, Mosquitto(Path(folder) / "mosquitto") as broker:
        db_url = f"sqlite:///{Path(folder) / 'community.db'}"
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        consumer = context.Process(
            target=run_ingest_worker, args=(db_url, broker.port, ready, "bench-alerts"), daemon=True
        )
        consumer.start()
        try:
            if not ready.wait(20):
                raise SystemExit("the ingest worker did not connect within 20 s")
            factory = EventFactory(SITE, GATEWAY)
            store = Store(
                Path(folder) / "gateway" / "gatehouse.db",
                synchronous="normal",
                events=factory,
                quota_bytes=4 * 1024**3,
            )
            started = time.perf_counter()
            produce_fast(store, factory, args.backlog, chunk=2000)
            print(f"filled the outbox with {args.backlog} events in {time.perf_counter() - started:.1f} s")
            engine = AlertEngine(store, factory, config=AlertsConfig(max_per_kind_per_min=100_000))
            uplink = Uplink(
                store,
                broker.mqtt_config(max_rate_msgs_s=args.rate),
                site=SITE,
                gateway=GATEWAY,
                version="bench",
            )
            uplink.start()
            try:
                drain_started = time.perf_counter()
                during = asyncio.run(raise_alerts(engine, args.alerts, "backlog"))
                left = store.backlog().count
                print(
                    f"raised {args.alerts} alerts in {time.perf_counter() - drain_started:.1f} s "
                    f"while the backlog drained; {left} events still unsynced at the last alert"
                )
                found = arrivals(db_url, set(during), ARRIVAL_TIMEOUT_S)
                if not uplink.wait_synced(ARRIVAL_TIMEOUT_S):
                    print("the backlog did not drain in time")
                print(f"backlog drained {time.perf_counter() - drain_started:.1f} s after the first alert")
                held = caught_up(db_url, args.backlog + args.alerts, ARRIVAL_TIMEOUT_S)
                took = time.perf_counter() - drain_started
                print(
                    f"ingest held {held} events {took:.1f} s after the first alert "
                    f"({held / took:.0f} events/s)"
                )
                baseline = asyncio.run(raise_alerts(engine, args.alerts, "idle"))
                baseline_found = arrivals(db_url, set(baseline), ARRIVAL_TIMEOUT_S)
            finally:
                uplink.stop()
                store.close()
        finally:
            consumer.terminate()
            consumer.join(10)
    under_load = delays_ms(during, found)
    idle = delays_ms(baseline, baseline_found)
    lost = len(during) - len(found)
    print(
        f"baseline (no backlog): p50 {percentile(idle, 0.5):.1f} ms, p99 {percentile(idle, 0.99):.1f} ms, "
        f"lost {len(baseline) - len(baseline_found)}"
    )
    print(
        f"during a {args.backlog}-event drain: p50 {percentile(under_load, 0.5):.1f} ms, "
        f"p99 {percentile(under_load, 0.99):.1f} ms, max {max(under_load, default=float('nan')):.1f} ms"
    )
    print(f"alerts: raise_to_ingest_p99_ms={percentile(under_load, 0.99):.1f} lost={lost}")


if __name__ == "__main__":
    main()
