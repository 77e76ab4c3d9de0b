"""`gatehouse run` (the daemon) and `gatehouse demo` (the same runtime on simulated devices,
with a live table of events)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edge.cli.common import add_command, config_path, load, own_command, positive
from edge.config_loader import load_config
from edge.errors import ConfigError
from edge.logs import setup_logging

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "config" / "demo.yaml"
DEMO_PROTOCOL_CONFIG = REPO_ROOT / "config" / "demo-protocol.yaml"
DEMO_CONFIG_COPY = "gatehouse-demo.yaml"
"""the demo's configuration as run, written into a --state-dir for the other commands"""
COMMUNITY_POLL_S = 5.0
DEMO_CONNECT_S = 5.0
DEMO_SHOW_S = 0.3
"""how often the demo's table looks for new events in the store"""


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "run", "run the gateway daemon (what the systemd service starts)", _run)
    parser.add_argument("--text-logs", action="store_true", help="plain text logs instead of JSON lines")
    demo = add_command(
        subparsers,
        "demo",
        "run the gateway on simulated devices and show events as they happen",
        _demo,
        description=(
            "Run the gateway on config/demo.yaml (simulated readers, barriers and a camera, a local "
            "store) and print a live table of events. Ctrl-C or --duration ends it."
        ),
    )
    demo.add_argument("--duration", type=positive, default=None, help="stop after this many seconds")
    demo.add_argument(
        "--state-dir",
        help="where the demo keeps its store (default: from the config); the configuration that "
        f"reaches it from the other commands is written there as {DEMO_CONFIG_COPY}",
    )
    demo.add_argument(
        "--protocol",
        action="store_true",
        help="run the real OSDP, Wiegand and Modbus drivers against protocol simulators on ptys "
        "(config/demo-protocol.yaml)",
    )
    demo.add_argument(
        "--no-sync",
        action="store_true",
        help="keep events local: no MQTT uplink and no community database",
    )


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _serve(config: Any, source: Path) -> None:
    """Run the gateway; after a `config.reload` command or SIGHUP (`systemctl reload gatehouse`),
    run it again on the file's new content."""
    from edge.config_loader import load_config
    from edge.gateway import Gateway
    from edge.systemd import notifying

    loop = asyncio.get_running_loop()
    while True:
        stop = asyncio.Event()
        install_stop_signals(stop)
        gateway = Gateway(config, config_source=source)
        loop.add_signal_handler(signal.SIGHUP, lambda gateway=gateway: _reload_later(gateway))
        async with notifying(gateway, stop):
            await gateway.run(stop)
        if not gateway.reload_requested:
            return
        config = await asyncio.to_thread(load_config, source)


def _reload_later(gateway: Any) -> None:
    task = asyncio.ensure_future(_reload(gateway))
    _reloads.add(task)
    task.add_done_callback(_reloads.discard)


_reloads: set[asyncio.Future[None]] = set()


async def _reload(gateway: Any) -> None:
    """SIGHUP: restart on the configuration file when it is valid; keep running on the old one
    (and say why) when it is not."""
    try:
        await gateway.reload_from_file()
    except ConfigError as err:
        log.error(
            "SIGHUP: %s has errors; still running the previous configuration:\n%s", gateway.config_source, err
        )
        return
    log.info("SIGHUP: restarting on %s", gateway.config_source)


def _run(args: argparse.Namespace) -> int:
    config = load(args)
    setup_logging(json_lines=not args.text_logs, debug=args.debug)
    asyncio.run(_serve(config, config_path(args)))
    return 0


def _demo_config(args: argparse.Namespace) -> Any:
    path = _demo_config_path(args)
    if not path.exists():
        raise ConfigError(f"{path}: demo configuration not found; pass --config config/demo.yaml")
    config = load_config(path)
    if args.state_dir:
        gateway = config.gateway.model_copy(update={"state_dir": args.state_dir})
        config = config.model_copy(update={"gateway": gateway})
    return config


def _demo_config_path(args: argparse.Namespace) -> Path:
    default = DEMO_PROTOCOL_CONFIG if args.protocol else DEMO_CONFIG
    return Path(args.config) if args.config else default


def _demo_config_for_cli(args: argparse.Namespace, config: Any) -> Path:
    """The configuration file the other commands (`events`, `alerts`, `status`) reach this demo's
    store with: the demo's own, or with --state-dir a copy of it in that folder naming it."""
    from edge.config_edit import copy_with_state_dir

    source = _demo_config_path(args)
    if not args.state_dir:
        return source
    copy = config.state_path / DEMO_CONFIG_COPY
    if copy.resolve() != source.resolve():
        copy_with_state_dir(source, copy, config.state_path)
    return copy


def seed_demo_allowlist(gateway: Any) -> dict[str, int]:
    """Put the simulated residents and visitors into the allow-list, as the community database
    would, so that the demo's decisions mean something."""
    from drivers.sim.population import Population
    from edge.allowlist import AllowList

    allow = AllowList(gateway.store, gateway.config.site.salt)
    seeds = {
        (d.population.seed, d.population.residents)
        for d in gateway.config.devices
        if hasattr(d, "population")
    }
    now_ms = int(time.time() * 1000)
    for seed, residents in seeds:
        people = Population(seed, residents, gateway.config.site.home_province or "津")
        for resident in people.residents:
            allow.add_credential(resident.card, resident.person, kind="card")
            if resident.plate:
                allow.add_plate(resident.plate, resident.person)
        for visitor in people.visitors:
            allow.issue_pass(
                kind="visitor",
                plate=visitor.plate,
                token=visitor.token,
                holder=visitor.name,
                valid_until_ms=now_ms + 24 * 3600 * 1000,
                max_entries=2,
                pass_id=f"demo-{visitor.name}",
            )
    return allow.counts()


def _community_line(db_url: str, config: Any, seen: int) -> tuple[str | None, int]:
    """What the community database holds from this gateway, when it changed."""
    from sync.db import open_database

    db = open_database(db_url)
    try:
        count = db.one(
            "SELECT count(*) FROM events WHERE site_id = ? AND gateway_id = ?",
            (config.site.id, config.gateway.id),
        )
        total = int(count[0]) if count else 0
        if total == seen:
            return None, seen
        gaps = db.seq_gaps(config.site.id, config.gateway.id)
        gap_text = "no seq gaps" if not gaps else f"seq gaps {gaps[:3]}"
        return f"  ⇢ community database: {total} events from {config.gateway.id} ({gap_text})", total
    finally:
        db.close()


async def _watch_community(db_url: str, config: Any, out: Any) -> None:
    seen = 0
    while True:
        await asyncio.sleep(COMMUNITY_POLL_S)
        line, seen = await asyncio.to_thread(_community_line, db_url, config, seen)
        if line:
            print(line, file=out, flush=True)


async def _demo_loop(config: Any, duration: float | None, out: Any, db_url: str | None) -> Counter[str]:
    from edge.cli.common import site_zone
    from edge.cli.events import HEADER, format_row
    from edge.gateway import Gateway
    from edge.store.queries import EventFilter, select_events

    stop = asyncio.Event()
    install_stop_signals(stop)
    gateway = Gateway(config)
    counts = seed_demo_allowlist(gateway)
    print(
        f"demo: site {config.site.id}, {len(config.devices)} devices, "
        f"{counts['credentials']} cards, {counts['plates']} plates, {counts['passes']} passes; "
        f"store {config.store_path}",
        file=out,
    )
    if config.mqtt is not None:
        print(
            f"demo: uplink to mqtt://{config.mqtt.host}:{config.mqtt.port}, community database {db_url}",
            file=out,
        )
    print(HEADER, file=out, flush=True)
    loop = asyncio.get_running_loop()
    seen: Counter[str] = Counter()
    zone = site_zone(config)
    shown = gateway.store.newest_seq()
    # its own read-only connection: it reads on after the gateway has closed the store
    conn = sqlite3.connect(f"file:{config.store_path}?mode=ro", uri=True, check_same_thread=False)
    reading = threading.Lock()

    def show_new() -> None:
        """Print what the store holds past the last row shown, whoever wrote it (the gateway, or
        a `gatehouse alerts ack` in another terminal)."""
        nonlocal shown
        with reading:
            for event in list(select_events(conn, EventFilter(), after_seq=shown, newest=False)):
                seen[event.type] += 1
                shown = event.seq
                print(format_row(event, zone), file=out, flush=True)

    async def show_as_recorded() -> None:
        while True:
            await asyncio.to_thread(show_new)
            await asyncio.sleep(DEMO_SHOW_S)

    printer = asyncio.create_task(show_as_recorded())
    watcher = asyncio.create_task(_watch_community(db_url, config, out)) if db_url else None
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        await gateway.run(stop)
    finally:
        printer.cancel()
        if watcher is not None:
            watcher.cancel()
    show_new()
    conn.close()
    if db_url:
        line, _ = await asyncio.to_thread(_community_line, db_url, config, -1)
        print(line, file=out, flush=True)
    return seen


def _register_demo_gateway(db_url: str, config: Any) -> None:
    """The demo's gateway registered in its community database with its site's salt and its
    signing key, as an installer does with `admin gateway add`: the admin commands (alert-ack,
    allow add, open-gate, pass issue) then work against the demo as they would in service."""
    from sync.community import Community
    from sync.db import open_database

    with open_database(db_url) as db:
        community = Community(db)
        community.add_site(config.site.id, salt=config.site.salt)
        community.register_gateway(config.site.id, config.gateway.id, config.gateway.signing_key)


def _demo(args: argparse.Namespace) -> int:
    config = _demo_config(args)
    setup_logging(json_lines=False, debug=args.debug, quiet=not args.debug)
    with contextlib.ExitStack() as stack:
        if args.protocol:
            from drivers.sim_peers import start_protocol_peers

            peers = stack.enter_context(start_protocol_peers(config))
            config = peers.config
            with _store_for_seeding(config) as allow:
                for number, card in enumerate(peers.credentials):
                    allow.add_credential(card, f"person-{number:04d}", kind="card")
            peers.start_traffic()
        db_url = None
        if not args.no_sync:
            from sync.ingest import local_ingest

            config.state_path.mkdir(parents=True, exist_ok=True)
            db_url = f"sqlite:///{(config.state_path / 'community.db').resolve()}"
            _register_demo_gateway(db_url, config)
            broker, ingest = local_ingest(db_url, config.mqtt)
            stack.callback(broker.close)
            stack.callback(ingest.stop)
            config = config.model_copy(update={"mqtt": broker.config})
            if not ingest.connected.wait(DEMO_CONNECT_S):
                print(f"demo: the ingest has not connected to the broker yet ({ingest.last_error})")
        with contextlib.suppress(KeyboardInterrupt):
            seen = asyncio.run(_demo_loop(config, args.duration, sys.stdout, db_url))
            total = sum(seen.values())
            parts = ", ".join(f"{n} {t}" for t, n in sorted(seen.items()))
            print(f"demo ended: {total} events recorded ({parts}).")
            command = own_command()
            shown = _demo_config_for_cli(args, config)
            print(f"Look again with: {command} --config {shown} events")
            if db_url:
                print(f"and the community side: {command} admin --db {db_url} events (or alerts, alert-ack)")
    return 0


@contextlib.contextmanager
def _store_for_seeding(config: Any) -> Any:
    from edge.allowlist import AllowList
    from edge.gateway import open_store

    store = open_store(config)
    try:
        yield AllowList(store, config.site.salt)
    finally:
        store.close()
