"""The supervisor runs each driver in isolation: a driver that raises or stops showing signs of
life is cancelled, reported and restarted with backoff, while the others keep running. What
drivers see goes into one bounded queue; when it is full new observations are dropped and
counted, never blocking a driver.

A device is online only while its driver says it reaches it (`Availability`, which the
supervisor takes instead of queueing it) and it has no fault; heartbeats only show that the
driver itself is not hung. Every change of that state goes to `on_state` once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.base import Availability, Driver, Observation
from edge.errors import AuthFailed, DeviceMisconfigured

log = logging.getLogger(__name__)

HANG_CHECK_S = 0.5
CANCEL_GRACE_S = 2.0
AVAILABILITY_BACKLOG = 64
"""Availability reports kept between two looks of the supervisor (only changes are reported)."""


@dataclass
class DeviceStatus:
    """What the supervisor knows of one device."""

    device: str
    kind: str
    online: bool = False
    reachable: bool = False
    """The driver's last word: it reaches its device."""
    reported: bool | None = None
    """The state last given to `on_state` (None: nothing yet)."""
    restarts: int = 0
    failures_in_row: int = 0
    last_error: str = ""
    since: float = field(default_factory=time.time)
    fault: str = ""
    """Why the device does not work although its driver runs (it refused a command); it stays
    offline until a command of `fault_command`'s type succeeds."""
    fault_command: str = ""


StateCallback = Callable[[DeviceStatus, bool, str], Awaitable[None]]


class ObservationQueue:
    """Bounded queue between drivers and rules. Thread-safe `put`; drops are counted per device."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Observation] = asyncio.Queue(maxsize)
        self.dropped: Counter[str] = Counter()
        self._loop_thread = threading.get_ident()

    def put(self, observation: Observation) -> None:
        self.call_in_loop(self._put, observation)

    def call_in_loop(self, callback: Callable[[Observation], None], observation: Observation) -> None:
        """`callback(observation)` on the event loop's thread, from any thread."""
        if threading.get_ident() == self._loop_thread:
            callback(observation)
        else:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(callback, observation)

    def _put(self, observation: Observation) -> None:
        try:
            self.queue.put_nowait(observation)
        except asyncio.QueueFull:
            device = getattr(observation, "device", "?")
            if not self.dropped[device]:
                log.warning("observation queue full: dropping from %s", device)
            self.dropped[device] += 1


class _Emit:
    """What a driver calls to report; every call is also a sign of life. `Availability` is kept
    for the supervisor (`availability`, and `reported` is set) instead of going to the queue."""

    def __init__(self, queue: ObservationQueue) -> None:
        self._queue = queue
        self.last_alive = time.monotonic()
        self.availability: deque[Availability] = deque(maxlen=AVAILABILITY_BACKLOG)
        self.reported = asyncio.Event()

    def __call__(self, observation: Observation) -> None:
        self.alive()
        if isinstance(observation, Availability):
            self._queue.call_in_loop(self._keep, observation)
        else:
            self._queue.put(observation)

    def _keep(self, observation: Observation) -> None:
        assert isinstance(observation, Availability)
        self.availability.append(observation)
        self.reported.set()

    def alive(self) -> None:
        self.last_alive = time.monotonic()


class Supervisor:
    def __init__(
        self,
        drivers: list[Driver],
        queue: ObservationQueue,
        on_state: StateCallback,
        *,
        restart_min_s: float = 1.0,
        restart_max_s: float = 60.0,
    ) -> None:
        self.drivers = {driver.id: driver for driver in drivers}
        self.queue = queue
        self.on_state = on_state
        self.restart_min_s = restart_min_s
        self.restart_max_s = restart_max_s
        self.status = {driver.id: DeviceStatus(driver.id, driver.kind) for driver in drivers}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for driver in self.drivers.values():
            self._tasks.append(asyncio.create_task(self._keep_running(driver), name=f"driver:{driver.id}"))

    async def stop(self, timeout: float = 2.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._tasks.clear()

    async def command_refused(self, device: str, command: str, error: str) -> bool:
        """The device refused `command` (DeviceMisconfigured, AuthFailed): it answers but does not
        work as configured. It is reported offline with an alert at once (a person must act) and
        stays offline until a `command` succeeds. The same refusal again (a siren the alert
        engine switches again at every check) is not news: it is not reported again, and False
        is returned."""
        status = self.status[device]
        if status.reported is False and (status.fault, status.fault_command) == (error, command):
            return False
        status.fault = status.last_error = error
        status.fault_command = command
        if status.online:
            status.online = False
            status.since = time.time()
        await self._report(status, True, error)
        return True

    async def command_succeeded(self, device: str, command: str) -> None:
        """A `command` worked: a fault that the same kind of command caused is over."""
        status = self.status[device]
        if not status.fault or status.fault_command != command:
            return
        status.fault = status.fault_command = ""
        await self._settle(status, status.last_error)

    async def _driver_says(self, status: DeviceStatus, availability: Availability) -> None:
        status.reachable = availability.online
        if availability.online:
            status.failures_in_row = 0
        await self._settle(status, availability.reason or "offline")

    async def _settle(self, status: DeviceStatus, reason: str) -> None:
        """Online = reachable with no fault; report it when it differs from the last report."""
        online = status.reachable and not status.fault
        if online != status.online:
            status.online = online
            status.since = time.time()
        if status.reported == online:
            return
        if online:
            await self._report(status, False, "")
            return
        status.last_error = status.fault or reason
        await self._report(status, False, status.last_error)

    async def _report(self, status: DeviceStatus, needs_person: bool, reason: str) -> None:
        status.reported = status.online
        await self.on_state(status, needs_person, reason)

    async def _keep_running(self, driver: Driver) -> None:
        status = self.status[driver.id]
        hang_timeout = float(getattr(driver.config, "hang_timeout_s", 30.0))
        while True:
            emit = _Emit(self.queue)
            task = asyncio.create_task(driver.run(emit), name=f"run:{driver.id}")
            try:
                reason = await self._watch(driver, task, emit, hang_timeout)
            except asyncio.CancelledError:
                # Stopping: the driver goes with its supervisor (it closes its port in `finally`).
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
                raise
            status.restarts += 1
            status.failures_in_row += 1
            status.last_error = reason
            needs_person = isinstance(
                task.exception() if task.done() and not task.cancelled() else None,
                AuthFailed | DeviceMisconfigured,
            )
            status.reachable = False
            if status.online:
                status.online = False
                status.since = time.time()
            await self._report(status, needs_person, reason)
            delay = min(self.restart_max_s, self.restart_min_s * 2 ** (status.failures_in_row - 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _watch(
        self,
        driver: Driver,
        task: asyncio.Task[None],
        emit: _Emit,
        hang_timeout: float,
    ) -> str:
        """Wait until the driver task ends or hangs, passing on what it says of its device.
        Returns why it stopped."""
        status = self.status[driver.id]
        while True:
            reported = asyncio.create_task(emit.reported.wait())
            try:
                await asyncio.wait(
                    {task, reported}, timeout=HANG_CHECK_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                reported.cancel()
            emit.reported.clear()
            while emit.availability:
                await self._driver_says(status, emit.availability.popleft())
            if task.done():
                if task.cancelled():
                    return "cancelled"
                error = task.exception()
                if error is None:
                    return "driver stopped"
                log.warning("driver %s failed: %s", driver.id, error)
                return f"{type(error).__name__}: {error}"
            if time.monotonic() - emit.last_alive > hang_timeout:
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
                log.warning(
                    "driver %s showed no sign of life for %.0f s; restarting", driver.id, hang_timeout
                )
                return f"no sign of life for {hang_timeout:.0f} s (hung)"
