"""Device health thinned to one `device.health` per `health_interval_s` per device, on the
trailing edge: a burst's last value and every metric of the interval are recorded, by the
periodic checks when nothing else arrives, and at stop; state changes are recorded at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from drivers.base import Health
from tests.unit.rules.conftest import Rig


def feed(rig: Rig, *observations: Health, tick: bool = False) -> list[dict[str, Any]]:
    """Hand the observations to the rules (then run the periodic checks once, if asked) and
    return the metrics of every device.health recorded so far."""

    async def go() -> None:
        for observation in observations:
            await rig.rules.handle(observation)
        if tick:
            await rig.rules.tick()
        await rig.rules.settled()

    asyncio.run(go())
    return metrics(rig)


def metrics(rig: Rig, device: str = "reader") -> list[dict[str, Any]]:
    return [e.payload.metrics for e in rig.events("device.health") if e.device == device]


def test_a_bursts_last_value_is_recorded_by_the_periodic_checks(rig: Rig):
    """bad_reads 1..5 within a minute: 1 at once, 5 once the minute is over, with no further
    Health from the reader."""
    assert feed(rig, Health("reader", {"bad_reads": 1})) == [{"bad_reads": 1}]
    for count in range(2, 6):
        rig.clock.advance(5)
        assert feed(rig, Health("reader", {"bad_reads": count})) == [{"bad_reads": 1}]
    rig.clock.advance(30)  # 50 s after the first: not yet
    assert feed(rig, tick=True) == [{"bad_reads": 1}]
    rig.clock.advance(10)
    assert feed(rig, tick=True) == [{"bad_reads": 1}, {"bad_reads": 5}]
    rig.clock.advance(120)
    assert feed(rig, tick=True) == [{"bad_reads": 1}, {"bad_reads": 5}], "recorded once only"


def test_two_metrics_of_one_device_in_one_interval_are_both_recorded(rig: Rig):
    """The OSDP driver reports dropped_events and bad_reads in separate Healths: neither takes
    the other's slot; later values of one metric win."""
    feed(rig, Health("reader", {"bad_reads": 1}))
    rig.clock.advance(1)
    feed(rig, Health("reader", {"dropped_events": 3}), Health("reader", {"bad_reads": 2}))
    rig.clock.advance(1)
    feed(rig, Health("reader", {"dropped_events": 4}))
    rig.clock.advance(60)
    assert feed(rig, tick=True) == [{"bad_reads": 1}, {"bad_reads": 2, "dropped_events": 4}]


def test_a_health_after_the_interval_records_what_waited_with_it(rig: Rig):
    feed(rig, Health("reader", {"bad_reads": 1}))
    rig.clock.advance(10)
    feed(rig, Health("reader", {"dropped_events": 1}))
    rig.clock.advance(55)
    assert feed(rig, Health("reader", {"bad_reads": 2})) == [
        {"bad_reads": 1},
        {"dropped_events": 1, "bad_reads": 2},
    ]


def test_state_changes_are_recorded_at_once_after_what_was_waiting(rig: Rig):
    feed(rig, Health("reader", {"bad_reads": 1}))
    rig.clock.advance(1)
    feed(rig, Health("reader", {"bad_reads": 2}))
    rig.clock.advance(1)
    assert feed(rig, Health("reader", {"power": "lost"}, state_change=True)) == [
        {"bad_reads": 1},
        {"bad_reads": 2},
        {"power": "lost"},
    ]
    rig.clock.advance(1)
    assert feed(rig, Health("reader", {"power": "ok"}, state_change=True))[-1] == {"power": "ok"}
    rig.clock.advance(120)
    assert len(feed(rig, tick=True)) == 4, "nothing left waiting"


def test_at_most_one_event_per_interval_per_device(rig: Rig):
    """A reader and a camera each reporting every second for ten minutes, checks every 5 s:
    each device gets its own one event a minute, never two within 60 s, and the last values
    are the ones finally recorded."""
    recorded_at: dict[str, list[float]] = {"reader": [], "cam": []}

    async def go() -> None:
        for second in range(600):
            await rig.rules.handle(Health("reader", {"bad_reads": second}))
            await rig.rules.handle(Health("cam", {"fps": 10 + second % 3, "frames": second}))
            if second % 5 == 0:
                await rig.rules.tick()
            await rig.rules.settled()
            for device, times in recorded_at.items():
                times.extend([rig.clock()] * (len(metrics(rig, device)) - len(times)))
            rig.clock.advance(1)
        rig.clock.advance(60)
        await rig.rules.tick()
        await rig.rules.settled()

    asyncio.run(go())
    for device, times in recorded_at.items():
        assert 10 <= len(times) <= 11, device
        assert all(b - a >= 60 for a, b in itertools.pairwise(times)), (device, times)
    assert metrics(rig, "reader")[-1] == {"bad_reads": 599}
    assert metrics(rig, "cam")[-1] == {"fps": 10 + 599 % 3, "frames": 599}


def test_health_held_back_is_recorded_when_the_checks_stop(rig: Rig):
    """The gateway stops by cancelling the periodic checks before it waits for the rules'
    telemetry and closes the store: what waited is recorded then."""

    async def go() -> None:
        checks = asyncio.create_task(rig.rules.run_checks())
        await asyncio.sleep(0)  # running, asleep until the first check (5 s away)
        await rig.rules.handle(Health("reader", {"bad_reads": 1}))
        rig.clock.advance(1)
        await rig.rules.handle(Health("reader", {"bad_reads": 2}))
        await rig.rules.handle(Health("cam", {"fps": 12.5}))
        await rig.rules.handle(Health("cam", {"fps": 9.0}))
        checks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checks
        await rig.rules.settled()

    asyncio.run(go())
    assert metrics(rig) == [{"bad_reads": 1}, {"bad_reads": 2}]
    assert metrics(rig, "cam") == [{"fps": 12.5}, {"fps": 9.0}]
