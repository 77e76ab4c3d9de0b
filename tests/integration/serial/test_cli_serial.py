"""`gatehouse probe` and `gatehouse devices list|test` against simulated devices over ptys."""

from __future__ import annotations

import shlex
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import osdp
import pytest

from drivers.modbus_gate.sim import Barrier, board_in_thread
from drivers.osdp.sim import ReaderLineSim, SimReader
from drivers.wiegand.sim import ConverterSim
from edge.cli import main
from edge.cli.devices import without_password
from tests.support.pty import VirtualCable

pytestmark = pytest.mark.serial


@contextmanager
def card_every(sim: ConverterSim, interval_s: float) -> Iterator[None]:
    stop = threading.Event()

    def swipe() -> None:
        while not stop.wait(interval_s):
            sim.present_card(42, 4242)

    thread = threading.Thread(target=swipe, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def write_config(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(
        f"""
site: {{id: test-site, salt: test-salt-0123456789}}
gateway: {{id: test-gw, state_dir: {tmp_path / "state"}}}
gates:
  - {{id: lane, kind: vehicle, barrier: barrier-1, readers: [reader-1]}}
devices:
{devices}
"""
    )
    return path


def test_probe_finds_an_osdp_reader(cable: VirtualCable, capsys):
    with ReaderLineSim(cable.path_b, [SimReader(1, bytes(16))], baudrate=115200):
        code = main(["probe", cable.path_a, "--baud", "115200", "--only", "osdp"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OSDP at 115200 baud: reader at address 1" in out
    assert f"    config: kind: osdp, serial: {{port: {cable.path_a}, baudrate: 115200}}, address: 1" in out
    command = (
        f"sudo gatehouse devices add osdp ID serial.port={cable.path_a} serial.baudrate=115200 address=1 "
        "--gate GATE"
    )
    assert f"    add it: {command}" in out


def test_the_command_probe_prints_adds_the_device_it_found(cable: VirtualCable, tmp_path: Path, capsys):
    """What the installer pastes (with an id and a gate) gives a configuration whose driver
    reaches the device: `devices test` reads its card."""
    config = write_config(
        tmp_path, "  - {kind: sim_lane, id: barrier-1}\n  - {kind: sim_reader, id: reader-1}"
    )
    with ReaderLineSim(cable.path_b, [SimReader(1, bytes(16))], baudrate=115200) as readers:
        assert main(["probe", cable.path_a, "--baud", "115200", "--only", "osdp"]) == 0
        line = next(text for text in capsys.readouterr().out.splitlines() if "add it: " in text)
        words = shlex.split(line.split("add it: ")[1])[2:]
        words[words.index("ID")] = "reader-2"
        words[words.index("GATE")] = "lane"
        assert main(["--config", str(config), *words, "--credentials-dir", str(tmp_path)]) == 0, (
            capsys.readouterr()
        )
        assert "reader-2: readers of gate lane" in capsys.readouterr().out
        swiper = threading.Timer(1.5, lambda: readers.reader(1).present_card(7, 8))
        swiper.start()
        assert main(["--config", str(config), "devices", "test", "reader-2", "--timeout", "10"]) == 0
        swiper.join()
    out = capsys.readouterr().out
    assert "read card 7:8 (wiegand26)" in out and "reader-2: OK" in out


def test_probe_finds_modbus_units(cable: VirtualCable, capsys):
    with board_in_thread(cable.path_b, {3: Barrier(), 4: Barrier(busy=100)}, 115200):
        code = main(
            [
                "probe",
                cable.path_a,
                "--baud",
                "115200",
                "--only",
                "modbus",
                "--units",
                "2-4",
                "--answer-timeout",
                "1",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "unit 3 (N parity): inputs 0-7 = 01000000" in out
    assert "unit 4 (N parity): Modbus exception 6, device busy" in out, "named by its meaning"
    assert "unit 2 " not in out


def test_probe_recognises_a_wiegand_converter_profile(cable: VirtualCable, capsys):
    with ConverterSim(cable.path_b, "maxiprox", baudrate=115200) as sim, card_every(sim, 0.2):
        code = main(["probe", cable.path_a, "--baud", "115200", "--only", "wiegand", "--listen", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "as profile maxiprox: 42:4242 (wiegand26)" in out


def test_probe_says_when_nothing_answers(cable: VirtualCable, capsys):
    code = main(["probe", cable.path_a, "--baud", "115200", "--only", "modbus", "--units", "1"])
    assert code == 1
    assert "nothing answered" in capsys.readouterr().out


def test_devices_list_hides_passwords_in_urls():
    assert without_password("rtsp://gate:s3cret@192.0.2.21/stream2") == "rtsp://gate:***@192.0.2.21/stream2"
    assert without_password("/dev/serial/by-id/usb-FTDI-port0") == "/dev/serial/by-id/usb-FTDI-port0"


def test_devices_list_and_test(cable: VirtualCable, tmp_path: Path, capsys, monkeypatch):
    other = VirtualCable(tmp_path, "readers")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = write_config(
        tmp_path,
        f"""
  - {{id: barrier-1, kind: modbus_gate, unit_id: 2, serial: {{port: {cable.path_a}, baudrate: 115200}}}}
  - {{id: reader-1, kind: osdp, address: 0, serial: {{port: {other.path_a}, baudrate: 115200}}}}
""",
    )
    try:
        assert main(["--config", str(config), "devices", "list"]) == 0
        listing = capsys.readouterr().out
        assert "barrier-1  modbus_gate" in listing
        assert f"{cable.path_a} unit 2" in listing
        assert f"{other.path_a} address 0" in listing

        with board_in_thread(cable.path_b, {2: Barrier(travel_s=0.2)}, 115200) as board:
            assert main(["--config", str(config), "devices", "test", "barrier-1", "--timeout", "5"]) == 0
            assert board.pulses(2, 0) == 1
        out = capsys.readouterr().out
        assert "open limit reached" in out and "barrier-1: OK" in out

        with board_in_thread(cable.path_b, {2: Barrier(stuck=True)}, 115200):
            assert main(["--config", str(config), "devices", "test", "barrier-1", "--timeout", "1"]) == 1
        assert "no open limit within 1 s" in capsys.readouterr().err

        with ReaderLineSim(other.path_b, [SimReader(0, bytes(16))], baudrate=115200) as readers:
            swiper = threading.Timer(1.5, lambda: readers.reader(0).present_card(5, 6))
            swiper.start()
            assert main(["--config", str(config), "devices", "test", "reader-1", "--timeout", "10"]) == 0
            swiper.join()
        out = capsys.readouterr().out
        assert "read card 5:6 (wiegand26)" in out
        assert list(scratch.iterdir()) == [], "tests that save nothing leave no empty folder behind"

        assert main(["--config", str(config), "devices", "test", "reader-2"]) == 2
        assert "did you mean 'reader-1'" in capsys.readouterr().err
    finally:
        other.close()


def test_devices_test_of_a_reader_lights_it_green(cable: VirtualCable, tmp_path: Path, capsys):
    """After the card, the reader shows the answer (docs/drivers.md: "lights the reader green"): the
    LED and buzzer commands reach the reader before the test stops the Control Panel."""
    config = write_config(
        tmp_path,
        f"""
  - {{id: barrier-1, kind: sim_lane}}
  - {{id: reader-1, kind: osdp, address: 0, serial: {{port: {cable.path_a}, baudrate: 115200}}}}
""",
    )
    with ReaderLineSim(cable.path_b, [SimReader(0, bytes(16))], baudrate=115200) as readers:
        swiper = threading.Timer(1.5, lambda: readers.reader(0).present_card(5, 6))
        swiper.start()
        assert main(["--config", str(config), "devices", "test", "reader-1", "--timeout", "10"]) == 0
        swiper.join()
        leds = readers.reader(0).received(osdp.Command.LED)
        beeps = readers.reader(0).received(osdp.Command.Buzzer)
    assert [led.command["on_color"] for led in leds] == [osdp.CommandLEDColor.Green]
    assert [beep.command["rep_count"] for beep in beeps] == [1]
    assert "reader-1: OK" in capsys.readouterr().out


def test_devices_test_a_wiegand_reader(cable: VirtualCable, tmp_path: Path, capsys):
    config = write_config(
        tmp_path,
        f"""
  - {{id: reader-1, kind: wiegand, profile: stx_etx, serial: {{port: {cable.path_a}, baudrate: 115200}}}}
  - {{id: barrier-1, kind: modbus_gate, unit_id: 1, serial: {{port: {tmp_path / "absent"}}}}}
""",
    )
    with ConverterSim(cable.path_b, "stx_etx", baudrate=115200) as sim, card_every(sim, 0.3):
        assert main(["--config", str(config), "devices", "test", "reader-1", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "read 42:4242 (wiegand26)" in out
    assert main(["--config", str(config), "devices", "test", "barrier-1", "--timeout", "1"]) == 1
    assert "is not there: is the adapter plugged in?" in capsys.readouterr().err
