"""Supervisor isolation: a driver that raises or hangs is restarted and reported; the others keep
running; the queue between drivers and rules is bounded and counts drops."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from drivers.base import Availability, DeviceConfig, Driver, DriverContext, Emit, Health
from edge.supervisor import DeviceStatus, ObservationQueue, Supervisor


class ProbeConfig(DeviceConfig):
    kind: Literal["test"] = "test"


class Healthy(Driver):
    kind: ClassVar[str] = "test"
    config_model = ProbeConfig

    async def run(self, emit: Emit) -> None:
        emit(Availability(self.id, True))
        while True:
            emit(Health(self.id, {"tick": 1}))
            await asyncio.sleep(0.02)


class Raising(Healthy):
    async def run(self, emit: Emit) -> None:
        emit.alive()
        await asyncio.sleep(0.05)
        raise OSError("serial port vanished")


class Hanging(Healthy):
    async def run(self, emit: Emit) -> None:
        emit(Availability(self.id, True))
        await asyncio.Event().wait()


class Unreachable(Healthy):
    """A driver that keeps running (heartbeats) while its device does not answer, until
    `reached` is set."""

    reached = False

    async def run(self, emit: Emit) -> None:
        emit(Availability(self.id, False, "nothing answers"))
        while not self.reached:
            emit.alive()
            await asyncio.sleep(0.02)
        emit(Availability(self.id, True))
        await asyncio.Event().wait()


def make(cls: type[Driver], device_id: str, hang_timeout_s: float = 30.0) -> Driver:
    return cls(ProbeConfig(id=device_id, hang_timeout_s=hang_timeout_s), DriverContext(state_dir="."))


async def run_supervisor(drivers: list[Driver], seconds: float, queue_size: int = 1000):
    loop = asyncio.get_running_loop()
    queue = ObservationQueue(loop, queue_size)
    reports: list[tuple[str, bool, str]] = []

    async def on_state(status: DeviceStatus, needs_person: bool, reason: str) -> None:
        reports.append((status.device, status.online, reason))

    supervisor = Supervisor(drivers, queue, on_state, restart_min_s=0.05, restart_max_s=0.2)
    supervisor.start()
    seen: dict[str, int] = {}

    async def drain() -> None:
        while True:
            item = await queue.queue.get()
            seen[item.device] = seen.get(item.device, 0) + 1

    consumer = asyncio.create_task(drain())
    await asyncio.sleep(seconds)
    await supervisor.stop()
    consumer.cancel()
    return supervisor, reports, seen, queue


def test_raising_driver_is_restarted_and_others_keep_running():
    supervisor, reports, seen, _ = asyncio.run(
        run_supervisor([make(Healthy, "good"), make(Raising, "flaky")], seconds=2.5)
    )
    flaky = supervisor.status["flaky"]
    assert flaky.restarts >= 2
    assert "OSError: serial port vanished" in flaky.last_error
    offline = [r for r in reports if r[0] == "flaky" and not r[1]]
    assert offline and "serial port vanished" in offline[0][2]
    assert seen["good"] > 50, "the healthy driver must keep reporting while the other fails"
    assert supervisor.status["good"].restarts == 0


def test_hanging_driver_is_cancelled_and_restarted():
    supervisor, reports, seen, _ = asyncio.run(
        run_supervisor([make(Healthy, "good"), make(Hanging, "stuck", hang_timeout_s=0.3)], seconds=3.0)
    )
    stuck = supervisor.status["stuck"]
    assert stuck.restarts >= 1
    assert "hung" in stuck.last_error
    assert ("stuck", True, "") in reports
    assert seen["good"] > 50


def test_full_queue_drops_and_counts_without_blocking_drivers():
    async def scenario():
        loop = asyncio.get_running_loop()
        queue = ObservationQueue(loop, maxsize=10)
        for i in range(25):
            queue.put(Health("cam", {"i": i}))
        return queue

    queue = asyncio.run(scenario())
    assert queue.queue.qsize() == 10
    assert queue.dropped["cam"] == 15


def test_stop_ends_the_drivers_too():
    async def scenario() -> set[str]:
        loop = asyncio.get_running_loop()

        async def on_state(status: DeviceStatus, needs_person: bool, reason: str) -> None:
            return None

        supervisor = Supervisor([make(Healthy, "good")], ObservationQueue(loop, 10_000), on_state)
        supervisor.start()
        await asyncio.sleep(0.2)
        await supervisor.stop()
        return {task.get_name() for task in asyncio.all_tasks() if not task.done()}

    assert "run:good" not in asyncio.run(scenario())


def test_a_device_is_online_only_once_its_driver_reaches_it():
    async def scenario() -> tuple[list[tuple[str, bool, str]], list[tuple[str, bool, str]], int]:
        loop = asyncio.get_running_loop()
        queue = ObservationQueue(loop, 100)
        reports: list[tuple[str, bool, str]] = []

        async def on_state(status: DeviceStatus, needs_person: bool, reason: str) -> None:
            reports.append((status.device, status.online, reason))

        driver = make(Unreachable, "cam")
        supervisor = Supervisor([driver], queue, on_state)
        supervisor.start()
        await asyncio.sleep(1.2)  # more than two of the supervisor's looks at a heartbeating driver
        while_unreachable = list(reports)
        driver.reached = True
        while len(reports) < 2:
            await asyncio.sleep(0.02)
        await supervisor.stop()
        return while_unreachable, reports, queue.queue.qsize()

    while_unreachable, reports, queued = asyncio.run(scenario())
    assert while_unreachable == [("cam", False, "nothing answers")]
    assert reports == [("cam", False, "nothing answers"), ("cam", True, "")]
    assert queued == 0, "availability goes to the supervisor, not to the rules' queue"


def test_a_refusal_repeated_is_reported_once():
    """The alert engine switches a siren again at every check until it is known to be switched:
    a board that refuses that relay must not become a device.offline event every few seconds."""

    async def scenario() -> tuple[list[tuple[str, bool, bool, str]], list[bool]]:
        loop = asyncio.get_running_loop()
        reports: list[tuple[str, bool, bool, str]] = []

        async def on_state(status: DeviceStatus, needs_person: bool, reason: str) -> None:
            reports.append((status.device, status.online, needs_person, reason))

        supervisor = Supervisor([make(Healthy, "relay")], ObservationQueue(loop, 10), on_state)
        news = [
            await supervisor.command_refused("relay", "SetOutput", "SetOutput refused: no relay 40"),
            await supervisor.command_refused("relay", "SetOutput", "SetOutput refused: no relay 40"),
            await supervisor.command_refused("relay", "OpenGate", "OpenGate refused: no relay 41"),
        ]
        return reports, news

    reports, news = asyncio.run(scenario())
    assert reports == [
        ("relay", False, True, "SetOutput refused: no relay 40"),
        ("relay", False, True, "OpenGate refused: no relay 41"),
    ]
    assert news == [True, False, True]
