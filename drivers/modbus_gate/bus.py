"""One Modbus RTU line, shared by every barrier board on it.

Several unit ids on one RS-485 pair share one serial port, so one pymodbus async client per
port, reference-counted by the drivers that use it; pymodbus serialises the transactions.
pymodbus' own reconnect is off: a lost port is reopened here, on the next request, so the
driver decides when to report it offline. Library errors become Gatehouse errors here.

A Modbus exception reply is the board answering "no". Codes 5 (acknowledge: accepted, still
processing) and 6 (device busy) only mean "not now": the same request is sent again after 50 ms,
100 ms, ... (at most `timeout_s` of waiting in all; pymodbus retries only unanswered requests),
and a unit still busy after that is DeviceNotReady. Every other code (illegal function,
address or value; device failure) will not go away by asking again: DeviceMisconfigured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import ClassVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.serial.config import SerialSettings
from drivers.serial.port import open_serial
from edge.errors import DeviceMisconfigured, DeviceNotReady

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
"""pymodbus logs an error for every unanswered poll (ten a second for an unplugged board); the
driver reports the change of state once instead."""

BUSY_CODES = frozenset({ExcCodes.ACKNOWLEDGE, ExcCodes.DEVICE_BUSY})
"""Exception replies that mean "ask again shortly", not "this request is wrong"."""
BUSY_FIRST_DELAY_S = 0.05

EXCEPTION_MEANINGS = {
    ExcCodes.ILLEGAL_FUNCTION: "illegal function: the board does not support this request",
    ExcCodes.ILLEGAL_ADDRESS: "illegal data address: the board has no such address",
    ExcCodes.ILLEGAL_VALUE: "illegal data value",
    ExcCodes.DEVICE_FAILURE: "device failure: the board could not carry out the request",
    ExcCodes.ACKNOWLEDGE: "acknowledge: accepted, still processing",
    ExcCodes.DEVICE_BUSY: "device busy",
    ExcCodes.NEGATIVE_ACKNOWLEDGE: "negative acknowledge",
    ExcCodes.MEMORY_PARITY_ERROR: "memory parity error",
    ExcCodes.GATEWAY_PATH_UNAVIABLE: "gateway path unavailable",
    ExcCodes.GATEWAY_NO_RESPONSE: "gateway target did not respond",
}


def exception_text(reply: ModbusPDU) -> str:
    """'Modbus exception 2, illegal data address: …' for an exception reply."""
    code = getattr(reply, "exception_code", None)
    if code is None:
        return str(reply)
    return f"Modbus exception {code}, {EXCEPTION_MEANINGS.get(code, 'unknown code')}"


def busy_delays(budget_s: float) -> Iterator[float]:
    """The waits before asking a busy unit again: 50 ms, doubling, the last one cut so that
    they add up to `budget_s` (0.3 s: 50, 100 and 150 ms). A fixed schedule, so the number of
    tries does not depend on how loaded the gateway is."""
    delay, left = BUSY_FIRST_DELAY_S, budget_s
    while left > 1e-6:
        step = min(delay, left)
        yield step
        left -= step
        delay *= 2


class ModbusBus:
    _lines: ClassVar[dict[str, ModbusBus]] = {}

    def __init__(self, settings: SerialSettings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.users = 0
        self._client: AsyncModbusSerialClient | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def acquire(cls, settings: SerialSettings, timeout_s: float) -> ModbusBus:
        bus = cls._lines.get(settings.port)
        if bus is None:
            bus = cls._lines[settings.port] = cls(settings, timeout_s)
        elif bus.settings != settings:
            raise DeviceMisconfigured(
                f"barriers on {settings.port} disagree about the line settings; every device "
                "on one RS-485 line needs the same baudrate, parity, stopbits and bytesize"
            )
        bus.users += 1
        return bus

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            if self._lines.get(self.settings.port) is self:
                del self._lines[self.settings.port]
            self._disconnect()

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusSerialClient:
        async with self._connecting:
            if self._client is not None and self._client.connected:
                return self._client
            self._disconnect()
            open_serial(self.settings).close()
            client = AsyncModbusSerialClient(
                self.settings.port,
                framer=FramerType.RTU,
                baudrate=self.settings.baudrate,
                bytesize=self.settings.bytesize,
                parity=self.settings.parity,
                stopbits=self.settings.stopbits,
                timeout=self.timeout_s,
                retries=1,
                reconnect_delay=0,
                name=self.settings.port,
            )
            try:
                async with asyncio.timeout(self.timeout_s + 2):
                    ok = await client.connect()
            except TimeoutError:
                ok = False
            if not ok:
                client.close()
                raise DeviceNotReady(f"cannot open the Modbus line on {self.settings.port}")
            self._client = client
            return client

    async def read_inputs(self, unit: int, address: int, count: int) -> list[bool]:
        what = f"read inputs {address}..{address + count - 1}"
        reply = await self._request(
            unit, what, lambda client: client.read_discrete_inputs(address, count=count, device_id=unit)
        )
        if reply.isError():
            raise DeviceMisconfigured(
                f"unit {unit} on {self.settings.port} refused to {what} ({exception_text(reply)}); "
                "check the board profile's input addresses"
            )
        return list(reply.bits[:count])

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        what = f"set relay {address} {'on' if value else 'off'}"
        reply = await self._request(
            unit, what, lambda client: client.write_coil(address, value, device_id=unit)
        )
        if reply.isError():
            raise DeviceMisconfigured(
                f"unit {unit} on {self.settings.port} refused to set relay {address} "
                f"({exception_text(reply)}); check the board profile's coil addresses"
            )

    async def _request(
        self,
        unit: int,
        what: str,
        send: Callable[[AsyncModbusSerialClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        """One request, and again while the unit answers busy (see the module's docstring).
        Returns the reply, which may be another exception reply for the caller to explain.
        Only reads and plain coil writes come through here: sending them twice is harmless."""
        delays = busy_delays(self.timeout_s)
        tries = 0
        while True:
            client = await self._connected()
            try:
                async with asyncio.timeout(self.timeout_s * 3 + 1):
                    reply = await send(client)
            except (ModbusException, TimeoutError) as err:
                raise self._no_answer(unit, err) from err
            tries += 1
            if not (isinstance(reply, ExceptionResponse) and reply.exception_code in BUSY_CODES):
                if tries > 1:
                    log.debug("unit %d on %s answered busy %d times", unit, self.settings.port, tries - 1)
                return reply
            delay = next(delays, None)
            if delay is None:
                raise DeviceNotReady(
                    f"unit {unit} on {self.settings.port} kept answering busy "
                    f"({exception_text(reply)}) to {what}: asked {tries} times over about "
                    f"{self.timeout_s:g} s, so it may not have been done. A busy spell should pass; "
                    "if it does not, power-cycle the board and check that nothing else (a PLC, "
                    "another gateway) is sending it requests"
                )
            await asyncio.sleep(delay)

    def _no_answer(self, unit: int, err: Exception) -> DeviceNotReady:
        if self._client is not None and not self._client.connected:
            self._disconnect()
            return DeviceNotReady(
                f"lost the Modbus line on {self.settings.port} ({err}); is the adapter unplugged?"
            )
        return DeviceNotReady(
            f"unit {unit} on {self.settings.port} did not answer ({err}); check the unit id "
            f"(DIP switches), the A/B wiring, {self.settings.baudrate} baud and parity "
            f"{self.settings.parity}"
        )
