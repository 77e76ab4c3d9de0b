"""A child process for the SIGKILL test: appends from 4 threads and records each id (with its
seq) to a side file after append() returned."""

from __future__ import annotations

import os
import sys
import threading

from edge.events import EventFactory
from edge.store import Store


def main(db: str, side: str) -> None:
    factory = EventFactory("crash-site", "gw-crash")
    store = Store(db, synchronous=sys.argv[3] if len(sys.argv) > 3 else "full", events=factory)
    lock = threading.Lock()
    out = open(side, "a", buffering=1)  # noqa: SIM115 - the process is killed, not closed

    def produce(worker: int) -> None:
        n = 0
        while True:
            n += 1
            event = factory.make(
                "access.granted",
                {"gate": "north", "reason": "resident", "subject": f"w{worker}-{n}"},
                device=f"reader-{worker}",
            )
            stored = store.append(event)
            with lock:
                out.write(f"{stored.id} {stored.seq}\n")

    for worker in range(4):
        threading.Thread(target=produce, args=(worker,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1], sys.argv[2])
