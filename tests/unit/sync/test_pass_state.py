"""A pass reads the same state at the gateway (`gatehouse passes list`) and in the community
database (`gatehouse admin pass list`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.allowlist import PassRecord
from sync.community import IssuedPass

START = datetime(2026, 11, 1, 8, tzinfo=UTC)
END = START + timedelta(hours=10)


@pytest.mark.parametrize(
    ("now", "used", "revoked", "state"),
    [
        (START - timedelta(minutes=1), 0, False, "not yet valid"),
        (START + timedelta(hours=1), 0, False, "valid"),
        (START + timedelta(hours=1), 2, False, "used up"),
        (END, 2, False, "expired"),  # used up and over: expired, on both sides
        (END, 0, True, "revoked"),
    ],
)
def test_both_sides_name_a_pass_alike(now: datetime, used: int, revoked: bool, state: str):
    at_gateway = PassRecord(
        "p1", "visitor", "津A12345", None, None, None, _ms(START), _ms(END), (), 2, used, revoked, "upstream"
    )
    upstream = IssuedPass(
        "p1", "visitor", "津A12345", False, None, START, END, 2, "2026-11-01T09:00:00Z" if revoked else None,
        used, None,
    )  # fmt: skip
    assert at_gateway.state(_ms(now)) == upstream.state(now) == state


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
