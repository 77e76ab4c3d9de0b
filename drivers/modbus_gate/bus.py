"""One Modbus RTU line, shared by every barrier board on it.

Several unit ids on one RS-485 pair share one serial port, so one pymodbus async client per
port, reference-counted by the drivers that use it; pymodbus serialises the transactions.
pymodbus' own reconnect is off: a lost port is reopened here, on the next request, so the
driver decides when to report it offline. Library errors become Gatehouse errors here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from drivers.serial.config import SerialSettings
from drivers.serial.port import open_serial
from edge.errors import DeviceMisconfigured, DeviceNotReady

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
"""pymodbus logs an error for every unanswered poll (ten a second for an unplugged board); the
driver reports the change of state once instead."""


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
        client = await self._connected()
        try:
            async with asyncio.timeout(self.timeout_s * 3 + 1):
                reply = await client.read_discrete_inputs(address, count=count, device_id=unit)
        except (ModbusException, TimeoutError) as err:
            raise self._no_answer(unit, err) from err
        if reply.isError():
            raise DeviceMisconfigured(
                f"unit {unit} on {self.settings.port} refused to read inputs {address}.."
                f"{address + count - 1} ({reply}); check the board profile's input addresses"
            )
        return list(reply.bits[:count])

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        client = await self._connected()
        try:
            async with asyncio.timeout(self.timeout_s * 3 + 1):
                reply = await client.write_coil(address, value, device_id=unit)
        except (ModbusException, TimeoutError) as err:
            raise self._no_answer(unit, err) from err
        if reply.isError():
            raise DeviceMisconfigured(
                f"unit {unit} on {self.settings.port} refused to set relay {address} ({reply}); "
                "check the board profile's coil addresses"
            )

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
