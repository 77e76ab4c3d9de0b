"""`gatehouse ingest`: the community side of the sync, MQTT into the community database."""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from edge.cli.common import add_command, count_of
from edge.logs import setup_logging

log = logging.getLogger(__name__)


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker (default: 127.0.0.1:1883 if it answers, else a started one)")
    group.add_argument("--host", help="broker host")
    group.add_argument("--port", type=int, help="broker port")
    group.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version (default 5)")
    group.add_argument("--username", help="broker user name")
    group.add_argument(
        "--password-env", metavar="NAME", help="read the broker password from this environment variable"
    )
    group.add_argument("--ca", help="CA certificate (PEM) for TLS")
    group.add_argument("--cert", help="client certificate (PEM) for TLS")
    group.add_argument("--key", help="client key (PEM) for TLS")


def broker_config(args: argparse.Namespace) -> Any:
    """The MqttConfig the arguments describe, or None to let ensure_broker choose."""
    from sync.config import MqttConfig, TlsConfig

    if args.host is None and args.port is None:
        return None
    fields: dict[str, Any] = {"host": args.host or "127.0.0.1", "protocol": args.protocol}
    if args.port is not None:
        fields["port"] = args.port
    if args.username:
        fields["username"] = args.username
    if args.password_env:
        fields["password"] = os.environ.get(args.password_env)
    if args.ca or args.cert:
        fields["tls"] = TlsConfig(ca=args.ca, cert=args.cert, key=args.key)
    return MqttConfig(**fields)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_main(
    db_url: str,
    config_json: str,
    name: str,
    session_expiry_s: int,
    signer_key: str | None,
    logs: tuple[bool, bool],
) -> None:
    from sync.config import MqttConfig
    from sync.ingest import IngestWorker

    # a spawned process starts without the parent's logging: its info lines would be lost
    json_lines, debug = logs
    setup_logging(json_lines=json_lines, debug=debug)
    signal.signal(signal.SIGTERM, _interrupt)
    worker = IngestWorker(
        db_url,
        MqttConfig.model_validate_json(config_json),
        name=name,
        session_expiry_s=session_expiry_s,
        signer_key=signer_key,
    )
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop()


def run_ingest(args: argparse.Namespace) -> int:
    from sync.broker import ensure_broker
    from sync.community import load_signer, signer_key_path
    from sync.db import open_database

    # JSON lines, as the gateway's: the service's journal is read by the same tools
    logs = (not args.text_logs, bool(args.debug))
    setup_logging(json_lines=logs[0], debug=logs[1])
    open_database(args.db).close()
    signer = signer_key_path(args.signer_key)
    if signer:
        # a wrong path would only show at the first version gap, as a gateway never updated
        load_signer(Path(signer))
    handle = ensure_broker(broker_config(args))
    if handle.kind not in ("configured", "local"):
        print(f"started {handle.kind} on {handle.config.host}:{handle.config.port}", flush=True)
    if not handle.shared_subscriptions and args.workers > 1:
        print(f"{handle.kind} has no shared subscriptions: running one worker", flush=True)
        args.workers = 1
    base = args.name or socket.gethostname().split(".")[0].lower()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_worker_main,
            args=(
                args.db,
                handle.config.model_dump_json(),
                f"{base}-{index}",
                args.session_expiry_s,
                args.signer_key,
                logs,
            ),
            daemon=True,
        )
        for index in range(1, args.workers)
    ]
    for child in children:
        child.start()
    from sync.ingest import IngestWorker

    worker = IngestWorker(
        args.db,
        handle.config,
        name=f"{base}-0",
        session_expiry_s=args.session_expiry_s,
        shared=handle.shared_subscriptions,
        signer_key=args.signer_key,
    ).start()
    print(
        f"ingest: {args.workers} worker(s) on {handle.config.host}:{handle.config.port} into {args.db}",
        flush=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(30):
                stats = worker.stats
                log.info(
                    "ingest: %d events, %d new, %d repeated", stats.events, stats.inserted, stats.duplicates
                )
    finally:
        worker.stop()
        for child in children:
            child.terminate()
            child.join(5)
        handle.close()
    return 0


def register(subparsers: Any) -> None:
    from sync.db import DEFAULT_URL
    from sync.ingest import DEFAULT_SESSION_EXPIRY_S

    parser = add_command(
        subparsers,
        "ingest",
        "store gateway events from MQTT into the community database",
        run_ingest,
        description=(
            "Subscribe to every gateway's events (shared subscription $share/ingest/...) and "
            "status, validate them, and write them into the community database. Several workers "
            "share the load; each keeps a short MQTT session (--session-expiry-s) so that a "
            "restarted worker picks up its unacknowledged messages while a dead one does not "
            "hold its share for long."
        ),
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_URL,
        help=f"sqlite:///path or postgresql://user@host/db (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--workers", type=count_of(1), default=1, help="worker processes in the group (default 1)"
    )
    parser.add_argument("--text-logs", action="store_true", help="plain text logs instead of JSON lines")
    parser.add_argument(
        "--name", help="worker name prefix; client ids are ingest-NAME-N (default: host name)"
    )
    parser.add_argument(
        "--session-expiry-s",
        type=int,
        default=DEFAULT_SESSION_EXPIRY_S,
        help=f"MQTT session expiry of each worker (default {DEFAULT_SESSION_EXPIRY_S})",
    )
    parser.add_argument(
        "--signer-key",
        metavar="FILE",
        help="the community's Ed25519 signing key (PEM), for the full allow-lists sent to gateways "
        "registered with --ed25519 (default: $GATEHOUSE_COMMAND_SIGNER_KEY)",
    )
    add_broker_arguments(parser)
