"""Serial integration tests: drivers against real protocol peers over pty pairs."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.support.pty import VirtualCable, virtual_cable


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[VirtualCable]:
    with virtual_cable(tmp_path) as made:
        yield made
