"""Talking to systemd: sd_notify over $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STOPPING=1, RELOADING=1,
STATUS=)
with a plain datagram socket, and the watchdog task the daemon runs beside the gateway.

    async with notifying(gateway, stop):
        await gateway.run(stop)

READY=1 goes out once the gateway has started; WATCHDOG=1 every WatchdogSec/2, and only while
the event loop runs (a stuck loop cannot run this task) and the rules consumer makes progress
(a consumer task that died, or one that has not taken a queued observation for a whole
interval, stops the pings and systemd restarts the service). STOPPING=1 goes out when the stop
event is set.

Test hook: when $GATEHOUSE_DEBUG_STALL_FILE names a file path, SIGUSR2 blocks the event loop
(a deliberate `time.sleep` loop on it) until that file exists, at most STALL_LIMIT_S. It exists
so that a test can show the pings stop when the main loop is stuck; without the variable,
SIGUSR2 keeps its default meaning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STALL_ENV = "GATEHOUSE_DEBUG_STALL_FILE"
STALL_LIMIT_S = 120.0
RULES_TASK_NAME = "rules"


class Notifier:
    """sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET. Without the
    variable (not started by systemd), every send is a no-op that returns False."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_s = watchdog_interval_s(env)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(1.0)
                sock.sendto(message, self.address)
        except OSError as err:
            log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), err)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """RELOADING=1: the service stays up while it restarts on its new configuration; the next
        READY=1 ends the reload (STOPPING=1 here would have systemd stop, then kill, the service)."""
        monotonic_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_us}", "STATUS=reloading the configuration"
        )

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half of $WATCHDOG_USEC in seconds (systemd's advice), or None when there is no watchdog
    for this process ($WATCHDOG_PID names another process, or the value is not a number)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


class RulesProgress:
    """Whether the rules consumer is alive and taking observations off the queue."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.last_handled = -1

    def healthy(self) -> tuple[bool, str]:
        task = rules_task()
        if task is None or task.done():
            return False, "the rules consumer is not running"
        handled = int(self.gateway.handled)
        queue = self.gateway.queue
        pending = queue.queue.qsize() if queue is not None else 0
        stalled = pending > 0 and handled == self.last_handled
        self.last_handled = handled
        if stalled:
            return False, f"the rules consumer took nothing from {pending} queued observations"
        return True, ""


def rules_task() -> asyncio.Task[Any] | None:
    for task in asyncio.all_tasks():
        if task.get_name() == RULES_TASK_NAME:
            return task
    return None


async def watchdog(gateway: Any, stop: asyncio.Event, notifier: Notifier) -> None:
    """READY=1 once the gateway runs, WATCHDOG=1 while healthy, STOPPING=1 when stop is set."""
    started = asyncio.ensure_future(gateway.started.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        started.cancel()
        stopping.cancel()
    if stop.is_set():
        _leaving(gateway, notifier)
        return
    interval = notifier.watchdog_s
    devices = len(getattr(gateway, "drivers", {}))
    running = f"running: {devices} devices" + (f"; watchdog every {interval:g} s" if interval else "")
    notifier.ready(running)
    progress = RulesProgress(gateway)
    unhealthy = ""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval if interval is not None else 3600.0)
        if stop.is_set() or interval is None:
            continue
        ok, reason = progress.healthy()
        if ok:
            notifier.ping()
            if unhealthy:
                log.info("watchdog: healthy again")
                notifier.status(running)
            unhealthy = ""
        elif reason != unhealthy:
            log.error("watchdog: withholding the ping: %s", reason)
            notifier.status(f"unhealthy: {reason}")
            unhealthy = reason
    _leaving(gateway, notifier)


def _leaving(gateway: Any, notifier: Notifier) -> None:
    if getattr(gateway, "reload_requested", False):
        notifier.reloading()
    else:
        notifier.stopping()


def _stall_until(marker: Path, notifier: Notifier) -> None:
    notifier.status(f"debug stall: event loop blocked until {marker} exists")
    deadline = time.monotonic() + STALL_LIMIT_S
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def install_stall_hook(notifier: Notifier, environ: Mapping[str, str] | None = None) -> bool:
    """The test hook described in the module docstring; True when it was installed."""
    env = os.environ if environ is None else environ
    marker = env.get(STALL_ENV)
    if not marker:
        return False
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _stall_until, Path(marker), notifier)
    log.warning("debug: SIGUSR2 blocks the event loop until %s exists (%s is set)", marker, STALL_ENV)
    return True


@contextlib.asynccontextmanager
async def notifying(
    gateway: Any, stop: asyncio.Event, notifier: Notifier | None = None
) -> AsyncIterator[Notifier]:
    """Run the watchdog task for as long as the block runs."""
    chosen = notifier or Notifier()
    install_stall_hook(chosen)
    task = asyncio.create_task(watchdog(gateway, stop, chosen), name="systemd-watchdog")
    try:
        yield chosen
    finally:
        if not task.done():
            stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
