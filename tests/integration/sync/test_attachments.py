"""Plate crops and snapshots reach the community database through a real mosquitto, after the
events and at least once, on both engines; a property manager writes them out with
`gatehouse admin events --photos`. What cannot go (too large, its file gone) is recorded once,
not retried for ever; bytes that do not match their sha256 are refused by the ingest."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.cli import main
from edge.events import Attachment, EventFactory
from edge.store import Store
from sync.db import open_database
from sync.ingest import IngestWorker
from sync.topics import Topics
from sync.uplink import MAX_MESSAGE_BYTES, Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import SITE, wait_until

pytestmark = pytest.mark.broker


def crop(seed: int) -> bytes:
    """A small JPEG, as the plate pipeline keeps for each vehicle pass."""
    image = np.random.default_rng(seed).integers(0, 255, (48, 160, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data)


def plate_read(store: Store, factory: EventFactory, data: bytes, plate: str) -> str:
    digest, size = store.put_attachment(data)
    event = factory.make(
        "vehicle.plate",
        {"plate": plate, "confidence": 0.95, "lane": "north-in", "crop": digest},
        device="north-cam",
        attachments=(Attachment(sha256=digest, size=size, role="crop"),),
    )
    store.append(event)
    return digest


def uploads(store: Store) -> dict[str, tuple[bool, str | None]]:
    rows = store.read().execute("SELECT sha256, uploaded_ms IS NOT NULL, upload_skipped FROM attachments")
    return {digest: (bool(done), skipped) for digest, done, skipped in rows}


def test_crops_reach_the_database_and_a_property_manager_writes_them_out(
    shared_broker: TestBroker,
    store: Store,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = f"gw-att-{uuid.uuid4().hex[:6]}"
    factory = EventFactory(SITE, gateway)
    first = plate_read(store, factory, crop(1), "津A12345")
    too_large = os.urandom(MAX_MESSAGE_BYTES + 1)
    big, _ = store.put_attachment(too_large)
    gone, _ = store.put_attachment(crop(3))
    store.attachment_path(gone).unlink()
    config = shared_broker.mqtt_config()
    with (
        IngestWorker(db_url, config, name=f"att-{gateway}", session_expiry_s=0) as worker,
        open_database(db_url) as db,
    ):
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
            wait_until(lambda: uploads(store)[first] == (True, None), 15, "the crop acknowledged")
            later = plate_read(store, factory, crop(2), "津B54321")
            wait_until(lambda: uploads(store)[later] == (True, None), 15, "a crop taken while online")
            assert uplink.wait_synced(10)
        stored = db.query(
            "SELECT sha256, gateway_id, mime, size, data FROM attachments WHERE gateway_id = ?", (gateway,)
        )
        assert {row[0]: (row[1], row[2], row[3], bytes(row[4])) for row in stored} == {
            first: (gateway, "image/jpeg", len(crop(1)), crop(1)),
            later: (gateway, "image/jpeg", len(crop(2)), crop(2)),
        }
    state = uploads(store)
    assert state[big] == (
        False,
        f"{len(too_large)} bytes, more than a message may carry ({MAX_MESSAGE_BYTES})",
    )
    assert state[gone][0] is False and state[gone][1].startswith("its file cannot be read")

    photos = tmp_path / "photos"
    argv = ["admin", "--db", db_url, "events", "--gateway", gateway, "--tz", "UTC", "--photos", str(photos)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    files = sorted(photos.iterdir())
    assert [f.read_bytes() for f in files] == [crop(1), crop(2)]
    assert files[0].name.endswith(f"_north-in_津A12345_crop_{first[:8]}.jpg")
    assert f"[{files[0].name}]" in out.splitlines()[1] and f"[{files[1].name}]" in out.splitlines()[2]
    assert err.strip() == f"2 pictures in {photos}"


def test_an_attachment_nobody_received_is_sent_again_once_an_ingest_listens(
    broker: TestBroker, store: Store, tmp_path: Path
) -> None:
    """MQTT 5 says `no matching subscribers`: the crop is not taken for delivered."""
    gateway = f"gw-att-{uuid.uuid4().hex[:6]}"
    digest = plate_read(store, EventFactory(SITE, gateway), crop(4), "津C11111")
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    config = broker.mqtt_config()
    with Uplink(store, config, site=SITE, gateway=gateway) as uplink:
        wait_until(uplink.connected.is_set, 10, "the uplink to connect")
        wait_until(lambda: uplink.metrics.nacked > 0, 10, "the event refused for want of subscribers")
        assert uploads(store)[digest] == (False, None)
        with IngestWorker(db_url, config, name="late", session_expiry_s=0) as worker:
            wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
            wait_until(lambda: uploads(store)[digest] == (True, None), 30, "the crop sent again")
    with open_database(db_url) as db:
        assert db.query("SELECT data FROM attachments") == [(crop(4),)]


def test_bytes_that_do_not_match_their_sha256_are_refused(
    shared_broker: TestBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    claimed = hashlib.sha256(b"the real picture").hexdigest()
    topic = Topics(SITE, "gw-forger").attachment(claimed)
    with IngestWorker(db_url, shared_broker.mqtt_config(), name="forged", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker to connect")
        publisher.publish(topic, b"another picture", qos=1).wait_for_publish(5)
        wait_until(lambda: worker.stats.rejected == 1, 10, "the forged attachment refused")
    with open_database(db_url) as db:
        assert db.query("SELECT count(*) FROM attachments") == [(0,)]
        (reason,) = db.one("SELECT reason FROM rejected_messages WHERE topic = ?", (topic,)) or ("",)
        assert (
            reason
            == f"the bytes' sha256 is {hashlib.sha256(b'another picture').hexdigest()}, not the topic's"
        )
