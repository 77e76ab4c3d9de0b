"""A throw-away PKI for tests (provision, the TLS broker), made with the `cryptography` package: the broker's
CA and server certificate, a good client certificate, an expired one from the same CA, a
client certificate from another CA, and a CA the broker does not use."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    expired_cert: Path
    expired_key: Path
    rogue_cert: Path
    rogue_key: Path
    other_ca: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key


def _cert(
    path: Path,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    role: str,
    days: tuple[int, int] = (-1, 30),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=role == "ca", path_length=None), critical=True)
    )
    if role == "server":
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif role == "client":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(folder / name for name in Pki.__dataclass_fields__))
    ca_key = _key(folder / "ca.key")
    ca = _cert(pki.ca, "compound broker CA", ca_key, _name("compound broker CA"), ca_key, role="ca")
    _cert(pki.server_cert, "127.0.0.1", _key(pki.server_key), ca.subject, ca_key, role="server")
    _cert(pki.client_cert, "gw-north", _key(pki.client_key), ca.subject, ca_key, role="client")
    _cert(
        pki.expired_cert,
        "gw-north",
        _key(pki.expired_key),
        ca.subject,
        ca_key,
        role="client",
        days=(-60, -30),
    )
    rogue_ca_key = _key(folder / "rogue-ca.key")
    _cert(pki.rogue_cert, "gw-north", _key(pki.rogue_key), _name("rogue CA"), rogue_ca_key, role="client")
    other_key = _key(folder / "other-ca.key")
    _cert(pki.other_ca, "some other CA", other_key, _name("some other CA"), other_key, role="ca")
    return pki
