import random

from sync.mqtt import backoff_delay


def test_backoff_is_jittered_and_bounded() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 1.0, 60.0, rng) for attempt in range(40)]
    assert all(0.5 <= delay <= 60.0 for delay in delays)
    assert len({round(d, 3) for d in delays}) > 30
    assert max(backoff_delay(0, 1.0, 60.0, rng) for _ in range(100)) <= 1.0
