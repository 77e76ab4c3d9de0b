"""Writes that fail inside the store's own transaction, as a failing card or a full disk would."""

from __future__ import annotations

from edge.store import Store


def failing_inserts(store: Store, types: str, error: str) -> None:
    """Make the store's writer fail to insert events whose type is LIKE `types`, with `error`
    ("database or disk is full" reads as a full disk)."""
    store.write(
        lambda conn: conn.execute(
            f"CREATE TEMP TRIGGER failing BEFORE INSERT ON outbox WHEN NEW.type LIKE '{types}' "
            f"BEGIN SELECT RAISE(ABORT, '{error}'); END"
        )
    )


def working_inserts(store: Store) -> None:
    store.write(lambda conn: conn.execute("DROP TRIGGER temp.failing"))
