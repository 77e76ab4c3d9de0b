"""`gatehouse backlog`: what the gateway has recorded but the community side has not yet
acknowledged, read from the store (the daemon may be running)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from edge.cli.common import add_command, count_of, load, site_zone
from edge.cli.events import format_row, reader
from edge.events import Priority
from edge.instance import running_gateway
from edge.store.queries import backlog_by_type, next_to_send, pictures_waiting
from edge.times import in_zone


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "backlog",
        "show what waits to be synced: per class and type, its age, and the uplink's state",
        _backlog,
    )
    parser.add_argument(
        "--list",
        "-n",
        type=count_of(0),
        default=0,
        metavar="N",
        help="also list the next N events to be sent",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _age(ts_ms: int, now: float) -> str:
    seconds = max(0.0, now - ts_ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _backlog(args: argparse.Namespace) -> int:
    config = load(args)
    conn = reader(config)
    now = time.time()
    waiting = backlog_by_type(conn)
    upcoming = next_to_send(conn, args.list) if args.list else []
    row = conn.execute("SELECT value FROM kv WHERE key='uplink.status'").fetchone()
    uplink: dict[str, Any] = json.loads(row[0]) if row else {}
    total = sum(w.count for w in waiting)
    pictures = pictures_waiting(conn)
    if args.json:
        document = {
            "gateway": config.gateway.id,
            "site": config.site.id,
            "count": total,
            "oldest_age_s": round(now - min(w.oldest_ts_ms for w in waiting) / 1000, 1) if waiting else None,
            "by_type": [
                {
                    "type": w.type,
                    "class": Priority(w.priority).name.lower(),
                    "count": w.count,
                    "oldest_age_s": round(now - w.oldest_ts_ms / 1000, 1),
                }
                for w in waiting
            ],
            "pictures": {
                "count": pictures.count,
                "bytes": pictures.size,
                "oldest_age_s": round(now - pictures.oldest_ms / 1000, 1) if pictures.oldest_ms else None,
                "skipped": pictures.skipped,
            },
            "next": [json.loads(event.model_dump_json()) for event in upcoming],
            "uplink": uplink,
        }
        print(json.dumps(document, ensure_ascii=False))
        return 0
    print(f"gateway {config.gateway.id} at site {config.site.id}")
    if not waiting:
        print("backlog: nothing waits; every event recorded has been acknowledged")
    else:
        oldest = min(w.oldest_ts_ms for w in waiting)
        print(f"backlog: {total} events wait to be synced; the oldest for {_age(oldest, now)}")
        print("  in sending order:")
        for w in waiting:
            name = Priority(w.priority).name.lower()
            print(f"    {w.type:<24} {name:<9} {w.count:>8}   oldest {_age(w.oldest_ts_ms, now)} ago")
    if pictures.count:
        print(
            f"pictures: {pictures.count} ({pictures.size / 1e6:.1f} MB) wait to be sent after the events; "
            f"the oldest for {_age(pictures.oldest_ms or 0, now)}"
        )
    if pictures.skipped:
        print(
            f"pictures not sent: {pictures.skipped} (too large for a message, or the file gone; "
            "the gateway's log says which)"
        )
    zone = site_zone(config)
    if uplink:
        # the report a gateway killed (or crashed) left says "online" for good: say it is old
        when = (
            "last report" if running_gateway(config.state_path) else "last report, before the gateway stopped"
        )
        print(
            f"uplink ({when}): {uplink.get('state', '?')}; connected since "
            f"{in_zone(uplink.get('connected_since'), zone, name_zone=True)}; last PUBACK "
            f"{in_zone(uplink.get('last_puback'), zone, name_zone=True)}; "
            f"sent {uplink.get('sent', 0)}, acknowledged {uplink.get('acked', 0)}, "
            f"sent again {uplink.get('resent', 0)}"
        )
    if config.mqtt is None:
        print(
            "uplink: none: the configuration has no mqtt: section, so the events stay in this store; "
            "`gatehouse provision` connects the gateway to the community broker"
        )
    elif not uplink:
        print("uplink: no report recorded yet (has the gateway connected to a broker?)")
    if upcoming:
        print(f"next {len(upcoming)} to be sent:")
        for event in upcoming:
            print(f"  {format_row(event, zone)}")
    return 0
