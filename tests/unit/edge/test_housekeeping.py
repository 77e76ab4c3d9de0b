"""Plate text and snapshots are kept only as long as the retention limits say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.events import EventFactory
from edge.housekeeping import redact_plates
from edge.store import Store


def plate_event(factory: EventFactory, plate: str, days_ago: float):
    ts = datetime.now(UTC) - timedelta(days=days_ago)
    return factory.make("vehicle.plate", {"plate": plate, "confidence": 0.9, "lane": "north"}, ts=ts)


def test_old_plate_text_is_blanked_new_is_kept(fresh_store: Store, factory: EventFactory):
    for i in range(4500):
        fresh_store.append(plate_event(factory, f"津A{i:05d}", days_ago=100))
    fresh_store.append(factory.make("gate.state", {"gate": "north", "state": "open"}))
    recent = fresh_store.append(plate_event(factory, "津B12345", days_ago=1))
    cutoff = int((datetime.now(UTC) - timedelta(days=90)).timestamp() * 1000)
    assert redact_plates(fresh_store, cutoff) == 4500
    kept = fresh_store.events(types=["vehicle.plate"], limit=10)
    assert kept[-1].id == recent.id and kept[-1].payload.plate == "津B12345"
    assert all(e.payload.plate is None for e in kept[:-1])
    assert redact_plates(fresh_store, cutoff) == 0, "a second pass has nothing left to do"
