"""Pty pairs and helpers for running drivers against protocol peers.

`VirtualCable` (in `drivers.serial.cable`) joins two ptys with stable paths; `unplug`/`replug`
pull and re-insert one end. `Recorder` is an `Emit` that keeps what a driver reported, and
`eventually` waits, with a limit, for a condition on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from drivers.base import Availability, Observation
from drivers.serial.cable import VirtualCable

T = TypeVar("T")

__all__ = ["Recorder", "VirtualCable", "eventually", "virtual_cable"]


@contextmanager
def virtual_cable(directory: Path, name: str = "cable") -> Iterator[VirtualCable]:
    cable = VirtualCable(directory, name)
    try:
        yield cable
    finally:
        cable.close()


class Recorder:
    """An `Emit` that keeps every observation and counts heartbeats."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.heartbeats = 0

    def __call__(self, observation: Observation) -> None:
        self.observations.append(observation)

    def alive(self) -> None:
        self.heartbeats += 1

    def of(self, kind: type[T]) -> list[T]:
        return [o for o in self.observations if isinstance(o, kind)]

    def availability(self) -> list[bool]:
        """What the driver said of its device, in order (True: it reaches it)."""
        return [o.online for o in self.of(Availability)]


async def eventually(condition: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Wait until `condition()` is truthy and return it; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)
