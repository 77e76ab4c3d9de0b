"""edge/systemd.py: sd_notify datagrams, the watchdog interval from the environment, and the
watchdog task's decisions (ping only while the rules consumer progresses)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.systemd import Notifier, RulesProgress, watchdog, watchdog_interval_s

WAIT_S = 10.0


def test_notifier_sends_one_datagram_per_message():
    with tempfile.TemporaryDirectory(prefix="gh-") as folder:
        path = Path(folder) / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            receiver.settimeout(WAIT_S)
            notifier = Notifier({"NOTIFY_SOCKET": str(path)})
            assert notifier.ready("running: 3 devices")
            assert receiver.recv(1024) == b"READY=1\nSTATUS=running: 3 devices"
            assert notifier.ping()
            assert receiver.recv(1024) == b"WATCHDOG=1"
            assert notifier.stopping()
            assert receiver.recv(1024) == b"STOPPING=1\nSTATUS=stopping"


def test_abstract_socket_address():
    name = f"gatehouse-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(WAIT_S)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert receiver.recv(1024) == b"STATUS=hello"


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ping()
    assert "sd_notify to" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str], expected: float | None):
    assert watchdog_interval_s(environ) == expected


class FakeNotifier(Notifier):
    def __init__(self, interval: float | None) -> None:
        super().__init__({})
        self.watchdog_s = interval
        self.sent: list[tuple[float, tuple[str, ...]]] = []

    def send(self, *lines: str) -> bool:
        self.sent.append((asyncio.get_running_loop().time(), lines))
        return True


def fake_gateway(pending: int = 0) -> SimpleNamespace:
    queue = asyncio.Queue()
    for item in range(pending):
        queue.put_nowait(item)
    return SimpleNamespace(
        started=asyncio.Event(), handled=0, queue=SimpleNamespace(queue=queue), drivers={"a": 1, "b": 2}
    )


async def rules_consumer(gateway: SimpleNamespace, stop: asyncio.Event) -> asyncio.Task[None]:
    async def consume() -> None:
        await stop.wait()

    return asyncio.create_task(consume(), name="rules")


async def wait_until(predicate, what: str) -> None:
    """Wait (at most WAIT_S) until `predicate()` holds; `what` names it in the failure."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"{what}: not within {WAIT_S} s")


def test_ready_then_pings_no_faster_than_the_interval_then_stopping():
    async def scenario() -> list[tuple[float, tuple[str, ...]]]:
        gateway = fake_gateway()
        stop = asyncio.Event()
        consumer = await rules_consumer(gateway, stop)
        notifier = FakeNotifier(0.05)
        task = asyncio.create_task(watchdog(gateway, stop, notifier))
        gateway.started.set()
        await wait_until(lambda: sum(lines == ("WATCHDOG=1",) for _, lines in notifier.sent) >= 4, "pings")
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task
            await consumer
        return notifier.sent

    sent = asyncio.run(scenario())
    assert sent[0][1] == ("READY=1", "STATUS=running: 2 devices; watchdog every 0.05 s")
    pings = [when for when, lines in sent if lines == ("WATCHDOG=1",)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert min(gaps) >= 0.05 * 0.9
    assert sent[-1][1] == ("STOPPING=1", "STATUS=stopping")


def test_no_pings_while_the_rules_consumer_takes_nothing_then_recovery():
    async def scenario() -> list[tuple[str, ...]]:
        gateway = fake_gateway(pending=3)
        stop = asyncio.Event()
        consumer = await rules_consumer(gateway, stop)
        notifier = FakeNotifier(0.02)
        task = asyncio.create_task(watchdog(gateway, stop, notifier))
        gateway.started.set()
        await wait_until(
            lambda: any(m[0].startswith("STATUS=unhealthy") for _, m in notifier.sent), "unhealthy"
        )
        gateway.handled = 3
        while not gateway.queue.queue.empty():
            gateway.queue.queue.get_nowait()
        await wait_until(lambda: notifier.sent[-1][1] == ("WATCHDOG=1",), "recovered")
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task
            await consumer
        return [lines for _, lines in notifier.sent]

    sent = asyncio.run(scenario())
    unhealthy = sent.index(("STATUS=unhealthy: the rules consumer took nothing from 3 queued observations",))
    pings_before = [i for i, lines in enumerate(sent) if lines == ("WATCHDOG=1",) and i < unhealthy]
    assert len(pings_before) <= 1, "at most the first tick (nothing to compare with yet) pings"
    assert ("STATUS=running: 2 devices; watchdog every 0.02 s",) in sent[unhealthy:]


def test_a_dead_rules_consumer_is_unhealthy():
    async def scenario() -> tuple[bool, str]:
        gateway = fake_gateway()
        return RulesProgress(gateway).healthy()

    assert asyncio.run(scenario()) == (False, "the rules consumer is not running")


def test_stop_before_start_only_says_stopping():
    async def scenario() -> list[tuple[str, ...]]:
        gateway = fake_gateway()
        stop = asyncio.Event()
        stop.set()
        notifier = FakeNotifier(1.0)
        async with asyncio.timeout(WAIT_S):
            await watchdog(gateway, stop, notifier)
        return [lines for _, lines in notifier.sent]

    assert asyncio.run(scenario()) == [("STOPPING=1", "STATUS=stopping")]
