"""The OSDP reader driver: card reads, PINs, tamper and power, LED/buzzer answers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import osdp

from drivers.base import (
    CardPresented,
    Command,
    Driver,
    DriverContext,
    Emit,
    Health,
    ReaderFeedback,
    Tamper,
)
from drivers.osdp.bus import OsdpBus, ReaderSlot
from drivers.osdp.config import OsdpReaderConfig
from drivers.serial.collect import CardCollector
from drivers.serial.port import LinkState
from drivers.wiegand.bits import WiegandError, bits_from_bytes, decode_bits
from edge.errors import DeviceNotReady

log = logging.getLogger(__name__)

COLOURS = {
    "red": osdp.CommandLEDColor.Red,
    "green": osdp.CommandLEDColor.Green,
    "amber": osdp.CommandLEDColor.Amber,
    "blue": osdp.CommandLEDColor.Blue,
    "magenta": osdp.CommandLEDColor.Magenta,
    "cyan": osdp.CommandLEDColor.Cyan,
    "white": osdp.CommandLEDColor.White,
}
ENTER_KEYS = {0x0D, ord("#")}
CLEAR_KEYS = {0x7F, ord("*")}
RAW_FORMATS = {int(osdp.CardFormat.Wiegand), int(osdp.CardFormat.Unspecified)}
FEEDBACK_WAIT_S = 2.0
"""`self_test` waits this long for the reader to take its answer (LED, beeps) before it stops the
Control Panel, which would drop commands still queued."""


def card_from_event(device: str, event: dict[str, Any], arrived: float) -> CardPresented:
    """A libosdp card-read event as a presented credential; raises WiegandError on bad parity
    or an unknown bit length."""
    data = bytes(event.get("data", b""))
    if int(event.get("format", -1)) in RAW_FORMATS:
        length = int(event.get("length", 0))
        card = decode_bits(bits_from_bytes(data, length), length)
        return CardPresented(device, card.credential, "card", card.format, arrived)
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        raise WiegandError("empty card data")
    return CardPresented(device, text, "card", "ascii", arrived)


class OsdpReader(Driver):
    kind = "osdp"
    config_model = OsdpReaderConfig
    config: OsdpReaderConfig

    def __init__(self, config: OsdpReaderConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.bad_reads = 0
        self._bus: OsdpBus | None = None
        self._slot: ReaderSlot | None = None
        self._pin = ""
        self._pin_at = 0.0
        self._tamper: bool | None = None
        self._power_lost: bool | None = None

    async def run(self, emit: Emit) -> None:
        slot = ReaderSlot(self.config, LinkState(self.id, emit))
        self._slot = slot
        self._bus = OsdpBus.attach(slot)
        dropped = 0
        try:
            while True:
                if slot.failure is not None:
                    raise slot.failure
                if slot.dropped != dropped:
                    dropped = slot.dropped
                    log.warning("%s: %d reader events dropped (the rules are behind)", self.id, dropped)
                    emit(Health(self.id, {"dropped_events": dropped}))
                try:
                    async with asyncio.timeout(1.0):
                        arrived, event = await slot.events.get()
                except TimeoutError:
                    emit.alive()
                    continue
                if slot.failure is not None:
                    raise slot.failure
                self._handle(event, arrived, emit)
                emit.alive()
        finally:
            await self._bus.detach(slot)
            self._bus = None
            self._slot = None

    def _handle(self, event: dict[str, Any], arrived: float, emit: Emit) -> None:
        kind = event.get("event")
        if kind == osdp.Event.CardRead:
            try:
                emit(card_from_event(self.id, event, arrived))
            except WiegandError as err:
                self.bad_reads += 1
                log.warning("%s: bad card read (%s); %d so far", self.id, err, self.bad_reads)
                emit(Health(self.id, {"bad_reads": self.bad_reads}))
        elif kind == osdp.Event.KeyPress:
            self._keys(bytes(event.get("data", b"")), arrived, emit)
        elif kind == osdp.Event.Status:
            self._status(event, emit)

    def _keys(self, data: bytes, arrived: float, emit: Emit) -> None:
        if self._pin and arrived - self._pin_at > self.config.pin_timeout_s:
            self._pin = ""
        self._pin_at = arrived
        for key in data:
            if key in ENTER_KEYS:
                if self._pin:
                    emit(CardPresented(self.id, self._pin, "pin", "keypad", arrived))
                self._pin = ""
            elif key in CLEAR_KEYS:
                self._pin = ""
            elif ord("0") <= key <= ord("9") and len(self._pin) < 16:
                self._pin += chr(key)

    def _status(self, event: dict[str, Any], emit: Emit) -> None:
        if event.get("type") != osdp.StatusReportType.Local:
            return
        report = bytes(event.get("report", b""))
        if len(report) >= 1:
            tamper = bool(report[0])
            if tamper != self._tamper:
                if self._tamper is not None or tamper:
                    detail = "reader casing opened" if tamper else "reader casing closed"
                    emit(Tamper(self.id, tamper, detail))
                self._tamper = tamper
        if len(report) >= 2:
            power_lost = bool(report[1])
            if power_lost != self._power_lost:
                if self._power_lost is not None or power_lost:
                    emit(Health(self.id, {"power": "lost" if power_lost else "ok"}, state_change=True))
                self._power_lost = power_lost

    def accepts(self, command: Command) -> bool:
        return isinstance(command, ReaderFeedback)

    async def execute(self, command: Command) -> None:
        if isinstance(command, ReaderFeedback):
            self._show(command)

    def _show(self, command: ReaderFeedback) -> int:
        """Queue the LED and buzzer commands of an answer; how many were queued."""
        bus, slot = self._bus, self._slot
        if bus is None or slot is None or not bus.online(slot):
            raise DeviceNotReady(f"{self.id} is offline; cannot show the answer")
        feedback = self.config.feedback
        reader = self.config.reader_number
        queued = 0
        if bus.capability(slot, osdp.Capability.LEDControl)[0] > 0:
            tenths = max(1, min(255, feedback.led_ms // 100))
            colour = feedback.granted_colour if command.granted else feedback.denied_colour
            queued += bus.submit(
                slot,
                {
                    "command": osdp.Command.LED,
                    "reader": reader,
                    "led_number": 0,
                    "control_code": 2,
                    "on_count": tenths,
                    "off_count": 0,
                    "on_color": COLOURS[colour],
                    "off_color": osdp.CommandLEDColor.Black,
                    "timer_count": tenths,
                    "temporary": True,
                },
            )
        beeps = feedback.granted_beeps if command.granted else feedback.denied_beeps
        if beeps and bus.capability(slot, osdp.Capability.AudibleControl)[0] > 0:
            queued += bus.submit(
                slot,
                {
                    "command": osdp.Command.Buzzer,
                    "reader": reader,
                    "control_code": 2,
                    "on_count": 2,
                    "off_count": 1,
                    "rep_count": beeps,
                },
            )
        return queued

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        """Wait for the reader to come online, then for a card or PIN, and show it."""
        collector = CardCollector()
        found = collector.cards
        task = asyncio.create_task(self.run(collector))
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        try:
            while time.monotonic() < deadline and not task.done():
                bus, slot = self._bus, self._slot
                if bus is not None and slot is not None and bus.online(slot):
                    break
                await asyncio.sleep(0.1)
            bus, slot = self._bus, self._slot
            if task.done():
                task.result()
            if bus is None or slot is None or not bus.online(slot):
                raise DeviceNotReady(
                    f"reader at OSDP address {self.config.address} on "
                    f"{self.config.serial.port} did not answer within {timeout_s:g} s; "
                    "try `gatehouse probe` on the port"
                )
            ident = bus.pd_id(slot)
            lines.append(
                f"reader at address {self.config.address} is online"
                f" ({'secure channel' if bus.secure(slot) else 'NO secure channel'})"
            )
            if ident is not None:
                lines.append(
                    f"vendor {ident.vendor_code:06x} model {ident.model} "
                    f"serial {ident.serial_number & 0xFFFFFFFF:08x} "
                    f"firmware {ident.firmware_version:06x}"
                )
            led = bus.capability(slot, osdp.Capability.LEDControl)[0] > 0
            buzzer = bus.capability(slot, osdp.Capability.AudibleControl)[0] > 0
            lines.append(f"LED control: {'yes' if led else 'no'}; buzzer: {'yes' if buzzer else 'no'}")
            lines.append("present a card (or type a PIN and #) ...")
            while time.monotonic() < deadline and not found and not task.done():
                await asyncio.sleep(0.1)
            if task.done():
                task.result()
            if not found:
                raise DeviceNotReady("\n".join([*lines, f"no card within {timeout_s:g} s"]))
            card = found[0]
            lines.append(f"read {card.kind} {card.credential} ({card.card_format})")
            done = slot.commands_done
            queued = self._show(ReaderFeedback(granted=True))
            shown_by = time.monotonic() + FEEDBACK_WAIT_S
            while slot.commands_done - done < queued and time.monotonic() < shown_by and not task.done():
                await asyncio.sleep(0.05)
            if slot.commands_done - done < queued:
                lines.append(f"the reader did not take the LED/buzzer commands within {FEEDBACK_WAIT_S:g} s")
            return "\n".join(lines)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
