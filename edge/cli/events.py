"""`gatehouse events` and `gatehouse status`: what the gateway recorded, read from its store."""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import re
import sqlite3
import time
from datetime import datetime, tzinfo
from typing import Any

from edge.cli.common import add_command, count_of, load, more_not_shown, padded, site_zone
from edge.errors import StoreError, UsageError
from edge.events import Event, EventType, Priority
from edge.instance import running_gateway
from edge.store.queries import query_events, read_backlog

_DURATION = re.compile(r"^(\d+)([smhd])$")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "events", "list recorded events (newest last); --follow to watch", _events
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    parser.add_argument(
        "--type", "-t", action="append", default=[], help="only this type; * matches, e.g. 'access.*'"
    )
    parser.add_argument(
        "--since",
        help="only events since: 10m, 2h, 1d, or an ISO time (the site's time zone unless one is given)",
    )
    parser.add_argument("--limit", "-n", type=count_of(1), default=50, help="how many (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    add_command(subparsers, "status", "show counters, backlog and devices from the store", _status)


def parse_since(text: str, zone: tzinfo, now: float | None = None) -> int:
    """`10m`, `2h`, `1d` ago, or an ISO 8601 time (in `zone`, the site's, when it names none);
    milliseconds since the epoch, never before the epoch."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return max(0, int(((now or time.time()) - seconds) * 1000))
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise UsageError(
            f"--since {text!r}: expected 10m, 2h, 1d or an ISO time like 2026-11-25T08:00"
        ) from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


def check_types(patterns: list[str]) -> list[str]:
    """The --type patterns, each checked to match some event type (a typo would list nothing)."""
    known = sorted(EventType.registry)
    for pattern in patterns:
        if fnmatch.filter(known, pattern.lower()):
            continue
        families = sorted({f"{t.split('.')[0]}.*" for t in known})
        near = difflib.get_close_matches(pattern.lower(), [*families, *known], n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"types: {', '.join(known)}"
        raise UsageError(f"--type {pattern!r} matches no event type; {hint}")
    return patterns


_RESTART = (
    "restart the service (sudo systemctl restart gatehouse): the gateway keeps a damaged store as "
    "gatehouse.db.corrupt-<time> and starts a new one"
)


def reader(config: Any) -> sqlite3.Connection:
    """A read-only connection to the store, checked to be one; the daemon may be running."""
    path = config.store_path
    if not path.exists():
        raise StoreError(f"no store at {path} yet; has 'gatehouse run' (or the demo) started?")
    if not path.is_file():
        raise StoreError(f"{path} is not a file; check gateway.state_dir")
    if not os.access(path, os.R_OK):
        raise StoreError(f"{path}: permission denied; run the command with sudo")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        conn.execute("PRAGMA query_only=1")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version:
            conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
    except sqlite3.Error as err:
        raise StoreError(f"{path} cannot be read as a store ({err}); {_RESTART}") from err
    if not version and path.stat().st_size == 0:
        raise StoreError(
            f"{path} is empty: the gateway has not committed anything to it yet; start it "
            "(sudo systemctl restart gatehouse) and it becomes a new store"
        )
    if not version:
        raise StoreError(f"{path} is not a Gatehouse store (no schema); {_RESTART}")
    return conn


def summary(event: Event) -> str:
    """One line a guard can read."""
    p: Any = event.payload
    match event.type:
        case "access.granted" | "access.denied":
            who = p.subject or (f"card …{p.credential.last4}" if p.credential else p.plate or "?")
            what = p.plate or (f"{p.credential.kind} …{p.credential.last4}" if p.credential else "")
            return f"{p.gate}: {what} → {p.reason}" + (f" ({who})" if p.subject else "")
        case "gate.state":
            return f"{p.gate}: {p.previous or '?'} → {p.state}" + (f" ({p.detail})" if p.detail else "")
        case "vehicle.plate":
            return f"{p.lane}: {p.plate} {p.colour or ''} {p.confidence:.2f}".strip()
        case "alert.raised":
            return f"[{p.severity}] {p.message}"
        case "alert.acknowledged":
            return f"acknowledged {p.key} by {p.by}"
        case "alert.cleared":
            return f"cleared {p.key}" + (f": {p.reason}" if p.reason else "")
        case "occupancy.sample":
            return f"{p.zone}: {p.count}" + (f" ({p.occupied}/{p.capacity} spaces)" if p.capacity else "")
        case "device.online" | "device.offline":
            state = "online" if event.type == "device.online" else "offline"
            return f"{state}" + (f": {p.reason}" if p.reason else "")
    return event.payload.model_dump_json()


def format_row(event: Event, zone: tzinfo) -> str:
    """One line of the table under HEADER, its time in `zone` (the site's)."""
    local = event.ts.astimezone(zone).strftime("%m-%d %H:%M:%S")
    return f"{local}  {event.seq:>7}  {event.type:<18}  {padded(event.device or '-', 14)}  {summary(event)}"


HEADER = f"{'time':<14}  {'seq':>7}  {'type':<18}  {'device':<14}  what"


def _events(args: argparse.Namespace) -> int:
    config = load(args)
    types = check_types(args.type)
    conn = reader(config)
    zone = site_zone(config)
    since = parse_since(args.since, zone) if args.since else None
    # Read before the listing: an event committed in between is followed, not lost.
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
    fetched = query_events(conn, since_ms=since, types=types, limit=args.limit + 1)
    events = fetched[-args.limit :]
    if not args.json:
        print(HEADER)
    for event in events:
        print(event.model_dump_json() if args.json else format_row(event, zone), flush=True)
        last = max(last, event.seq)
    more_not_shown(events, fetched, "events")
    if not args.follow:
        return 0
    while True:
        time.sleep(0.5)
        for event in query_events(conn, types=types, after_seq=last, limit=500, newest=False):
            print(event.model_dump_json() if args.json else format_row(event, zone), flush=True)
            last = event.seq


def _status(args: argparse.Namespace) -> int:
    config = load(args)
    conn = reader(config)
    counters = dict(conn.execute("SELECT name, value FROM counters"))
    backlog = read_backlog(conn)
    total = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM outbox").fetchone()
    print(f"gateway {config.gateway.id} at site {config.site.id}; store {config.store_path}")
    running = running_gateway(config.state_path)
    if running is not None:
        print(f"running: yes ({running.describe()})")
    else:
        print("running: NO — no gateway runs on this store; device states below are from when one last ran")
    print(f"events stored: {total[0]}, last seq: {max(total[1], counters.get('seq', 0))}")
    if backlog.count and backlog.oldest_ts_ms is not None:
        age = max(0.0, time.time() - backlog.oldest_ts_ms / 1000)
        parts = ", ".join(f"{Priority(p).name.lower()} {n}" for p, n in backlog.by_priority.items())
        print(f"backlog (not yet synced): {backlog.count} ({parts}); oldest {age:.0f} s ago")
    else:
        print("backlog (not yet synced): 0")
    for name in sorted(counters):
        if name != "seq":
            print(f"  {name}: {counters[name]}")
    uplink = conn.execute("SELECT value FROM kv WHERE key='uplink.status'").fetchone()
    if uplink:
        for key, value in json.loads(uplink[0]).items():
            print(f"  uplink {key}: {value}")
    open_alerts = conn.execute(
        "SELECT severity, state, alert_id, message FROM alerts WHERE state != 'cleared' ORDER BY raised_ms"
    ).fetchall()
    waiting = sum(1 for _, state, _, _ in open_alerts if state == "raised")
    print(f"open alerts: {len(open_alerts)} ({waiting} not acknowledged)")
    for severity, state, alert_id, message in open_alerts:
        print(f"  [{severity}] {state} {alert_id}: {message}")
    devices = conn.execute("SELECT id, kind, state, last_error, restarts FROM devices ORDER BY id").fetchall()
    for device_id, kind, state, error, restarts in devices:
        extra = f" — {error}" if error else ""
        print(f"  device {device_id} ({kind}): {state}, {restarts} restarts{extra}")
    return 0
