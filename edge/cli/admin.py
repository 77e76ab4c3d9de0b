"""`gatehouse admin`: manage allow-lists, passes and gates from the community database; every
change is sent to the gateway as a command signed with that gateway's HMAC key, or with the
community's Ed25519 key for gateways registered with --ed25519. `admin events` and `admin
alerts` read what every gateway sent (sync/reports.py)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.cli.alerts import ALL_ALERTS_HELP, MAX_BY, acknowledger, add_listing_arguments
from edge.cli.common import add_command, count_of, positive
from edge.cli.events import add_filter_arguments, add_output_arguments
from edge.cli.ingest import add_broker_arguments, broker_config
from edge.errors import ConfigError, UsageError
from edge.files import write_private
from sync import signing


def _secret(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{what}: the environment variable {name} is not set")
    return value


def _community(args: argparse.Namespace, *, create: bool = False) -> Any:
    from sync.community import Community

    return Community(_database(args, create=create), signer_key=args.signer_key)


def _database(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The community database of --db. Only `gateway add` (and the ingest) may create a SQLite
    file: a mistyped path must not give an empty database that reads as "no gateways yet"."""
    from sync.db import open_database

    if not create and args.db.startswith("sqlite:///"):
        path = Path(args.db.removeprefix("sqlite:///"))
        if not path.exists():
            raise UsageError(
                f"no community database at {path}; `gatehouse admin gateway add` or "
                "`gatehouse ingest --db` creates one"
            )
    return open_database(args.db)


ALLOWLIST_UNSENT = (
    "the new version is recorded in the community database; a running ingest sends the gateway "
    "the whole list when the gateway next comes online, as does the next allow-list change sent"
)


def _send(args: argparse.Namespace, document: dict[str, Any], unsent: str) -> int:
    """Send a signed command and print the gateway's reply; when the broker cannot be reached,
    say what the community database already holds (`unsent`) and what to do."""
    from sync.broker import ensure_broker
    from sync.community import send_and_wait
    from sync.mqtt import MqttError

    if args.no_send:
        print(json.dumps(document, ensure_ascii=False))
        return 0
    try:
        with ensure_broker(broker_config(args)) as handle:
            reply = send_and_wait(handle.config, document, args.wait_s)
    except MqttError as err:
        raise MqttError(f"{document['name']} not sent ({err}); {unsent}") from err
    if reply is None:
        print(
            f"sent {document['name']} {document['id']}; no reply within {args.wait_s:g} s. The gateway "
            f"runs it when it reconnects, unless that is after {document['expires_at']}."
        )
        return 0
    print(json.dumps(reply, ensure_ascii=False))
    code = (reply.get("error") or {}).get("code") if not reply.get("ok") else None
    advice = reply_advice(code)
    if advice:
        print(f"{document['name']} refused ({code}): {advice}", file=sys.stderr)
    return 0 if reply.get("ok") else 1


def reply_advice(code: str | None) -> str | None:
    """What the operator can do about a refusal the admin commands meet in service."""
    from sync.commands import ErrorCode

    advice = {
        ErrorCode.BAD_SIGNATURE: (
            "the gateway holds another key than the one this database signs with for it; compare the "
            "fingerprint `gatehouse provision` printed on the gateway with `admin gateway add`'s, and "
            "register the gateway again with its key (admin gateway add SITE GATEWAY --key-env NAME)"
        ),
        ErrorCode.VERSION_GAP: (
            "the gateway holds another allow-list version; a running ingest sends it the whole list now "
            "(`admin gateway list` shows when it has applied it), so nothing is lost"
        ),
        ErrorCode.EXPIRED: (
            "it reached the gateway after it expired (was the gateway offline?); send it again if "
            "still wanted"
        ),
        ErrorCode.NOT_YET_VALID: (
            "the clocks of this machine and the gateway disagree; check both are synchronised (NTP)"
        ),
    }
    return advice.get(code) if code else None


def _credential_args(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--plate", help="plate text, e.g. 津A12345")
    which.add_argument("--card", help="card number (hashed with the site's salt before it is stored)")
    which.add_argument("--qr", help="QR token (hashed with the site's salt)")


def _which(args: argparse.Namespace) -> tuple[str, str]:
    for kind in ("plate", "card", "qr"):
        value = getattr(args, kind)
        if value:
            return kind, value
    raise ConfigError("give --plate, --card or --qr")


def cmd_gateway_add(args: argparse.Namespace) -> int:
    community = _community(args, create=True)
    key = None if args.ed25519 else _secret(args.key_env, "--key-env")
    if args.ed25519:
        public = signing.public_hex(community.signer())
    community.add_site(args.site, salt=_secret(args.salt_env, "--salt-env"))
    community.register_gateway(args.site, args.gateway, key)
    print(f"gateway {args.site}/{args.gateway} registered")
    if key is not None:
        from edge.cli.provision import fingerprint

        print(
            f"signing key fingerprint: {fingerprint(key)} (it must be the one `gatehouse provision` "
            "printed on the gateway; another key has every command refused as bad_signature)"
        )
    if args.ed25519:
        print(f"its configuration needs, under gateway:, the line  command_public_key: {public}")
    return 0


def cmd_gateway_list(args: argparse.Namespace) -> int:
    """Every gateway the community database knows: its state and since when, how its commands
    are signed, whether it has applied the allow-list, and its devices that are not online."""
    from edge.cli.common import print_table
    from edge.times import in_zone

    zone = _zone(args)
    with _database(args) as db:
        gateways = db.query(
            "SELECT site_id, id, state, state_since, signing_alg, signing_key, allowlist_version, "
            "applied_version FROM gateways ORDER BY site_id, id"
        )
        devices = db.query("SELECT site_id, gateway_id, id, state FROM devices ORDER BY id")
    if not gateways:
        print("no gateways yet: register one with gatehouse admin gateway add SITE GATEWAY …")
        return 0
    rows = [("SITE", "GATEWAY", "STATE", "SINCE", "SIGNED", "ALLOW-LIST", "DEVICES NOT ONLINE")]
    for site, gateway, state, since, alg, key, version, applied in gateways:
        mine = [(name, device_state) for s, g, name, device_state in devices if (s, g) == (site, gateway)]
        down = [
            f"{name} ({device_state or 'never seen'})"
            for name, device_state in mine
            if device_state != "online"
        ]
        listed = f"{applied or 0}/{version}" + ("" if (applied or 0) == version else " behind")
        if state not in ("online", None) and mine:
            seen = "unknown while the gateway is not online"
        else:
            seen = ", ".join(down) or (f"none of {len(mine)}" if mine else "-")
        # a gateway the ingest knows from its status only: nothing signs its commands yet
        signed = alg if alg == signing.ED25519 or key else "not registered"
        rows.append((site, gateway, state or "never seen", in_zone(since, zone), signed, listed, seen))
    print_table(rows)
    return 0


def cmd_signer_new(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise UsageError(
            f"{path} exists; pass --force to replace it (gateways would need the new public key)"
        )
    pem, public = signing.new_private_key_pem()
    write_private(path, pem.decode())
    print(f"wrote {path} (mode 0600): the community's Ed25519 command-signing key; keep it secret")
    print(f"public key (for each gateway's gateway.command_public_key): {public}")
    return 0


def cmd_signer_show(args: argparse.Namespace) -> int:
    from sync.community import load_signer

    print(signing.public_hex(load_signer(Path(args.file))))
    return 0


def cmd_allow_add(args: argparse.Namespace) -> int:
    from sync.commands import AllowEntry

    community = _community(args)
    kind, raw = _which(args)
    value, last4 = community.credential(args.site, kind, raw)
    entry = AllowEntry(
        kind=kind, value=value, last4=last4, subject=args.subject, gates=tuple(args.gate or ())
    )  # type: ignore[arg-type]
    version = community.allow_add(args.site, args.gateway, [entry])
    print(f"allow-list of {args.site}/{args.gateway} is at version {version}")
    return _send(args, community.allowlist_delta(args.site, args.gateway, version), ALLOWLIST_UNSENT)


def cmd_allow_remove(args: argparse.Namespace) -> int:
    from sync.commands import AllowKey

    community = _community(args)
    kind, raw = _which(args)
    value, _ = community.credential(args.site, kind, raw)
    version = community.allow_remove(args.site, args.gateway, [AllowKey(kind=kind, value=value)])  # type: ignore[arg-type]
    print(f"allow-list of {args.site}/{args.gateway} is at version {version}")
    return _send(args, community.allowlist_delta(args.site, args.gateway, version), ALLOWLIST_UNSENT)


def cmd_allow_import(args: argparse.Namespace) -> int:
    community = _community(args)
    path = Path(args.csv)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    version, rows = community.allow_import(args.site, args.gateway, path)
    print(f"imported {rows} entries; allow-list of {args.site}/{args.gateway} is at version {version}")
    return _send(args, community.allowlist_delta(args.site, args.gateway, version), ALLOWLIST_UNSENT)


def _registered(community: Any, args: argparse.Namespace) -> None:
    """A listing of one gateway's lists: the gateway must be registered (a typo lists nothing)."""
    if (
        community.db.one("SELECT 1 FROM gateways WHERE site_id = ? AND id = ?", (args.site, args.gateway))
        is None
    ):
        raise UsageError(
            f"no gateway {args.site}/{args.gateway} in the community database; "
            "`gatehouse admin gateway list` shows the gateways it knows"
        )


def cmd_allow_list(args: argparse.Namespace) -> int:
    """A gateway's allow-list as the community database holds it and sends it."""
    from edge.cli.common import print_table
    from edge.cli.events import cell, spreadsheet

    community = _community(args)
    _registered(community, args)
    zone = _zone(args)
    entries = community.allow_entries(args.site, args.gateway, subject=args.subject)
    rows = [
        (
            entry.kind,
            entry.value if entry.kind == "plate" else f"…{entry.last4 or '?'}",
            entry.subject or "-",
            " ".join(entry.gates) or "every gate",
            # no end: an empty cell in the spreadsheet, "-" in the table
            entry.valid_until.astimezone(zone).strftime("%Y-%m-%d %H:%M") if entry.valid_until else None,
            str(version),
        )
        for entry, version in entries
    ]
    if args.csv:
        writer = spreadsheet()
        writer.writerow(("kind", "credential", "subject", "gates", "valid_until", "version"))
        writer.writerows([cell(value) for value in row] for row in rows)
        return 0
    rows = [tuple("-" if value is None else value for value in row) for row in rows]
    version = community.allowlist_version(args.site, args.gateway)
    if not rows:
        print(f"{args.site}/{args.gateway}: nothing on the allow-list (version {version})")
        return 0
    print_table([("KIND", "CREDENTIAL", "SUBJECT", "GATES", "VALID UNTIL", "SINCE VERSION"), *rows])
    print(f"{len(rows)} entries; the allow-list is at version {version}", file=sys.stderr)
    return 0


def cmd_pass_list(args: argparse.Namespace) -> int:
    """The passes issued to a gateway, with the entries it reported for each."""
    from edge.cli.common import print_table

    community = _community(args)
    _registered(community, args)
    zone = _zone(args)
    now = datetime.now().astimezone()
    issued = community.passes(args.site, args.gateway)
    shown = [p for p in issued if args.all or p.state(now) in ("valid", "not yet valid")]
    if args.json:
        for item in shown:
            print(
                json.dumps(
                    {
                        **item.__dict__,
                        "valid_from": item.valid_from.isoformat(),
                        "valid_until": item.valid_until.isoformat(),
                        "state": item.state(now),
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    if not shown:
        ended = len(issued) - len(shown)
        print(
            f"{args.site}/{args.gateway}: no pass in force"
            + (f" ({ended} ended; --all lists them)" if ended else "")
        )
        return 0

    def local(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%m-%d %H:%M")

    rows = [
        (
            item.pass_id,
            item.kind,
            item.plate or ("QR token" if item.token else "-"),
            item.host or "-",
            local(item.valid_from),
            local(item.valid_until),
            f"{item.entries}/{item.max_uses}" if item.max_uses else str(item.entries),
            item.state(now),
        )
        for item in shown
    ]
    print_table([("PASS", "KIND", "FOR", "HOST", "FROM", "UNTIL", "ENTRIES", "STATE"), *rows])
    return 0


def cmd_pass_issue(args: argparse.Namespace) -> int:
    community = _community(args)
    if not args.plate and not args.qr:
        raise ConfigError("a pass needs --plate or --qr")
    pass_args = community.new_pass(
        args.site,
        plate=args.plate,
        qr=args.qr,
        hours=args.hours,
        kind=args.kind,
        host=args.visiting,
        max_uses=args.max_uses,
        gates=tuple(args.gate or ()),
    )
    document = community.pass_issue(args.site, args.gateway, pass_args)
    print(f"pass {pass_args.pass_id} valid until {pass_args.valid_until.isoformat()}")
    unsent = (
        f"pass {pass_args.pass_id} is recorded in the community database only: revoke it "
        "(`gatehouse admin pass revoke`) and issue it again once the broker answers"
    )
    return _send(args, document, unsent)


def cmd_pass_revoke(args: argparse.Namespace) -> int:
    community = _community(args)
    document = community.pass_revoke(args.site, args.gateway, args.pass_id, args.reason)
    print(f"pass {args.pass_id} revoked in the community database")
    return _send(args, document, "run the same command again once the broker answers")


def cmd_alert_ack(args: argparse.Namespace) -> int:
    """Acknowledge an alert at its gateway by the id `admin alerts` shows (or a piece of it, or
    its key), as the guards would on the gateway; one already acknowledged or over is not sent."""
    from edge.cli.alerts import local_time
    from edge.rules.alerts import UnknownAlert
    from sync.reports import resolve_alert

    community = _community(args)
    try:
        found = resolve_alert(community.db, args.site, args.gateway, args.alert_id)
    except UnknownAlert as err:
        raise UsageError(str(err)) from None
    if found is None:
        raise UsageError(
            f"no alert {args.alert_id} from {args.site}/{args.gateway} in the community database; "
            "`gatehouse admin alerts` lists them with their ids"
        )
    alert, zone = found.alert, _zone(args)
    if alert.state == "acknowledged":
        print(
            f"alert {alert.alert_id} was already acknowledged by {alert.acked_by} at "
            f"{local_time(alert.acked_ms, zone)}"
        )
        return 0
    if alert.state == "cleared":
        print(
            f"alert {alert.alert_id} is over (cleared at {local_time(alert.cleared_ms, zone)}); "
            "nothing to acknowledge"
        )
        return 0
    document = community.command(
        args.site, args.gateway, "alert.ack", {"alert_id": alert.alert_id, "by": args.by}, args.ttl_s
    )
    return _send(args, document, "nothing was sent: the alert stays unacknowledged at the gateway")


def cmd_open_gate(args: argparse.Namespace) -> int:
    community = _community(args)
    document = community.command(
        args.site,
        args.gateway,
        "open_gate",
        {"gate": args.gate, "reason": args.reason, "by": args.by},
        args.ttl_s,
    )
    return _send(args, document, "nothing was sent: the gate stays as it is")


def cmd_gaps(args: argparse.Namespace) -> int:

    with _database(args) as db:
        registered = db.one("SELECT 1 FROM gateways WHERE site_id = ? AND id = ?", (args.site, args.gateway))
        received = db.one(
            "SELECT count(*) FROM events WHERE site_id = ? AND gateway_id = ?", (args.site, args.gateway)
        )
        gaps = db.seq_gaps(args.site, args.gateway)
    if registered is None and not (received and received[0]):
        raise ConfigError(
            f"no gateway {args.site}/{args.gateway} in {args.db}: none registered and no events from it; "
            "`gatehouse admin gateway list` shows the gateways it knows"
        )
    if not (received and received[0]):
        print(f"{args.site}/{args.gateway}: no events received yet")
        return 0
    if not gaps:
        print(f"{args.site}/{args.gateway}: no gaps in seq")
        return 0
    for first, last in gaps:
        print(f"{args.site}/{args.gateway}: missing seq {first}" + (f"–{last}" if last != first else ""))
    return 1


def _zone(args: argparse.Namespace) -> tzinfo:
    """--tz, else the zone this machine's clock is in (its current UTC offset)."""
    if args.tz is None:
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone
    try:
        return ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {args.tz!r}: not a time zone; give one like Asia/Shanghai or UTC") from None


def _where(args: argparse.Namespace, db: Any) -> Any:
    """The gateways --site and --gateway name, each checked to be known to the database, and
    when both are given, the gateway to be one of that site's."""
    from sync.reports import Where

    # a site is known by its row, or by a gateway the ingest knows from its status only (not
    # registered yet), or by events; a gateway by its row or its events
    for option, places, column, value in (
        ("--site", ("sites WHERE id", "gateways WHERE site_id"), "site_id", args.site),
        ("--gateway", ("gateways WHERE id",), "gateway_id", args.gateway),
    ):
        if value is None:
            continue
        known = any(db.one(f"SELECT 1 FROM {place} = ? LIMIT 1", (value,)) for place in places) or db.one(
            f"SELECT 1 FROM events WHERE {column} = ? LIMIT 1", (value,)
        )
        if not known:
            raise UsageError(
                f"{option} {value!r}: the community database has no such {option[2:]} and no events "
                "from one; `gatehouse admin gateway list` shows the gateways it knows"
            )
    if args.site is not None and args.gateway is not None:
        pair = (args.site, args.gateway)
        at_site = db.one("SELECT 1 FROM gateways WHERE site_id = ? AND id = ?", pair) or db.one(
            "SELECT 1 FROM events WHERE site_id = ? AND gateway_id = ? LIMIT 1", pair
        )
        if at_site is None:
            sites = [row[0] for row in db.query("SELECT site_id FROM gateways WHERE id = ?", (args.gateway,))]
            where = f"it is at {', '.join(sites)}" if sites else "it has sent events from another site"
            raise UsageError(
                f"--gateway {args.gateway!r} is not a gateway of --site {args.site!r} ({where}); "
                "`gatehouse admin gateway list` shows each site's gateways"
            )
    return Where(args.site, args.gateway)


GATEWAY_COLUMN = 24
"""the narrowest the site/gateway column of `admin events` is; longer names widen it"""


def cmd_events(args: argparse.Namespace) -> int:
    """The events of every gateway (or of --site / --gateway), with `gatehouse events`'s filters."""
    from edge.cli.common import more_not_shown, width_of
    from edge.cli.events import DEFAULT_LIMIT, PhotoSaver, event_filter, printer
    from sync.reports import attachment_data, each_event, gate_known, known_gates, select_events

    zone = _zone(args)
    filters = event_filter(args, zone)
    with _database(args) as db:
        where = _where(args, db)
        for gate in filters.gates:
            if not gate_known(db, gate, where):
                gates = known_gates(db, where)
                near = difflib.get_close_matches(gate, gates, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                known = f"gates: {', '.join(gates)}" if gates else "no gates are registered"
                raise UsageError(f"--gate {gate!r}: no such gate, and no event names it; {hint}{known}")
        limit = args.limit or (None if args.csv else DEFAULT_LIMIT)
        photos = PhotoSaver(args.photos, partial(attachment_data, db), zone) if args.photos else None
        if limit is None:  # a spreadsheet: no column to line up
            show = printer(args, zone, gateway_width=GATEWAY_COLUMN, photos=photos)
            for event in each_event(db, filters, where):
                show(event)
        else:
            fetched = select_events(db, filters, where, limit=limit + 1)
            shown = fetched[-limit:]
            width = max([GATEWAY_COLUMN, *(width_of(f"{e.site}/{e.gateway}") for e in shown)])
            show = printer(args, zone, gateway_width=width, photos=photos)
            for event in shown:
                show(event)
            more_not_shown(shown, fetched, "events")
    if photos is not None:
        photos.summary()
    return 0


ALERTS_FOLLOW_POLL_S = 1.0
ALERTS_FOLLOW_MARGIN_MS = 60_000
"""how far before the newest change seen each poll looks (the ingest's clock, never this
machine's): a change an ingest worker committed this late, or stamped with a clock this far
behind another worker's, is still seen; the lines printed are remembered, none comes twice"""


def cmd_alerts(args: argparse.Namespace) -> int:
    """The alerts open at every gateway (or at --site / --gateway), as the ingest received them;
    --follow prints each change as it arrives."""
    import time

    from edge.cli.alerts import format_alert
    from edge.cli.common import more_not_shown
    from sync.db import DatabaseError
    from sync.reports import GatewayAlert, alerts_changed, last_alert_change, list_alerts

    zone = _zone(args)

    def line(item: GatewayAlert) -> str:
        if args.json:
            # what only the gateway knows (when a moment was last seen) is not in the community
            # database; its repeats come with the acknowledgement and the clearing
            known = {k: v for k, v in item.alert.__dict__.items() if k != "last_seen_ms"}
            return json.dumps({"site": item.site, "gateway": item.gateway, **known}, ensure_ascii=False)
        return f"{item.site}/{item.gateway}  {format_alert(item.alert, zone)}"

    with _database(args) as db:
        where = _where(args, db)
        newest = last_alert_change(db)
        # read before the listing, so that a change in between is printed rather than lost;
        # what the listing shows, or leaves out (cleared, older), is not news to a follower
        recent = alerts_changed(db, where, newest - ALERTS_FOLLOW_MARGIN_MS) if args.follow else []
        fetched = list_alerts(db, where, include_cleared=args.all, limit=args.limit + 1)
        shown = fetched[-args.limit :]
        for item in shown:
            print(line(item), flush=True)
        more_not_shown(shown, fetched, "alerts")
        if not shown and not args.json:
            print("no open alerts" if not args.all else "no alerts", flush=True)
        if not args.follow:
            return 0
        printed = {(i.site, i.gateway, i.alert.alert_id): i for i in [*recent, *fetched]}
        while True:
            time.sleep(ALERTS_FOLLOW_POLL_S)
            since = newest - ALERTS_FOLLOW_MARGIN_MS
            try:
                changed = alerts_changed(db, where, since)
            except Exception as err:
                if not db.unavailable(err):
                    raise
                print(f"(the community database does not answer: {err}; trying again)", file=sys.stderr)
                with contextlib.suppress(DatabaseError):
                    db.reconnect()
                continue
            for item in changed:
                key = (item.site, item.gateway, item.alert.alert_id)
                if key not in printed or printed[key].alert != item.alert:
                    print(line(item), flush=True)
                printed[key] = item
                newest = max(newest, item.updated_ms)
            # what changed before `since` is not asked for again unless it changes once more
            printed = {key: item for key, item in printed.items() if item.updated_ms >= since}


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("site", help="site (compound) id")
    parser.add_argument("gateway", help="gateway id")


def _sending(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-s", type=positive, default=10.0, help="how long to wait for the reply (default 10)"
    )
    parser.add_argument(
        "--no-send", action="store_true", help="print the signed command instead of sending it"
    )


def register(subparsers: Any) -> None:
    from sync.db import DEFAULT_URL

    admin = add_command(
        subparsers,
        "admin",
        "the community database: allow-lists, passes, gates, and every gateway's events and alerts",
        lambda args: admin.print_help() or 1,
    )
    admin.add_argument("--db", default=DEFAULT_URL, help=f"community database URL (default {DEFAULT_URL})")
    admin.add_argument(
        "--signer-key",
        metavar="FILE",
        help="the community's Ed25519 signing key (PEM), for gateways registered with --ed25519 "
        "(default: $GATEHOUSE_COMMAND_SIGNER_KEY)",
    )
    add_broker_arguments(admin)
    sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND", title="commands")

    gateway = add_command(
        sub, "gateway", "register gateways and their keys", lambda a: gateway.print_help() or 1
    )
    gateway_sub = gateway.add_subparsers(metavar="COMMAND", title="commands")
    gateway_add = add_command(
        gateway_sub, "add", "register a gateway with its signing key (and the site's salt)", cmd_gateway_add
    )
    _target(gateway_add)
    gateway_list = add_command(
        gateway_sub,
        "list",
        "every gateway: its state and since when, signing, allow-list applied, devices not online",
        cmd_gateway_list,
    )
    _zone_option(gateway_list)
    signed_by = gateway_add.add_mutually_exclusive_group(required=True)
    signed_by.add_argument(
        "--key-env", metavar="NAME", help="environment variable holding the gateway's HMAC key"
    )
    signed_by.add_argument(
        "--ed25519",
        action="store_true",
        help="sign its commands with the community's Ed25519 key (--signer-key); the gateway holds the "
        "public key only",
    )
    gateway_add.add_argument(
        "--salt-env", metavar="NAME", help="environment variable holding the site's credential salt"
    )

    signer = add_command(
        sub,
        "signer",
        "the community's Ed25519 command-signing key",
        lambda a: signer.print_help() or 1,
    )
    signer_sub = signer.add_subparsers(metavar="COMMAND", title="commands")
    signer_new = add_command(
        signer_sub, "new", "make a new signing key (PEM, mode 0600) and print its public key", cmd_signer_new
    )
    signer_new.add_argument("file", help="where to write the private key")
    signer_new.add_argument("--force", action="store_true", help="replace an existing key file")
    signer_show = add_command(signer_sub, "show", "print a signing key's public key (hex)", cmd_signer_show)
    signer_show.add_argument("file", help="the private key file (PEM)")

    allow = add_command(sub, "allow", "change a gateway's allow-list", lambda a: allow.print_help() or 1)
    allow_sub = allow.add_subparsers(metavar="COMMAND", title="commands")
    allow_add = add_command(allow_sub, "add", "allow a plate, card or QR token at a gateway", cmd_allow_add)
    _target(allow_add)
    _credential_args(allow_add)
    allow_add.add_argument(
        "--subject", required=True, help="resident or household it belongs to (the gateway needs one)"
    )
    allow_add.add_argument("--gate", action="append", help="only at this gate (repeat; default every gate)")
    _sending(allow_add)
    allow_remove = add_command(allow_sub, "remove", "remove a plate, card or QR token", cmd_allow_remove)
    _target(allow_remove)
    _credential_args(allow_remove)
    _sending(allow_remove)
    allow_list = add_command(
        allow_sub, "list", "a gateway's allow-list as the community database holds it", cmd_allow_list
    )
    _target(allow_list)
    allow_list.add_argument("--subject", help="only this resident's or household's entries")
    allow_list.add_argument("--csv", action="store_true", help="a spreadsheet instead of the table")
    _zone_option(allow_list)
    allow_import = add_command(
        allow_sub,
        "import",
        "add every row of a CSV file (kind,value,subject[,gates][,valid_until])",
        cmd_allow_import,
    )
    _target(allow_import)
    allow_import.add_argument("csv", help="CSV file with a header row")
    _sending(allow_import)

    passes = add_command(sub, "pass", "visitor and delivery passes", lambda a: passes.print_help() or 1)
    pass_sub = passes.add_subparsers(metavar="COMMAND", title="commands")
    pass_issue = add_command(pass_sub, "issue", "issue a pass for a plate or a QR token", cmd_pass_issue)
    _target(pass_issue)
    pass_issue.add_argument("--plate", help="visitor's plate")
    pass_issue.add_argument("--qr", help="QR token handed to the visitor")
    pass_issue.add_argument(
        "--hours", type=positive, default=4.0, help="valid for this many hours (default 4)"
    )
    pass_issue.add_argument(
        "--kind", choices=("visitor", "delivery", "contractor"), default="visitor", help="pass kind"
    )
    # dest of its own: `admin --host` is the broker, which a household must not replace
    pass_issue.add_argument("--host", dest="visiting", help="household visited")
    pass_issue.add_argument("--max-uses", type=count_of(1), help="entries allowed (default unlimited)")
    pass_issue.add_argument("--gate", action="append", help="only at this gate (repeat)")
    _sending(pass_issue)
    pass_list = add_command(
        pass_sub,
        "list",
        "the passes in force at a gateway, with the entries each was used for",
        cmd_pass_list,
    )
    _target(pass_list)
    pass_list.add_argument("--all", action="store_true", help="also passes expired, used up or revoked")
    pass_list.add_argument("--json", action="store_true", help="one JSON object per line")
    _zone_option(pass_list)
    pass_revoke = add_command(
        pass_sub,
        "revoke",
        "revoke a pass issued with pass issue (the gateway stops honouring it)",
        cmd_pass_revoke,
    )
    _target(pass_revoke)
    pass_revoke.add_argument("pass_id", help="the pass id pass issue printed (p-…)")
    pass_revoke.add_argument("--reason", default="", help="why, for the gateway's log")
    _sending(pass_revoke)

    open_gate = add_command(sub, "open-gate", "open a gate now (signed, expires in 30 s)", cmd_open_gate)
    _target(open_gate)
    open_gate.add_argument("gate", help="gate or lane id")
    open_gate.add_argument("--reason", default="operator", help="why, for the log")
    open_gate.add_argument("--by", default="operator", help="who asks")
    open_gate.add_argument(
        "--ttl-s", type=positive, default=30.0, help="expires after this many seconds (default 30)"
    )
    _sending(open_gate)

    alert_ack = add_command(
        sub, "alert-ack", "acknowledge an alert at the gateway (silences its siren)", cmd_alert_ack
    )
    _target(alert_ack)
    alert_ack.add_argument(
        "alert_id",
        help="the alert's id as `admin alerts` shows it, its first or last 4 or more characters, or its key",
    )
    alert_ack.add_argument(
        "--by",
        type=acknowledger,
        default="operator",
        help=f"who acknowledges, shown to the guards; at most {MAX_BY} characters (default: operator)",
    )
    alert_ack.add_argument(
        "--ttl-s", type=positive, default=300.0, help="expires after this many seconds (default 300)"
    )
    _sending(alert_ack)
    _zone_option(alert_ack)

    gaps = add_command(sub, "gaps", "report missing seq numbers of a gateway's events", cmd_gaps)
    _target(gaps)

    events = add_command(
        sub,
        "events",
        "list the events of every gateway (newest last), with the filters of `gatehouse events`",
        cmd_events,
    )
    _gateways(events, zone_use="show times, and read times given without a zone,")
    add_filter_arguments(events, zone="--tz")
    add_output_arguments(events)
    events.set_defaults(follow=False)

    alerts = add_command(
        sub,
        "alerts",
        "list the alerts open at every gateway (newest last); --follow to watch them arrive",
        cmd_alerts,
    )
    _gateways(alerts, zone_use="show times")
    add_listing_arguments(
        alerts,
        all_help=ALL_ALERTS_HELP,
        follow_help="then keep printing each alert as the ingest receives it raised, acknowledged or cleared",
    )


def _gateways(parser: argparse.ArgumentParser, zone_use: str) -> None:
    """--site, --gateway and --tz of the listings over every gateway; `zone_use`: what the
    listing does in the zone."""
    parser.add_argument("--site", help="only this site's gateways")
    parser.add_argument("--gateway", help="only this gateway")
    _zone_option(parser, zone_use)


def _zone_option(parser: argparse.ArgumentParser, zone_use: str = "show times") -> None:
    """--tz: the community database does not know the sites' zones (see _zone)."""
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help=f"{zone_use} in this time zone (e.g. Asia/Shanghai; default: this machine's)",
    )
