"""A gateway in a child process, for the SIGKILL fault test: a store, its uplink, and
optionally a producer appending telemetry while the uplink drains.

    python gateway_proc.py STORE_PATH PORT PRODUCE_COUNT RATE_MSGS_S
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from edge.events import EventFactory
from edge.store import Store
from sync.config import MqttConfig
from sync.uplink import Uplink
from tests.support.sync_helpers import GATEWAY, SITE, produce_fast


def main() -> None:
    store_path, port, count, rate = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    config = MqttConfig(
        port=port, batch_size=20, max_rate_msgs_s=rate, reconnect_min_s=0.2, reconnect_max_s=1
    )
    with Store(store_path, synchronous="normal") as store:
        uplink = Uplink(store, config, site=SITE, gateway=GATEWAY)
        uplink.start()
        if not uplink.connected.wait(10):
            print("not connected", flush=True)
            sys.exit(1)
        print("connected", flush=True)
        if count:
            produce_fast(store, EventFactory(SITE, GATEWAY), count, chunk=250)
            print("produced", flush=True)
        synced = uplink.wait_synced(120)
        print("synced" if synced else "not synced", flush=True)
        uplink.stop()
        threading.Event().wait(0.1)


if __name__ == "__main__":
    main()
