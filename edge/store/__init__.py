"""The local store (SQLite, WAL): outbox, attachments, allow-lists, devices, counters."""

from edge.store.queries import Backlog
from edge.store.store import OutboxRow, Store, insert_alert, make_state_dir

__all__ = ["Backlog", "OutboxRow", "Store", "insert_alert", "make_state_dir"]
