"""A real mosquitto for tests: a plain listener and a TLS one (client certificates required),
with a throw-away CA made with the `cryptography` package; stop, restart and freeze it.

    from tests.support.mosquitto import start_broker
    with start_broker(tmp_path) as broker:
        broker.port, broker.tls_port, broker.certs.ca, broker.freeze(), broker.restart()
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.broker import Mosquitto, find_mosquitto, free_port
from sync.config import MqttConfig, TlsConfig

HOW_TO_GET = "mosquitto is not installed: apt-get install mosquitto (CI's .ci/run does this)"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    subject: str,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(folder: Path) -> Certs:
    """A test CA, a server certificate for 127.0.0.1, a client certificate it signed, and a
    rogue client certificate signed by another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = Certs(
        *(
            folder / name
            for name in (
                "ca.pem",
                "server.pem",
                "server.key",
                "client.pem",
                "client.key",
                "rogue.pem",
                "rogue.key",
            )
        )
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("gatehouse test CA", _name("gatehouse test CA"), ca_key, ca_key, ca=True)
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for subject, cert_path, key_path, server in (
        ("127.0.0.1", paths.server_cert, paths.server_key, True),
        ("gw-tls", paths.client_cert, paths.client_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(subject, ca_cert.subject, ca_key, key, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _issue("gw-tls", _name("rogue CA"), rogue_ca_key, rogue_key)
    paths.rogue_cert.write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    _write_key(rogue_key, paths.rogue_key)
    return paths


class TestBroker(Mosquitto):
    """mosquitto with a plain listener on `port` and a TLS listener on `tls_port`."""

    __test__ = False

    def __init__(self, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        if find_mosquitto() is None:
            raise RuntimeError(HOW_TO_GET)
        self.certs = make_certs(workdir / "certs")
        self.tls_port = free_port()
        tls = (
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {self.certs.ca}",
            f"certfile {self.certs.server_cert}",
            f"keyfile {self.certs.server_key}",
            "require_certificate true",
        )
        super().__init__(workdir, extra=(*extra, *tls))

    def tls_config(self, *, rogue: bool = False, **overrides: Any) -> MqttConfig:
        cert, key = (
            (self.certs.rogue_cert, self.certs.rogue_key)
            if rogue
            else (self.certs.client_cert, self.certs.client_key)
        )
        return MqttConfig(
            host="127.0.0.1",
            port=self.tls_port,
            tls=TlsConfig(ca=str(self.certs.ca), cert=str(cert), key=str(key)),
            **overrides,
        )


def start_broker(workdir: Path, extra: tuple[str, ...] = ()) -> TestBroker:
    broker = TestBroker(workdir, extra)
    broker.start()
    return broker
