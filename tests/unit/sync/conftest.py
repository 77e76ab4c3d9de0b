"""Fixtures for the sync unit tests: a real store on a temporary file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gatehouse.db", synchronous="normal") as opened:
        yield opened
