"""The whole loop with real parts: the gateway's events reach the community database through a
real mosquitto and the ingest service, and a signed command from upstream opens a barrier."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.base import CardPresented
from edge.allowlist import AllowList
from edge.config_loader import parse_config
from edge.gateway import Gateway
from sync import commands
from sync.broker import Mosquitto
from sync.db import open_database
from sync.ingest import IngestWorker

KEY = "k" * 64

CONFIG = """\
site: {{id: loop-site, salt: test-salt-long-enough}}
gateway: {{id: gw-loop, state_dir: {state}, signing_key: {key}}}
store: {{synchronous: normal}}
mqtt: {{host: 127.0.0.1, port: {port}}}
gates:
  - {{id: east-door, kind: pedestrian, barrier: lock, readers: [reader]}}
devices:
  - {{kind: sim_lane, id: lock, travel_s: 0.05, open_hold_s: 0.1, stuck_probability: 0}}
  - {{kind: sim_reader, id: reader, interval_s: 3600}}
"""


async def until(predicate, timeout: float = 15.0) -> None:
    """Poll `predicate` in a worker thread (it may query a database) until it holds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def community_types(db_url: str) -> set[str]:
    db = open_database(db_url)
    try:
        return {row[0] for row in db.query("SELECT type FROM events")}
    finally:
        db.close()


@pytest.mark.broker
def test_events_reach_the_community_database_and_a_signed_command_opens_the_door(tmp_path: Path):
    broker = Mosquitto(tmp_path / "broker").start()
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    config: Any = parse_config(
        CONFIG.format(state=tmp_path / "state", key=KEY, port=broker.port), "loop.yaml"
    )
    ingest = IngestWorker(db_url, config.mqtt).start()
    replies: list[dict[str, Any]] = []
    operator = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator-test")
    operator.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    operator.connect("127.0.0.1", broker.port)
    operator.subscribe("gatehouse/v1/loop-site/gw-loop/cmd/open_gate/reply", qos=1)
    operator.loop_start()

    async def scenario() -> None:
        gateway = Gateway(config)
        AllowList(gateway.store, config.site.salt).add_credential("12345678", "person-1")
        stop = asyncio.Event()
        runner = asyncio.create_task(gateway.run(stop))
        await gateway.started.wait()
        gateway.queue.put(CardPresented("reader", "12345678"))
        await until(lambda: "access.granted" in community_types(db_url))
        await until(lambda: gateway.drivers["lock"].state == "closed")
        document = commands.build(
            "open_gate", {"gate": "east-door", "by": "guard-7"}, site="loop-site", gateway="gw-loop", key=KEY
        )
        opens_before = gateway.drivers["lock"].opens
        operator.publish("gatehouse/v1/loop-site/gw-loop/cmd/open_gate", json.dumps(document), qos=1)
        await until(lambda: bool(replies))
        assert replies[0]["ok"] is True, replies[0]

        await until(lambda: gateway.drivers["lock"].opens == opens_before + 1)
        operator_grant = [
            e for e in gateway.store.events(types=["access.granted"]) if e.payload.reason == "operator"
        ]
        assert len(operator_grant) == 1
        await until(lambda: "device.online" in community_types(db_url))
        await until(lambda: gateway.store.backlog().count == 0)
        stop.set()
        await asyncio.wait_for(runner, 15)

    try:
        asyncio.run(scenario())
        assert {"access.granted", "gate.state", "device.online"} <= community_types(db_url)
        db = open_database(db_url)
        assert db.seq_gaps("loop-site", "gw-loop") == []
        # the online status carries the configuration's devices and gates, with their states
        assert sorted(db.query("SELECT id, kind, state FROM devices WHERE gateway_id = 'gw-loop'")) == [
            ("lock", "sim_lane", "online"),
            ("reader", "sim_reader", "online"),
        ]
        assert db.query("SELECT id, kind FROM gates WHERE gateway_id = 'gw-loop'") == [
            ("east-door", "pedestrian")
        ]
        db.close()
    finally:
        operator.loop_stop()
        operator.disconnect()
        ingest.stop()
        broker.stop()
