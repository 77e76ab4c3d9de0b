"""`gatehouse config check|schema`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge.cli.common import add_command, config_path, counted, load
from edge.cli.init import add_credentials_option, service_credentials


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="check the configuration file or print its JSON Schema",
        description="Check the configuration file or print its JSON Schema.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    group = parser.add_subparsers(dest="config_command", metavar="ACTION", title="actions")
    check = add_command(group, "check", "validate the configuration file and say what is wrong", _check)
    add_credentials_option(check)
    add_command(group, "schema", "print the JSON Schema of the configuration (for editors)", _schema)


def _check(args: argparse.Namespace) -> int:
    with service_credentials(args):
        config = load(args)
    print(
        f"{config_path(args)}: OK — site {config.site.id}, gateway {config.gateway.id}, "
        f"{counted(len(config.gates), 'gate')}, {counted(len(config.devices), 'device')}"
    )
    return 0


def schema_text() -> str:
    from edge.config import GatehouseConfig

    schema = GatehouseConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Gatehouse gateway configuration"
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return 0
