"""`gatehouse pass issue|list|revoke`: visitor, delivery and contractor passes issued at the
gatehouse. A token pass shows its QR code in the terminal for the visitor to photograph."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import secrets
import time
from datetime import datetime, tzinfo
from typing import Any

from edge.allowlist import MIN_PASS_ID_PIECE, PASS_KINDS, PassRecord, list_passes
from edge.cli.allow import check_gates, open_allowlist, parse_time
from edge.cli.common import add_command, load, padded, site_zone
from edge.cli.events import reader
from edge.errors import UsageError

MAX_PASS_HOURS = 24 * 366
"""a visitor or delivery pass lasts at most a year; longer stays are residents (allow add)"""


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "pass", "issue, list and revoke visitor and delivery passes", _no_action)
    sub = parser.add_subparsers(dest="pass_command", metavar="ACTION", title="actions")
    issue = add_command(
        sub,
        "issue",
        "issue a pass for a plate and/or a QR token",
        _issue,
        description="e.g. gatehouse pass issue --plate 津A12345 --hours 2 --gate north-in\n"
        "     gatehouse pass issue --qr --kind delivery --hours 1 --host 3-402",
    )
    issue.add_argument("--plate", help="the visitor's plate, e.g. 津A12345")
    issue.add_argument("--qr", action="store_true", help="make a QR token and show its code in the terminal")
    issue.add_argument("--token", help="use this QR token text instead of a random one (implies --qr)")
    issue.add_argument(
        "--kind", choices=PASS_KINDS, default="visitor", help="visitor (default), delivery, contractor"
    )
    issue.add_argument(
        "--hours", type=float, default=4.0, help="valid for this many hours from now (default 4)"
    )
    issue.add_argument(
        "--from",
        dest="valid_from",
        help="valid from (ISO time; the site's time zone unless one is given) instead of now",
    )
    issue.add_argument(
        "--until", dest="valid_until", help="valid until (ISO time, as --from) instead of --hours"
    )
    issue.add_argument("--gate", action="append", default=[], help="only at this gate (repeat); default: all")
    issue.add_argument("--entries", type=int, default=1, help="entries allowed (default 1; 0: no limit)")
    issue.add_argument("--holder", help="visitor's or rider's name, for the guards")
    issue.add_argument("--host", help="household visited")
    issue.add_argument("--json", action="store_true", help="print the pass as JSON (with the token)")

    listing = add_command(
        sub,
        "list",
        "list passes neither revoked nor over, used-up ones included: they still let a visitor out "
        "(--all: every pass)",
        _list,
    )
    listing.add_argument("--all", action="store_true", help="also expired, used-up and revoked passes")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    revoke = add_command(sub, "revoke", "revoke a pass at once", _revoke)
    revoke.add_argument(
        "pass_id",
        metavar="ID",
        help=f"pass id, as `gatehouse pass list` shows it, or its first or last {MIN_PASS_ID_PIECE} or more "
        "characters",
    )


def _no_action(args: argparse.Namespace) -> int:
    raise UsageError("say what to do: gatehouse pass issue|list|revoke (see --help)")


def qr_text(token: str) -> str:
    """The token as a QR code drawn with characters, for a terminal."""
    import segno

    out = io.StringIO()
    segno.make(token, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def _issue(args: argparse.Namespace) -> int:
    token = args.token or (f"GH{secrets.token_hex(10).upper()}" if args.qr else None)
    if not args.plate and not token:
        raise UsageError("a pass needs --plate and/or --qr")
    if args.entries < 0:
        raise UsageError("--entries: 0 (no limit) or more")
    if not 0 < args.hours <= MAX_PASS_HOURS:
        raise UsageError(f"--hours must be more than 0 and at most {MAX_PASS_HOURS} (got {args.hours:g})")
    config = load(args)
    zone = site_zone(config)
    now_ms = int(time.time() * 1000)
    start = parse_time("--from", args.valid_from, zone) or now_ms
    end = parse_time("--until", args.valid_until, zone) or start + int(args.hours * 3600_000)
    if end <= now_ms:
        raise UsageError(
            f"the pass would end at {_when(end, zone)}, which is already past; give an --until "
            "(or --from and --hours) still to come"
        )
    allow = open_allowlist(config)
    try:
        gates = check_gates(config, args.gate)
        pass_id = allow.issue_pass(
            kind=args.kind,
            plate=args.plate,
            token=token,
            holder=args.holder,
            host=args.host,
            valid_from_ms=start,
            valid_until_ms=end,
            gates=gates,
            max_entries=args.entries or None,
        )
        record = allow.get_pass(pass_id)
    except ValueError as err:
        raise UsageError(str(err)) from err
    finally:
        allow.store.close()
    assert record is not None
    if args.json:
        print(json.dumps({**_as_dict(record, now_ms), "token": token}, ensure_ascii=False))
        return 0
    print(f"issued {record.kind} pass {record.id}")
    print(f"  {_describe(record, zone)}")
    if token:
        print(f"  QR token: {token} (show this code at the reader)")
        print(qr_text(token))
    return 0


def _when(ms: int, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M %Z")


def _describe(record: PassRecord, zone: tzinfo) -> str:
    what = " + ".join(
        part
        for part in (
            f"plate {record.plate}" if record.plate else "",
            f"QR …{record.token_last4}" if record.token_last4 else "",
        )
        if part
    )
    entries = (
        f"{record.used}/{record.max_entries} entries" if record.max_entries else f"{record.used} entries"
    )
    who = ", ".join(p for p in (record.holder, f"visiting {record.host}" if record.host else "") if p)
    gates = ", ".join(record.gates) or "all gates"
    return (
        f"{what}; {_when(record.valid_from_ms, zone)} → {_when(record.valid_until_ms, zone)}; "
        f"{gates}; {entries}" + (f"; {who}" if who else "")
    )


def _as_dict(record: PassRecord, now_ms: int) -> dict[str, Any]:
    return {**record.__dict__, "gates": list(record.gates), "state": record.state(now_ms)}


def _list(args: argparse.Namespace) -> int:
    config = load(args)
    now_ms = int(time.time() * 1000)
    # Read-only, as `gatehouse events`: a listing neither creates nor changes the store.
    with contextlib.closing(reader(config)) as conn:
        passes = list_passes(conn, include_ended=args.all, now_ms=now_ms)
    if args.json:
        for record in passes:
            print(json.dumps(_as_dict(record, now_ms), ensure_ascii=False))
        return 0
    if not passes:
        print("no passes" if args.all else "no valid passes (--all shows ended ones)")
    zone = site_zone(config)
    for record in passes:
        print(
            f"{padded(record.id, 44)} {record.kind:<10} {record.state(now_ms):<13} {_describe(record, zone)}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    allow = open_allowlist(load(args))
    try:
        try:
            found = allow.pass_ids_fitting(args.pass_id)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if not found:
            raise UsageError(f"no pass {args.pass_id!r}; `gatehouse pass list --all` shows them")
        if len(found) > 1:
            raise UsageError(
                f"{args.pass_id!r} fits {len(found)} pass ids ({', '.join(found[:5])}"
                f"{', …' if len(found) > 5 else ''}): give more of it"
            )
        (pass_id,) = found
        revoked = allow.revoke_pass(pass_id)
    finally:
        allow.store.close()
    print(f"revoked pass {pass_id}" if revoked else f"pass {pass_id} was already revoked")
    return 0
