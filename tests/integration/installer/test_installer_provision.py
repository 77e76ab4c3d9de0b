"""`gatehouse provision` against a real mosquitto with TLS and `require_certificate true`:
a good certificate is accepted and the registration arrives; a wrong CA, an expired client
certificate, a client certificate from another CA and an unreachable broker are explained,
with no traceback and no change to the configuration."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli.init import credentials_directory
from edge.config_loader import load_config
from sync.broker import Mosquitto, find_mosquitto, free_port
from tests.integration.installer.cli_helpers import run_cli
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.broker
WAIT_S = 10.0
GATEHOUSE = "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))"


def doctor_on_the_broker(
    config: Path, credentials: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`gatehouse doctor` with every check but the configuration and the broker skipped."""
    skips = [
        arg
        for name in ("serial", "devices", "clock", "disk", "store", "models", "service")
        for arg in ("--skip", name)
    ]
    return run_cli(["--config", str(config), "doctor", "--credentials-dir", str(credentials), *skips], capsys)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (CI's .ci/run does this)")
    tls_port = free_port()
    workdir = tmp_path_factory.mktemp("mosquitto")
    passwords = workdir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gw-north", "right horse battery"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    broker = Mosquitto(
        workdir,
        extra=(
            f"password_file {passwords}",
            f"listener {tls_port} 127.0.0.1",
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "require_certificate true",
        ),
    )
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    broker.start()
    yield broker
    broker.stop()


def provision(
    config: Path, credentials: Path, broker: Mosquitto, ca: Path, cert: Path, key: Path, capsys
) -> tuple[int, str, str]:
    return run_cli(
        [
            "--config",
            str(config),
            "provision",
            "--broker",
            f"mqtts://127.0.0.1:{broker.tls_port}",  # type: ignore[attr-defined]
            "--ca",
            str(ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--credentials-dir",
            str(credentials),
            "--timeout",
            str(WAIT_S),
        ],
        capsys,
    )


def retained(port: int, topic: str) -> dict:
    """The retained message on `topic`, read from the broker's plain listener."""
    got: dict = {}
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-reader")

    def on_connect(c, userdata, flags, reason, props):
        c.subscribe(topic, qos=1)

    def on_message(c, userdata, message):
        got.update(json.loads(message.payload))
        arrived.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert arrived.wait(WAIT_S), f"no retained message on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_good_certificate_is_accepted_and_the_gateway_registers(initialised, tls_broker, pki, capsys):
    config, credentials = initialised
    code, out, err = provision(
        config, credentials, tls_broker, pki.ca, pki.client_cert, pki.client_key, capsys
    )
    assert code == 0, err
    assert f"TLS connection to 127.0.0.1:{tls_broker.tls_port} accepted" in out
    assert "registered: retained status 'provisioned' with 1 devices" in out
    assert "signing key fingerprint: SHA256:" in out

    text = config.read_text()
    assert "mqtt:\n" in text and f"port: {tls_broker.tls_port}" in text
    assert "# Written by `gatehouse init`" in text, "the comments of the file are kept"
    key = config.parent / "tls" / "gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    checked = subprocess.run(
        [sys.executable, "-c", GATEHOUSE, "--config", str(config), "config", "check"],
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr

    status = retained(tls_broker.port, "gatehouse/v1/lotus-garden/gw-north/status")
    assert status["state"] == "provisioned"
    assert status["devices"] == [
        {"id": "east-reader", "kind": "sim_reader", "name": "East door reader", "enabled": True}
    ]
    assert status["signing_key_fingerprint"].startswith("SHA256:")


def test_provisioning_again_keeps_the_mqtt_keys_it_does_not_set(initialised, tls_broker, pki, capsys):
    config, credentials = initialised
    config.write_text(
        config.read_text() + 'mqtt:\n  host: old.example\n  protocol: "3.1.1"\n  topic_prefix: lotus/v1\n'
        "  max_rate_msgs_s: 1000\n  keepalive_s: 120\n"
    )
    code, _out, err = provision(
        config, credentials, tls_broker, pki.ca, pki.client_cert, pki.client_key, capsys
    )
    assert code == 0, err
    with credentials_directory(credentials):
        mqtt_config = load_config(config).mqtt
    assert (mqtt_config.host, mqtt_config.port) == ("127.0.0.1", tls_broker.tls_port)
    assert mqtt_config.protocol == "3.1.1"
    assert (mqtt_config.topic_prefix, mqtt_config.max_rate_msgs_s, mqtt_config.keepalive_s) == (
        "lotus/v1",
        1000,
        120,
    )
    assert retained(tls_broker.port, "lotus/v1/lotus-garden/gw-north/status")["state"] == "provisioned"


def test_tls_files_provisioned_after_service_install_are_the_service_users(
    initialised, tls_broker, pki, capsys
):
    """After `service install` the configuration belongs to the service's user (uid/gid 65534
    stands in for it): a first client certificate provisioned then must not be a key only root may
    read, in a folder the service may not enter."""
    if os.geteuid() != 0:
        pytest.fail("this test gives a file away, which needs root (CI runs as root)")
    config, credentials = initialised
    os.chown(config, 65534, 65534)
    code, _out, err = provision(
        config, credentials, tls_broker, pki.ca, pki.client_cert, pki.client_key, capsys
    )
    assert code == 0, err
    tls = config.parent / "tls"
    assert (tls.stat().st_uid, tls.stat().st_gid, stat.S_IMODE(tls.stat().st_mode)) == (0, 65534, 0o750)
    for name, mode in (("gateway.key", 0o600), ("gateway.pem", 0o644), ("ca.pem", 0o644)):
        info = (tls / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, mode), name


def test_doctor_reaches_the_provisioned_broker_over_tls(initialised, tls_broker, pki, capsys):
    config, credentials = initialised
    code, _out, err = provision(
        config, credentials, tls_broker, pki.ca, pki.client_cert, pki.client_key, capsys
    )
    assert code == 0, err
    code, out, err = doctor_on_the_broker(config, credentials, capsys)
    assert code == 0, out + err
    assert f"[ OK ] broker: TLS connection to 127.0.0.1:{tls_broker.tls_port} accepted" in out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_ca", ["is not signed by the CA in", "wrong CA: pass --ca"]),
        (
            "expired",
            ["rejected client certificate", "expired on", "ask the community operator for a new one"],
        ),
        ("rogue", ["rejected client certificate", "issued by 'CN=rogue CA', not by the broker's CA"]),
    ],
)
def test_tls_problems_are_explained(initialised, tls_broker, pki, capsys, case, expected):
    config, credentials = initialised
    before = config.read_text()
    ca, cert, key = {
        "wrong_ca": (pki.other_ca, pki.client_cert, pki.client_key),
        "expired": (pki.ca, pki.expired_cert, pki.expired_key),
        "rogue": (pki.ca, pki.rogue_cert, pki.rogue_key),
    }[case]
    code, _out, err = provision(config, credentials, tls_broker, ca, cert, key, capsys)
    assert code == 1
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert config.read_text() == before, "nothing is written when the connection fails"


@pytest.mark.parametrize("password", ["right horse battery", "wrong horse"])
def test_user_name_and_password(initialised, tls_broker, capsys, monkeypatch, password):
    config, credentials = initialised
    monkeypatch.setenv("BROKER_PASSWORD", password)
    code, out, err = run_cli(
        [
            "--config",
            str(config),
            "provision",
            "--broker",
            f"mqtt://127.0.0.1:{tls_broker.port}",
            "--username",
            "gw-north",
            "--password-env",
            "BROKER_PASSWORD",
            "--credentials-dir",
            str(credentials),
            "--timeout",
            str(WAIT_S),
        ],
        capsys,
    )
    stored = credentials / "GATEHOUSE_MQTT_PASSWORD"
    if password == "wrong horse":
        assert code == 1
        assert f"127.0.0.1:{tls_broker.port} refused user name 'gw-north' or its password" in err
        assert not stored.exists()
        return
    assert code == 0, err
    assert f"connection to 127.0.0.1:{tls_broker.port} accepted" in out
    assert stored.read_text().strip() == password
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    text = config.read_text()
    assert 'username: "gw-north"' in text and "password: ${GATEHOUSE_MQTT_PASSWORD}" in text
    assert password not in text


def test_unreachable_broker_is_explained(initialised, capsys):
    config, credentials = initialised
    port = free_port()
    code, _out, err = run_cli(
        [
            "--config",
            str(config),
            "provision",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--credentials-dir",
            str(credentials),
            "--timeout",
            str(WAIT_S),
        ],
        capsys,
    )
    assert code == 1
    assert f"nothing accepts connections on 127.0.0.1:{port}; is the broker running?" in err


def test_provision_before_init_says_what_to_do(tmp_path, capsys):
    code, _out, err = run_cli(
        ["--config", str(tmp_path / "none.yaml"), "provision", "--broker", "mqtts://127.0.0.1:8883"], capsys
    )
    assert code == 2
    assert "run gatehouse init first" in err


def test_tls_to_a_plain_listener_is_explained(initialised, tls_broker, pki, capsys):
    """mqtts:// to the broker's plain port: mosquitto resets the TLS handshake; provision and the
    doctor say it is not a TLS port instead of an internal error."""
    config, credentials = initialised
    before = config.read_text()
    where = f"127.0.0.1:{tls_broker.port}"
    argv = ["--config", str(config), "provision", "--broker", f"mqtts://{where}", "--ca", str(pki.ca)]
    code, _out, err = run_cli(
        [*argv, "--credentials-dir", str(credentials), "--timeout", str(WAIT_S)], capsys
    )
    assert code == 1
    assert "internal error" not in err
    assert f"{where} closed the connection during the TLS handshake" in err
    assert f"--broker mqtt://{where}" in err
    assert config.read_text() == before

    config.write_text(
        before + f"\nmqtt:\n  host: 127.0.0.1\n  port: {tls_broker.port}\n  tls:\n    ca: {pki.ca}\n"
    )
    code, out, _err = doctor_on_the_broker(config, credentials, capsys)
    assert code == 1
    assert f"[FAIL] broker: {where} closed the connection during the TLS handshake" in out


def test_a_credentials_dir_that_does_not_exist_is_refused_before_anything(
    initialised, tmp_path, capsys, monkeypatch
):
    """install.md: a --credentials-dir that does not exist is an error. With the secrets in the
    environment provision would otherwise test the broker and then fail writing the password."""
    config, credentials = initialised
    for name in ("GATEHOUSE_SITE_SALT", "GATEHOUSE_SIGNING_KEY"):
        monkeypatch.setenv(name, (credentials / name).read_text().strip())
    monkeypatch.setenv("BROKER_PASSWORD", "right horse battery")
    missing = tmp_path / "no-such-credentials"
    argv = ["--config", str(config), "provision", "--broker", f"mqtt://127.0.0.1:{free_port()}"]
    argv += ["--username", "gw-north", "--password-env", "BROKER_PASSWORD", "--credentials-dir", str(missing)]
    code, _out, err = run_cli(argv, capsys)
    assert code == 2
    assert f"--credentials-dir {missing}: no such folder" in err


@pytest.mark.parametrize("flag", ["--ca", "--cert"])
def test_a_file_that_is_not_a_certificate_is_named(initialised, pki, tmp_path, capsys, flag):
    """Not a TLS failure of the broker, nor a key that does not belong: the file is not a
    certificate."""
    config, credentials = initialised
    wrong = tmp_path / "not-a-certificate.pem"
    wrong.write_text("gw-north:$7$101$not a certificate\n")
    files = {
        "--ca": str(pki.ca),
        "--cert": str(pki.client_cert),
        "--key": str(pki.client_key),
        flag: str(wrong),
    }
    argv = ["--config", str(config), "provision", "--broker", f"mqtts://127.0.0.1:{free_port()}"]
    argv += [*(word for pair in files.items() for word in pair), "--credentials-dir", str(credentials)]
    code, _out, err = run_cli(argv, capsys)
    assert code == 2
    assert f"{flag} {wrong}: not a PEM certificate" in err
