"""`gatehouse doctor`: check the installation, one line per check, each red line with its fix;
exit 1 when anything is red."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import add_command, config_path, counted, positive
from edge.cli.init import add_credentials_option, service_credentials
from edge.doctor.checks import CHECKS, DEFAULT_MIN_FREE_MB, SERVICE_USER, Context, default_user, run_checks
from edge.errors import ConfigError, SecretUnavailable


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "doctor",
        "check config, serial ports, devices, broker, clock, disk, store, models and service",
        _doctor,
        description=(
            "Check the installation: the configuration (with near-miss key suggestions), serial "
            "ports and the service user's permission to open them, each device answering, the "
            "broker over TLS, the clock, disk space and the store, the model files' checksums, "
            "and the systemd service. One line per check; each red line says how to fix it. "
            "Exit status 1 when anything is red."
        ),
    )
    parser.add_argument(
        "--user",
        help=f"the user the service runs as (default {SERVICE_USER} when it exists, else you)",
    )
    add_credentials_option(parser)
    parser.add_argument(
        "--timeout", type=positive, default=5.0, help="seconds for each device and the broker (default 5)"
    )
    parser.add_argument(
        "--min-free-mb",
        type=float,
        default=DEFAULT_MIN_FREE_MB,
        help=f"red below this much free disk space (default {DEFAULT_MIN_FREE_MB})",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted(CHECKS),
        help="leave a check out (repeatable)",
    )


def config_or_problem(path: Path, debug: bool) -> tuple[Any, str, bool]:
    """The configuration, or why it cannot be had and whether that is a secret this user cannot
    see: whatever goes wrong, the doctor carries on with its other checks."""
    from edge.config_loader import load_config

    try:
        return load_config(path), "", False
    except ConfigError as err:
        return None, str(err), isinstance(err, SecretUnavailable)
    except Exception as err:
        if debug:
            raise
        return None, f"{path}: cannot be loaded ({type(err).__name__}: {err})", False


def _doctor(args: argparse.Namespace) -> int:
    from edge.doctor.checks import systemctl_state

    path = config_path(args)
    colour = sys.stdout.isatty()
    red = 0
    with service_credentials(args):
        config, error, secret_unavailable = config_or_problem(path, args.debug)
        context = Context(
            config_file=path,
            config=config,
            config_error=error,
            secret_unavailable=secret_unavailable,
            user=args.user or default_user(),
            timeout_s=args.timeout,
            min_free_mb=args.min_free_mb,
            service_state=systemctl_state() if "service" not in args.skip else (None, "skipped"),
            skipped=set(args.skip),
            debug=args.debug,
        )
        for result in run_checks(context):
            print(result.line(colour), flush=True)
            red += result.state == "fail"
    print(f"{counted(red, 'problem')} found" if red else "all checks passed")
    return 1 if red else 0
