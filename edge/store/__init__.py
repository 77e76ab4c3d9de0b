"""The local store (SQLite, WAL): outbox, attachments, allow-lists, devices, counters."""

from edge.store.store import Backlog, OutboxRow, Store

__all__ = ["Backlog", "OutboxRow", "Store"]
