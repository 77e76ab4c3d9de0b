"""Reading a class's backlog as batches ready to publish, against a real store."""

from __future__ import annotations

import json

from edge.events import Event, EventFactory, Priority
from edge.store import Store
from sync.backlog import Batch, next_batches
from tests.support.sync_helpers import GATEWAY, SITE

factory = EventFactory(SITE, GATEWAY)


def health(index: int) -> Event:
    return factory.make("device.health", {"metrics": {"cpu": index}}, device="cam-1")


def occupancy(index: int) -> Event:
    return factory.make("occupancy.sample", {"zone": "court", "count": index}, device="cam-1")


def alert(index: int) -> Event:
    return factory.make("alert.raised", {"alert_id": f"a{index}", "kind": "k", "key": f"k{index}"})


def read_all(store: Store, priority: int, size: int) -> list[Batch]:
    batches: list[Batch] = []
    after = 0
    while found := next_batches(store.read(), priority, after, size):
        batches += found
        after = max(batch.last for batch in found)
    return batches


def carried(batch: Batch) -> list[tuple[int, str]]:
    return [(item["seq"], item["type"]) for item in json.loads(batch.payload)]


def test_a_run_of_one_type_fills_every_batch(store: Store) -> None:
    seqs = [store.append(health(i)).seq for i in range(23)]
    batches = read_all(store, Priority.TELEMETRY, 5)
    assert [list(b.rowids) for b in batches] == [seqs[i : i + 5] for i in range(0, 23, 5)]
    for batch in batches:
        assert batch.type == "device.health" and batch.priority == Priority.TELEMETRY
        assert carried(batch) == [(seq, "device.health") for seq in batch.rowids]


def test_interleaved_types_and_classes_are_split_by_type_with_their_seqs(store: Store) -> None:
    made = []
    for index in range(40):
        made.append(
            store.append(alert(index) if index % 5 == 0 else (health, occupancy)[index % 3 % 2](index))
        )
    batches = read_all(store, Priority.TELEMETRY, 10)
    telemetry = [(e.seq, e.type) for e in made if e.type != "alert.raised"]
    assert sorted(pair for b in batches for pair in carried(b)) == telemetry
    for batch in batches:
        assert {kind for _, kind in carried(batch)} == {batch.type}
        assert [seq for seq, _ in carried(batch)] == list(batch.rowids)
        # one batch spans at most `size` seqs
        assert batch.last - batch.first < 10
    assert [seq for b in read_all(store, Priority.ALERT, 10) for seq in b.rowids] == [
        e.seq for e in made if e.type == "alert.raised"
    ]


def test_rows_below_the_stored_mark_or_synced_are_not_read(store: Store) -> None:
    seqs = [store.append(health(i)).seq for i in range(12)]
    store.mark_synced(rowids=[seqs[6]], through={Priority.TELEMETRY: seqs[3]})
    batches = read_all(store, Priority.TELEMETRY, 50)
    assert [list(b.rowids) for b in batches] == [seqs[4:6] + seqs[7:]]


def test_a_type_this_version_does_not_know_goes_out_in_its_own_batch(store: Store) -> None:
    first = store.append(health(0)).seq
    body = json.dumps({"id": "x", "type": "device.future", "seq": first + 1})
    store.write(
        lambda conn: conn.execute(
            "INSERT INTO outbox(seq, id, type, priority, ts_ms, body) "
            "VALUES (?, 'x', 'device.future', ?, 0, ?)",
            (first + 1, int(Priority.TELEMETRY), body),
        )
    )
    last = store.append(health(2)).seq
    batches = read_all(store, Priority.TELEMETRY, 10)
    assert [(b.type, list(b.rowids)) for b in batches] == [
        ("device.health", [first, last]),
        ("device.future", [first + 1]),
    ]
    assert json.loads(batches[1].payload) == [json.loads(body)]
