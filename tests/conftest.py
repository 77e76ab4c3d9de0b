"""Fixtures shared by every test: a fresh store, an event factory, the repository paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.events import EventFactory
from edge.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory("test-site", "gw-test")


@pytest.fixture
def fresh_store(tmp_path: Path, factory: EventFactory) -> Iterator[Store]:
    store = Store(tmp_path / "state" / "gatehouse.db", synchronous="normal", events=factory)
    yield store
    store.close()
