"""The checks of `gatehouse doctor`. Each looks only at what the configuration declares and
returns Results; the runner in `run_checks` keeps an unexpected exception from becoming a
traceback."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import grp
import hashlib
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.cli.common import counted
from edge.doctor import Result
from edge.instance import running_gateway
from edge.store.migrations import MIGRATIONS

SERVICE_USER = "gatehouse"
SERVICE_UNIT = "gatehouse.service"
INSTALLED_UNIT = Path("/etc/systemd/system") / SERVICE_UNIT
COMMAND_TIMEOUT_S = 10.0
DEFAULT_MIN_FREE_MB = 256
TIME_ERROR = 5
STA_UNSYNC = 0x0040


@dataclass
class Context:
    """What the checks share: the configuration (None when invalid) and the doctor's options."""

    config_file: Path
    config: Any = None
    config_error: str = ""
    secret_unavailable: bool = False
    user: str = SERVICE_USER
    timeout_s: float = 5.0
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    service_state: tuple[str | None, str] = (None, "not asked")
    skipped: set[str] = field(default_factory=set)
    debug: bool = False

    @property
    def service_active(self) -> bool:
        return self.service_state[0] == "active"


# the service user and device permissions


def service_groups(user: str, unit: Path = INSTALLED_UNIT) -> tuple[set[int], bool]:
    """The group ids a process of `user` has (primary, /etc/group, and the installed unit's
    SupplementaryGroups= when the unit runs as that user), and whether the user exists."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return set(), False
    gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    text = unit.read_text() if unit.is_file() else ""
    if re.search(rf"^User={re.escape(user)}$", text, re.MULTILINE):
        found = re.search(r"^SupplementaryGroups=(.*)$", text, re.MULTILINE)
        for name in found.group(1).split() if found else ():
            try:
                gids.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                continue
    return gids, True


def access_problem(path: Path, user: str, unit: Path = INSTALLED_UNIT) -> tuple[str, str] | None:
    """Why `user` cannot open `path` for reading and writing, and the fix; None when it can."""
    info = path.stat()
    gids, exists = service_groups(user, unit)
    if not exists:
        return (
            f"user {user} does not exist",
            "create it with: sudo gatehouse service install (or pass --user NAME)",
        )
    entry = pwd.getpwnam(user)
    mode = stat.S_IMODE(info.st_mode)
    if entry.pw_uid == 0:
        return None
    if info.st_uid == entry.pw_uid:
        if mode & 0o600 == 0o600:
            return None
    elif info.st_gid in gids:
        if mode & 0o060 == 0o060:
            return None
    elif mode & 0o006 == 0o006:
        return None
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    owner = f"{_user_name(info.st_uid)}:{group} {mode:04o}"
    if info.st_gid not in gids and mode & 0o060 == 0o060:
        return (
            f"{path} is {owner}; {user} is not in group {group}",
            f"join the group: sudo usermod -aG {group} {user} "
            "(then restart: sudo systemctl restart gatehouse)",
        )
    return (
        f"{path} is {owner}; its group may not read and write it",
        'add a udev rule giving it GROUP="dialout", MODE="0660" (e.g. in '
        "/etc/udev/rules.d/99-gatehouse.rules) and re-plug the adapter",
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def default_user() -> str:
    """The service user when it exists (an installed gateway), else whoever runs the doctor."""
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return _user_name(os.geteuid())
    return SERVICE_USER


# the checks


def check_config(context: Context) -> list[Result]:
    if context.config is None:
        fix = "edit the file at the line shown (`gatehouse config check` repeats this)"
        if context.secret_unavailable and os.geteuid() == 0:
            fix = (
                "put the secret in the file the line above names (mode 0600), or pass --credentials-dir "
                "with the folder that holds the secrets"
            )
        elif context.secret_unavailable:
            fix = (
                "the secrets live in the credentials directory, readable by root only: run the doctor "
                "with sudo, or pass --credentials-dir"
            )
        problem = context.config_error.replace("\n", "\n       ")
        return [Result.fail("config", f"{context.config_file} is not valid:\n       {problem}", fix)]
    config = context.config
    return [
        Result.ok(
            "config",
            f"{context.config_file} is valid: site {config.site.id}, gateway {config.gateway.id}, "
            f"{counted(len(config.gates), 'gate')}, {counted(len(config.devices), 'device')}",
        )
    ]


def serial_devices(config: Any) -> list[Any]:
    return [d for d in config.devices if d.enabled and getattr(d, "serial", None) is not None]


def check_serial_ports(context: Context) -> list[Result]:
    results: list[Result] = []
    devices = serial_devices(context.config)
    if not devices:
        return [Result.ok("serial ports", "none configured")]
    for device in devices:
        name = f"serial {device.id}"
        port = Path(device.serial.port)
        if not port.exists():
            by_id = Path("/dev/serial/by-id")
            present = ", ".join(sorted(p.name for p in by_id.iterdir())) if by_id.is_dir() else "none"
            results.append(
                Result.fail(
                    name,
                    f"{port} does not exist (adapters in /dev/serial/by-id: {present})",
                    f"plug the adapter in, or set devices.{device.id}.serial.port to its "
                    "/dev/serial/by-id/… path",
                )
            )
            continue
        if not stat.S_ISCHR(port.stat().st_mode):
            results.append(
                Result.fail(name, f"{port} is not a serial device", "point serial.port at a /dev/tty… device")
            )
            continue
        problem = access_problem(port, context.user)
        if problem:
            results.append(Result.fail(name, f"{context.user} cannot open it: {problem[0]}", problem[1]))
        else:
            results.append(Result.ok(name, f"{port} present; {context.user} may open it"))
    return results


class _Collector:
    """The `emit` a driver gets during the doctor's short run."""

    def __init__(self) -> None:
        self.observations: list[Any] = []
        self.alive_calls = 0
        self.offline: str | None = None
        self.reached = False
        """The driver said it reaches its device (an OSDP reader answered its polls)."""

    def __call__(self, observation: Any) -> None:
        self.observations.append(observation)
        if type(observation).__name__ == "Availability":
            self.reached = observation.online
            if not observation.online:
                self.offline = observation.reason or "offline"

    def alive(self) -> None:
        self.alive_calls += 1


async def _try_device(device: Any, context: Context) -> Result:
    from drivers.registry import driver_for
    from edge.gateway import driver_context

    name = f"device {device.id}"
    try:
        driver = driver_for(device)(device, driver_context(context.config))
    except Exception as err:
        return Result.fail(name, f"{device.kind} driver cannot start: {err}", _device_fix(device, "start"))
    emit = _Collector()
    task = asyncio.create_task(driver.run(emit))
    done, _ = await asyncio.wait({task}, timeout=context.timeout_s)
    if not done:
        task.cancel()
        stopped, _ = await asyncio.wait({task}, timeout=context.timeout_s)
        if not stopped and not emit.reached:
            # still waiting on its device (a camera's stream opening): that is the finding
            return Result.fail(
                name,
                f"{_what(device)} did not answer within {context.timeout_s:g} s (still trying when stopped)",
                _device_fix(device, "silent"),
            )
        if not stopped:
            return Result.fail(
                name,
                f"{device.kind} driver did not stop within {context.timeout_s:g} s",
                "a driver that ignores cancellation is a bug: report it with the output of "
                "gatehouse --debug doctor",
            )
        if not task.cancelled() and task.exception() is not None:
            err = task.exception()
            return Result.fail(
                name, f"{device.kind} failed while stopping: {err}", _device_fix(device, "stop")
            )
    elif task.exception() is not None:
        err = task.exception()
        what = type(err).__name__
        return Result.fail(
            name,
            f"{device.kind} does not answer: {err} ({what})",
            _device_fix(device, what),
        )
    if emit.offline is not None:
        return Result.fail(name, f"{device.kind} is offline: {emit.offline}", _device_fix(device, "offline"))
    if not emit.observations and not emit.alive_calls:
        return Result.fail(
            name,
            f"{device.kind} gave no sign of life within {context.timeout_s:g} s",
            _device_fix(device, "silent"),
        )
    if not emit.reached:
        # a driver heartbeats while it keeps trying (an OSDP poll, a camera opening its stream)
        return Result.fail(
            name,
            f"{_what(device)} did not answer within {context.timeout_s:g} s",
            _device_fix(device, "silent"),
        )
    seen = len(emit.observations)
    doing = "delivering frames" if "camera" in device.kind else "answering"
    return Result.ok(
        name, f"{device.kind} {doing} ({counted(seen, 'observation')} in {context.timeout_s:g} s)"
    )


def _what(device: Any) -> str:
    if device.kind == "osdp":
        return f"osdp reader at address {device.address}"
    if device.kind == "modbus_gate":
        return f"modbus_gate board (unit {device.unit_id})"
    if device.kind == "camera":
        from drivers.camera.grabber import redact

        return f"camera {redact(device.source)}"
    return device.kind


def _device_fix(device: Any, what: str) -> str:
    if what in ("AuthFailed",):
        return f"check the secure-channel key of {device.id} (gatehouse devices test {device.id})"
    if getattr(device, "serial", None) is not None:
        return (
            f"check the wiring, the device's address and the line settings (baud rate, parity) of "
            f"{device.id}; `gatehouse probe {device.serial.port}` shows what answers"
        )
    return f"check that {device.id} is powered and reachable; `gatehouse devices test {device.id}`"


def check_devices(context: Context) -> list[Result]:
    config = context.config
    enabled = [d for d in config.devices if d.enabled]
    if not enabled:
        return [Result.ok("devices", "none configured")]
    # systemd may not be asked (--skip service, no systemd) or the gateway runs by hand: its lock
    running = None if context.service_active else running_gateway(config.state_path)
    if context.service_active or running is not None:
        who = (
            SERVICE_UNIT
            if running is None
            else f"a gateway ({running.describe(ZoneInfo(config.site.timezone))})"
        )
        return [
            Result.skip(
                "devices",
                f"{who} is running and holds the devices; see `gatehouse status`, or stop it "
                "to let the doctor talk to them",
            )
        ]
    testable = []
    results: list[Result] = []
    for device in enabled:
        port = getattr(getattr(device, "serial", None), "port", None)
        if port is not None and not Path(port).exists():
            results.append(Result.skip(f"device {device.id}", f"not tried: {port} is missing (see above)"))
        else:
            testable.append(device)

    async def all_devices() -> list[Result]:
        return list(await asyncio.gather(*(_try_device(d, context) for d in testable)))

    return results + asyncio.run(all_devices())


def check_broker(context: Context) -> list[Result]:
    from edge.cli.provision import Broker, ProvisionError, TlsFiles, test_connection

    mqtt = context.config.mqtt
    if mqtt is None:
        return [Result.skip("broker", "no mqtt: section; events stay on this gateway (gatehouse provision)")]
    tls = TlsFiles(mqtt.tls.ca, mqtt.tls.cert, mqtt.tls.key) if mqtt.tls is not None else TlsFiles()
    missing = [path for path in (tls.ca, tls.cert, tls.key) if path and not Path(path).is_file()]
    if missing:
        return [
            Result.fail(
                "broker",
                f"TLS file {missing[0]} does not exist",
                "run gatehouse provision again with --ca/--cert/--key",
            )
        ]
    broker = Broker(mqtt.host, mqtt.port, mqtt.tls is not None)
    try:
        message = test_connection(
            broker,
            tls,
            f"{context.config.gateway.id}-doctor",
            mqtt.username,
            mqtt.password,
            context.timeout_s,
        )
    except ProvisionError as err:
        return [
            Result.fail(
                "broker",
                str(err),
                "events wait in the store until the broker is reachable; fix the above or re-run "
                "gatehouse provision",
            )
        ]
    return [Result.ok("broker", message)]


def timedatectl_synchronised(output: str) -> bool | None:
    """NTPSynchronized from `timedatectl show` output; None when it is not there."""
    found = re.search(r"^NTPSynchronized=(yes|no)$", output, re.MULTILINE)
    return None if found is None else found.group(1) == "yes"


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


def adjtimex_synchronised() -> tuple[bool, str] | None:
    """The kernel's view (what NTP daemons set): synchronised, and the estimated error."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    libc = ctypes.CDLL(library, use_errno=True)
    timex = _Timex()
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    synchronised = state != TIME_ERROR and not timex.status & STA_UNSYNC
    return synchronised, f"estimated error {timex.esterror / 1000:g} ms"


def check_clock(context: Context) -> list[Result]:
    fix = (
        "plates and passes need true time: enable NTP (sudo timedatectl set-ntp true, or install "
        "chrony) and let the gateway reach an NTP server"
    )
    timedatectl = shutil.which("timedatectl")
    if timedatectl:
        try:
            shown = subprocess.run(
                [timedatectl, "show"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            shown = None
        answer = timedatectl_synchronised(shown.stdout) if shown and shown.returncode == 0 else None
        if answer is True:
            return [Result.ok("clock", "synchronised (timedatectl: NTPSynchronized=yes)")]
        if answer is False:
            return [Result.fail("clock", "not synchronised (timedatectl: NTPSynchronized=no)", fix)]
    kernel = adjtimex_synchronised()
    if kernel is None:
        return [
            Result.skip("clock", "neither timedatectl nor adjtimex can say whether the clock is synchronised")
        ]
    synchronised, detail = kernel
    if synchronised:
        return [Result.ok("clock", f"synchronised (adjtimex: {detail})")]
    return [
        Result.fail("clock", "not synchronised (adjtimex: the kernel clock is marked unsynchronised)", fix)
    ]


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(context: Context) -> list[Result]:
    state = Path(context.config.gateway.state_dir)
    where = _existing(state)
    usage = shutil.disk_usage(where)
    free_mb = usage.free / 1024 / 1024
    needed = max(context.min_free_mb, 0.0)
    text = f"{free_mb:,.0f} MB free of {usage.total / 1024 / 1024:,.0f} MB on the file system of {state}"
    if free_mb < needed:
        return [
            Result.fail(
                "disk",
                f"only {text} (want at least {needed:,.0f} MB)",
                "free space (old snapshots, logs: journalctl --vacuum-size=100M) or lower store.quota_mb",
            )
        ]
    return [Result.ok("disk", text)]


def check_store(context: Context) -> list[Result]:
    path = context.config.store_path
    if not path.exists():
        return [Result.ok("store", f"{path} does not exist yet; the service creates it on first start")]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=context.timeout_s) as conn:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()
    except sqlite3.DatabaseError as err:
        verdict, version = str(err), None
    if verdict != "ok":
        return [
            Result.fail(
                "store",
                f"{path} is damaged: {verdict}",
                "restart the service: it moves a damaged store aside and starts a new one "
                "(the old file is kept for recovery)",
            )
        ]
    size = path.stat().st_size
    if not version:
        if size == 0:
            return [Result.ok("store", f"{path} is empty; the service creates its tables on first start")]
        return [
            Result.fail(
                "store",
                f"{path} is an SQLite file but not a Gatehouse store (it has no schema version)",
                "move it aside (or point gateway.state_dir elsewhere); the service then starts a new store",
            )
        ]
    if version > len(MIGRATIONS):
        return [
            Result.fail(
                "store",
                f"{path} was written by a newer Gatehouse "
                f"(schema {version}; this one knows {len(MIGRATIONS)})",
                "install that version again, or move the store aside",
            )
        ]
    return [Result.ok("store", f"{path} is healthy (schema {version}, {size / 1024 / 1024:.1f} MB)")]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _uses_default_models(config: Any) -> bool:
    return any(d.enabled and "camera" in d.kind and not d.kind.startswith("sim_") for d in config.devices)


def check_models(context: Context) -> list[Result]:
    from edge.errors import ModelError
    from models.manifest import default_spec, optional_spec

    config = context.config
    specs: list[Any] = []
    results: list[Result] = []
    if _uses_default_models(config):
        for name in ("ppocr_det", "ppocr_rec"):
            try:
                specs.append(default_spec(name))
            except ModelError as err:
                results.append(
                    Result.fail(f"model {name}", str(err), "pip install 'rapidocr-onnxruntime>=1.4,<1.5'")
                )
    for name in ("plate_detector", "plate_classifier", "object_detector"):
        chosen = getattr(config.inference, name)
        if chosen is not None:
            specs.append(optional_spec(name, chosen))
    if not specs and not results:
        return [Result.ok("models", "none used by this configuration")]
    for spec in specs:
        check = f"model {spec.name}"
        if not spec.path.is_file():
            results.append(
                Result.fail(check, f"{spec.path} does not exist", f"put the file there ({spec.source})")
            )
            continue
        actual = _sha256(spec.path)
        if actual != spec.sha256:
            results.append(
                Result.fail(
                    check,
                    f"{spec.path}: checksum mismatch (sha256 {actual[:16]}…, expected {spec.sha256[:16]}…)",
                    "the file is damaged or another version: copy it again, or set its sha256 in the "
                    "inference: section if you changed the model on purpose",
                )
            )
        else:
            results.append(Result.ok(check, f"{spec.path} matches its sha256"))
    return results


def systemctl_state(unit: str = SERVICE_UNIT) -> tuple[str | None, str]:
    """(`systemctl is-active` answer, detail); None when systemd cannot be asked here."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None, "systemctl is not installed"
    try:
        active = subprocess.run(
            [systemctl, "is-active", unit],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        enabled = subprocess.run(
            [systemctl, "is-enabled", unit],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "systemctl did not answer"
    state = active.stdout.strip()
    if not state or "not been booted with systemd" in active.stderr or "Failed to connect" in active.stderr:
        return None, (active.stderr.strip().splitlines() or ["no answer"])[0]
    return state, enabled.stdout.strip() or "not installed"


def check_service(context: Context) -> list[Result]:
    active, detail = context.service_state
    if active is None:
        return [Result.skip("service", f"cannot ask systemd here ({detail})")]
    if active == "active":
        return [Result.ok("service", f"{SERVICE_UNIT} is active ({detail})")]
    if detail in ("not installed", "not-found") or (not INSTALLED_UNIT.exists() and detail != "enabled"):
        return [
            Result.fail("service", f"{SERVICE_UNIT} is not installed", "sudo gatehouse service install --now")
        ]
    return [
        Result.fail(
            "service",
            f"{SERVICE_UNIT} is {active} ({detail})",
            "see why: journalctl -u gatehouse -e; start it: sudo systemctl start gatehouse",
        )
    ]


CHECKS: dict[str, tuple[Callable[[Context], Iterable[Result]], bool]] = {
    "config": (check_config, False),
    "serial": (check_serial_ports, True),
    "devices": (check_devices, True),
    "broker": (check_broker, True),
    "clock": (check_clock, False),
    "disk": (check_disk, True),
    "store": (check_store, True),
    "models": (check_models, True),
    "service": (check_service, False),
}
"""name → (check, needs a valid configuration)."""


def run_checks(context: Context) -> Iterable[Result]:
    """Every check in order, as it finishes; a crash in one check is a red line, not a traceback."""
    for name, (check, needs_config) in CHECKS.items():
        if name in context.skipped:
            yield Result.skip(name, "skipped (--skip)")
            continue
        if needs_config and context.config is None:
            yield Result.skip(name, "not checked: the configuration is not valid")
            continue
        try:
            yield from check(context)
        except Exception as err:
            if context.debug:
                raise
            yield Result.fail(
                name,
                f"the check itself failed: {type(err).__name__}: {err}",
                "run gatehouse --debug doctor and report the traceback",
            )
