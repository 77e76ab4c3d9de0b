"""`gatehouse devices list|add|remove|test`: what is configured, changing it, exercising one device."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import re
import sys
import tempfile
import textwrap
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel

from drivers.registry import device_kinds
from edge.cli.common import (
    add_change_options,
    add_command,
    changing_config,
    load,
    positive,
    print_table,
    site_zone,
)
from edge.cli.init import credentials_dir_of
from edge.config_base import is_secret
from edge.config_loader import SECRET_REFERENCE
from edge.errors import ConfigError, GatehouseError, UsageError
from edge.instance import running_gateway


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list, add, remove or test the configured devices; the kinds and their settings",
        description="List the configured readers, barriers and cameras; add or remove one in the "
        "configuration file; list the device kinds and their settings; or exercise one device.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    sub = parser.add_subparsers(dest="devices_command", metavar="ACTION", title="actions")
    add_command(sub, "list", "list every configured device with its kind, place and gate", _list)
    add = add_command(
        sub,
        "add",
        "add a device to the configuration file, and to a gate with --gate",
        _add,
        description=textwrap.fill(
            "Add a device to the configuration file: KIND and ID, then its settings as SETTING=VALUE "
            "(nested ones dotted: serial.port=/dev/ttyUSB0; values are read as YAML, so 1 is a "
            "number and [a, b] a list, except that a text setting keeps what is typed: source=0; "
            "a secret is written as '${NAME}'). `gatehouse devices kinds "
            "KIND` lists a kind's settings. A device joining a serial port already in use takes "
            "that line's serial settings. The whole configuration is checked before the file is "
            "written; its comments and layout are kept.",
            90,
        )
        + "\n\nexamples:\n"
        "  gatehouse devices add osdp east-reader serial.port=/dev/ttyUSB0 address=1 --gate east-door\n"
        "  gatehouse devices add camera north-in-cam \\\n"
        "      'source=rtsp://user:${CAM_PASSWORD}@192.0.2.21/s2' plates.direction=in --gate north-in",
    )
    add.formatter_class = argparse.RawDescriptionHelpFormatter
    add.add_argument("kind", help="device kind: " + ", ".join(sorted(device_kinds())))
    add.add_argument("id", help="device id: lower-case letters, digits, - and _")
    add.add_argument("settings", nargs="*", metavar="SETTING=VALUE", help="the device's settings")
    add.add_argument("--name", help="what people call it")
    add.add_argument("--gate", help="gate id: the device becomes its barrier, a reader or a camera, by kind")
    add_change_options(add)
    kinds = add_command(
        sub,
        "kinds",
        "list the device kinds, or one kind's settings with what each means",
        _kinds,
    )
    kinds.add_argument("kind", nargs="?", help="a device kind, e.g. osdp")
    remove = add_command(
        sub,
        "remove",
        "take a device out of the configuration file and out of the gates naming it",
        _remove,
    )
    remove.add_argument("id", help="device id, as in the configuration")
    add_change_options(remove)
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
    test.add_argument("--timeout", type=positive, default=30.0, help="seconds to wait (default 30)")
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
    print_table(rows)
    return 0


def _kinds(args: argparse.Namespace) -> int:
    models = device_kinds()
    if args.kind is None:
        rows = [("KIND", "WHAT")]
        rows += [
            (kind, model.model_fields["kind"].description or "") for kind, model in sorted(models.items())
        ]
        print_table(rows)
        return 0
    if args.kind not in models:
        near = difflib.get_close_matches(args.kind, models, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise UsageError(f"unknown device kind {args.kind!r}; {hint}known: {', '.join(sorted(models))}")
    rows = [("SETTING", "DEFAULT", "WHAT")]
    rows += [
        (name, default, about) for name, default, about in settings_of(models[args.kind]) if name != "kind"
    ]
    print_table(rows)
    return 0


def settings_of(model: type[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """Each setting of a configuration model as (dotted name, default or "required", description),
    nested models (serial, plates, …) spelled out, required ones first."""
    found: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        nested = _section_model(field.annotation)
        if nested is not None:
            found += settings_of(nested, f"{prefix}{name}.")
            continue
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(field.default)
        found.append((prefix + name, default, field.description or ""))
    return sorted(found, key=lambda row: row[1] != "required")


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested section (`serial`, or an optional `plates`), else None (a list of
    sections, such as `zones`, is one setting written as a YAML list)."""
    if typing.get_origin(annotation) in (list, tuple):
        return None
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def settings_from(pairs: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """`serial.port=/dev/ttyUSB0 address=1` as {"serial": {"port": "/dev/ttyUSB0"}, "address": 1}.
    Values are YAML scalars or flow collections; text that is not YAML stays text, and so does
    every value of a setting of `model` that is text (`source=0`, a camera's USB index, is "0")."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        parts = key.split(".")
        if not equals or not all(parts):
            raise UsageError(f"{pair!r}: settings are written SETTING=VALUE, e.g. serial.port=/dev/ttyUSB0")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, dict | list) and not text.lstrip().startswith(("{", "[")):
            value = text  # `name=Gate: left` is a name, not a mapping
        if model is not None and _takes_text(model, parts):
            value = text
        node = settings
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{pair!r}: {part} was already given a value of its own")
            node = child
        if parts[-1] in node:
            raise UsageError(f"{pair!r}: {key} is given twice")
        node[parts[-1]] = value
    return settings


def _takes_text(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether the setting at the dotted `parts` of `model` holds text only (str, or str or null)."""
    *sections, name = parts
    for section in sections:
        field = model.model_fields.get(section)
        nested = _section_model(field.annotation) if field is not None else None
        if nested is None:
            return False
        model = nested
    field = model.model_fields.get(name)
    if field is None:
        return False
    kinds = typing.get_args(field.annotation) if typing.get_origin(field.annotation) else (field.annotation,)
    return {kind for kind in kinds if kind is not type(None)} == {str}


def _add(args: argparse.Namespace) -> int:
    settings = settings_from(args.settings, device_kinds().get(args.kind))
    for key in ("kind", "id", "name"):
        if key in settings:
            raise UsageError(f"give the {key} as {'--name' if key == 'name' else 'an argument'}, not {key}=")
    settings = {"kind": args.kind, "id": args.id, **({"name": args.name} if args.name else {}), **settings}
    with changing_config(args) as document:
        line = document.serial_line_of(settings)
        device = document.add_device(settings, args.gate)
    if line:
        print(f"{device.id}: serial settings taken from {line}, which shares the port")
    if args.gate:
        print(f"{device.id}: {type(device).gate_slot} of gate {args.gate}")
    for setting, name in secrets_in_clear(settings, type(device), args.id):
        print(
            f"warning: {setting} holds a secret, now written out in the configuration file; keep it in "
            f"the credentials directory instead: sudo sh -c 'umask 077; cat > "
            f"{credentials_dir_of(args) / name}' (type it, then Ctrl-D), and write ${{{name}}} in its "
            "place in the file",
            file=sys.stderr,
        )
    return 0


def secrets_in_clear(
    settings: dict[str, Any], model: type[BaseModel], device_id: str
) -> list[tuple[str, str]]:
    """The settings given that write a secret out instead of naming it as ${NAME} (a setting
    the configuration marks secret, an OSDP reader's key; a password in a camera's URL), each
    with a name for its file in the credentials directory."""
    found = []
    prefix = re.sub(r"[^A-Z0-9]+", "_", device_id.upper()).strip("_")
    for key, value in settings.items():
        if not isinstance(value, str):
            continue
        field = model.model_fields.get(key)
        if field is not None and is_secret(field):
            if not SECRET_REFERENCE.fullmatch(value):
                found.append((key, f"{prefix}_{key.upper()}"))
            continue
        password = urlsplit(value).password if "://" in value else None
        if password and not SECRET_REFERENCE.fullmatch(password):
            found.append((f"the password in {key}", f"{prefix}_PASSWORD"))
    return found


def _remove(args: argparse.Namespace) -> int:
    with changing_config(args) as document:
        gates = document.remove_device(args.id)
    if gates:
        print(f"{args.id}: no longer named by gate{'s' if len(gates) > 1 else ''} {', '.join(gates)}")
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
    running = running_gateway(config.state_path)
    if running is not None and getattr(device, "serial", None) is not None:
        raise GatehouseError(
            f"the gateway is running ({running.describe(site_zone(config))}) and has the serial port of "
            f"{device.id} open; stop it first: sudo systemctl stop gatehouse"
        )
    driver = driver_for(device)(device, driver_context(config))
    out_dir = args.out or tempfile.mkdtemp(prefix=f"gatehouse-test-{device.id}-")
    what = (driver.self_test.__doc__ or "").strip().splitlines()[:1]
    print(f"testing {device.id} ({device.kind}, {where(device)}); up to {args.timeout:g} s", flush=True)
    if what:
        print(what[0], flush=True)

    async def run() -> str:
        async with asyncio.timeout(args.timeout + 10):
            return await driver.self_test(args.timeout, out_dir)

    try:
        print(asyncio.run(run()))
    finally:
        if not args.out and not any(Path(out_dir).iterdir()):
            Path(out_dir).rmdir()  # a reader's or a barrier's test saves nothing: leave no empty folder
    print(f"{device.id}: OK")
    return 0
