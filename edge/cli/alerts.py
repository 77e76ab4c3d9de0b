"""`gatehouse alerts [--follow]` and `gatehouse alerts ack ID`: the alerts the guards must see,
read from the gateway's store while the daemon runs; acknowledging records an
`alert.acknowledged` event that the uplink sends like any other."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from datetime import datetime, tzinfo
from typing import Any

from edge.cli.common import add_command, count_of, load, more_not_shown, site_zone
from edge.cli.events import reader
from edge.errors import UsageError
from edge.events import Event, EventFactory
from edge.rules.alerts import (
    MIN_ID_PIECE,
    AlertEngine,
    AlertRecord,
    UnknownAlert,
    find_alert,
    list_alerts,
    resolve_alert,
)
from edge.store.queries import query_events

FOLLOW_POLL_S = 0.5

ALL_ALERTS_HELP = (
    "also the alerts that are over (cleared); open ones, raised or acknowledged, are always listed"
)

MAX_BY = 100
"""as long as `by` may be in the alert.ack command the community database sends"""


def acknowledger(text: str) -> str:
    """An argparse type for --by: the record says who acknowledged, so it cannot be blank."""
    who = text.strip()
    if not who or len(who) > MAX_BY:
        raise argparse.ArgumentTypeError(f"{text!r}: give who acknowledges, 1 to {MAX_BY} characters")
    return who


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "alerts",
        "list open alerts (newest last); --follow to watch; `alerts ack ID` to acknowledge",
        _alerts,
    )
    add_listing_arguments(
        parser,
        all_help=ALL_ALERTS_HELP,
        follow_help="then keep printing each alert as it is raised, acknowledged or cleared (same lines)",
    )
    sub = parser.add_subparsers(dest="alerts_command", metavar="ACTION", title="actions")
    ack = add_command(sub, "ack", "acknowledge an alert: it stays open until its condition clears", _ack)
    ack.add_argument(
        "alert_id",
        metavar="ID",
        help=f"alert id as `gatehouse alerts` shows it, or its first or last {MIN_ID_PIECE} or more "
        "characters, or the alert's key",
    )
    ack.add_argument(
        "--by",
        type=acknowledger,
        default="guard",
        help=f"who acknowledges, at most {MAX_BY} characters (default: guard)",
    )


def add_listing_arguments(parser: argparse.ArgumentParser, *, all_help: str, follow_help: str) -> None:
    """--all, --follow, --json and --limit of an alert listing (the gateway's or the community's)."""
    parser.add_argument("--all", action="store_true", help=all_help)
    parser.add_argument("--follow", "-f", action="store_true", help=follow_help)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", "-n", type=count_of(1), default=100, help="how many (default 100)")


def local_time(ms: int | None, zone: tzinfo) -> str:
    """`ms` in `zone`; "-" for none (the community database may have an alert's acknowledgement
    before its alert.raised)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%m-%d %H:%M:%S")


def format_alert(alert: AlertRecord, zone: tzinfo) -> str:
    """One line of `gatehouse alerts`, its times in `zone` (the site's)."""
    repeats = f" ×{alert.repeats + 1}" if alert.repeats else ""
    acked = f" (ack {alert.acked_by} {local_time(alert.acked_ms, zone)})" if alert.acked_ms else ""
    cleared = f" (cleared {local_time(alert.cleared_ms, zone)})" if alert.cleared_ms else ""
    return (
        f"{alert.alert_id}  {local_time(alert.raised_ms, zone)}  {alert.severity:<8}  {alert.state:<12}  "
        f"{alert.kind:<20}  {alert.message}{repeats}{acked}{cleared}"
    )


def _alerts(args: argparse.Namespace) -> int:
    config = load(args)
    conn = reader(config)
    zone = site_zone(config)
    # Where following starts is read before the listing, so that an alert raised in between is
    # shown rather than lost.
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
    fetched = list_alerts(conn, include_cleared=args.all, limit=args.limit + 1)
    alerts = fetched[-args.limit :]
    for alert in alerts:
        print(
            json.dumps(alert.__dict__, ensure_ascii=False) if args.json else format_alert(alert, zone),
            flush=True,
        )
    more_not_shown(alerts, fetched, "alerts")
    if not alerts and not args.json:
        print("no open alerts" if not args.all else "no alerts", flush=True)
    if not args.follow:
        return 0
    while True:
        time.sleep(FOLLOW_POLL_S)
        for event in query_events(conn, types=["alert.*"], after_seq=last, limit=500, newest=False):
            last = event.seq
            alert = as_of(event, find_alert(conn, event.payload.alert_id))
            if alert is None:
                continue
            record = {**alert.__dict__, "event": event.type, "seq": event.seq}
            print(
                json.dumps(record, ensure_ascii=False) if args.json else format_alert(alert, zone), flush=True
            )


def as_of(event: Event, alert: AlertRecord | None) -> AlertRecord | None:
    """The alert as this event of it left it: a follower printing a raise that was acknowledged a
    moment later still shows it raised, then a second line acknowledged."""
    if alert is None:
        return None
    state = _STATE_AFTER.get(event.type, alert.state)
    if state == "raised":
        return dataclasses.replace(alert, state=state, acked_ms=None, acked_by=None, cleared_ms=None)
    if state == "acknowledged":
        return dataclasses.replace(alert, state=state, cleared_ms=None)
    return dataclasses.replace(alert, state=state)


_STATE_AFTER = {"alert.raised": "raised", "alert.acknowledged": "acknowledged", "alert.cleared": "cleared"}


def _ack(args: argparse.Namespace) -> int:
    from edge.gateway import open_store

    config = load(args)
    if not config.store_path.exists():
        raise UsageError(f"no store at {config.store_path}: there are no alerts to acknowledge")
    zone = site_zone(config)
    factory = EventFactory(config.site.id, config.gateway.id)
    store = open_store(config, factory)
    try:
        try:
            alert = resolve_alert(store.read(), args.alert_id)
        except UnknownAlert as err:
            raise UsageError(str(err)) from err
        if alert is None:
            short = len(args.alert_id.strip()) < MIN_ID_PIECE
            raise UsageError(
                f"no alert {args.alert_id!r}; `gatehouse alerts` lists the open ones with their ids"
                + (f": give an id, or its first or last {MIN_ID_PIECE} or more characters" if short else "")
            )
        engine = AlertEngine(store, factory)
        event = asyncio.run(engine.acknowledge(alert.alert_id, by=args.by))
        alert = engine.find(alert.alert_id) or alert
    finally:
        store.close()
    if event is not None:
        print(f"acknowledged {alert.alert_id}: {alert.message}")
    elif alert.state == "acknowledged":
        print(
            f"alert {alert.alert_id} was already acknowledged by {alert.acked_by} at "
            f"{local_time(alert.acked_ms, zone)}: {alert.message}"
        )
    else:
        print(
            f"alert {alert.alert_id} is already {alert.state} (at {local_time(alert.cleared_ms, zone)}); "
            f"nothing to acknowledge: {alert.message}"
        )
    return 0
