"""`gatehouse probe PORT`: what answers on a serial port.

Tries, in turn: OSDP readers (polls at the common addresses and baud rates), Modbus RTU
boards (a discrete-input read at each unit id, baud rate and parity), and Wiegand converters
(listens while someone presents a card, and tries every frame profile on what arrives). Says
what answered, with the settings to put into the configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.cli.common import add_command, positive
from edge.errors import DeviceMisconfigured, DeviceNotReady

OSDP_BAUDS = (9600, 19200, 38400, 115200)
MODBUS_BAUDS = (9600, 19200, 38400, 115200)


@dataclass
class Finding:
    protocol: str
    baudrate: int
    detail: str
    settings: dict[str, Any] = field(default_factory=dict)
    """The device's configuration (kind first), empty when what answered is not usable as is."""

    def as_yaml(self) -> str:
        """The settings as one flow line for the YAML file."""

        def flow(value: Any) -> str:
            if isinstance(value, dict):
                return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
            return str(value)

        return flow(self.settings)[1:-1]

    def as_command(self) -> str:
        """`gatehouse devices add` with these settings; the installer fills in ID and GATE."""
        words = ["sudo", "gatehouse", "devices", "add", self.settings["kind"], "ID"]
        for key, value in self.settings.items():
            if isinstance(value, dict):
                words += [shlex.quote(f"{key}.{name}={item}") for name, item in value.items()]
            elif key != "kind":
                words.append(shlex.quote(f"{key}={value}"))
        return " ".join([*words, "--gate", "GATE"])


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "probe",
        "find out what answers on a serial port (OSDP readers, Modbus boards, Wiegand converters)",
        _probe,
        description=(
            "Probe a serial port: OSDP polls at common addresses and baud rates, Modbus reads at "
            "each unit id, then listen for Wiegand converter frames while you present a card. "
            "Stop the gateway first (`systemctl stop gatehouse`): the port can only be open once."
        ),
    )
    parser.add_argument("port", help="serial device, e.g. /dev/serial/by-id/usb-FTDI_...-port0")
    parser.add_argument(
        "--baud",
        type=_baud,
        action="append",
        help="only this baud rate (repeatable; default: common ones)",
    )
    parser.add_argument(
        "--osdp-addresses",
        type=_numbers_within(0, 126),
        default="0-3",
        help="OSDP addresses to poll, e.g. 0-3 or 0,1,5 (default 0-3)",
    )
    parser.add_argument(
        "--units", type=_numbers_within(1, 247), default="1-10", help="Modbus unit ids to try (default 1-10)"
    )
    parser.add_argument(
        "--parity", action="append", choices=["N", "E", "O"], help="Modbus parity to try (default N and E)"
    )
    parser.add_argument(
        "--answer-timeout",
        type=positive,
        default=0.3,
        help="seconds to wait for each Modbus unit's answer (default 0.3)",
    )
    parser.add_argument(
        "--listen", type=_listen_s, default=5.0, help="seconds to listen for Wiegand frames (0 to skip)"
    )
    parser.add_argument(
        "--only", choices=["osdp", "modbus", "wiegand"], action="append", help="probe only these protocols"
    )


def numbers(text: str, low: int, high: int) -> list[int]:
    """'0-3' or '1,2,7' as a list, each within [low, high]."""
    found: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError as err:
            raise DeviceMisconfigured(f"{text!r}: write numbers like 0-3 or 1,2,7") from err
        if not low <= start <= end <= high:
            raise DeviceMisconfigured(f"{text!r}: numbers must be within {low}-{high}")
        found.extend(range(start, end + 1))
    return sorted(set(found))


def _numbers_within(low: int, high: int) -> Callable[[str], str]:
    """An argparse type for --osdp-addresses and --units: the text as typed, once `numbers` reads it
    within [low, high]; else a usage error naming the option, before anything is probed."""

    def check(text: str) -> str:
        try:
            numbers(text, low, high)
        except DeviceMisconfigured as err:
            raise argparse.ArgumentTypeError(str(err)) from err
        return text

    return check


def _listen_s(text: str) -> float:
    """A --listen value: seconds, 0 to skip the Wiegand listen (-1 skipped it without a word)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"seconds to listen, 0 or more, e.g. 5 (got {text})")
    return seconds


def _baud(text: str) -> int:
    """A --baud value: a whole number of bit/s above 0."""
    try:
        rate = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a baud rate is a whole number of bit/s, e.g. 9600 (got {text})"
        ) from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"a baud rate is more than 0, e.g. 9600 (got {text})")
    return rate


def _check_port(port: str, baudrate: int, parity: str = "N") -> None:
    from drivers.serial.config import SerialSettings
    from drivers.serial.port import open_serial

    open_serial(SerialSettings.model_validate({"port": port, "baudrate": baudrate, "parity": parity})).close()


async def probe_osdp(port: str, baudrate: int, addresses: list[int], wait_s: float = 1.5) -> list[Finding]:
    import osdp

    from drivers.osdp.bus import PortChannel
    from drivers.serial.config import SerialSettings
    from drivers.serial.port import SerialPort

    serial_port = SerialPort(SerialSettings(port=port, baudrate=baudrate))
    serial_port.open()
    channel = PortChannel(serial_port)
    infos = [osdp.PDInfo(address, channel, name=f"probe-{address}") for address in addresses]
    cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Emergency)
    cp.start()
    try:
        await asyncio.sleep(wait_s)
        found = []
        for address in addresses:
            ident = cp.get_pd_id(address)
            if not (ident.vendor_code or ident.serial_number or cp.is_online(address)):
                continue
            secure = cp.check_capability(address, osdp.Capability.CommunicationSecurity)[0] > 0
            found.append(
                Finding(
                    "OSDP",
                    baudrate,
                    f"reader at address {address}: vendor {ident.vendor_code & 0xFFFFFF:06x}, model "
                    f"{ident.model}, serial {ident.serial_number & 0xFFFFFFFF:08x}"
                    + ("; supports the secure channel (set scbk)" if secure else ""),
                    {"kind": "osdp", "serial": {"port": port, "baudrate": baudrate}, "address": address},
                )
            )
        return found
    finally:
        cp.stop()
        serial_port.close()


async def probe_modbus(
    port: str, baudrate: int, parity: str, units: list[int], timeout_s: float = 0.3
) -> list[Finding]:
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusSerialClient
    from pymodbus.exceptions import ModbusException

    from drivers.modbus_gate.bus import exception_text

    client = AsyncModbusSerialClient(
        port,
        framer=FramerType.RTU,
        baudrate=baudrate,
        parity=parity,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )
    async with asyncio.timeout(5):
        connected = await client.connect()
    if not connected:
        raise DeviceNotReady(f"cannot open {port} for Modbus")
    found = []
    try:
        for unit in units:
            try:
                async with asyncio.timeout(timeout_s + 1):
                    reply = await client.read_discrete_inputs(0, count=8, device_id=unit)
            except (ModbusException, TimeoutError):
                continue
            answer = (
                f"{exception_text(reply)} to a discrete-input read (it answers; check the board's "
                "register map)"
                if reply.isError()
                else "inputs 0-7 = " + "".join("1" if bit else "0" for bit in reply.bits[:8])
            )
            found.append(
                Finding(
                    "Modbus",
                    baudrate,
                    f"unit {unit} ({parity} parity): {answer}",
                    {
                        "kind": "modbus_gate",
                        "serial": {"port": port, "baudrate": baudrate, "parity": parity},
                        "unit_id": unit,
                    },
                )
            )
    finally:
        client.close()
    return found


async def probe_wiegand(port: str, baudrate: int, listen_s: float) -> list[Finding]:
    from drivers.serial.config import SerialSettings
    from drivers.serial.port import SerialPort
    from drivers.wiegand.bits import WiegandError
    from drivers.wiegand.device import credential_of
    from drivers.wiegand.framing import PROFILES, Deframer

    serial_port = SerialPort(SerialSettings(port=port, baudrate=baudrate))
    serial_port.open()
    received = bytearray()
    deadline = time.monotonic() + listen_s
    try:
        while time.monotonic() < deadline:
            received += await serial_port.read(timeout_s=max(0.01, min(0.2, deadline - time.monotonic())))
    finally:
        serial_port.close()
    found = []
    for name in sorted(PROFILES):
        deframer = Deframer(name)
        reads = []
        for frame in deframer.feed(bytes(received)):
            with contextlib.suppress(WiegandError):
                reads.append(credential_of(frame))
        if reads:
            shown = ", ".join(f"{credential} ({fmt})" for credential, fmt in reads[:3])
            found.append(
                Finding(
                    "Wiegand",
                    baudrate,
                    f"{len(reads)} read(s) as profile {name}: {shown}"
                    + (f"; {deframer.rejected} rejected" if deframer.rejected else ""),
                    {"kind": "wiegand", "serial": {"port": port, "baudrate": baudrate}, "profile": name},
                )
            )
    if received and not found:
        found.append(
            Finding(
                "Wiegand",
                baudrate,
                f"{len(received)} bytes arrived but fit no profile (first: {bytes(received[:24])!r}); "
                "try another --baud",
            )
        )
    return found


async def run_probe(args: argparse.Namespace, say: Any) -> list[Finding]:
    only = set(args.only or ["osdp", "modbus", "wiegand"])
    findings: list[Finding] = []
    _check_port(args.port, (args.baud or [9600])[0])
    if "osdp" in only:
        addresses = numbers(args.osdp_addresses, 0, 126)
        for baud in args.baud or OSDP_BAUDS:
            say(f"OSDP   {baud:>6} baud, addresses {args.osdp_addresses} ...")
            hits = await probe_osdp(args.port, baud, addresses)
            findings += hits
            if hits:
                break
    if "modbus" in only:
        units = numbers(args.units, 1, 247)
        done = False
        for baud in args.baud or MODBUS_BAUDS:
            for parity in args.parity or ["N", "E"]:
                say(f"Modbus {baud:>6} baud 8{parity}1, units {args.units} ...")
                try:
                    _check_port(args.port, baud, parity)
                except DeviceMisconfigured as err:
                    say(f"  skipped: {err}")
                    continue
                hits = await probe_modbus(args.port, baud, parity, units, args.answer_timeout)
                findings += hits
                done = bool(hits)
                if done:
                    break
            if done:
                break
    if "wiegand" in only and args.listen > 0:
        for baud in args.baud or [9600]:
            say(f"Wiegand {baud:>5} baud: present a card now (listening {args.listen:g} s) ...")
            findings += await probe_wiegand(args.port, baud, args.listen)
    return findings


def _probe(args: argparse.Namespace) -> int:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"probing {args.port}")
    findings = asyncio.run(run_probe(args, say))
    if not findings:
        print(
            "nothing answered. Check the device's power, the A/B (D+/D-) wiring (swap them if unsure), "
            "a 120 ohm terminator at the far end of long lines, and the baud rate in the device's manual."
        )
        return 1
    print("answered:")
    for finding in findings:
        print(f"  {finding.protocol} at {finding.baudrate} baud: {finding.detail}")
        if finding.settings:
            print(f"    config: {finding.as_yaml()}")
            print(f"    add it: {finding.as_command()}")
    return 0
