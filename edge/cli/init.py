"""`gatehouse init`: write the configuration file and generate the gateway's secrets.

Interactive on a terminal, or all by flags (`--yes`) for scripted installs. The YAML is
written with mode 0600; the site's hashing salt and the command-signing key are generated into
files of a credentials directory (mode 0700, files 0600) and the YAML refers to them as
`${NAME}`: the loader reads them from the environment or from systemd's
$CREDENTIALS_DIRECTORY (the unit's LoadCredential= lines load exactly these files)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import re
import secrets
import sys
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from edge.cli.common import add_command, config_path
from edge.config import DEFAULT_CONFIG_PATH, DEFAULT_CREDENTIALS_DIR
from edge.config_base import ID_PATTERN, ID_RULE
from edge.errors import ConfigError, UsageError
from edge.files import write_private

DEFAULT_STATE_DIR = "/var/lib/gatehouse"
SALT_NAME = "GATEHOUSE_SITE_SALT"
SIGNING_KEY_NAME = "GATEHOUSE_SIGNING_KEY"
GENERATED = (SALT_NAME, SIGNING_KEY_NAME)
_ID = re.compile(ID_PATTERN)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "init",
        "write the configuration file and generate the gateway id, salt and signing key",
        _init,
        description=(
            "Write the configuration file (--config, default /etc/gatehouse/gatehouse.yaml, mode "
            "0600) from answers or flags, generate the gateway id, the site's hashing salt and the "
            "command-signing key. The secrets go into files in the credentials directory and the "
            "YAML refers to them as ${NAME}. Existing secrets are kept (a new salt would make "
            "every stored card hash useless)."
        ),
    )
    parser.add_argument("--site-id", help="compound id as the community database knows it, e.g. lotus-garden")
    parser.add_argument("--site-name", help="compound name for people")
    parser.add_argument("--timezone", help="IANA time zone, e.g. Asia/Shanghai (default: this machine's)")
    parser.add_argument("--home-province", help="province character of local plates, e.g. 津")
    parser.add_argument("--gateway-id", help="this gateway's id (default: generated, gw-xxxxxxxx)")
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"store and snapshots (default {DEFAULT_STATE_DIR}, the only folder the installed service may "
        "write)",
    )
    add_credentials_option(parser, "where the generated secrets are written")
    parser.add_argument("--force", action="store_true", help="overwrite an existing configuration file")
    parser.add_argument(
        "--yes", "-y", action="store_true", help="ask nothing: take flags and defaults (for scripts)"
    )


def machine_timezone() -> str:
    """The system's time zone name, from /etc/localtime's link or $TZ; UTC when unknown."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    return "UTC"


def _ask(prompt: str, default: str | None, check: Callable[[str], str | None]) -> str:
    while True:
        shown = f" [{default}]" if default else ""
        try:
            answer = input(f"{prompt}{shown}: ").strip() or (default or "")
        except EOFError:
            print(file=sys.stderr)
            raise UsageError("no answer (end of input): nothing was written") from None
        problem = check(answer)
        if problem is None:
            return answer
        print(f"  {problem}", file=sys.stderr)


def check_id(value: str, what: str = "id") -> str | None:
    if _ID.match(value):
        return None
    return f"{what} {value!r}: an id is {ID_RULE}"


def check_timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai"
    return None


def check_province(value: str) -> str | None:
    return None if len(value) <= 1 else f"home province must be one character such as 津 (got {value!r})"


def _answers(args: argparse.Namespace) -> dict[str, str]:
    interactive = not args.yes and sys.stdin.isatty()
    values = {
        "site_id": args.site_id,
        "site_name": args.site_name,
        "timezone": args.timezone,
        "home_province": args.home_province,
        "gateway_id": args.gateway_id,
    }
    defaults = {
        "site_name": "",
        "timezone": machine_timezone(),
        "home_province": "",
        "gateway_id": f"gw-{secrets.token_hex(4)}",
    }
    checks: dict[str, tuple[str, Callable[[str], str | None]]] = {
        "site_id": ("site id", lambda v: check_id(v, "site id")),
        "site_name": ("site name", lambda v: None),
        "timezone": ("time zone", check_timezone),
        "home_province": ("home province of local plates (one character, may be empty)", check_province),
        "gateway_id": ("gateway id", lambda v: check_id(v, "gateway id")),
    }
    for key, (prompt, check) in checks.items():
        if values[key] is None and interactive:
            values[key] = _ask(prompt, defaults.get(key), check)
        elif values[key] is None:
            if key not in defaults:
                raise UsageError(f"--{key.replace('_', '-')} is required with --yes or without a terminal")
            values[key] = defaults[key]
        problem = check(values[key])
        if problem:
            raise UsageError(f"--{key.replace('_', '-')}: {problem}")
    return values


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def missing_secrets(folder: Path) -> dict[str, str]:
    """New values for the salt and signing key where `folder` has none yet (existing ones are kept:
    a new salt would make every stored card hash useless)."""
    missing: dict[str, str] = {}
    for name in GENERATED:
        target = folder / name
        if not (target.is_file() and target.read_text().strip()):
            missing[name] = secrets.token_hex(32)
    return missing


def write_secrets(folder: Path, values: dict[str, str]) -> None:
    _private_dir(folder)
    for name, value in values.items():
        write_private(folder / name, value + "\n")


def _quoted(value: str) -> str:
    """`value` as a double-quoted YAML scalar: it reads back as this string whatever it looks like
    (1024, 0755, yes, 2024-01-01 would otherwise read as a number, a boolean or a date)."""
    return yaml.safe_dump(value, default_style='"', allow_unicode=True, width=math.inf).rstrip("\n")


def command_for(credentials_dir: Path, target: Path, action: str) -> str:
    """`gatehouse ACTION` run by root on the written file with its secrets, as short as the paths
    allow: the commands init names must reach the file it wrote, not the default one."""
    words = ["sudo"]
    if credentials_dir != DEFAULT_CREDENTIALS_DIR:
        words.append(f"CREDENTIALS_DIRECTORY={credentials_dir}")
    words.append("gatehouse")
    if target != DEFAULT_CONFIG_PATH:
        words += ["--config", str(target)]
    return " ".join([*words, action])


def config_text(values: dict[str, str], state_dir: str, credentials_dir: Path, target: Path) -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        f"# Written by `gatehouse init` on {today}. Secrets are not in this file: each ${{NAME}} is",
        "# read from the environment or from systemd's credentials directory (the unit loads the",
        f"# files in {credentials_dir} with LoadCredential=). Check it with:",
        f"#   {command_for(credentials_dir, target, 'config check')}",
        "site:",
        f"  id: {_quoted(values['site_id'])}",
        f"  name: {_quoted(values['site_name'])}",
        f"  timezone: {_quoted(values['timezone'])}",
    ]
    if values["home_province"]:
        lines.append(f"  home_province: {_quoted(values['home_province'])}")
    lines += [
        f"  salt: ${{{SALT_NAME}}}",
        "",
        "gateway:",
        f"  id: {_quoted(values['gateway_id'])}",
        f"  state_dir: {_quoted(state_dir)}",
        f"  signing_key: ${{{SIGNING_KEY_NAME}}}",
        "",
        "# `gatehouse provision` adds the mqtt: section. Add gates and devices below by hand (see",
        "# config/example-compound.yaml) or with `gatehouse gates add` and `gatehouse devices add`.",
        "gates: []",
        "devices: []",
    ]
    return "\n".join(lines) + "\n"


def _validate(text: str, source: Path, credentials_dir: Path, new_secrets: dict[str, str]) -> None:
    """Check the text before anything is written: existing secrets from `credentials_dir`, the
    ones about to be generated from the environment of this block."""
    from edge.config_loader import parse_config

    saved = {name: os.environ.get(name) for name in new_secrets}
    os.environ.update(new_secrets)
    try:
        with credentials_directory(credentials_dir):
            parse_config(text, str(source))
    except ConfigError as err:
        raise ConfigError(f"{source} was not written, nothing was generated:\n{err}") from err
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def add_credentials_option(
    parser: argparse.ArgumentParser, purpose: str = "where the secrets are, as the service gets them"
) -> None:
    """--credentials-dir, for every command that reads or writes the secrets."""
    parser.add_argument(
        "--credentials-dir",
        help=f"{purpose} (default: $CREDENTIALS_DIRECTORY when set, else {DEFAULT_CREDENTIALS_DIR})",
    )


def credentials_dir_of(args: argparse.Namespace) -> Path:
    """The secrets' folder: --credentials-dir, else $CREDENTIALS_DIRECTORY, else the default one
    (one rule for every command, so that what install.md teaches for one works for all)."""
    chosen = args.credentials_dir or os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(chosen) if chosen else DEFAULT_CREDENTIALS_DIR


def existing_credentials_dir(args: argparse.Namespace) -> Path:
    """`credentials_dir_of`, for a command that reads the secrets: a --credentials-dir that does
    not exist is an error, not a silent fall-back to other secrets."""
    if args.credentials_dir and not Path(args.credentials_dir).is_dir():
        raise UsageError(f"--credentials-dir {args.credentials_dir}: no such folder")
    return credentials_dir_of(args)


def service_credentials(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """The secrets as the service will see them: from the folder `existing_credentials_dir`
    names when it exists, else as they are (the environment)."""
    folder = existing_credentials_dir(args)
    return credentials_directory(folder) if folder.is_dir() else contextlib.nullcontext()


@contextlib.contextmanager
def credentials_directory(folder: Path) -> Iterator[Path]:
    """Point $CREDENTIALS_DIRECTORY at `folder` for the duration of the block, so that a command
    run outside systemd finds the secrets where the service will find them."""
    previous = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = previous


def _init(args: argparse.Namespace) -> int:
    target = config_path(args)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it (secrets are kept either way)")
    values = _answers(args)
    credentials_dir = credentials_dir_of(args)
    try:
        new_secrets = missing_secrets(credentials_dir)
        text = config_text(values, os.path.abspath(args.state_dir), credentials_dir, target)
        _validate(text, target, credentials_dir, new_secrets)
        write_secrets(credentials_dir, new_secrets)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_private(target, text)
    except PermissionError as err:
        raise UsageError(f"{err.filename}: permission denied; run gatehouse init with sudo") from err
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next((p for p in (Path(err.filename), *Path(err.filename).parents) if p.is_file()), None)
        what = f"{blocker} is a file, not a folder" if blocker else f"{err.filename}: {err.strerror}"
        raise UsageError(f"{what}; give --config and --credentials-dir paths in folders") from err
    print(f"wrote {target} (mode 0600): site {values['site_id']}, gateway {values['gateway_id']}")
    for name in GENERATED:
        done = "generated" if name in new_secrets else "kept existing"
        print(f"{done} secret {credentials_dir / name} (mode 0600)")
    # gates and devices first: provision registers them with the community database
    steps = (
        ("gates add ID --kind vehicle|pedestrian", ""),
        ("devices add KIND ID SETTING=VALUE… --gate ID", "  # `gatehouse probe PORT` finds them"),
        ("provision --broker mqtts://HOST:8883 --ca ca.pem --cert gw.pem --key gw.key", ""),
    )
    for number, (step, hint) in enumerate(steps):
        print(f"{'next:' if number == 0 else '':5s} {command_for(credentials_dir, target, step)}{hint}")
    return 0
