"""Durable append throughput and latency of the local store, against a raw SQLite baseline
measured in the same run.

- raw: `executemany` in transactions of 1000 rows, WAL, synchronous=NORMAL, the same schema and
  the same events (serialised in the loop, as the store must).
- durable: 8 concurrent producers (asyncio tasks, the gateway's shape) hand events to
  `Store.submit` and keep up to 32 each in flight, as a driver handing over a burst of
  readings does; an event counts when its future says it is committed, and its latency is
  from submit to commit. Same synchronous=NORMAL for the ratio. Printed too: the default
  (FULL, power-loss safe), producers that wait for every event before the next
  (`append_async`, one in flight each: commits of at most 8 events), and 8 producer threads.

Last line: `store: durable_eps=<n> raw_eps=<n> ratio=<r> p50_ms=<x> p99_ms=<y>`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path and bench/sync.py would shadow the sync package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.events import Event, EventFactory
from edge.store import Store
from edge.store.migrations import migrate
from tests.support.measure import percentile

PRODUCERS = 8
IN_FLIGHT = 32


def make_events(count: int) -> list[Event]:
    factory = EventFactory("bench-site", "gw-bench")
    kinds = [
        (
            "access.granted",
            {
                "gate": "north-in",
                "reason": "resident",
                "subject": "person-0042",
                "credential": {"kind": "card", "hash": "ab" * 32, "last4": "4821", "format": "wiegand26"},
            },
        ),
        ("gate.state", {"gate": "north-in", "state": "open", "previous": "opening", "commanded": True}),
        ("occupancy.sample", {"zone": "lot-a", "count": 17, "occupied": 17, "capacity": 40}),
    ]
    return [factory.make(kinds[i % 3][0], kinds[i % 3][1], device="dev-1") for i in range(count)]


def raw_baseline(events: list[Event], folder: Path) -> float:
    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    start = time.perf_counter()
    for offset in range(0, len(events), 1000):
        chunk = events[offset : offset + 1000]
        rows = [
            (str(e.id), offset + i + 1, e.type, int(e.priority), e.ts_ms, e.device, e.model_dump_json())
            for i, e in enumerate(chunk)
        ]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO outbox(id, seq, type, priority, ts_ms, device, body) VALUES (?,?,?,?,?,?,?)", rows
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(events) / elapsed


def durable_async(
    events: list[Event], path: Path, synchronous: str, in_flight: int = IN_FLIGHT
) -> tuple[float, list[float]]:
    store = Store(path, synchronous=synchronous, quota_bytes=1 << 34)
    latencies: list[float] = []

    async def settle(future: asyncio.Future[int], began: float) -> None:
        await future
        latencies.append(time.perf_counter() - began)

    async def producer(chunk: list[Event]) -> None:
        pending: collections.deque[tuple[asyncio.Future[int], float]] = collections.deque()
        for event in chunk:
            if len(pending) >= in_flight:
                await settle(*pending.popleft())
            pending.append((store.submit(event), time.perf_counter()))
        while pending:
            await settle(*pending.popleft())

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(producer(events[i::PRODUCERS]) for i in range(PRODUCERS)))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    store.close()
    return len(events) / elapsed, latencies


def durable_threads(events: list[Event], path: Path) -> float:
    store = Store(path, synchronous="normal", quota_bytes=1 << 34)

    def producer(chunk: list[Event]) -> None:
        for event in chunk:
            store.append(event)

    threads = [threading.Thread(target=producer, args=(events[i::PRODUCERS],)) for i in range(PRODUCERS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    store.close()
    return len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    events = make_events(args.events)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}; {args.events} events x {args.rounds} rounds"
    )
    raw, durable, full, one, threads, latencies = [], [], [], [], [], []
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            raw.append(raw_baseline(events, folder))
            eps, lat = durable_async(events, folder / f"durable{round_no}.db", "normal")
            durable.append(eps)
            latencies.extend(lat)
            full.append(durable_async(events[: args.events // 4], folder / "full.db", "full")[0])
            one.append(durable_async(events, folder / "one.db", "normal", in_flight=1)[0])
            threads.append(durable_threads(events, folder / "threads.db"))
        print(
            f"round {round_no + 1}: raw {raw[-1]:.0f}/s, durable {durable[-1]:.0f}/s, "
            f"durable FULL {full[-1]:.0f}/s, one in flight {one[-1]:.0f}/s, 8 threads {threads[-1]:.0f}/s"
        )
    raw_eps = statistics.median(raw)
    durable_eps = statistics.median(durable)
    print(
        f"durable with synchronous=FULL (power-loss safe): {statistics.median(full):.0f}/s; "
        f"producers waiting for each event: {statistics.median(one):.0f}/s "
        f"(ratio {statistics.median(one) / raw_eps:.2f}); "
        f"8 producer threads instead of tasks: {statistics.median(threads):.0f}/s"
    )
    print(
        f"store: durable_eps={durable_eps:.0f} raw_eps={raw_eps:.0f} ratio={durable_eps / raw_eps:.2f} "
        f"p50_ms={percentile(latencies, 0.5) * 1000:.2f} p99_ms={percentile(latencies, 0.99) * 1000:.2f}"
    )


if __name__ == "__main__":
    main()
