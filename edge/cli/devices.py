"""`gatehouse devices list` and `gatehouse devices test ID`."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import tempfile
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edge.cli.common import add_command, load
from edge.errors import ConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list the configured devices, or test one",
        description="List the configured readers, barriers and cameras, or exercise one of them.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="devices_command", metavar="ACTION", title="actions")
    add_command(sub, "list", "list every configured device with its kind, place and gate", _list)
    test = add_command(
        sub,
        "test",
        "exercise one device: a reader waits for a card, a barrier opens, a camera saves a frame",
        _test,
        description=(
            "Exercise one device and say what happened: a reader waits for a card and shows it, a "
            "barrier is pulsed open and must reach its open limit, a camera saves a frame. Stop the "
            "gateway first (`systemctl stop gatehouse`): a serial port can only be open once."
        ),
    )
    test.add_argument("id", help="device id, as in the configuration")
    test.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    test.add_argument("--out", help="where to save pictures (default: a new temporary directory)")


def where(device: Any) -> str:
    """Where a device is reached: its serial port, URL or source, whatever its kind has."""
    serial = getattr(device, "serial", None)
    if serial is not None and hasattr(serial, "port"):
        extra = []
        for field in ("address", "unit_id"):
            if hasattr(device, field):
                extra.append(f"{field.replace('_id', '')} {getattr(device, field)}")
        return " ".join([serial.port, *extra])
    for field in ("url", "source", "port", "path", "index"):
        value = getattr(device, field, None)
        if value is not None:
            return without_password(str(value))
    return "-"


def without_password(text: str) -> str:
    """A URL as it may be shown on a screen: `rtsp://user:secret@host/` → `rtsp://user:***@host/`."""
    parts = urlsplit(text)
    if not parts.password:
        return text
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _list(args: argparse.Namespace) -> int:
    config = load(args)
    if not config.devices:
        print("no devices configured")
        return 0
    rows = [("ID", "KIND", "ENABLED", "GATE", "WHERE", "NAME")]
    for device in config.devices:
        gate = config.gate_of(device.id)
        rows.append(
            (
                device.id,
                device.kind,
                "yes" if device.enabled else "no",
                gate.id if gate else "-",
                where(device),
                device.name or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def _test(args: argparse.Namespace) -> int:
    from drivers.registry import driver_for
    from edge.gateway import driver_context

    config = load(args)
    ids = [device.id for device in config.devices]
    if args.id not in ids:
        near = difflib.get_close_matches(args.id, ids, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (configured: {', '.join(ids) or 'none'})"
        raise ConfigError(f"no device {args.id!r} in the configuration{hint}")
    device = config.device(args.id)
    driver = driver_for(device)(device, driver_context(config))
    out_dir = args.out or tempfile.mkdtemp(prefix=f"gatehouse-test-{device.id}-")
    what = (driver.self_test.__doc__ or "").strip().splitlines()[:1]
    print(f"testing {device.id} ({device.kind}, {where(device)}); up to {args.timeout:g} s", flush=True)
    if what:
        print(what[0], flush=True)

    async def run() -> str:
        async with asyncio.timeout(args.timeout + 10):
            return await driver.self_test(args.timeout, out_dir)

    print(asyncio.run(run()))
    print(f"{device.id}: OK")
    return 0
