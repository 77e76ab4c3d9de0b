"""The local store (SQLite, WAL): outbox, attachments, allow-lists, devices, counters."""

from edge.store.queries import Backlog
from edge.store.store import OutboxRow, Store, make_state_dir

__all__ = ["Backlog", "OutboxRow", "Store", "make_state_dir"]
