"""`gatehouse ingest` with two workers, and a broker that wants a user name and password."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge.errors import AuthFailed
from edge.events import EventFactory
from edge.store import Store
from sync import mqtt as mqttc
from sync.db import open_database
from sync.uplink import Uplink
from tests.support.children import REPO
from tests.support.mosquitto import TestBroker, start_broker
from tests.support.sync_helpers import SITE, produce_fast, stop_child, wait_for_line, wait_until

pytestmark = pytest.mark.broker


def test_ingest_command_with_two_workers(shared_broker: TestBroker, store: Store, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    name = f"cli-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable,
        "-c",
        "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))",
        "ingest",
        "--db",
        db_url,
        "--workers",
        "2",
        "--name",
        name,
        "--session-expiry-s",
        "0",
        "--host",
        "127.0.0.1",
        "--port",
        str(shared_broker.port),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # both workers say so, the second one from its own process too
        lines = [wait_for_line(process, b": connected to", 30) for _ in range(2)]
        workers = {re.search(rb"(ingest-[^\s:]+): connected to", line).group(1) for line in lines}  # type: ignore[union-attr]
        assert workers == {f"ingest-{name}-{index}".encode() for index in range(2)}
        said = [json.loads(line) for line in lines]  # JSON lines, as the gateway's, from both processes
        assert {entry["logger"] for entry in said} == {"sync.ingest"} and all("ts" in entry for entry in said)
        factory = EventFactory(SITE, "gw-cli")
        produce_fast(store, factory, 600)
        with Uplink(store, shared_broker.mqtt_config(batch_size=5), site=SITE, gateway="gw-cli") as uplink:
            assert uplink.wait_synced(30)
        db = open_database(db_url)
        wait_until(lambda: len(db.event_ids()) == 600, 30, "600 events from two workers")
        db.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        stop_child(process)


def test_username_and_password(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw-1", "s3cret"], check=True)
    broker = start_broker(tmp_path / "broker", ("allow_anonymous false", f"password_file {passwords}"))
    try:
        for password, ok in (("s3cret", True), ("wrong", False)):
            config = broker.mqtt_config(username="gw-1", password=password, connect_timeout_s=3)
            session = mqttc.Session()
            client = mqttc.new_client(config, "gw-1", clean=True)
            client.on_connect = session.on_connect
            client.on_disconnect = session.on_disconnect
            if ok:
                mqttc.connect(
                    client,
                    config,
                    clean=True,
                    session_expiry_s=0,
                    connack=session.connack,
                    outcome=session.outcome,
                )
                mqttc.stop(client)
            else:
                with pytest.raises(AuthFailed, match="credentials"):
                    mqttc.connect(
                        client,
                        config,
                        clean=True,
                        session_expiry_s=0,
                        connack=session.connack,
                        outcome=session.outcome,
                    )
    finally:
        broker.stop()


@pytest.mark.parametrize("bad", ["missing.pem", "not-a-key.pem"])
def test_an_unusable_signer_key_stops_the_ingest_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """Found at start, not at the first version gap as a gateway that never gets its full list."""
    from edge.cli import main

    (tmp_path / "not-a-key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    monkeypatch.delenv("GATEHOUSE_COMMAND_SIGNER_KEY", raising=False)
    db = f"sqlite:///{tmp_path / 'community.db'}"
    assert main(["ingest", "--db", db, "--signer-key", str(tmp_path / bad), "--host", "127.0.0.1"]) == 2
    assert f"{tmp_path / bad}: " in capsys.readouterr().err
