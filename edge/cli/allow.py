"""`gatehouse allow add|remove|list|import`: residents' cards, QR tokens, PINs and plates, and the
blocklist, kept in the gateway's store. Safe while the daemon runs: decisions see a change at
once."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import time
from datetime import datetime, tzinfo
from typing import Any

from edge.allowlist import CREDENTIAL_KINDS, AllowList, Entry, list_entries, to_ms, version_of
from edge.cli.common import add_command, load, print_table, site_zone
from edge.cli.events import reader
from edge.errors import UsageError
from edge.events import EventFactory


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "allow",
        "manage who may pass: residents' cards, QR tokens, PINs, plates and the blocklist",
        _no_action,
    )
    sub = parser.add_subparsers(dest="allow_command", metavar="ACTION", title="actions")

    add = add_command(
        sub,
        "add",
        "allow a resident's card, QR token, PIN or plate (or block one with --block)",
        _add,
        description="Allow credentials and plates for a resident, e.g.\n"
        "  gatehouse allow add --person p-0012 --household 3-402 --building 3 --unit 402 "
        "--card 12345678 --plate 津A12345\n"
        "or block one: gatehouse allow add --block --plate 津B66666 --reason 'stolen'",
    )
    _credential_options(add)
    add.add_argument("--person", help="resident id (as the community database knows them)")
    add.add_argument("--household", help="household id; alone, the credential belongs to the household")
    add.add_argument("--building", help="building of the household")
    add.add_argument("--unit", help="unit (flat) of the household")
    add.add_argument("--name", help="resident's name, for the guards")
    add.add_argument(
        "--from", dest="valid_from", help="valid from (ISO time; the site's time zone unless one is given)"
    )
    add.add_argument("--until", dest="valid_until", help="valid until (ISO time, as --from); default: no end")
    add.add_argument("--gate", action="append", default=[], help="only at this gate (repeat); default: all")
    add.add_argument("--block", action="store_true", help="put the credentials or plates on the blocklist")
    add.add_argument("--reason", default="", help="why it is blocked (shown to the guards)")

    remove = add_command(
        sub,
        "remove",
        "remove a card, token, PIN, plate or a whole resident (or unblock with --block)",
        _remove,
    )
    _credential_options(remove)
    remove.add_argument("--person", help="remove this resident with every credential and plate of theirs")
    remove.add_argument("--block", action="store_true", help="remove from the blocklist instead")

    listing = add_command(sub, "list", "list allowed credentials and plates, and the blocklist", _list)
    group = listing.add_mutually_exclusive_group()
    group.add_argument("--blocked", action="store_true", help="only the blocklist")
    group.add_argument("--allowed", action="store_true", help="only what is allowed")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    imported = add_command(
        sub,
        "import",
        "import residents from a CSV file (all lines or none)",
        _import,
        description="Columns (header line, any order): person, household, building, unit, name, card, "
        "qr, pin, plate, valid_from, valid_until, gates (separated by ';'), list (allow or block), "
        "reason. Every line is checked first; one bad line imports nothing.",
    )
    imported.add_argument("csv", metavar="CSV", help="the CSV file")


def _credential_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--card", action="append", default=[], help="card number (repeat for several)")
    parser.add_argument("--qr", action="append", default=[], help="QR token text (repeat for several)")
    parser.add_argument("--pin", action="append", default=[], help="PIN code (repeat for several)")
    parser.add_argument("--plate", action="append", default=[], help="plate, e.g. 津A12345 (repeat)")


def _no_action(args: argparse.Namespace) -> int:
    raise UsageError("say what to do: gatehouse allow add|remove|list|import (see --help)")


def open_allowlist(config: Any) -> AllowList:
    """An AllowList on the gateway's store (created when missing)."""
    from edge.gateway import open_store

    store = open_store(config, EventFactory(config.site.id, config.gateway.id))
    return AllowList(store, config.site.salt)


def check_gates(config: Any, gates: list[str]) -> list[str]:
    known = [gate.id for gate in config.gates]
    for gate in gates:
        if gate not in known:
            near = difflib.get_close_matches(gate, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known gates: {', '.join(known) or 'none'}"
            raise UsageError(f"--gate {gate}: no such gate in the configuration{hint}")
    return gates


def parse_time(option: str, text: str | None, zone: tzinfo) -> int | None:
    """An option's ISO time in ms; a time without a zone is in `zone` (the site's), and a bare
    date given to --until is the end of that day."""
    try:
        return to_ms(text, zone, until=option == "--until")
    except ValueError as err:
        raise UsageError(f"{option} {text!r}: expected an ISO time like 2027-06-30T23:59") from err


def check_window(start_ms: int | None, end_ms: int | None) -> None:
    """Refuse a validity window that runs backwards or is already over, as `pass issue` does."""
    if end_ms is None:
        return
    if start_ms is not None and end_ms <= start_ms:
        raise UsageError("--until must be after --from")
    if end_ms <= time.time() * 1000:
        raise UsageError("--until is already past; give a time still to come")


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = [(kind, value) for kind in CREDENTIAL_KINDS for value in getattr(args, kind)]
    return pairs + [("plate", plate) for plate in args.plate]


def _add(args: argparse.Namespace) -> int:
    pairs = _pairs(args)
    if not pairs:
        raise UsageError("give at least one --card, --qr, --pin or --plate")
    config = load(args)
    zone = site_zone(config)
    start, end = parse_time("--from", args.valid_from, zone), parse_time("--until", args.valid_until, zone)
    check_window(start, end)
    allow = open_allowlist(config)
    try:
        # Every value is checked before any is written: one bad value adds nothing.
        for kind, value in pairs:
            allow.key(kind, value)
        if args.block:
            for kind, value in pairs:
                allow.block(kind, value, reason=args.reason, valid_until_ms=end)
                print(f"blocked {_shown(kind, value)}" + (f": {args.reason}" if args.reason else ""))
            return 0
        subject = args.person or args.household
        if not subject:
            raise UsageError("say whose it is: --person ID and/or --household ID")
        gates = check_gates(config, args.gate)
        if args.person:
            allow.add_resident(
                args.person, household=args.household, building=args.building, unit=args.unit, name=args.name
            )
        else:
            allow.add_resident(
                args.household, household=args.household, building=args.building, unit=args.unit
            )
        for kind, value in pairs:
            if kind == "plate":
                allow.add_plate(value, subject, valid_from_ms=start, valid_until_ms=end, gates=gates)
            else:
                allow.add_credential(
                    value, subject, kind=kind, valid_from_ms=start, valid_until_ms=end, gates=gates
                )
            print(f"allowed {_shown(kind, value)} for {subject}")
    except ValueError as err:
        raise UsageError(str(err)) from err
    finally:
        allow.store.close()
    return 0


def _remove(args: argparse.Namespace) -> int:
    pairs = _pairs(args)
    if not pairs and not args.person:
        raise UsageError("give what to remove: --card, --qr, --pin, --plate or --person")
    allow = open_allowlist(load(args))
    missing = 0
    try:
        if args.person:
            count = allow.remove_resident(args.person)
            if count is None:
                print(f"not on the allow-list: resident {args.person}")
                missing += 1
            else:
                print(f"removed resident {args.person} and {count} credentials and plates")
        for kind, value in pairs:
            if args.block:
                done = allow.unblock(kind, value)
            elif kind == "plate":
                done = allow.remove_plate(value)
            else:
                done = allow.remove_credential(value, kind)
            where = "blocklist" if args.block else "allow-list"
            print(f"{'removed' if done else 'not on the ' + where + ':'} {_shown(kind, value)}")
            missing += not done
    except ValueError as err:
        raise UsageError(str(err)) from err
    finally:
        allow.store.close()
    return 1 if missing else 0


def _date(ms: int | None, zone: tzinfo) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M")


def _list(args: argparse.Namespace) -> int:
    config = load(args)
    # Read-only, as `gatehouse events`: a listing neither creates nor changes the store.
    with contextlib.closing(reader(config)) as conn:
        entries = list_entries(conn, blocked=True if args.blocked else False if args.allowed else None)
        version = version_of(conn)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.__dict__, ensure_ascii=False))
        return 0
    print(f"allow-list version {version} (from the community database); {len(entries)} entries")
    zone = site_zone(config)
    heading = ("list", "kind", "credential", "subject", "household", "bldg/unit", "until", "gates", "source")
    print_table([heading, *(_row(entry, zone) for entry in entries)])
    return 0


def _row(entry: Entry, zone: tzinfo) -> tuple[str, ...]:
    place = "/".join(p for p in (entry.building, entry.unit) if p) or "-"
    who = entry.subject or (f"({entry.reason})" if entry.reason else "-")
    return (
        entry.list,
        entry.kind,
        entry.shown,
        who,
        entry.household or "-",
        place,
        _date(entry.valid_until_ms, zone),
        ",".join(entry.gates) or "all",
        entry.source,
    )


def _shown(kind: str, value: str) -> str:
    return f"plate {value.strip().upper()}" if kind == "plate" else f"{kind} …{value.strip().upper()[-4:]}"


def _import(args: argparse.Namespace) -> int:
    config = load(args)
    allow = open_allowlist(config)
    try:
        result = allow.import_csv(
            args.csv, known_gates=[gate.id for gate in config.gates], zone=site_zone(config)
        )
    finally:
        allow.store.close()
    print(
        f"imported {args.csv}: {result.residents} residents in {len(result.households)} households, "
        f"{result.credentials} cards/tokens/PINs, {result.plates} plates, {result.blocked} blocked"
    )
    return 0
