"""One RS-485 line with OSDP readers on it, driven by one libosdp Control Panel.

libosdp wants every reader of a line when the Control Panel is made, while Gatehouse runs one
driver per reader. So the readers of a port attach to a shared `OsdpBus`; it (re)builds the
Control Panel when the set of readers changes, owns the serial port (a libosdp `Channel` over
`SerialPort`), reopens it after an unplug, and watches each reader:

- online/offline become `Availability` through each reader's `LinkState`;
- a reader that stays offline is disabled and re-enabled every `offline_retry_s`, because
  libosdp otherwise waits a fixed 300 s before it polls a dropped reader again;
- secure-channel handshakes that fail twice in a row while the reader is connecting (not
  when it drops while online: that is the line) mean the reader refused the key: the reader's
  driver raises `AuthFailed`. In install mode libosdp tries the configured key, then the
  factory key, and otherwise lets the reader online in clear text: that too is `AuthFailed`.
- each time a reader comes online (at start, after it was offline, after the port came back)
  it is asked for its local status (osdp_LSTAT): status reports tell only of changes, so a
  reader already open or on bad power would otherwise go unnoticed. The answer arrives as the
  same Status event a change gives, and the driver reports only what differs from what it knew.

libosdp calls back on its own thread; those calls only hop onto the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import osdp

from drivers.osdp.config import OsdpReaderConfig
from drivers.osdp.queues import discard_queued
from drivers.serial.config import SerialSettings
from drivers.serial.port import Backoff, LinkState, PortLost, SerialPort, reopen
from edge.errors import AuthFailed, DeviceMisconfigured, DeviceNotReady, GatehouseError

log = logging.getLogger(__name__)

SETTLE_S = 0.2
"""Readers attaching within this time share the first Control Panel build."""
WATCH_S = 0.1
REENABLE_PAUSE_S = 0.3
SC_REFUSALS = 2
"""A single failed handshake may be noise on the line; two in a row are a refused key."""
SC_STATUS = int(osdp.EventNotification.SecureChannelStatus)
PD_STATUS = int(osdp.EventNotification.PeripheralDeviceStatus)
COMMAND_STATUS = int(osdp.EventNotification.Command)
LOCAL_STATUS_REQUEST: dict[str, Any] = {
    "command": osdp.Command.Status,
    "type": osdp.StatusReportType.Local,
    "report": b"",
}
"""osdp_LSTAT: the reader answers with its tamper and power state. (The binding of libosdp 3.2.9
reads only "type"; other versions of it also read "report", empty in a request.)"""


REFRESH_S = 0.005
REPLY_GRACE_S = 0.05
"""Before a rebuilt Control Panel starts, replies still on their way to the old one are dropped
(a stale reply for another address sends a reader into libosdp's 300 s penalty)."""


class ControlPanel(osdp.ControlPanel):
    """libosdp's Control Panel, stepped every 5 ms instead of the binding's 20 ms: a card read
    waits for the next step on each side of the line, and this is most of its latency. One
    step is a short C call (no work when nothing is due)."""

    @staticmethod
    def refresh(event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                ctx.refresh()
            time.sleep(REFRESH_S)


class PortChannel(osdp.Channel):
    """libosdp's byte pipe, over a `SerialPort`; a failure marks the line lost."""

    def __init__(self, port: SerialPort) -> None:
        super().__init__()
        self.port = port
        self.lock = threading.Lock()
        self.lost: str | None = None

    def read(self, max_bytes: int) -> bytes:
        with self.lock:
            if self.lost or not self.port.is_open:
                return b""
            try:
                return self.port.read_nowait(max_bytes)
            except PortLost as err:
                self.lost = str(err)
                return b""

    def write(self, buf: bytes) -> int:
        with self.lock:
            if self.lost or not self.port.is_open:
                return 0
            try:
                return self.port.write_nowait(bytes(buf))
            except PortLost as err:
                self.lost = str(err)
                return 0

    def flush(self) -> None:
        return None


@dataclass
class ReaderSlot:
    """One reader's place on the bus: what its driver reads and what the bus knows of it."""

    config: OsdpReaderConfig
    link: LinkState
    events: asyncio.Queue[tuple[float, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=256)
    )
    dropped: int = 0
    failure: GatehouseError | None = None
    attached_at: float = field(default_factory=time.monotonic)
    offline_since: float | None = None
    seen_online: bool = False
    pd_online: bool = False
    """As libosdp last notified; a handshake failing while offline is a refused key."""
    sc_refusals: int = 0
    """Handshakes in a row that failed while connecting; at SC_REFUSALS the key is wrong."""
    disabled: bool = False
    """The bus disabled the reader to re-enable it: its notifications meanwhile are ours."""
    capabilities: dict[int, tuple[int, int]] | None = None
    key_set_reported: bool = False
    commands_done: int = 0
    """Commands libosdp has finished with this reader (answered or given up), as it notified."""

    @property
    def address(self) -> int:
        return self.config.address

    def fail(self, error: GatehouseError) -> None:
        if self.failure is None:
            self.failure = error
        self.link.down(str(error))
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait((0.0, {}))


class OsdpBus:
    _lines: ClassVar[dict[str, OsdpBus]] = {}

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.port = SerialPort(settings)
        self.channel = PortChannel(self.port)
        self.slots: list[ReaderSlot] = []
        self.cp: ControlPanel | None = None
        self._built: list[ReaderSlot] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reenabling: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    @classmethod
    def attach(cls, slot: ReaderSlot) -> OsdpBus:
        settings = slot.config.serial
        bus = cls._lines.get(settings.port)
        if bus is None or (bus._task is not None and bus._task.done()):
            bus = cls._lines[settings.port] = cls(settings)
        elif bus.settings != settings:
            raise DeviceMisconfigured(
                f"readers on {settings.port} disagree about the line settings; every reader on "
                "one RS-485 line needs the same baudrate, parity, stopbits and bytesize"
            )
        clash = [s for s in bus.slots if s.address == slot.address]
        if clash:
            raise DeviceMisconfigured(
                f"two readers on {settings.port} use OSDP address {slot.address}; give each "
                "reader its own address (its setup card or DIP switches) and configure it"
            )
        bus.slots.append(slot)
        bus._changed.set()
        if bus._task is None:
            bus._task = asyncio.create_task(bus._manage(), name=f"osdp-bus-{settings.port}")
        return bus

    async def detach(self, slot: ReaderSlot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        self._changed.set()
        if not self.slots:
            if self._lines.get(self.settings.port) is self:
                del self._lines[self.settings.port]
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._task, 5)
                self._task = None

    def online(self, slot: ReaderSlot) -> bool:
        return self.cp is not None and slot in self._built and self.cp.is_online(slot.address)

    def secure(self, slot: ReaderSlot) -> bool:
        return self.cp is not None and slot in self._built and self.cp.is_sc_active(slot.address)

    def capability(self, slot: ReaderSlot, capability: int) -> tuple[int, int]:
        """(compliance level, number of items) the reader reported; (0, 0) if it lacks it."""
        if self.cp is None or slot not in self._built:
            return (0, 0)
        if slot.capabilities is None:
            slot.capabilities = {}
        if capability not in slot.capabilities:
            level, items = self.cp.check_capability(slot.address, capability)
            slot.capabilities[capability] = (int(level), int(items))
        return slot.capabilities[capability]

    def pd_id(self, slot: ReaderSlot) -> osdp.PdId | None:
        if self.cp is None or slot not in self._built:
            return None
        return self.cp.get_pd_id(slot.address)

    def submit(self, slot: ReaderSlot, command: dict[str, Any]) -> bool:
        if self.cp is None or slot not in self._built:
            return False
        return bool(self.cp.submit_command(slot.address, command))

    # The manager task: builds the Control Panel and watches the line and the readers.

    async def _manage(self) -> None:
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        try:
            while self.slots:
                if self._changed.is_set():
                    await asyncio.sleep(SETTLE_S)
                    self._changed.clear()
                    await self._rebuild()
                if self.channel.lost:
                    await self._recover_port(backoff)
                    continue
                self._watch(time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_S):
                        await self._changed.wait()
        except GatehouseError as err:
            for slot in list(self.slots):
                slot.fail(err)
        except Exception as err:
            log.exception("OSDP line %s failed", self.settings.port)
            for slot in list(self.slots):
                slot.fail(DeviceNotReady(f"the OSDP line on {self.settings.port} failed: {err}"))
        finally:
            for task in list(self._reenabling):
                task.cancel()
            self._stop_cp()
            self.port.close()

    async def _rebuild(self) -> None:
        had_cp = self.cp is not None
        self._stop_cp()
        if not self.port.is_open:
            self.port.open()
        elif had_cp:
            await asyncio.sleep(REPLY_GRACE_S)
            self.port.discard_input()
        infos = []
        for slot in self.slots:
            flags = [osdp.LibFlag.EnableNotification]
            if slot.config.scbk and not slot.config.install_mode:
                flags.append(osdp.LibFlag.EnforceSecure)
            infos.append(
                osdp.PDInfo(
                    slot.address,
                    self.channel,
                    scbk=slot.config.key_bytes,
                    name=slot.config.id,
                    flags=flags,
                )
            )
            slot.capabilities = None
            slot.offline_since = None
            slot.pd_online = False
            slot.seen_online = False
            slot.attached_at = time.monotonic()
        built = list(self.slots)
        loop = self._loop

        def on_event(index: int, event: dict[str, Any]) -> int:
            arrived = time.monotonic()
            loop.call_soon_threadsafe(self._dispatch, built, index, arrived, event)
            return 0

        self.cp = ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=on_event)
        self._built = built
        self.cp.start()
        log.info("OSDP line %s: polling %d reader(s)", self.settings.port, len(built))

    def _stop_cp(self) -> None:
        if self.cp is not None:
            with contextlib.suppress(RuntimeError):
                self.cp.stop()
            self.cp = None
            self._built = []

    async def _recover_port(self, backoff: Backoff) -> None:
        reason = self.channel.lost or "line lost"
        for slot in self.slots:
            slot.link.down(reason)
            slot.capabilities = None
        with self.channel.lock:
            self.port.close()
        link = LinkState(self.settings.port)
        await reopen(self.port, link, backoff)
        with self.channel.lock:
            self.channel.lost = None
        log.info("OSDP line %s: port back; polling the readers again", self.settings.port)
        for slot in self.slots:
            await self._reenable(slot)

    async def _reenable(self, slot: ReaderSlot) -> None:
        if self.cp is None or slot not in self._built:
            return
        slot.disabled = True
        try:
            self.cp.disable_pd(slot.address)
            await asyncio.sleep(REENABLE_PAUSE_S)
            if self.cp is not None and slot in self._built:
                self.cp.enable_pd(slot.address)
        finally:
            slot.disabled = False
        slot.offline_since = time.monotonic()

    def _watch(self, now: float) -> None:
        if self.cp is None:
            return
        cp = self.cp
        for slot in self._built:
            discard_queued(lambda address=slot.address: cp.get_event(address, timeout=-1))
            if slot.failure is not None:
                continue
            if self.cp.is_online(slot.address):
                slot.offline_since = None
                slot.seen_online = True
                slot.link.up()
                continue
            if slot.offline_since is None:
                slot.offline_since = now
            if slot.seen_online or now - slot.attached_at >= slot.config.answer_timeout_s:
                slot.link.down(
                    f"reader at OSDP address {slot.address} on {self.settings.port} does not "
                    "answer; check its power, the A/B wiring, the address and "
                    f"{self.settings.baudrate} baud"
                )
            if now - slot.offline_since >= slot.config.offline_retry_s:
                slot.offline_since = now
                task = asyncio.create_task(self._reenable(slot), name=f"osdp-reenable-{slot.address}")
                self._reenabling.add(task)
                task.add_done_callback(self._reenabled)

    def _reenabled(self, task: asyncio.Task[None]) -> None:
        self._reenabling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("OSDP line %s: re-enabling a reader failed: %s", self.settings.port, task.exception())

    def _dispatch(self, built: list[ReaderSlot], index: int, arrived: float, event: dict[str, Any]) -> None:
        if built is not self._built or not 0 <= index < len(built):
            return
        slot = built[index]
        if event.get("event") == osdp.Event.Notification:
            self._notified(slot, event)
            return
        try:
            slot.events.put_nowait((arrived, event))
        except asyncio.QueueFull:
            slot.dropped += 1

    def _ask_local_status(self, slot: ReaderSlot) -> None:
        if not self.submit(slot, LOCAL_STATUS_REQUEST):
            log.warning(
                "%s: could not ask the reader for its tamper and power state; it is asked again "
                "when it next comes online",
                slot.config.id,
            )

    def _notified(self, slot: ReaderSlot, event: dict[str, Any]) -> None:
        kind, active, detail = event.get("type"), event.get("arg0"), event.get("arg1")
        if kind == COMMAND_STATUS:
            slot.commands_done += 1
            return
        if kind == PD_STATUS:
            slot.pd_online = bool(active)
            if active:
                slot.sc_refusals = 0
                if slot.config.install_mode and not self.secure(slot):
                    slot.fail(
                        AuthFailed(
                            f"reader at OSDP address {slot.address} on {self.settings.port} took neither "
                            "the configured key (scbk) nor the factory key in install mode, so it would "
                            "read cards in clear text: it has another key. Put that key in scbk and set "
                            "install_mode: false, or reset the reader to its factory key (see its manual)"
                        )
                    )
                else:
                    self._ask_local_status(slot)
            return
        if kind != SC_STATUS:
            return
        if active:
            if slot.config.install_mode and detail == 0 and not slot.key_set_reported:
                slot.key_set_reported = True
                log.warning(
                    "%s: the reader now uses the configured key; set install_mode: false", slot.config.id
                )
            return
        connecting = not slot.pd_online and not slot.disabled and not self.channel.lost
        if not connecting or not slot.config.scbk or slot.config.install_mode:
            return
        slot.sc_refusals += 1
        if slot.sc_refusals < SC_REFUSALS:
            slot.link.down(
                f"reader at OSDP address {slot.address} on {self.settings.port}: the secure channel "
                "handshake failed; retrying"
            )
            return
        slot.fail(
            AuthFailed(
                f"reader at OSDP address {slot.address} on {self.settings.port} refused the secure "
                "channel key (scbk): check the key, or set install_mode: true if the reader still has "
                "its factory key"
            )
        )
