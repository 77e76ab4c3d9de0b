"""`gatehouse run` (the daemon) and `gatehouse demo` (the same runtime on simulated devices,
with a live table of events)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edge.cli.common import add_command, config_path, load
from edge.config_loader import load_config
from edge.errors import ConfigError
from edge.logs import setup_logging

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "config" / "demo.yaml"


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
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--state-dir", help="where the demo keeps its store (default: from the config)")


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _serve(config: Any, source: Path) -> None:
    """Run the gateway; after a `config.reload` command, run it again on the file's new content."""
    from edge.config_loader import load_config
    from edge.gateway import Gateway
    from edge.systemd import notifying

    while True:
        stop = asyncio.Event()
        install_stop_signals(stop)
        gateway = Gateway(config, config_source=source)
        async with notifying(gateway, stop):
            await gateway.run(stop)
        if not gateway.reload_requested:
            return
        config = await asyncio.to_thread(load_config, source)


def _run(args: argparse.Namespace) -> int:
    config = load(args)
    setup_logging(json_lines=not args.text_logs, debug=args.debug)
    asyncio.run(_serve(config, config_path(args)))
    return 0


def _demo_config(args: argparse.Namespace) -> Any:
    path = Path(args.config) if args.config else DEMO_CONFIG
    if not path.exists():
        raise ConfigError(f"{path}: demo configuration not found; pass --config config/demo.yaml")
    config = load_config(path)
    if args.state_dir:
        gateway = config.gateway.model_copy(update={"state_dir": args.state_dir})
        config = config.model_copy(update={"gateway": gateway})
    return config


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


async def _demo_loop(config: Any, duration: float | None, out: Any) -> Counter[str]:
    from edge.cli.events import HEADER, format_row
    from edge.events import Event
    from edge.gateway import Gateway

    stop = asyncio.Event()
    install_stop_signals(stop)
    gateway = Gateway(config)
    counts = seed_demo_allowlist(gateway)
    print(
        f"demo: site {config.site.id}, {len(config.devices)} simulated devices, "
        f"{counts['credentials']} cards, {counts['plates']} plates, {counts['passes']} passes; "
        f"store {config.store_path}",
        file=out,
    )
    print(HEADER, file=out, flush=True)
    loop = asyncio.get_running_loop()
    seen: Counter[str] = Counter()

    def show(rows: list[Any]) -> None:
        for row in rows:
            event = Event.model_validate_json(row.body)
            seen[event.type] += 1
            loop.call_soon_threadsafe(lambda e=event: print(format_row(e), file=out, flush=True))

    gateway.store.add_commit_listener(show)
    if duration is not None:
        loop.call_later(duration, stop.set)
    await gateway.run(stop)
    return seen


def _demo(args: argparse.Namespace) -> int:
    config = _demo_config(args)
    setup_logging(json_lines=False, debug=args.debug, quiet=not args.debug)
    with contextlib.suppress(KeyboardInterrupt):
        seen = asyncio.run(_demo_loop(config, args.duration, sys.stdout))
        total = sum(seen.values())
        parts = ", ".join(f"{n} {t}" for t, n in sorted(seen.items()))
        print(f"demo ended: {total} events recorded ({parts}).")
        print(
            f"Look again with: gatehouse --config {config_path(args) if args.config else DEMO_CONFIG} events"
        )
    return 0
