"""`gatehouse service install`: write and enable the systemd units from `systemd/`.

For real (as root): create the `gatehouse` system user (groups dialout and video), give it
the configuration it must read (/etc/gatehouse root:gatehouse 0750, the YAML and the TLS key
owned by gatehouse, mode 0600; the credentials directory stays root's, systemd reads it for
LoadCredential=; a configuration in any other folder is left as it is), write the units to
/etc/systemd/system with ExecStart= pointing at this gatehouse command and the configuration's
absolute path, then `systemctl daemon-reload` and `systemctl enable`.

`--prefix DIR` writes the units under DIR/etc/systemd/system and does nothing else (packaging,
tests); `--dry-run` prints every step and changes nothing."""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.cli.common import add_command, config_path
from edge.cli.init import DEFAULT_STATE_DIR, GENERATED, add_credentials_option, existing_credentials_dir
from edge.config import DEFAULT_CONFIG_PATH
from edge.config_loader import SECRET_REFERENCE
from edge.errors import GatehouseError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO_ROOT / "systemd"
UNIT_TARGET = Path("/etc/systemd/system")
TEMPLATE_EXEC = "/opt/gatehouse/venv/bin/gatehouse"
TEMPLATE_CONFIG = "/etc/gatehouse/gatehouse.yaml"
CONFIG_DIR = DEFAULT_CONFIG_PATH.parent
"""the folder that belongs to Gatehouse alone: the only one whose owner and mode install sets"""
GATEWAY_UNIT = "gatehouse.service"
INGEST_UNIT = "gatehouse-ingest.service"
SERVICE_USER = "gatehouse"
SERVICE_GROUPS = ("dialout", "video")
SYSTEMCTL_TIMEOUT_S = 60.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "service",
        help="install the systemd units (gatehouse.service, gatehouse-ingest.service)",
        description="Install the systemd units.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 1)
    group = parser.add_subparsers(dest="service_command", metavar="ACTION", title="actions")
    install = add_command(
        group,
        "install",
        "write the systemd units, create the gatehouse user and enable the service",
        _install,
        description=__doc__,
    )
    install.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    install.add_argument(
        "--prefix",
        metavar="DIR",
        help="write the units under DIR/etc/systemd/system only: no user, no chown, no systemctl",
    )
    install.add_argument(
        "--ingest",
        action="store_true",
        help="also enable gatehouse-ingest.service (on the community side; its unit is written always)",
    )
    install.add_argument("--now", action="store_true", help="start (or restart) the enabled services too")
    install.add_argument(
        "--units-from",
        metavar="DIR",
        default=str(UNITS_DIR),
        help=f"where the unit templates are (default {UNITS_DIR})",
    )
    add_credentials_option(install, "the secrets the service loads")


def gatehouse_executable() -> str:
    """The `gatehouse` command this process belongs to (the venv's script), else the one on PATH."""
    beside = Path(sys.executable).parent / "gatehouse"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("gatehouse")
    if found:
        return str(Path(found).resolve())
    raise GatehouseError(
        "cannot find the gatehouse command; install the package into a virtual environment "
        "(pip install .) and run its bin/gatehouse"
    )


def credential_names(folder: Path) -> list[str]:
    """The secrets in the credentials directory (none when it is missing or not readable)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def missing_secrets_note(config: Path, credentials_dir: Path) -> list[str]:
    """What the installer must still do when the configuration names secrets (`${NAME}`) that
    the unit would not load: the service would stop at start-up for want of them. Nothing when
    the folder cannot be read (without sudo): its content is unknown then."""
    try:
        lines = config.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    wanted = sorted(
        {
            name
            for line in lines
            if not line.lstrip().startswith("#")
            for name in SECRET_REFERENCE.findall(line)
        }
    )
    try:
        present = {path.name for path in credentials_dir.iterdir()} if credentials_dir.is_dir() else set()
    except PermissionError:
        return []
    missing = [name for name in wanted if name not in present]
    if not missing:
        return []
    names = ", ".join(f"${{{name}}}" for name in missing)
    return [
        f"{config} uses {names}, which {credentials_dir} does not hold: the service cannot start "
        f"until {'they are' if len(missing) > 1 else 'it is'} there (a file of that name, mode 0600)"
    ]


def render(template: str, executable: str, config: Path, credentials_dir: Path) -> str:
    """A unit template with this installation's command, configuration path and credentials."""
    text = template.replace(TEMPLATE_EXEC, executable)
    if str(config) != TEMPLATE_CONFIG:
        text = text.replace(TEMPLATE_CONFIG, str(config))
    lines = text.splitlines()
    loads = [i for i, line in enumerate(lines) if line.startswith("LoadCredential=")]
    if loads:
        names = credential_names(credentials_dir)
        wanted = [*GENERATED, *(name for name in names if name not in GENERATED)]
        credentials = [f"LoadCredential={name}:{credentials_dir / name}" for name in wanted]
        lines[loads[0] : loads[-1] + 1] = credentials
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    """What an install does, in order; `--dry-run` prints it instead."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    ownership: list[tuple[Path, str, str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """what the installer must see to themselves"""

    def user_commands(self) -> list[list[str]]:
        """useradd/usermod: they run before the files are given to the user."""
        return [c for c in self.commands if c[0] in ("useradd", "usermod")]

    def describe(self) -> list[str]:
        """The steps in the order `apply` takes them."""
        users = self.user_commands()
        steps = [f"write {path}" for path, _ in self.files]
        steps += [" ".join(command) for command in users]
        steps += [
            f"chown {user}:{group} {path}; chmod {mode:o} {path}"
            for path, user, group, mode in self.ownership
        ]
        steps += [" ".join(command) for command in self.commands if command not in users]
        return steps


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _ownership(config: Path) -> list[tuple[Path, str, str, int]]:
    """The service user must read its configuration and TLS key; nobody else may. Only for a
    configuration in the dedicated folder (CONFIG_DIR), which belongs to Gatehouse alone."""
    folder = config.parent
    owned: list[tuple[Path, str, str, int]] = [(folder, "root", SERVICE_USER, 0o750)]
    owned.append((config, SERVICE_USER, SERVICE_USER, 0o600))
    tls = folder / "tls"
    if tls.is_dir():
        owned.append((tls, "root", SERVICE_USER, 0o750))
        for item in sorted(tls.iterdir()):
            owned.append((item, SERVICE_USER, SERVICE_USER, 0o600 if item.suffix == ".key" else 0o644))
    return owned


def configured_state_dir(config: Path) -> Path:
    """gateway.state_dir as the file says (a relative one from the file's folder), else the default."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    gateway = data.get("gateway") if isinstance(data, dict) else None
    value = gateway.get("state_dir") if isinstance(gateway, dict) else None
    return Path(os.path.normpath(config.parent / str(value))) if value else Path(DEFAULT_STATE_DIR)


def plan(args: argparse.Namespace) -> Plan:
    templates = Path(args.units_from)
    missing = [name for name in (GATEWAY_UNIT, INGEST_UNIT) if not (templates / name).is_file()]
    if missing:
        raise UsageError(
            f"{templates}: no {', '.join(missing)}; pass --units-from with the systemd/ folder of "
            "the Gatehouse sources"
        )
    config = Path(os.path.abspath(config_path(args)))
    executable = gatehouse_executable()
    credentials = Path(os.path.abspath(existing_credentials_dir(args)))
    target = Path(args.prefix) / UNIT_TARGET.relative_to("/") if args.prefix else UNIT_TARGET
    result = Plan()
    for name in (GATEWAY_UNIT, INGEST_UNIT):
        text = render((templates / name).read_text(), executable, config, credentials)
        result.files.append((target / name, text))
    if not config.is_file():
        result.notes.append(
            f"there is no configuration at {config} yet: the service cannot start until "
            "`gatehouse init` writes it (or --config names the one to use)"
        )
    result.notes += missing_secrets_note(config, credentials)
    if args.prefix:
        return result
    state = configured_state_dir(config)
    if not state.is_relative_to(DEFAULT_STATE_DIR):
        raise UsageError(
            f"{config}: gateway.state_dir is {state}, but the service may write only {DEFAULT_STATE_DIR} "
            f"(StateDirectory=, ProtectSystem=strict) and could not keep its store; set state_dir: "
            f"{DEFAULT_STATE_DIR} (to keep the store on another disk, mount it there)"
        )
    if not _user_exists(SERVICE_USER):
        result.commands.append(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/gatehouse",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--groups",
                ",".join(SERVICE_GROUPS),
                SERVICE_USER,
            ]
        )
    else:
        result.commands.append(["usermod", "--append", "--groups", ",".join(SERVICE_GROUPS), SERVICE_USER])
    if config.parent != CONFIG_DIR:
        result.notes.append(
            f"{config.parent} is not {CONFIG_DIR}: its owner and mode are left as they are; make "
            f"sure the {SERVICE_USER} user can read {config} (or move it to {CONFIG_DIR})"
        )
    elif config.is_file():
        result.ownership = _ownership(config)
    units = [GATEWAY_UNIT, *([INGEST_UNIT] if args.ingest else [])]
    result.commands.append(["systemctl", "daemon-reload"])
    result.commands.append(["systemctl", "enable", *units])
    if args.now:
        result.commands.append(["systemctl", "restart", *units])
    return result


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S)
    except FileNotFoundError as err:
        raise GatehouseError(f"{command[0]} is not installed; is this a systemd machine?") from err
    except subprocess.TimeoutExpired as err:
        raise GatehouseError(f"{' '.join(command)} did not finish within {SYSTEMCTL_TIMEOUT_S:g} s") from err
    if done.returncode != 0:
        raise GatehouseError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")


def apply(steps: Plan) -> None:
    for path, text in steps.files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
        print(f"wrote {path}")
    user_commands = steps.user_commands()
    for command in user_commands:
        _run(command)
        print(" ".join(command))
    for path, user, group, mode in steps.ownership:
        os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        path.chmod(mode)
        print(f"{path}: {user}:{group} {mode:o}")
    for command in steps.commands:
        if command in user_commands:
            continue
        _run(command)
        print(" ".join(command))


def _install(args: argparse.Namespace) -> int:
    steps = plan(args)
    for note in steps.notes:
        print(f"note: {note}")
    if args.dry_run:
        print("would:")
        for step in steps.describe():
            print(f"  {step}")
        return 0
    if not args.prefix and os.geteuid() != 0:
        raise UsageError("service install changes /etc and users: run it with sudo (or use --prefix DIR)")
    try:
        apply(steps)
    except PermissionError as err:
        raise UsageError(f"{err.filename}: permission denied; run with sudo or use --prefix DIR") from err
    if not args.prefix:
        started = "started" if args.now else "start it with: sudo systemctl start gatehouse"
        print(f"enabled {GATEWAY_UNIT}; {started}; then check with: gatehouse doctor")
    return 0
