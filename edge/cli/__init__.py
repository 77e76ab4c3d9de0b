"""The `gatehouse` command. Each module in this package adds its sub-commands through a
`register(subparsers)` function; this file finds them, parses, and turns errors into messages."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from edge.errors import ConfigError, GatehouseError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 141
"""what a shell reports for a command ended by SIGPIPE, as `cat` or `grep` are in `… | head`"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse",
        description="Gatehouse gateway: readers, barriers and cameras at the compound gate.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        help="configuration file (default: $GATEHOUSE_CONFIG or /etc/gatehouse/gatehouse.yaml)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    package = importlib.import_module(__name__)
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenCV's and FFmpeg's own lines (a camera that does not answer, an index out of range) would
    # come between ours, which say the same to the installer; OPENCV_LOG_LEVEL=INFO shows them.
    # They are logged as errors, so only FATAL keeps them out.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "FATAL")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_FAILURE
    try:
        return int(args.func(args) or EXIT_OK)
    except ConfigError as err:
        if args.debug:
            raise
        print(f"configuration error:\n{err}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except GatehouseError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read the output has gone (`gatehouse events | head -1`): stop quietly, and keep
        # Python from failing again when it flushes stdout on the way out.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        if args.debug:
            raise
        print(
            f"internal error: {type(err).__name__}: {err}\n(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
