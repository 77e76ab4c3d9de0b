"""libosdp hands every event (and, on a peripheral, every command) to our callback and also keeps
a copy in its own queue for `get_event` / `get_command`. We act in the callback, so the copies
are discarded, or the queue would grow for as long as the line runs."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any


def discard_queued(fetch: Callable[[], Any]) -> None:
    """Call `fetch` until it returns None (libosdp's queue is empty), keeping nothing."""
    collections.deque(iter(fetch, None), maxlen=0)
