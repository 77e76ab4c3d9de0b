"""OSDP readers for the demo and the tests: libosdp `PeripheralDevice`s on a serial port.

Several readers can share one port (a multi-drop line): every reader sees every byte and
answers only its own address, as on RS-485. A reader without a key starts in install mode
(factory key SCBK-D) and keeps the key a Control Panel gives it, like a real reader's flash.
Every command the reader receives (LED, buzzer, key set, status request) is recorded with its
time. A reader keeps its local status (tamper, power) and tells it when it changes (`report`)
and when the Control Panel asks (osdp_LSTAT).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import osdp
import serial

from drivers.osdp.queues import discard_queued
from drivers.wiegand.bits import bits_to_bytes, encode_bits


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    at: float
    command: dict[str, Any]

    @property
    def kind(self) -> int:
        return int(self.command.get("command", -1))


class _PeripheralDevice(osdp.PeripheralDevice):
    """A reader that answers within milliseconds, as real ones do (the binding steps every
    20 ms)."""

    @staticmethod
    def refresh(event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                ctx.refresh()
            time.sleep(0.002)


class _Line:
    """One open port shared by the simulated readers on it."""

    def __init__(self, port: str, baudrate: int) -> None:
        self.serial = serial.Serial(port, baudrate, timeout=0)
        self.lock = threading.Lock()
        self.inboxes: list[bytearray] = []

    def channel(self) -> _ReaderChannel:
        inbox = bytearray()
        self.inboxes.append(inbox)
        return _ReaderChannel(self, inbox)

    def pull(self) -> None:
        try:
            data = self.serial.read(4096)
        except (serial.SerialException, OSError, TypeError):
            return
        for inbox in self.inboxes:
            inbox.extend(data)

    def close(self) -> None:
        self.serial.close()


class _ReaderChannel(osdp.Channel):
    def __init__(self, line: _Line, inbox: bytearray) -> None:
        super().__init__()
        self.line = line
        self.inbox = inbox

    def read(self, max_bytes: int) -> bytes:
        with self.line.lock:
            self.line.pull()
            data = bytes(self.inbox[:max_bytes])
            del self.inbox[:max_bytes]
            return data

    def write(self, buf: bytes) -> int:
        with self.line.lock:
            try:
                return int(self.line.serial.write(bytes(buf)) or 0)
            except (serial.SerialException, OSError, TypeError):
                return 0

    def flush(self) -> None:
        return None


@dataclass
class SimReader:
    """One reader: its address, its key (None: factory state, install mode) and its features."""

    address: int = 0
    scbk: bytes | None = None
    led: bool = True
    buzzer: bool = True
    tamper: bool = False
    """Its casing is open."""
    power_lost: bool = False
    commands: list[ReceivedCommand] = field(default_factory=list)
    listeners: list[Callable[[ReceivedCommand], None]] = field(default_factory=list)
    pd: osdp.PeripheralDevice | None = None

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        received = ReceivedCommand(time.monotonic(), dict(command))
        if self.pd is not None:
            pd = self.pd
            discard_queued(lambda: pd.get_command(timeout=-1))
        if received.kind == osdp.Command.Keyset:
            self.scbk = bytes(command["data"])
        if received.kind == osdp.Command.Status and command.get("type") == osdp.StatusReportType.Local:
            self._local_status_asked()
        self.commands.append(received)
        for listener in self.listeners:
            listener(received)
        return 0, None

    def received(self, kind: int) -> list[ReceivedCommand]:
        return [c for c in self.commands if c.kind == kind]

    def _submit(self, event: dict[str, Any]) -> None:
        if self.pd is None:
            raise RuntimeError("the simulated reader is not running")
        self.pd.submit_event(event)

    def present_bits(self, value: int, length: int) -> None:
        self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "format": osdp.CardFormat.Wiegand,
                "direction": 0,
                "length": length,
                "data": bits_to_bytes(value, length),
            }
        )

    def present_card(self, facility: int, number: int, length: int = 26) -> None:
        self.present_bits(encode_bits(facility, number, length), length)

    def press(self, keys: str) -> None:
        self._submit({"event": osdp.Event.KeyPress, "reader_no": 0, "data": keys.encode()})

    def _local_status(self) -> dict[str, Any]:
        return {
            "event": osdp.Event.Status,
            "type": osdp.StatusReportType.Local,
            "nr_entries": 2,
            "report": bytes([int(self.tamper), int(self.power_lost)]),
        }

    def _local_status_asked(self) -> None:
        """libosdp 3.2's PeripheralDevice answers osdp_LSTAT with "all clear" whatever the command
        handler returns (its binding carries only the report type of a status command), so a
        reader that is not all clear sends its state as a status report right after the answer,
        on the next poll. Called on the reader's thread, which holds the binding's lock: hence
        the event goes straight to libosdp."""
        if self.pd is not None and (self.tamper or self.power_lost):
            self.pd.ctx.submit_event(self._local_status())

    def report(self, tamper: bool = False, power_lost: bool = False) -> None:
        """The casing or the power changed: the reader keeps the new state and reports it."""
        self.tamper, self.power_lost = tamper, power_lost
        self._submit(self._local_status())

    def is_secure(self) -> bool:
        return bool(self.pd is not None and self.pd.is_sc_active())


class ReaderLineSim:
    """Simulated readers answering on `port` until `stop()`."""

    def __init__(self, port: str, readers: list[SimReader], baudrate: int = 9600) -> None:
        self.port = port
        self.readers = readers
        self.baudrate = baudrate
        self._line: _Line | None = None

    def reader(self, address: int) -> SimReader:
        return next(r for r in self.readers if r.address == address)

    def start(self) -> ReaderLineSim:
        self._line = _Line(self.port, self.baudrate)
        for reader in self.readers:
            capabilities = [
                (osdp.Capability.CommunicationSecurity, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
            ]
            if reader.led:
                capabilities.append((osdp.Capability.LEDControl, 1, 1))
            if reader.buzzer:
                capabilities.append((osdp.Capability.AudibleControl, 1, 1))
            flags = [] if reader.scbk else [osdp.LibFlag.InstallMode]
            info = osdp.PDInfo(
                reader.address,
                self._line.channel(),
                scbk=reader.scbk,
                name=f"sim-reader-{reader.address}",
                flags=flags,
            )
            reader.pd = _PeripheralDevice(
                info,
                osdp.PDCapabilities(capabilities),
                log_level=osdp.LogLevel.Error,
                command_handler=reader._command,
            )
            reader.pd.start()
        return self

    def stop(self) -> None:
        for reader in self.readers:
            if reader.pd is not None:
                reader.pd.stop()
                reader.pd = None
        if self._line is not None:
            self._line.close()
            self._line = None

    def __enter__(self) -> ReaderLineSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
