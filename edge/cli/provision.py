"""`gatehouse provision`: connect this gateway to the community broker.

    gatehouse provision --broker mqtts://HOST:8883 --ca ca.pem --cert gw.pem --key gw.key
    gatehouse provision --broker mqtt://HOST --username gw-01 --password-env BROKER_PASSWORD

It tests the connection first and explains what fails (name, port, wrong CA, the broker's
certificate, a rejected or expired client certificate, a refused password), then copies the
TLS files next to the configuration, stores the password as a credential, writes the `mqtt:`
section, publishes a registration (the retained status with state "provisioned", the gateway's
devices and gates, which the ingest service records) and prints the signing key's fingerprint
for the community database."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from edge.cli.common import add_command, config_path, positive
from edge.cli.init import add_credentials_option, credentials_directory, existing_credentials_dir
from edge.errors import GatehouseError, UsageError
from edge.files import write_private

PASSWORD_NAME = "GATEHOUSE_MQTT_PASSWORD"
INSTALLED_UNIT = Path("/etc/systemd/system/gatehouse.service")
DEFAULT_TIMEOUT_S = 10.0
_MQTT_BLOCK = re.compile(r"^mqtt:.*?(?=^\S|\Z)", re.MULTILINE | re.DOTALL)
_CONNACK_CODES = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker is unavailable",
    4: "the broker refused the user name or password",
    5: "the broker says this client is not authorised (check its ACL and the certificate's name)",
}
_REJECTED_CERT_REASONS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_DECRYPT_ERROR",
    "ALERT_ACCESS_DENIED",
)


class ProvisionError(GatehouseError):
    """The broker cannot be used as given; the message says why and what to do."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a TLS connection; any may be absent."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "provision",
        "connect the gateway to the community broker, test it and register the gateway",
        _provision,
        description=(
            "Test the connection to the community broker and explain any failure (name, port, wrong "
            "CA, expired or rejected certificates, refused password); then copy the TLS files beside "
            "the configuration, store the password as a credential, write the mqtt: section, "
            "publish the gateway's registration and print the signing key's fingerprint."
        ),
    )
    parser.add_argument("--broker", required=True, help="mqtts://HOST[:8883] (TLS) or mqtt://HOST[:1883]")
    parser.add_argument("--ca", help="CA certificate (PEM) that signed the broker's certificate")
    parser.add_argument("--cert", help="this gateway's client certificate (PEM)")
    parser.add_argument("--key", help="this gateway's client key (PEM)")
    parser.add_argument("--username", help="broker user name (instead of, or with, a client certificate)")
    parser.add_argument(
        "--password-env",
        metavar="NAME",
        help="read the broker password from this environment variable (asked for on a terminal otherwise)",
    )
    parser.add_argument(
        "--protocol", choices=("5", "3.1.1"), help="MQTT version (default: the file's mqtt.protocol, else 5)"
    )
    add_credentials_option(parser, "where the secrets live, as written by gatehouse init")
    parser.add_argument(
        "--tls-dir",
        help="where the TLS files are copied (default: tls/ beside the configuration file)",
    )
    parser.add_argument(
        "--timeout",
        type=positive,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds per step (default {DEFAULT_TIMEOUT_S:g})",
    )


def parse_broker(url: str) -> Broker:
    parts = urlsplit(url if "://" in url else f"mqtts://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "ssl", "tls", "tcp") or not parts.hostname:
        raise UsageError(f"--broker {url!r}: write mqtts://HOST:8883 (TLS) or mqtt://HOST:1883")
    tls = parts.scheme in ("mqtts", "ssl", "tls")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as err:
        raise UsageError(f"--broker {url!r}: {err}") from err
    return Broker(parts.hostname, port, tls)


# what the certificates say


@dataclass(frozen=True)
class CertificateFacts:
    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime


def certificate_facts(path: str) -> CertificateFacts:
    """Subject, issuer and validity of a PEM certificate."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise ProvisionError(f"{path}: not a readable PEM certificate ({err})") from err
    return CertificateFacts(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def expiry_problem(path: str, now: datetime.datetime | None = None) -> str | None:
    facts = certificate_facts(path)
    moment = now or datetime.datetime.now(datetime.UTC)
    if moment > facts.not_after:
        return f"{path} expired on {facts.not_after:%Y-%m-%d %H:%M} UTC"
    if moment < facts.not_before:
        return (
            f"{path} is valid only from {facts.not_before:%Y-%m-%d %H:%M} UTC "
            "(or this gateway's clock is wrong)"
        )
    return None


def _check_files(args: argparse.Namespace, broker: Broker) -> None:
    for flag in ("ca", "cert", "key"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise UsageError(f"--{flag} {value}: no such file")
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together (the client certificate and its private key)")
    if not broker.tls and (args.ca or args.cert):
        raise UsageError(f"--ca/--cert need TLS: write --broker mqtts://{broker.host}:8883")
    for flag in ("ca", "cert"):
        value = getattr(args, flag)
        try:
            if value:
                certificate_facts(value)
        except ProvisionError as err:
            raise UsageError(
                f"--{flag} {value}: not a PEM certificate (-----BEGIN CERTIFICATE-----); "
                "give the certificate file the community operator sent"
            ) from err
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(args.cert, args.key)
        except ssl.SSLError as err:
            raise ProvisionError(
                f"--key {args.key} does not belong to --cert {args.cert} ({err.reason or err}); "
                "use the key that was generated with the certificate request"
            ) from err


# the connection test, with the standard library so that every TLS error keeps its reason


def _tls_context(args: TlsFiles) -> ssl.SSLContext:
    """The client's TLS context; a ProvisionError naming the file that cannot be used."""
    try:
        context = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
    except (ssl.SSLError, OSError) as err:
        raise ProvisionError(
            f"{args.ca}: not a CA certificate that can be used ({getattr(err, 'reason', None) or err}); "
            "give the CA certificate (PEM) the community operator sent"
        ) from err
    if args.cert:
        try:
            context.load_cert_chain(args.cert, args.key)
        except (ssl.SSLError, OSError) as err:
            raise ProvisionError(
                f"the client certificate {args.cert} and key {args.key} cannot be used together "
                f"({getattr(err, 'reason', None) or err}); use the key that was generated with the "
                "certificate request"
            ) from err
    return context


def _connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    def text(value: str) -> bytes:
        raw = value.encode()
        return struct.pack("!H", len(raw)) + raw

    flags = 0x02
    payload = text(client_id)
    if username is not None:
        flags |= 0x80
        payload += text(username)
        if password is not None:
            flags |= 0x40
            payload += text(password)
    body = text("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + payload
    length = len(body)
    encoded = b""
    while True:
        digit, length = length % 128, length // 128
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


def _rejected_certificate(err: Exception, args: TlsFiles, broker: Broker) -> ProvisionError:
    reason = str(getattr(err, "reason", None) or "connection closed after the handshake")
    where = f"{broker.host}:{broker.port}"
    if not args.cert:
        return ProvisionError(
            f"the broker at {where} rejected the connection without a client certificate ({reason}); "
            "it requires one: pass --cert gw.pem --key gw.key"
        )
    hints = []
    expired = expiry_problem(args.cert)
    if expired:
        hints.append(f"the certificate {expired}; ask the community operator for a new one")
    facts = certificate_facts(args.cert)
    if args.ca and not expired:
        ca = certificate_facts(args.ca)
        if facts.issuer != ca.subject:
            hints.append(
                f"it was issued by '{facts.issuer}', not by the broker's CA "
                f"'{ca.subject}'; ask for a certificate signed by the broker's CA"
            )
    if not hints:
        hints.append("the broker does not trust it; check which CA it accepts for client certificates")
    return ProvisionError(
        f"the broker at {where} rejected client certificate {args.cert} "
        f"(subject '{facts.subject}'; {reason}): " + "; ".join(hints)
    )


def _verify_failed(err: ssl.SSLCertVerificationError, args: TlsFiles, broker: Broker) -> ProvisionError:
    where = f"{broker.host}:{broker.port}"
    message = err.verify_message or str(err)
    if err.verify_code in (18, 19, 20, 21, 2):
        ca = f"the CA in {args.ca}" if args.ca else "the system's CA certificates"
        return ProvisionError(
            f"the broker's certificate at {where} is not signed by {ca} ({message}); wrong CA: pass "
            "--ca with the CA certificate the community operator gave you"
        )
    if err.verify_code == 10:
        return ProvisionError(
            f"the broker's certificate at {where} has expired ({message}); the broker's operator must "
            "renew it (or this gateway's clock is wrong: check `timedatectl`)"
        )
    if err.verify_code == 9:
        return ProvisionError(
            f"the broker's certificate at {where} is not valid yet ({message}); is this gateway's clock "
            "right? check `timedatectl`"
        )
    if err.verify_code == 62:
        return ProvisionError(
            f"the broker's certificate does not name {broker.host} ({message}); use the host name "
            "written in the certificate"
        )
    return ProvisionError(f"the broker's certificate at {where} is not accepted: {message}")


def test_connection(
    broker: Broker,
    args: TlsFiles,
    client_id: str,
    username: str | None,
    password: str | None,
    timeout: float,
) -> str:
    """Open the connection and wait for CONNACK; a ProvisionError explains any failure."""
    where = f"{broker.host}:{broker.port}"
    context = _tls_context(args) if broker.tls else None
    try:
        raw = socket.create_connection((broker.host, broker.port), timeout=timeout)
    except socket.gaierror as err:
        raise ProvisionError(
            f"cannot resolve {broker.host} ({err.strerror}); check the name and DNS"
        ) from err
    except ConnectionRefusedError as err:
        hint = " (TLS brokers usually listen on 8883)" if broker.tls and broker.port != 8883 else ""
        raise ProvisionError(f"nothing accepts connections on {where}{hint}; is the broker running?") from err
    except TimeoutError as err:
        raise ProvisionError(
            f"no answer from {where} within {timeout:g} s; a firewall or a wrong address?"
        ) from err
    except OSError as err:
        raise ProvisionError(f"cannot reach {where}: {err.strerror or err}") from err
    sock: socket.socket = raw
    try:
        sock.settimeout(timeout)
        if context is not None:
            try:
                sock = context.wrap_socket(raw, server_hostname=broker.host)
            except ssl.SSLCertVerificationError as err:
                raise _verify_failed(err, args, broker) from err
            except ssl.SSLError as err:
                if any(code in str(err.reason) for code in _REJECTED_CERT_REASONS):
                    raise _rejected_certificate(err, args, broker) from err
                raise ProvisionError(f"TLS with {where} failed: {err.reason or err}") from err
            except TimeoutError as err:
                raise ProvisionError(
                    f"{where} did not answer the TLS handshake within {timeout:g} s; is it a TLS port? "
                    f"(plain MQTT, usually port 1883, is written --broker mqtt://{where})"
                ) from err
            except OSError as err:
                # a plain MQTT listener takes the TLS hello for a bad packet and resets
                raise ProvisionError(
                    f"{where} closed the connection during the TLS handshake ({err.strerror or err}); is "
                    f"it a TLS port? (plain MQTT, usually port 1883, is written --broker mqtt://{where})"
                ) from err
        try:
            sock.sendall(_connect_packet(client_id, username, password))
            reply = _read_exactly(sock, 4)
            sock.sendall(b"\xe0\x00")
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, EOFError) as err:
            if broker.tls and args.cert:
                # TLS 1.3: the broker checks the client certificate after the handshake has
                # completed on our side, and refuses it by closing the connection
                raise _rejected_certificate(err, args, broker) from err
            tls_hint = "" if broker.tls else "; if it is a TLS port, write --broker mqtts://…"
            raise ProvisionError(f"{where} closed the connection before CONNACK{tls_hint}") from err
        except ssl.SSLError as err:
            if any(code in str(err.reason) for code in _REJECTED_CERT_REASONS):
                raise _rejected_certificate(err, args, broker) from err
            raise ProvisionError(f"TLS with {where} failed after the handshake: {err.reason or err}") from err
        except TimeoutError as err:
            raise ProvisionError(
                f"{where} accepted the connection but sent no CONNACK within {timeout:g} s; is it an "
                "MQTT broker (and TLS on a TLS port)?"
            ) from err
    finally:
        sock.close()
    if reply[0] != 0x20:
        raise ProvisionError(f"{where} answered with something that is not an MQTT CONNACK")
    if reply[3] in (4, 5) and username is not None:
        raise ProvisionError(
            f"{where} refused user name {username!r} or its password (CONNACK code {reply[3]}); check "
            "both with the community operator (--username, --password-env)"
        )
    if reply[3] != 0:
        raise ProvisionError(
            f"{where}: {_CONNACK_CODES.get(reply[3], f'connection refused, code {reply[3]}')}"
        )
    return f"{'TLS ' if broker.tls else ''}connection to {where} accepted"


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# storing what works


def _give(path: Path, uid: int, gid: int) -> None:
    """chown, when it changes anything; only root may give a file away."""
    if (uid, gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.chown(path, uid, gid)


def _install_tls(args: argparse.Namespace, folder: Path, config: Path) -> dict[str, str]:
    """Copy the TLS files into `folder`, owned as `service install` owns them: the files by the
    configuration's owner, a new folder by its group. Once the service is installed that is the
    `gatehouse` user, who must read the key; before, root."""
    owner = config.stat()
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o750)
        _give(folder, os.geteuid(), owner.st_gid)
    placed: dict[str, str] = {}
    for flag, name, mode in (
        ("ca", "ca.pem", 0o644),
        ("cert", "gateway.pem", 0o644),
        ("key", "gateway.key", 0o600),
    ):
        source = getattr(args, flag)
        if not source:
            continue
        target = folder / name
        if Path(source).resolve() != target.resolve():
            write_private(target, Path(source).read_text())
        target.chmod(mode)
        _give(target, owner.st_uid, owner.st_gid)
        placed[flag] = os.path.abspath(target)
    return placed


MANAGED_MQTT_KEYS = frozenset({"host", "port", "protocol", "username", "password", "tls"})


def current_mqtt(text: str) -> dict[str, Any]:
    """The `mqtt:` section of the configuration text as written (secrets still as ${NAME})."""
    data = yaml.safe_load(text)
    section = data.get("mqtt") if isinstance(data, dict) else None
    return section if isinstance(section, dict) else {}


def mqtt_block(
    broker: Broker,
    protocol: str,
    tls: dict[str, str],
    username: str | None,
    password: bool,
    kept: Mapping[str, Any] | None = None,
) -> str:
    """The `mqtt:` section provision writes: the broker, protocol and credentials it was given,
    then every other key of `kept` (the section as it was: topic_prefix, keepalive_s, ...)."""
    lines = [
        "mqtt:",
        f"  host: {json.dumps(broker.host)}",
        f"  port: {broker.port}",
        f'  protocol: "{protocol}"',
    ]
    if username is not None:
        lines.append(f"  username: {json.dumps(username)}")
    if password:
        lines.append(f"  password: ${{{PASSWORD_NAME}}}")
    if broker.tls:
        lines.append("  tls:")
        lines += [f"    {key}: {json.dumps(value)}" for key, value in tls.items()]
        if not tls:
            lines[-1] = "  tls: {}"
    lines += [
        f"  {key}: {json.dumps(value, ensure_ascii=False)}"
        for key, value in (kept or {}).items()
        if key not in MANAGED_MQTT_KEYS
    ]
    return "\n".join(lines) + "\n"


def with_mqtt(text: str, block: str) -> str:
    """The configuration text with its `mqtt:` section replaced (or added); comments elsewhere stay."""
    if _MQTT_BLOCK.search(text):
        return _MQTT_BLOCK.sub(lambda _: block + "\n", text, count=1)
    return text.rstrip("\n") + "\n\n" + block


def fingerprint(key: str) -> str:
    from sync.signing import key_bytes

    digest = hashlib.sha256(key_bytes(key)).hexdigest()
    return "SHA256:" + ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def registration(config: Any) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("gatehouse")
    except PackageNotFoundError:
        installed = "unknown"
    return {
        "state": "provisioned",
        "version": installed,
        "site": config.site.id,
        "gateway": config.gateway.id,
        "provisioned_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "signing_key_fingerprint": fingerprint(config.gateway.signing_key)
        if config.gateway.signing_key
        else None,
        **config.inventory(),
    }


def publish_registration(config: Any, timeout: float) -> str:
    """Publish the retained registration with QoS 1 and wait for the broker's PUBACK."""
    from sync.mqtt import MqttError, Session, connect, new_client, stop
    from sync.topics import Topics

    topic = Topics(config.site.id, config.gateway.id, config.mqtt.topic_prefix).status
    session = Session()
    client = new_client(config.mqtt, f"{config.gateway.id}-provision", clean=True)
    client.on_connect = session.on_connect
    client.on_disconnect = session.on_disconnect
    try:
        connect(
            client,
            config.mqtt,
            clean=True,
            session_expiry_s=0,
            connack=session.connack,
            outcome=session.outcome,
        )
    except MqttError as err:
        raise ProvisionError(f"the registration could not connect: {err}") from err
    try:
        info = client.publish(topic, json.dumps(registration(config)), qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as err:
            raise ProvisionError(f"the registration on {topic} was not sent: {err}") from err
        if not info.is_published():
            raise ProvisionError(
                f"the broker did not acknowledge the registration on {topic} within {timeout:g} s"
            )
    finally:
        stop(client)
    return topic


def _password(args: argparse.Namespace) -> str | None:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env {args.password_env}: that environment variable is not set")
        return value
    if args.username is not None and sys.stdin.isatty():
        return getpass.getpass(f"broker password for {args.username} (empty: none): ") or None
    return None


def _provision(args: argparse.Namespace) -> int:
    from edge.config_loader import parse_config

    target = config_path(args)
    if not target.is_file():
        raise UsageError(f"{target}: no configuration yet; run gatehouse init first")
    broker = parse_broker(args.broker)
    _check_files(args, broker)
    credentials_dir = existing_credentials_dir(args)
    password = _password(args)
    with credentials_directory(credentials_dir):
        current = parse_config(target.read_text(encoding="utf-8"), str(target))
    files = TlsFiles(args.ca, args.cert, args.key)
    print(
        test_connection(broker, files, f"{current.gateway.id}-probe", args.username, password, args.timeout)
    )
    expired = expiry_problem(args.cert) if args.cert else None
    if expired:
        print(f"warning: {expired}; the broker accepted it today, but renew it")
    tls = (
        _install_tls(args, Path(args.tls_dir) if args.tls_dir else target.parent / "tls", target)
        if broker.tls
        else {}
    )
    if password is not None:
        write_private(credentials_dir / PASSWORD_NAME, password + "\n")
        print(f"stored the broker password as {credentials_dir / PASSWORD_NAME} (mode 0600)")
    original = target.read_text(encoding="utf-8")
    protocol = args.protocol or (current.mqtt.protocol if current.mqtt is not None else "5")
    text = with_mqtt(
        original,
        mqtt_block(broker, protocol, tls, args.username, password is not None, current_mqtt(original)),
    )
    with credentials_directory(credentials_dir):
        config = parse_config(text, str(target))
    write_private(target, text)
    print(f"wrote the mqtt: section of {target}")
    topic = publish_registration(config, args.timeout)
    print(f"registered: retained status 'provisioned' with {len(config.devices)} devices on {topic}")
    if config.gateway.signing_key:
        print(f"signing key fingerprint: {fingerprint(config.gateway.signing_key)}")
        print(
            "give the key itself to the community database operator over a safe channel "
            f"({credentials_dir / 'GATEHOUSE_SIGNING_KEY'}); they register it with "
            f"`gatehouse admin gateway add {config.site.id} {config.gateway.id} --key-env NAME` "
            "and compare this fingerprint"
        )
    unit = INSTALLED_UNIT.read_text() if INSTALLED_UNIT.is_file() else ""
    if password is not None and unit and f"LoadCredential={PASSWORD_NAME}:" not in unit:
        print(
            f"{INSTALLED_UNIT} does not load the password yet: run `sudo gatehouse service install` "
            "again, then `sudo systemctl restart gatehouse`"
        )
    return 0
