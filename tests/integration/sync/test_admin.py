"""`gatehouse admin` against a real broker and gateway: allow-list deltas, the full list after a
version gap (sent by the ingest service), passes and open-gate, all signed with the gateway's key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.cli import main
from edge.store import Store
from sync import signing
from sync.commands import AllowEntry, Command
from sync.community import Community
from sync.db import open_database
from sync.downlink import Downlink
from sync.ingest import IngestWorker
from sync.uplink import Uplink
from tests.support.mosquitto import TestBroker
from tests.support.sync_helpers import KEY, SITE, wait_until

pytestmark = pytest.mark.broker
GATEWAY = "gw-admin"
SALT = "a-site-salt-of-some-length"


class Gate:
    def __init__(self) -> None:
        self.calls: list[Command] = []

    async def execute(self, command: Command) -> dict[str, Any]:
        self.calls.append(command)
        return {}


def register(admin: list[str], gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gatehouse admin … gateway add` for `gateway`, signing with KEY (HMAC)."""
    monkeypatch.setenv("GW_KEY", KEY)
    monkeypatch.setenv("SITE_SALT", SALT)
    argv = [*admin, "gateway", "add", SITE, gateway, "--key-env", "GW_KEY", "--salt-env", "SITE_SALT"]
    assert main(argv) == 0


def test_admin_commands_reach_the_gateway(
    shared_broker: TestBroker,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    broker_args = ["--db", db_url, "--host", "127.0.0.1", "--port", str(shared_broker.port)]
    register(["admin", *broker_args], GATEWAY, monkeypatch)
    csv_file = tmp_path / "residents.csv"
    csv_file.write_text(
        "kind,value,subject,gates\nplate,津a12345,unit-3-402,north-in\ncard,0012345678,unit-3-402,\n"
    )
    gate = Gate()
    # session_expiry_s=0: a worker whose session outlived the test would stay in the shared
    # group on this shared broker and be sent (and sit on) its share of later tests' events
    downlink = Downlink(store, gate, site=SITE, gateway=GATEWAY, key=KEY)
    config = shared_broker.mqtt_config()
    with (
        IngestWorker(db_url, config, name="admin", session_expiry_s=0) as worker,
        Uplink(store, config, site=SITE, gateway=GATEWAY, downlink=downlink) as uplink,
    ):
        wait_until(lambda: worker.connected.is_set() and uplink.connected.is_set(), 10, "connections")
        assert main(["admin", *broker_args, "allow", "import", SITE, GATEWAY, str(csv_file)]) == 0
        assert downlink.allowlist_version() == 1
        applied = gate.calls[-1].args
        assert {entry.kind for entry in applied.add} == {"plate", "card"}
        card = next(entry for entry in applied.add if entry.kind == "card")
        assert card.last4 == "5678" and "0012345678" not in card.value

        community = Community(open_database(db_url))
        community.allow_add(SITE, GATEWAY, [AllowEntry(kind="plate", value="津B00001", subject="unit-1-101")])
        assert (
            main(
                [
                    "admin",
                    *broker_args,
                    "allow",
                    "add",
                    SITE,
                    GATEWAY,
                    "--plate",
                    "津C00002",
                    "--subject",
                    "unit-2-202",
                ]
            )
            == 1
        )
        said = capsys.readouterr()
        assert "version_gap" in said.out
        assert "allowlist.apply refused (version_gap): the gateway holds another" in said.err
        wait_until(lambda: downlink.allowlist_version() == 3, 20, "the full list sent after the gap")
        full = gate.calls[-1].args
        assert full.full and len(full.add) == 4
        assert {e.value for e in full.add if e.kind == "plate"} == {"津A12345", "津B00001", "津C00002"}

        assert (
            main(
                ["admin", *broker_args, "pass", "issue", SITE, GATEWAY, "--plate", "津D00003", "--hours", "2"]
            )
            == 0
        )
        assert gate.calls[-1].name == "pass.issue" and gate.calls[-1].args.plate == "津D00003"
        assert main(["admin", *broker_args, "open-gate", SITE, GATEWAY, "north-in"]) == 0
        assert gate.calls[-1].name == "open_gate" and gate.calls[-1].args.gate == "north-in"

        db = open_database(db_url)
        wait_until(
            lambda: db.one("SELECT count(*) FROM commands WHERE ok IS NULL") == (0,),
            10,
            "every reply recorded",
        )
        db.execute(
            "INSERT INTO devices(site_id, gateway_id, id, kind, state) VALUES (?, ?, ?, ?, ?)",
            (SITE, GATEWAY, "east-lock", "modbus_gate", "offline"),
        )
        db.close()
        capsys.readouterr()
        assert main(["admin", "--db", db_url, "gateway", "list"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if f" {GATEWAY} " in line)
        assert row.split()[2:3] == ["online"] and "hmac-sha256" in row and " 3/3 " in row
        assert row.endswith("east-lock (offline)")
    assert (
        main(
            [
                "admin",
                "--db",
                db_url,
                "allow",
                "add",
                SITE,
                "gw-unknown",
                "--plate",
                "津X00001",
                "--subject",
                "u",
                "--no-send",
            ]
        )
        == 2
    )
    assert f"no gateway {SITE}/gw-unknown in the community database" in capsys.readouterr().err


def test_a_gateway_holding_only_the_community_public_key_takes_its_commands(
    shared_broker: TestBroker,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ed25519: the community signs with one private key, the gateway verifies with its public
    half, and no gateway secret is copied to the community database. The admin commands and the
    ingest's full allow-list after a version gap are both signed that way."""
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    signer = tmp_path / "community-commands.pem"
    monkeypatch.delenv("GATEHOUSE_COMMAND_SIGNER_KEY", raising=False)
    broker_args = ["--db", db_url, "--host", "127.0.0.1", "--port", str(shared_broker.port)]
    assert main(["admin", *broker_args, "gateway", "add", SITE, "gw-ed", "--ed25519"]) == 2
    assert "give its PEM file with --signer-key FILE" in capsys.readouterr().err

    assert main(["admin", "signer", "new", str(signer)]) == 0
    public = capsys.readouterr().out.split("gateway.command_public_key): ")[1].strip()
    assert oct(signer.stat().st_mode & 0o777) == "0o600"
    assert main(["admin", "signer", "show", str(signer)]) == 0
    assert capsys.readouterr().out.strip() == public
    assert main(["admin", "signer", "new", str(signer)]) == 2, "an existing key is not replaced by accident"

    signed = ["admin", *broker_args, "--signer-key", str(signer)]
    assert main([*signed, "gateway", "add", SITE, "gw-ed", "--ed25519"]) == 0
    assert f"command_public_key: {public}" in capsys.readouterr().out
    gate = Gate()
    downlink = Downlink(
        store, gate, site=SITE, gateway="gw-ed", key=None, public_key=signing.public_key(public)
    )
    config = shared_broker.mqtt_config()
    with (
        IngestWorker(db_url, config, name="admin-ed", session_expiry_s=0, signer_key=str(signer)) as worker,
        Uplink(store, config, site=SITE, gateway="gw-ed", downlink=downlink) as uplink,
    ):
        wait_until(lambda: worker.connected.is_set() and uplink.connected.is_set(), 10, "connections")
        assert main([*signed, "allow", "add", SITE, "gw-ed", "--plate", "津E00001", "--subject", "u"]) == 0
        assert gate.calls[-1].alg == "ed25519" and downlink.allowlist_version() == 1
        assert main([*signed, "open-gate", SITE, "gw-ed", "north-in"]) == 0
        assert gate.calls[-1].name == "open_gate" and gate.calls[-1].alg == "ed25519"

        Community(open_database(db_url), signer_key=str(signer)).allow_add(
            SITE, "gw-ed", [AllowEntry(kind="plate", value="津E00002", subject="u")]
        )
        assert main([*signed, "allow", "add", SITE, "gw-ed", "--plate", "津E00003", "--subject", "u"]) == 1
        wait_until(lambda: downlink.allowlist_version() == 3, 20, "the full list the ingest signed")
        assert gate.calls[-1].args.full and gate.calls[-1].alg == "ed25519"

    other = tmp_path / "other.pem"
    assert main(["admin", "signer", "new", str(other)]) == 0
    capsys.readouterr()
    impostor = ["admin", *broker_args, "--signer-key", str(other)]
    with Uplink(store, config, site=SITE, gateway="gw-ed", downlink=downlink) as uplink:
        wait_until(uplink.connected.is_set, 10, "connection")
        assert main([*impostor, "open-gate", SITE, "gw-ed", "north-in", "--wait-s", "5"]) == 1
    said = capsys.readouterr()
    assert '"bad_signature"' in said.out
    assert "open_gate refused (bad_signature): the gateway holds another key" in said.err
    assert [call.name for call in gate.calls].count("open_gate") == 1, "the impostor's gate stayed shut"


def test_the_ingest_service_finds_the_signing_key_systemd_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd (DynamicUser) the ingest cannot read a root-only key file; the unit loads it
    as the credential community-commands.pem, and that is where the community looks."""
    pem, public = signing.new_private_key_pem()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "community-commands.pem").write_bytes(pem)
    monkeypatch.delenv("GATEHOUSE_COMMAND_SIGNER_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    community = Community(open_database(f"sqlite:///{tmp_path / 'community.db'}"))
    community.register_gateway(SITE, "gw-ed", None)
    key = community.key(SITE, "gw-ed")
    assert isinstance(key, Ed25519PrivateKey) and signing.public_hex(key) == public


def test_a_change_the_admin_cannot_sign_is_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway that takes Ed25519 commands, and no signing key given: the allow-list change and
    the pass are refused before they are recorded. Otherwise the allow-list would be at a version
    the gateway was never sent, and the same command given again with the key a version later."""
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    signer = tmp_path / "community-commands.pem"
    signer.write_bytes(signing.new_private_key_pem()[0])
    monkeypatch.delenv("GATEHOUSE_COMMAND_SIGNER_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    admin = ["admin", "--db", db_url]
    assert main([*admin, "--signer-key", str(signer), "gateway", "add", SITE, "gw-ed", "--ed25519"]) == 0
    capsys.readouterr()
    assert (
        main([*admin, "allow", "add", SITE, "gw-ed", "--plate", "津E00001", "--subject", "u", "--no-send"])
        == 2
    )
    assert "give its PEM file with --signer-key FILE" in capsys.readouterr().err
    assert main([*admin, "pass", "issue", SITE, "gw-ed", "--plate", "津E00002", "--no-send"]) == 2
    db = open_database(db_url)
    assert Community(db).allowlist_version(SITE, "gw-ed") == 0
    assert db.one("SELECT count(*) FROM passes") == (0,)


def one_plate_not_sent(
    tmp_path: Path,
    gateway: str,
    plate: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """A community database with `gateway` registered and one plate added with --no-send; its URL."""
    db_url = f"sqlite:///{tmp_path / 'community.db'}"
    admin = ["admin", "--db", db_url]
    register(admin, gateway, monkeypatch)
    assert (
        main([*admin, "allow", "add", SITE, gateway, "--plate", plate, "--subject", "unit-5", "--no-send"])
        == 0
    )
    capsys.readouterr()
    return db_url


def test_a_gateway_that_comes_online_behind_the_allow_list_is_caught_up(
    shared_broker: TestBroker,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A change recorded while the gateway was away (or the broker down, or with --no-send)
    reaches it when it comes online, not only with the next change."""
    gateway = "gw-catchup"
    db_url = one_plate_not_sent(tmp_path, gateway, "津E00005", monkeypatch, capsys)
    downlink = Downlink(store, Gate(), site=SITE, gateway=gateway, key=KEY)
    config = shared_broker.mqtt_config()
    with IngestWorker(db_url, config, name="catchup", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker")
        with Uplink(store, config, site=SITE, gateway=gateway, downlink=downlink):
            wait_until(lambda: downlink.allowlist_version() == 1, 20, "the list sent when it came online")
        db = open_database(db_url)
        wait_until(
            lambda: db.one("SELECT applied_version FROM gateways WHERE id = ?", (gateway,)) == (1,),
            10,
            "the gateway's reply recorded",
        )
        db.close()


def test_a_gateway_whose_store_was_replaced_is_sent_its_allow_list_again(
    shared_broker: TestBroker,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store moved aside as corrupt starts again with an empty allow-list (version 0) while the
    community database holds the version the gateway confirmed: its online status says which
    version it holds, and the ingest sends it the whole list rather than leave every resident
    refused until the next change. The passes still to be used go again too."""
    gateway = "gw-replaced"
    db_url = one_plate_not_sent(tmp_path, gateway, "津E00006", monkeypatch, capsys)
    admin = ["admin", "--db", db_url]
    for plate in ("津F00001", "津F00002"):
        assert main([*admin, "pass", "issue", SITE, gateway, "--plate", plate, "--no-send"]) == 0
    revoked = capsys.readouterr().out.split("pass ")[-1].split()[0]
    assert main([*admin, "pass", "revoke", SITE, gateway, revoked, "--no-send"]) == 0
    config = shared_broker.mqtt_config()
    db = open_database(db_url)
    with IngestWorker(db_url, config, name="replaced", session_expiry_s=0) as worker:
        wait_until(worker.connected.is_set, 10, "the ingest worker")
        downlink = Downlink(store, Gate(), site=SITE, gateway=gateway, key=KEY)
        with Uplink(store, config, site=SITE, gateway=gateway, downlink=downlink):
            wait_until(lambda: downlink.allowlist_version() == 1, 20, "the list sent when it came online")
            wait_until(
                lambda: db.one("SELECT applied_version FROM gateways WHERE id = ?", (gateway,)) == (1,),
                10,
                "the gateway's reply recorded",
            )
        replaced = Store(tmp_path / "replaced.db", synchronous="normal")
        try:
            gate = Gate()
            downlink = Downlink(replaced, gate, site=SITE, gateway=gateway, key=KEY)
            with Uplink(replaced, config, site=SITE, gateway=gateway, downlink=downlink):
                wait_until(lambda: downlink.allowlist_version() == 1, 20, "the whole list sent again")
                wait_until(lambda: any(c.name == "pass.issue" for c in gate.calls), 20, "the pass sent again")
            assert [c.args.plate for c in gate.calls if c.name == "pass.issue"] == ["津F00001"], (
                "not the revoked"
            )
        finally:
            replaced.close()
    db.close()
