"""The pieces of `gatehouse provision` that need no broker: URLs, the mqtt: section edit, the
fingerprint, the CONNECT packet."""

from __future__ import annotations

import struct

import pytest

from edge.cli.provision import Broker, _connect_packet, fingerprint, mqtt_block, parse_broker, with_mqtt
from edge.errors import UsageError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtts://broker.example:8883", Broker("broker.example", 8883, True)),
        ("mqtts://broker.example", Broker("broker.example", 8883, True)),
        ("mqtt://10.0.0.5", Broker("10.0.0.5", 1883, False)),
        ("mqtt://10.0.0.5:1884", Broker("10.0.0.5", 1884, False)),
        ("broker.example", Broker("broker.example", 8883, True)),
    ],
)
def test_broker_urls(url: str, expected: Broker):
    assert parse_broker(url) == expected


@pytest.mark.parametrize("url", ["http://broker.example", "mqtts://", "mqtt://host:99999"])
def test_bad_broker_urls(url: str):
    with pytest.raises(UsageError, match="--broker"):
        parse_broker(url)


CONFIG = """# my notes stay
site:
  id: x
  salt: ${S}

mqtt:
  host: old.example
  port: 1883

# devices below
devices: []
"""


def test_mqtt_section_is_replaced_and_comments_kept():
    block = mqtt_block(
        Broker("new.example", 8883, True), "5", {"ca": "/etc/gatehouse/tls/ca.pem"}, None, False
    )
    text = with_mqtt(CONFIG, block)
    assert "old.example" not in text
    assert "# my notes stay" in text and "# devices below" in text
    assert (
        'mqtt:\n  host: "new.example"\n  port: 8883\n  protocol: "5"\n'
        '  tls:\n    ca: "/etc/gatehouse/tls/ca.pem"\n' in text
    )


def test_mqtt_section_is_added_with_password_reference():
    block = mqtt_block(Broker("b", 1883, False), "3.1.1", {}, "gw-north", True)
    text = with_mqtt("site:\n  id: x\n", block)
    assert text.endswith(
        'mqtt:\n  host: "b"\n  port: 1883\n  protocol: "3.1.1"\n  username: "gw-north"\n'
        "  password: ${GATEHOUSE_MQTT_PASSWORD}\n"
    )


def test_fingerprint_of_a_hex_key_hashes_its_bytes():
    # sha256 of 32 zero bytes is 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
    assert fingerprint("00" * 32) == "SHA256:6668:7aad:f862:bd77:6c8f:c18b:8e9f:8e20"
    assert fingerprint("01" * 32) != fingerprint("00" * 32)


def test_connect_packet_with_credentials():
    packet = _connect_packet("gw-probe", "user", "secret")
    assert packet[0] == 0x10
    length = packet[1]
    body = packet[2:]
    assert len(body) == length
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4
    assert body[7] == 0x80 | 0x40 | 0x02
    assert struct.unpack("!H", body[8:10]) == (30,)
    assert body[10:] == b"\x00\x08gw-probe\x00\x04user\x00\x06secret"


def test_mqtt_section_keeps_the_keys_provision_does_not_set():
    kept = {"host": "old.example", "topic_prefix": "lotus/v1", "keepalive_s": 120, "password": "${P}"}
    block = mqtt_block(Broker("new.example", 8883, True), "5", {}, None, False, kept)
    assert block == (
        'mqtt:\n  host: "new.example"\n  port: 8883\n  protocol: "5"\n  tls: {}\n'
        '  topic_prefix: "lotus/v1"\n  keepalive_s: 120\n'
    )
