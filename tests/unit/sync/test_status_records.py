"""The uplink's status reports are recorded off the sender's thread, and a report that meets a
full disk is not lost: it goes with the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import StoreFull
from edge.events import EventFactory
from edge.store import Store
from sync.uplink import STATUS_KV, _Marker
from tests.support.sync_helpers import GATEWAY, SITE, produce


def test_a_report_that_meets_a_full_disk_goes_with_the_next_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a traceback every 30 s: the store and the alerts say the disk is full already."""
    factory = EventFactory(SITE, GATEWAY)
    store = Store(tmp_path / "full.db", synchronous="normal", events=factory, max_page_count=40)
    marker = _Marker(store)
    document = '{"state": "online", "padding": "' + "x" * 20_000 + '"}'
    try:
        with pytest.raises(StoreFull):
            for _ in range(5000):
                produce(store, factory, 1, "access.granted")
        marker.report(status=document, add={"sync.sent": 5}, values={"sync.last_puback_ms": 17})
        assert marker.flush(5)
        assert store.kv_get(STATUS_KV) is None and store.counter("sync.sent") == 0
        (said,) = [r for r in caplog.records if "cannot record the status report" in r.getMessage()]
        assert said.levelname == "WARNING" and said.exc_info is None

        store.write(lambda conn: conn.execute("DELETE FROM outbox"))
        marker.report(add={"sync.sent": 2})
        assert marker.flush(5)
        assert store.kv_get(STATUS_KV) == document
        assert store.counter("sync.sent") == 7
        assert store.counter("sync.last_puback_ms") == 17
    finally:
        marker.stop(5)
        store.close()
