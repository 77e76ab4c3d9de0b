"""A SIGKILL at any moment loses no event whose append() returned, and seq never repeats."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.children import REPO, child_env


def test_sigkill_twenty_times_loses_nothing(tmp_path: Path):
    db = tmp_path / "crash.db"
    side = tmp_path / "returned.txt"
    rng = random.Random(20261125)
    env = child_env()
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.store_child", str(db), str(side)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait(10)

    returned: dict[str, int] = {}
    for line in side.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # the last line may be cut by the kill
            returned[parts[0]] = int(parts[1])
    assert len(returned) > 100, "the child made too little progress to prove anything"

    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT id, seq FROM outbox"))
    missing = set(returned) - set(stored)
    assert not missing, f"{len(missing)} events whose append() returned were lost"
    assert all(stored[event_id] == seq for event_id, seq in returned.items())
    seqs = [row[0] for row in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    assert len(seqs) == len(set(seqs))
    assert len(set(returned.values())) == len(returned), "a seq was handed out twice"
