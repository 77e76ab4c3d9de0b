"""Opening ports: errors an installer can act on; backoff and link-state bookkeeping."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from drivers.base import Availability
from drivers.serial.config import SerialSettings
from drivers.serial.port import Backoff, LinkState, SerialPort, _permission_error, open_serial
from edge.errors import DeviceMisconfigured, DeviceNotReady


class Sink:
    def __init__(self) -> None:
        self.seen: list[Availability] = []

    def __call__(self, observation) -> None:
        self.seen.append(observation)

    def alive(self) -> None:
        return None


def test_a_missing_adapter_says_to_plug_it_in(tmp_path: Path):
    with pytest.raises(DeviceNotReady, match="is not there: is the adapter plugged in"):
        open_serial(SerialSettings(port=str(tmp_path / "usb-FTDI-if00-port0")))


@pytest.mark.parametrize("name", ["null", "file"])
def test_a_path_that_is_no_serial_port_says_so(tmp_path: Path, name: str):
    """Not pyserial's "Could not configure port: (25, 'Inappropriate ioctl for device')"."""
    path = os.devnull if name == "null" else str(tmp_path / "notes.txt")
    Path(path).touch()
    with pytest.raises(DeviceMisconfigured, match=r"is not a serial port .*/dev/serial/by-id/"):
        open_serial(SerialSettings(port=path))


def test_a_permission_problem_names_the_group(tmp_path: Path):
    node = tmp_path / "tty"
    node.touch()
    message = str(_permission_error(str(node)))
    assert "permission denied" in message
    assert "usermod -aG" in message


def test_a_pty_opens_8n1_and_reads_with_a_timeout():
    master, slave = os.openpty()
    try:
        port = SerialPort(SerialSettings(port=os.ttyname(slave), baudrate=115200))
        port.open()
        os.write(master, b"hello")

        async def read() -> tuple[bytes, bytes]:
            first = await port.read(timeout_s=1.0)
            nothing = await port.read(timeout_s=0.05)
            return first, nothing

        assert asyncio.run(read()) == (b"hello", b"")
        port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_settings_a_pty_refuses_are_named():
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        with pytest.raises(DeviceMisconfigured, match="does not support kernel RS-485 mode"):
            open_serial(SerialSettings.model_validate({"port": path, "rs485": {}}))
        with pytest.raises(DeviceMisconfigured, match="refuses 9600 baud 8E1"):
            open_serial(SerialSettings.model_validate({"port": path, "parity": "E"}))
    finally:
        os.close(master)
        os.close(slave)


def test_a_port_held_by_another_program_is_busy():
    master, slave = os.openpty()
    try:
        settings = SerialSettings(port=os.ttyname(slave))
        first = open_serial(settings)
        with pytest.raises(DeviceNotReady, match="in use by another program"):
            open_serial(settings)
        first.close()
    finally:
        os.close(master)
        os.close(slave)


def test_backoff_doubles_up_to_the_limit_and_resets():
    backoff = Backoff(0.5, 3.0)
    assert list(itertools.islice(backoff.delays(), 5)) == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert next(backoff.delays()) == 0.5


def test_link_state_reports_the_first_state_and_changes_only():
    sink = Sink()
    link = LinkState("dev", sink)
    link.up()
    link.down("gone")
    link.down("still gone")
    link.up()
    link.up()
    assert [(a.online, a.reason) for a in sink.seen] == [(True, ""), (False, "gone"), (True, "")]
