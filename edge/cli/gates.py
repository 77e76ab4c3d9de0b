"""`gatehouse gates list|add|remove`: the vehicle lanes and pedestrian doors of the configuration.
A gate's barrier, readers and cameras are given with `gatehouse devices add … --gate ID`."""

from __future__ import annotations

import argparse
from typing import Any

from edge.cli.common import add_change_options, add_command, changing_config, command_line, load, print_table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gates",
        help="list the configured gates, add or remove one",
        description=(
            "The vehicle lanes and pedestrian doors. A gate's barrier, readers and cameras are "
            "given with `gatehouse devices add KIND ID … --gate GATE`."
        ),
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="gates_command", metavar="ACTION", title="actions")
    add_command(sub, "list", "list every gate with its barrier, readers and cameras", _list)
    add = add_command(sub, "add", "add a gate to the configuration file", _add)
    add.add_argument("id", help="gate id: lower-case letters, digits, - and _, e.g. north-in")
    add.add_argument("--kind", required=True, choices=("vehicle", "pedestrian"), help="lane or door")
    add.add_argument(
        "--direction", choices=("in", "out", "both"), help="which way it is passed (default both)"
    )
    add.add_argument("--name", help="what the guards call it")
    add.add_argument(
        "--no-open-on-plate",
        action="store_true",
        help="a vehicle lane whose barrier an allowed plate does not open (cards only)",
    )
    add_change_options(add)
    remove = add_command(
        sub, "remove", "take a gate out of the configuration file (its devices stay configured)", _remove
    )
    remove.add_argument("id", help="gate id, as in the configuration")
    add_change_options(remove)


def _list(args: argparse.Namespace) -> int:
    config = load(args)
    if not config.gates:
        add = command_line(args, "gates add ID --kind vehicle|pedestrian")
        print(f"no gates configured; add one with: {add}")
        return 0
    rows = [("ID", "KIND", "DIRECTION", "BARRIER", "READERS", "CAMERAS", "NAME")]
    for gate in config.gates:
        rows.append(
            (
                gate.id,
                gate.kind,
                gate.direction,
                gate.barrier or "-",
                ",".join(gate.readers) or "-",
                ",".join(gate.cameras) or "-",
                gate.name,
            )
        )
    print_table(rows)
    return 0


def _add(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = {"id": args.id}
    if args.name:
        settings["name"] = args.name
    settings["kind"] = args.kind
    if args.direction:
        settings["direction"] = args.direction
    if args.no_open_on_plate:
        settings["open_on_plate"] = False
    with changing_config(args) as document:
        document.add_gate(settings)
    devices = command_line(args, f"devices add KIND ID SETTING=VALUE… --gate {args.id}")
    print(f"{args.id}: give it devices with: {devices}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with changing_config(args) as document:
        devices = document.remove_gate(args.id)
    if devices:
        print(f"{args.id}: its devices stay configured: {', '.join(devices)}")
    return 0
