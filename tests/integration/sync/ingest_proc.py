"""An ingest worker in a child process, for the killed-worker fault test.

python ingest_proc.py DB_URL PORT NAME
"""

from __future__ import annotations

import sys

from sync.config import MqttConfig
from sync.ingest import IngestWorker


def main() -> None:
    db_url, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    config = MqttConfig(port=port, reconnect_min_s=0.2, reconnect_max_s=1)
    worker = IngestWorker(db_url, config, name=name, session_expiry_s=60).start()
    if not worker.connected.wait(10):
        print("not connected", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    worker.run_forever()


if __name__ == "__main__":
    main()
