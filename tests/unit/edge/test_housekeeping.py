"""Plate text and snapshots are kept only as long as the retention limits say."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from edge.events import EventFactory
from edge.housekeeping import redact_plates
from edge.rules.alerts import AlertEngine, list_alerts
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


def test_a_plate_is_taken_out_of_every_event_and_cleared_alert_that_names_it(
    fresh_store: Store, factory: EventFactory
):
    """Past the limit a plate goes wherever it was written: a decision's plate and the words of
    its detail, an alert's detail, key and message, the acknowledgement and clearing that carry
    the key, and the guards' record of an alert that is over. An alert still open keeps it in
    the guards' record (they must see what it is about); its events lose it all the same."""
    plate, kept_plate = "津A12345", "津B77777"
    engine = AlertEngine(fresh_store, factory)
    blocked = f"plate.blocklisted:{plate}"

    async def history() -> None:
        decision = {"gate": "north-in", "plate": plate, "reason": "blocklisted"}
        fresh_store.append(
            factory.make("access.denied", {**decision, "detail": f"plate {plate} is blocklisted (stolen)"})
        )
        await engine.raise_("plate.blocklisted", blocked, f"north-in: plate {plate}", detail={"plate": plate})
        await engine.acknowledge(blocked, by="guard 2")
        await engine.clear(blocked, reason=f"no read of {plate} for 15 min")
        await engine.raise_(
            "fire_lane.blocked",
            "zone.blocked:cam:lane",
            f"fire lane: a vehicle has stood there for 12 min (plate {plate})",
            detail={"zone": "lane", "plate": plate},
        )

    asyncio.run(history())
    cutoff = int((datetime.now(UTC) + timedelta(minutes=1)).timestamp() * 1000)
    recent = fresh_store.append(plate_event(factory, kept_plate, days_ago=-1))
    assert redact_plates(fresh_store, cutoff) == 5
    bodies = [body for (body,) in fresh_store.read().execute("SELECT body FROM outbox ORDER BY seq")]
    assert not any(plate in body for body in bodies)
    assert kept_plate in bodies[-1] and recent.seq == 6, "a plate inside the limit stays"
    denied = fresh_store.events(types=["access.denied"])[0].payload
    assert (denied.plate, denied.detail) == (None, "plate [plate removed] is blocklisted (stolen)")
    raised = fresh_store.events(types=["alert.raised"])[0].payload
    assert (raised.key, raised.message) == (
        "plate.blocklisted:[plate removed]",
        "north-in: plate [plate removed]",
    )
    assert raised.detail == {"plate": None}
    records = {r.kind: r for r in list_alerts(fresh_store.read(), include_cleared=True)}
    assert plate not in records["plate.blocklisted"].key + records["plate.blocklisted"].message
    assert plate in records["fire_lane.blocked"].message, "an open alert keeps what the guards must see"
    assert redact_plates(fresh_store, cutoff) == 0, "a second pass has nothing left to do"
