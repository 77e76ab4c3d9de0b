"""The gateway runtime: configuration → drivers (under the supervisor) → rules → store, and
commands back from the rules to the drivers.

    gateway = Gateway(config)
    await gateway.run(stop_event)        # until stop_event is set; then drains and closes

`gateway.store`, `gateway.rules`, `gateway.alerts`, `gateway.supervisor` are there for the CLI,
the uplink and tests; `await gateway.command(device_id, OpenGate())` acts on a device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import Command, Driver, DriverContext
from drivers.registry import driver_for
from edge.config_loader import resolve_secret
from edge.errors import AuthFailed, ConfigError, DeviceMisconfigured, DeviceNotReady, StoreFull
from edge.events import EventFactory
from edge.housekeeping import run_housekeeping
from edge.instance import InstanceLock
from edge.rules.alerts import AlertEngine
from edge.rules.engine import Rules
from edge.store import Store, make_state_dir
from edge.supervisor import DeviceStatus, ObservationQueue, Supervisor

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0


def open_store(config: Any, factory: EventFactory | None = None) -> Store:
    """The store at the configured place, with the configured quota and durability."""
    return Store(
        config.store_path,
        quota_bytes=int(config.store.quota_mb * 1024 * 1024),
        synchronous=config.store.synchronous,
        events=factory or EventFactory(config.site.id, config.gateway.id),
    )


def driver_context(config: Any) -> DriverContext:
    """What every driver of this configuration may know of the gateway."""
    return DriverContext(
        state_dir=str(config.gateway.state_dir),
        resolve_secret=lambda name: resolve_secret(name) or "",
        home_province=config.site.home_province,
        inference=config.inference,
    )


class Gateway:
    def __init__(
        self,
        config: Any,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        config_source: str | Path | None = None,
    ) -> None:
        self.config = config
        self.config_source = config_source
        self.reload_requested = False
        self._stop: asyncio.Event | None = None
        self.uplink: Any = None
        self.clock = clock
        self.factory = EventFactory(config.site.id, config.gateway.id)
        make_state_dir(Path(config.gateway.state_dir))
        # a gateway that opens its own store holds the state directory while it has it open
        self.instance = (
            InstanceLock(Path(config.gateway.state_dir), ZoneInfo(config.site.timezone))
            if store is None
            else None
        )
        if self.instance is not None:
            self.instance.acquire()
        try:
            self.store = store or open_store(config, self.factory)
            self.alerts = AlertEngine(self.store, self.factory, clock=clock)
            self.rules = Rules(config, self.store, self.factory, self.alerts, self.command, clock=clock)
            context = driver_context(config)
            self.drivers: dict[str, Driver] = {}
            for device in config.devices:
                if device.enabled:
                    self.drivers[device.id] = driver_for(device)(device, context)
        except BaseException:
            if self.instance is not None:
                self.instance.release()
            raise
        self.supervisor: Supervisor | None = None
        self.queue: ObservationQueue | None = None
        self.started = asyncio.Event()
        self.handled = 0

    async def command(self, device_id: str, command: Command) -> bool:
        """Send a command to a device; True when it was carried out. Failures are logged and
        reported, never raised into the rules (a reader whose LED fails must not stop the
        barrier opening); a caller that must know (a siren to switch off) retries on False."""
        driver = self.drivers.get(device_id)
        if driver is None or not driver.accepts(command):
            log.warning("no device %s accepting %s", device_id, type(command).__name__)
            return False
        name = type(command).__name__
        try:
            await asyncio.wait_for(driver.execute(command), COMMAND_TIMEOUT_S)
        except (TimeoutError, DeviceNotReady) as err:
            log.warning("%s on %s failed: %s", name, device_id, err or "timeout")
            return False
        except (DeviceMisconfigured, AuthFailed) as err:
            news = self.supervisor is None or await self.supervisor.command_refused(
                device_id, name, f"{name} refused: {err}"
            )
            log.log(
                logging.ERROR if news else logging.DEBUG, "%s on %s was refused: %s", name, device_id, err
            )
            return False
        if self.supervisor is not None:
            await self.supervisor.command_succeeded(device_id, name)
        return True

    async def _on_device_state(self, status: DeviceStatus, needs_person: bool, reason: str) -> None:
        threshold = self.config.supervisor.offline_alert_after
        row = (
            status.device,
            status.kind,
            "online" if status.online else "offline",
            int(status.since * 1000),
            status.last_error or None,
            status.restarts,
        )
        await self.store.write_async(
            lambda c: c.execute(
                "INSERT INTO devices(id, kind, state, since_ms, last_error, restarts) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, since_ms=excluded.since_ms, "
                "last_error=excluded.last_error, restarts=excluded.restarts",
                row,
            )
        )
        await self.rules.device_availability(
            status.device,
            status.online,
            reason,
            kind=status.kind,
            restarts=status.restarts,
            alert=needs_person or status.failures_in_row >= threshold,
        )

    async def _consume(self) -> None:
        assert self.queue is not None
        not_acted_on = 0  # observations the rules could not record (nor act on) since the store became full
        while True:
            observation = await self.queue.queue.get()
            try:
                await self.rules.handle(observation)
            except StoreFull as err:
                # every observation fails alike while the disk is full: say it when it starts
                if not not_acted_on:
                    log.error(
                        "%s from %s not acted on, nor any observation until the store has room: %s",
                        type(observation).__name__,
                        getattr(observation, "device", "?"),
                        err,
                    )
                not_acted_on += 1
            except Exception:
                log.exception("rules failed on %r", type(observation).__name__)
            else:
                if not_acted_on:
                    log.info(
                        "the store records again; %d observations were not acted on while it was full",
                        not_acted_on,
                    )
                    not_acted_on = 0
            finally:
                self.handled += 1
                self.queue.queue.task_done()

    async def reload_from_file(self) -> Any:
        """Validate the configuration file this gateway was started from and, when it is good,
        stop so that the caller starts again on it (config.reload, SIGHUP). Returns the new
        configuration; ConfigError (nothing changes) when the file has errors."""
        if self.config_source is None:
            raise ConfigError("this gateway was not started from a configuration file")
        from edge.config_loader import load_config

        config = await asyncio.to_thread(load_config, self.config_source)
        self.reload_requested = True
        if self._stop is not None:
            self._stop.set()
        return config

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        """The uplink to the community database and the downlink for its commands, when the
        configuration has an `mqtt:` section."""
        if self.config.mqtt is None:
            return
        from edge.commands import GatewayExecutor
        from sync import signing
        from sync.downlink import Downlink
        from sync.uplink import Uplink

        config = self.config
        downlink = Downlink(
            self.store,
            GatewayExecutor(self),
            site=config.site.id,
            gateway=config.gateway.id,
            key=config.gateway.signing_key,
            public_key=(
                signing.public_key(config.gateway.command_public_key)
                if config.gateway.command_public_key
                else None
            ),
            config=config.mqtt,
            clock=self.clock,
        )
        self.uplink = Uplink(
            self.store,
            config.mqtt,
            site=config.site.id,
            gateway=config.gateway.id,
            version=gatehouse_version(),
            inventory=config.inventory(),
            downlink=downlink,
        )
        self.uplink.start(command_loop=loop)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop the drivers, let the rules finish what is queued,
        say goodbye to the broker and close the store, within the configured shutdown time."""
        loop = asyncio.get_running_loop()
        self._stop = stop
        self.queue = ObservationQueue(loop, self.config.supervisor.queue_size)
        self.supervisor = Supervisor(
            list(self.drivers.values()),
            self.queue,
            self._on_device_state,
            restart_min_s=self.config.supervisor.restart_min_s,
            restart_max_s=self.config.supervisor.restart_max_s,
        )
        consumer = asyncio.create_task(self._consume(), name="rules")
        checks = asyncio.create_task(self.rules.run_checks(), name="rule-checks")
        housekeeping = asyncio.create_task(
            run_housekeeping(self.store, self.config.store.retention, clock=self.clock), name="retention"
        )
        drops = asyncio.create_task(self._count_drops(), name="drop-counter")
        self._start_sync(loop)
        self.supervisor.start()
        self.started.set()
        log.info(
            "gateway %s at site %s started: %d devices, store %s",
            self.config.gateway.id,
            self.config.site.id,
            len(self.drivers),
            self.store.path,
        )
        try:
            await stop.wait()
        finally:
            housekeeping.cancel()
            drops.cancel()
            await self._shutdown(consumer, checks)

    async def _shutdown(self, consumer: asyncio.Task[None], checks: asyncio.Task[None]) -> None:
        budget = self.config.supervisor.shutdown_timeout_s
        deadline = loop_time() + budget
        if self.supervisor is not None:
            await self.supervisor.stop(timeout=budget * 0.4)
        if self.queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.queue.join(), max(0.1, deadline - loop_time()))
        checks.cancel()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        with contextlib.suppress(asyncio.CancelledError):
            await checks  # it hands the health held back by thinning to the store as it ends
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.rules.settled(), max(0.1, deadline - loop_time()))
        if self.uplink is not None:
            # Give the broker a moment for what is still unsent; whatever is left goes next start.
            await asyncio.to_thread(self.uplink.wait_synced, max(0.0, (deadline - loop_time()) / 3))
            await asyncio.to_thread(self.uplink.stop, max(0.5, (deadline - loop_time()) / 2))
        stopped_ms = int(self.clock() * 1000)
        await self.store.write_async(
            lambda c: c.execute("UPDATE devices SET state='stopped', since_ms=?", (stopped_ms,))
        )
        await asyncio.to_thread(self.store.close, max(0.5, deadline - loop_time()))
        if self.instance is not None:
            self.instance.release()
        log.info("gateway %s stopped; store closed", self.config.gateway.id)

    async def _count_drops(self, interval_s: float = 5.0) -> None:
        """Persist the queue's drop counts (per device) so `gatehouse status` shows them."""
        recorded: dict[str, int] = {}
        while True:
            await asyncio.sleep(interval_s)
            for device, total in self.dropped().items():
                delta = total - recorded.get(device, 0)
                if delta:
                    await asyncio.to_thread(self.store.add_counter, f"dropped_observations.{device}", delta)
                    recorded[device] = total

    def dropped(self) -> dict[str, int]:
        return dict(self.queue.dropped) if self.queue else {}


def gatehouse_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gatehouse")
    except PackageNotFoundError:
        return "unknown"


def loop_time() -> float:
    return asyncio.get_running_loop().time()
