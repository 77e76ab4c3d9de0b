"""One serial port on pyserial, used from asyncio without blocking the loop.

Opening translates what pyserial says into what an installer can act on: a missing device is
`DeviceNotReady` (plug it in; the supervisor retries), a permission problem is
`DeviceMisconfigured` naming the group to join, a port held by another program is
`DeviceNotReady`. Reads and writes wait with `loop.add_reader` / `add_writer` and always under
a timeout; a pulled adapter (EIO, "readiness to read but returned no data") becomes
`PortLost`, after which the owner reopens with `Backoff` and reports `Availability`.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import termios
from collections.abc import Callable, Iterator

import serial
import serial.rs485

from drivers.base import Availability, Emit
from drivers.serial.config import SerialSettings
from edge.errors import DeviceMisconfigured, DeviceNotReady

log = logging.getLogger(__name__)


class PortLost(DeviceNotReady):
    """The port was open and failed: the adapter was unplugged or the line went away."""


def _group_of(path: str) -> str:
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return "dialout"


def open_serial(settings: SerialSettings, timeout_s: float = 0.0) -> serial.Serial:
    """Open the port as configured, or raise the Gatehouse error that says what to do."""
    port = serial.Serial()
    port.port = settings.port
    port.baudrate = settings.baudrate
    port.bytesize = settings.bytesize
    port.parity = settings.parity
    port.stopbits = settings.stopbits
    port.timeout = timeout_s
    port.write_timeout = 0
    port.exclusive = settings.exclusive
    if settings.rs485 is not None:
        port.rs485_mode = serial.rs485.RS485Settings(
            rts_level_for_tx=settings.rs485.rts_level_for_tx,
            rts_level_for_rx=settings.rs485.rts_level_for_rx,
            delay_before_tx=settings.rs485.delay_before_tx_s,
            delay_before_rx=settings.rs485.delay_before_rx_s,
        )
    try:
        port.open()
    except PermissionError as err:
        raise _permission_error(settings.port) from err
    except termios.error as err:
        raise DeviceMisconfigured(
            f"{settings.port} refuses {settings.baudrate} baud {settings.bytesize}{settings.parity}"
            f"{settings.stopbits} ({err}); check the line settings (a pty or some adapters accept "
            "no parity)"
        ) from err
    except ValueError as err:
        if settings.rs485 is not None and "RS485" in str(err):
            raise DeviceMisconfigured(
                f"{settings.port} does not support kernel RS-485 mode ({err}); remove `rs485:` from "
                "this device (most USB RS-485 adapters switch direction by themselves)"
            ) from err
        raise DeviceMisconfigured(f"{settings.port}: {err}") from err
    except (serial.SerialException, OSError) as err:
        code = err.errno if isinstance(err, OSError) else (err.args[0] if err.args else None)
        if isinstance(err.__context__, termios.error) and err.__context__.args[:1] == (errno.ENOTTY,):
            # pyserial's "Could not configure port: (25, 'Inappropriate ioctl for device')"
            raise DeviceMisconfigured(
                f"{settings.port} is not a serial port (it takes no line settings); give the "
                "adapter's device, e.g. /dev/ttyUSB0 or one of `ls -l /dev/serial/by-id/`"
            ) from err
        if code in (errno.EACCES, errno.EPERM):
            raise _permission_error(settings.port) from err
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise DeviceNotReady(
                f"{settings.port} is not there: is the adapter plugged in? "
                "`ls -l /dev/serial/by-id/` lists the connected ones"
            ) from err
        if code in (errno.EWOULDBLOCK, errno.EBUSY):
            raise DeviceNotReady(
                f"{settings.port} is in use by another program (`fuser {settings.port}` shows "
                "which); stop it (`systemctl stop gatehouse` for the gateway) or give each device "
                "its own adapter"
            ) from err
        raise DeviceNotReady(f"cannot open {settings.port}: {err}") from err
    return port


def _permission_error(path: str) -> DeviceMisconfigured:
    group = _group_of(path)
    return DeviceMisconfigured(
        f"permission denied opening {path}: add the gateway's user to the '{group}' group "
        f"(sudo usermod -aG {group} $USER, then log in again; the gatehouse service user "
        "already has it)"
    )


class SerialPort:
    """An open-or-closed serial port with awaitable, time-limited reads and writes."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self._serial: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is None:
            self._serial = open_serial(self.settings)

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                log.debug("closing %s failed", self.settings.port, exc_info=True)
            self._serial = None

    def _require(self) -> serial.Serial:
        if self._serial is None:
            raise PortLost(f"{self.settings.port} is not open")
        return self._serial

    def _lost(self, err: Exception) -> PortLost:
        self.close()
        return PortLost(f"{self.settings.port} went away ({err}); is the adapter unplugged?")

    def discard_input(self) -> int:
        """Drop everything received so far; how many bytes."""
        dropped = 0
        while chunk := self.read_nowait(4096):
            dropped += len(chunk)
        return dropped

    def read_nowait(self, max_bytes: int = 4096) -> bytes:
        """What has arrived, without waiting (for callers on their own thread)."""
        port = self._require()
        try:
            return bytes(port.read(max_bytes))
        except (serial.SerialException, OSError, TypeError) as err:
            raise self._lost(err) from err

    def write_nowait(self, data: bytes) -> int:
        port = self._require()
        try:
            return int(port.write(data) or 0)
        except (serial.SerialException, OSError, TypeError) as err:
            raise self._lost(err) from err

    async def read(self, max_bytes: int = 4096, timeout_s: float = 1.0) -> bytes:
        """Bytes that arrive within `timeout_s`; b"" when nothing came."""
        data = self.read_nowait(max_bytes)
        if data:
            return data
        await self._wait(timeout_s, writer=False)
        return self.read_nowait(max_bytes)

    async def write(self, data: bytes, timeout_s: float = 1.0) -> None:
        view = memoryview(data)
        async with asyncio.timeout(timeout_s):
            while view:
                written = self.write_nowait(bytes(view))
                view = view[written:]
                if view:
                    await self._wait(timeout_s, writer=True)

    async def _wait(self, timeout_s: float, *, writer: bool) -> None:
        port = self._require()
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        fd = port.fileno()
        (loop.add_writer if writer else loop.add_reader)(fd, wake)
        try:
            async with asyncio.timeout(timeout_s):
                await ready
        except TimeoutError:
            return
        finally:
            (loop.remove_writer if writer else loop.remove_reader)(fd)


class Backoff:
    """Waits that double from `min_s` to `max_s`; `reset()` after a success."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self._next = min_s

    def reset(self) -> None:
        self._next = self.min_s

    def delays(self) -> Iterator[float]:
        while True:
            delay = self._next
            self._next = min(self._next * 2, self.max_s)
            yield delay


class LinkState:
    """Emits `Availability` only when a device's reachability changes (the first `up()` or
    `down()` is one: the supervisor counts a device online only once its driver says so), and
    logs it once."""

    def __init__(self, device: str, emit: Emit | None = None) -> None:
        self.device = device
        self.emit = emit
        self.online: bool | None = None
        self.last_error: str = ""

    def up(self) -> None:
        if self.online is False:
            log.info("%s: back online", self.device)
        if self.online is not True and self.emit is not None:
            self.emit(Availability(self.device, True))
        self.online = True
        self.last_error = ""

    def down(self, reason: str) -> None:
        self.last_error = reason
        if self.online is not False:
            log.warning("%s: offline: %s", self.device, reason)
            if self.emit is not None:
                self.emit(Availability(self.device, False, reason))
        self.online = False


async def reopen(
    port: SerialPort, link: LinkState, backoff: Backoff, alive: Callable[[], None] | None = None
) -> None:
    """Reopen a lost port, waiting between attempts, until it opens (or the task is cancelled);
    `alive` is called at each attempt (the supervisor's hang detector). A permission or
    configuration problem is raised: waiting will not fix it."""
    for delay in backoff.delays():
        if alive is not None:
            alive()
        try:
            port.open()
        except DeviceMisconfigured:
            raise
        except DeviceNotReady as err:
            link.down(str(err))
            await asyncio.sleep(delay)
            continue
        backoff.reset()
        return
