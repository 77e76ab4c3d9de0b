"""`gatehouse events` and `gatehouse status`: what the gateway recorded, read from its store."""

from __future__ import annotations

import argparse
import csv
import difflib
import fnmatch
import io
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import Any

from edge.allowlist import normalise_plate
from edge.cli.common import add_command, count_of, counted, load, more_not_shown, padded, site_zone
from edge.errors import StoreError, UsageError
from edge.events import Event, EventType, Priority
from edge.instance import running_gateway
from edge.store.queries import EventFilter, gate_seen, read_backlog, select_events, types_matching, types_with
from edge.times import in_zone

_DURATION = re.compile(r"^(\d+)([smhd])$")
_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_LIMIT = 50


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "events", "list recorded events (newest last); --follow to watch", _events
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    add_filter_arguments(parser)
    add_output_arguments(parser)
    add_command(subparsers, "status", "show counters, backlog and devices from the store", _status)


def add_filter_arguments(parser: argparse.ArgumentParser, zone: str = "the site's time zone") -> None:
    """The options that choose events (event_filter reads them); `zone`: where a time given
    without one is read."""
    parser.add_argument(
        "--type", "-t", action="append", default=[], help="only this type; * matches, e.g. 'access.*'"
    )
    parser.add_argument(
        "--since",
        help=f"only events since: 10m, 2h, 1d ago, or an ISO time (in {zone} unless one is given)",
    )
    parser.add_argument(
        "--until",
        help="only events before: the same forms as --since; a date alone takes in that whole day",
    )
    parser.add_argument(
        "--gate",
        "-g",
        action="append",
        default=[],
        metavar="ID",
        help="only events at this gate or lane (again for more gates)",
    )
    parser.add_argument(
        "--plate",
        help="only access decisions, plate reads and alerts about this plate (津a 12345 finds 津A12345)",
    )
    parser.add_argument("--subject", help="only access decisions for this person or pass id")
    parser.add_argument(
        "--household", help="only access decisions for this household (its residents and its visitors)"
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--limit, and --json or --csv instead of the table (printer reads them)."""
    parser.add_argument(
        "--limit",
        "-n",
        type=count_of(1),
        help=f"how many, the newest (default {DEFAULT_LIMIT}; with --csv, all)",
    )
    parser.add_argument(
        "--photos",
        metavar="DIR",
        type=Path,
        help="also write each listed event's pictures (plate crops, snapshots) into DIR, named by "
        "time, gate and plate; the table and the spreadsheet name the files",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON event per line")
    output.add_argument(
        "--csv", action="store_true", help="a spreadsheet: a header row, then one row per event, oldest first"
    )


def parse_time(option: str, text: str, zone: tzinfo, now: float | None = None) -> int:
    """`10m`, `2h`, `1d` ago, or an ISO 8601 time (in `zone`, the site's, when it names none);
    milliseconds since the epoch, never before the epoch. For --until a date alone is the end of
    that day, as people mean it (`--until 2026-11-30` takes in the 30th)."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return max(0, int(((now or time.time()) - seconds) * 1000))
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise UsageError(
            f"{option} {text!r}: expected 10m, 2h, 1d or an ISO time like 2026-11-25T08:00"
        ) from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if option == "--until" and _BARE_DATE.match(text.strip()):
        moment += timedelta(days=1)
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


def check_gates(conn: sqlite3.Connection, gates: tuple[str, ...], configured: list[str]) -> None:
    """Each --gate id must be a gate of the configuration or one that events in the store name
    (a gate removed from the file keeps its history)."""
    for gate in gates:
        if gate in configured or gate_seen(conn, gate):
            continue
        near = difflib.get_close_matches(gate, configured, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        known = f"gates: {', '.join(configured)}" if configured else "no gates are configured"
        raise UsageError(f"--gate {gate!r}: no such gate, and no event names it; {hint}{known}")


def _text(option: str, value: str | None) -> str | None:
    """An option's text without the spaces around it; a blank one is an error."""
    if value is not None and not value.strip():
        raise UsageError(f"{option} must not be blank")
    return value.strip() if value is not None else None


def event_filter(args: argparse.Namespace, zone: tzinfo) -> EventFilter:
    """The filter the options ask for, every value checked but the gates (see check_gates)."""
    now = time.time()
    since = parse_time("--since", args.since, zone, now) if args.since else None
    until = parse_time("--until", args.until, zone, now) if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError(f"--until {args.until!r} is not after --since {args.since!r}: no event lies between")
    if until is not None and args.follow:
        raise UsageError("--until ends the listing and --follow never does; use one of them")
    plate = None
    if args.plate is not None:
        try:
            plate = normalise_plate(args.plate)
        except ValueError as err:
            raise UsageError(f"--plate {err}") from None
    filters = EventFilter(
        types=types_matching(check_types(args.type)),
        since_ms=since,
        until_ms=until,
        gates=tuple(dict.fromkeys(args.gate)),
        plate=plate,
        subject=_text("--subject", args.subject),
        household=_text("--household", args.household),
    )
    if filters.types and not filters.candidate_types():
        for field in filters.fields():
            having = types_with(field)
            if not having & set(filters.types):
                raise UsageError(
                    f"--{field} looks only at {', '.join(sorted(having))} events, and --type "
                    f"{' '.join(args.type)} asks for none of them"
                )
    return filters


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
            if not what:  # an operator's opening: no card, no plate, but who and why
                return f"{p.gate}: {p.reason}: {p.detail or who}"
            return f"{p.gate}: {what} → {p.reason}" + (f" ({who})" if p.subject else "")
        case "gate.state":
            return f"{p.gate}: {p.previous or '?'} → {p.state}" + (f" ({p.detail})" if p.detail else "")
        case "vehicle.plate":
            return " ".join(
                part for part in (f"{p.lane}: {p.plate or '-'}", p.colour, f"{p.confidence:.2f}") if part
            )
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

CSV_COLUMNS = ("time", "type", "gate", "device", "credential", "subject", "household", "reason", "detail")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """A spreadsheet cell: empty for None; text a spreadsheet would take for a formula (=, +, -,
    @ first) behind a ' (CSV injection: a name or message from upstream must not run)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA) else text


def spreadsheet() -> Any:
    """A CSV writer on standard output that Excel reads right: UTF-8 whatever the locale, and
    with the byte order mark (without it Excel reads a CSV in the Windows code page and garbles
    every plate's province, 津 and the like). Put the cells through `cell`."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    sys.stdout.write("\ufeff")
    return csv.writer(sys.stdout)


def csv_row(event: Event, zone: tzinfo) -> list[str]:
    """The event under CSV_COLUMNS, its time in `zone` (the site's) as a spreadsheet reads it."""
    p: Any = event.payload
    credential = getattr(p, "plate", None)
    if credential is None and isinstance(getattr(p, "detail", None), dict):
        credential = p.detail.get("plate")  # an alert about a plate
    if credential is None and getattr(p, "credential", None) is not None:
        credential = f"{p.credential.kind} …{p.credential.last4}"
    detail = p.detail if event.type.startswith("access.") else summary(event)
    return [
        cell(value)
        for value in (
            event.ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            event.type,
            getattr(p, "gate", None) or getattr(p, "lane", None),
            event.device,
            credential,
            getattr(p, "subject", None),
            getattr(p, "household", None),
            getattr(p, "reason", None),
            detail,
        )
    ]


_UNSAFE = re.compile(r"[^\w.-]+")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}


class PhotoSaver:
    """Writes the pictures of listed events into a folder under names a person can sort and
    read (`20261124-081500_north-in_津A12345_crop_1a2b3c4d.jpg`), from wherever `read` finds an
    attachment's bytes (the gateway's attachment files, the community database)."""

    def __init__(self, folder: Path, read: Callable[[str], bytes | None], zone: tzinfo) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--photos {folder}: cannot make the folder: {err.strerror or err}") from None
        self.folder = folder
        self.read = read
        self.zone = zone
        self.saved = 0
        self.missing = 0

    def save(self, event: Event) -> list[str]:
        """The event's pictures written; the names of the files (those no longer kept: none)."""
        names = []
        p: Any = event.payload
        where = getattr(p, "gate", None) or getattr(p, "lane", None) or event.device or "-"
        what = getattr(p, "plate", None) or event.type
        for attachment in event.attachments:
            data = self.read(attachment.sha256)
            if data is None:
                self.missing += 1
                continue
            stem = "_".join(
                [event.ts.astimezone(self.zone).strftime("%Y%m%d-%H%M%S"), where, what, attachment.role]
            )
            name = _UNSAFE.sub("-", stem) + f"_{attachment.sha256[:8]}" + _EXTENSIONS.get(attachment.mime, "")
            target = self.folder / name
            if not target.exists():
                target.write_bytes(data)
            names.append(name)
            self.saved += 1
        return names

    def summary(self) -> None:
        """Say on stderr what was written, and what the retention limits had already removed."""
        note = f"{counted(self.saved, 'picture')} in {self.folder}"
        if self.missing:
            note += f"; {self.missing} no longer kept (store.retention.snapshots_days) or not yet received"
        print(note, file=sys.stderr)


def format_row_by_gateway(event: Event, zone: tzinfo, width: int) -> str:
    """One line of the table of events of many gateways (their seqs are each gateway's own, so
    the table names the gateway instead), the site/gateway column `width` wide."""
    local = event.ts.astimezone(zone).strftime("%m-%d %H:%M:%S")
    where = padded(f"{event.site}/{event.gateway}", width)
    return f"{local}  {where}  {event.type:<18}  {padded(event.device or '-', 14)}  {summary(event)}"


def printer(
    args: argparse.Namespace,
    zone: tzinfo,
    *,
    gateway_width: int | None = None,
    photos: PhotoSaver | None = None,
) -> Callable[[Event], None]:
    """Print the heading the output format has, and return what prints one event in it;
    `gateway_width`: the events of many gateways, each row naming its site and gateway in a
    column that wide; `photos`: each event's pictures are written out and named in its row."""
    by_gateway = gateway_width is not None
    if args.json:

        def record(event: Event) -> None:
            if photos is not None:
                photos.save(event)
            print(event.model_dump_json(), flush=True)

        return record
    if not args.csv:
        if gateway_width is None:
            print(HEADER)
        else:
            print(f"{'time':<14}  {'site/gateway':<{gateway_width}}  {'type':<18}  {'device':<14}  what")

        def line(event: Event) -> None:
            names = photos.save(event) if photos is not None else []
            row = (
                format_row(event, zone)
                if gateway_width is None
                else format_row_by_gateway(event, zone, gateway_width)
            )
            print(row + "".join(f"  [{name}]" for name in names), flush=True)

        return line
    writer = spreadsheet()
    columns = [
        *(("site", "gateway") if by_gateway else ()),
        *CSV_COLUMNS,
        *(("photos",) if photos is not None else ()),
    ]
    writer.writerow(columns)

    def row(event: Event) -> None:
        cells = csv_row(event, zone)
        if by_gateway:
            cells = [cell(event.site), cell(event.gateway), *cells]
        if photos is not None:
            cells.append(cell(" ".join(photos.save(event))))
        writer.writerow(cells)
        if args.follow:
            sys.stdout.flush()

    return row


def _events(args: argparse.Namespace) -> int:
    config = load(args)
    zone = site_zone(config)
    filters = event_filter(args, zone)
    conn = reader(config)
    if filters.gates:
        check_gates(conn, filters.gates, [gate.id for gate in config.gates])
    # Listed up to here, followed after: an event committed meanwhile is followed, not lost.
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
    limit = args.limit or (None if args.csv else DEFAULT_LIMIT)
    photos = None
    if args.photos is not None:
        files = config.store_path.parent / "attachments"
        photos = PhotoSaver(args.photos, partial(_attachment_file, files), zone)
    show = printer(args, zone, photos=photos)
    if limit is None:
        for event in select_events(conn, filters, through_seq=last, newest=False):
            show(event)
    else:
        fetched = list(select_events(conn, filters, through_seq=last, limit=limit + 1))
        shown = fetched[-limit:]
        for event in shown:
            show(event)
        more_not_shown(shown, fetched, "events")
    if photos is not None:
        photos.summary()
    if not args.follow:
        return 0
    while True:
        time.sleep(0.5)
        newest = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        for event in select_events(conn, filters, after_seq=last, through_seq=newest, newest=False):
            show(event)
        last = newest


def _attachment_file(folder: Path, sha256: str) -> bytes | None:
    """An attachment's bytes from the gateway's attachment files; None once retention took it."""
    try:
        return (folder / sha256[:2] / sha256).read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise StoreError(f"{folder}: permission denied; run the command with sudo") from None


def _status(args: argparse.Namespace) -> int:
    config = load(args)
    zone = site_zone(config)
    conn = reader(config)
    counters = dict(conn.execute("SELECT name, value FROM counters"))
    backlog = read_backlog(conn)
    total = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM outbox").fetchone()
    print(f"gateway {config.gateway.id} at site {config.site.id}; store {config.store_path}")
    running = running_gateway(config.state_path)
    if running is not None:
        print(f"running: yes ({running.describe(zone)})")
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
            # the backlog is counted above from the store itself, the devices below; the report's
            # copies are as old as the report
            if key in ("backlog", "devices", "gates"):
                continue
            if key in ("connected_since", "last_puback") and isinstance(value, str):
                value = in_zone(value, zone, name_zone=True)
            elif isinstance(value, dict | list):
                value = json.dumps(value, ensure_ascii=False)
            print(f"  uplink {key}: {value}")
    open_alerts = conn.execute(
        "SELECT severity, state, alert_id, message, repeats FROM alerts WHERE state != 'cleared' "
        "ORDER BY raised_ms"
    ).fetchall()
    waiting = sum(1 for _, state, _, _, _ in open_alerts if state == "raised")
    print(f"open alerts: {len(open_alerts)} ({waiting} not acknowledged)")
    for severity, state, alert_id, message, repeats in open_alerts:
        print(f"  [{severity}] {state} {alert_id}: {message}{f' ×{repeats + 1}' if repeats else ''}")
    devices = conn.execute(
        "SELECT id, kind, state, since_ms, last_error, restarts FROM devices ORDER BY id"
    ).fetchall()
    for device_id, kind, state, since_ms, error, restarts in devices:
        since = datetime.fromtimestamp(since_ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        if not error:
            problem = ""
        elif state == "online":
            problem = f"; before it came back: {error}"  # what went wrong last, not what is wrong now
        else:
            problem = f" — {error}"
        print(
            f"  device {device_id} ({kind}): {state} since {since}, {counted(restarts, 'restart')}{problem}"
        )
    return 0
