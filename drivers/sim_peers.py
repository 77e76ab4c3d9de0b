"""Protocol-level peers for `gatehouse demo --protocol`: every serial device in a configuration
(OSDP readers, Modbus barrier boards, Wiegand converters) gets a simulator speaking its real
protocol on a pty, and the configuration gets the pty paths, so the real drivers run.

    with start_protocol_peers(config) as peers:
        gateway = Gateway(peers.config)       # ports now point at the simulators
        allow-list peers.cards ...            # the cards the simulated people carry
        peers.start_traffic(interval_s=4)     # people present cards, cars cross the loops
        ...

Devices on one configured port share one simulated line (readers by address, boards by unit
id), as they share one RS-485 pair on site.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from drivers.modbus_gate.config import ModbusGateConfig
from drivers.modbus_gate.sim import Barrier, BarrierBoardServer, board_in_thread
from drivers.osdp.config import OsdpReaderConfig
from drivers.osdp.sim import ReaderLineSim, SimReader
from drivers.serial.cable import VirtualCable
from drivers.wiegand.config import WiegandReaderConfig
from drivers.wiegand.sim import ConverterSim

SERIAL_KINDS = (OsdpReaderConfig, ModbusGateConfig, WiegandReaderConfig)


@dataclass
class ProtocolPeers:
    config: Any
    """The configuration with each simulated device's port replaced by its pty."""
    ports: dict[str, str]
    """Configured port → the pty path the drivers open instead."""
    readers: dict[str, SimReader] = field(default_factory=dict)
    """OSDP reader device id → its simulated reader (present cards, press keys, tamper)."""
    barriers: dict[str, Barrier] = field(default_factory=dict)
    """Barrier device id → its simulated arm (stuck, vehicle on the loop, forced open)."""
    boards: dict[str, BarrierBoardServer] = field(default_factory=dict)
    """Configured port → the pymodbus server for the boards on it (records every relay write)."""
    converters: dict[str, ConverterSim] = field(default_factory=dict)
    """Wiegand device id → its simulated converter."""
    cards: list[tuple[int, int]] = field(default_factory=list)
    """(facility, number) of the simulated residents' cards; credential text "facility:number"."""
    strangers: list[tuple[int, int]] = field(default_factory=list)
    """Cards nobody allowed: they are denied."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def credentials(self) -> list[str]:
        return [f"{facility}:{number}" for facility, number in self.cards]

    def present(self, device_id: str, facility: int, number: int, length: int = 26) -> None:
        """Present a card at a simulated reader or converter."""
        if device_id in self.readers:
            self.readers[device_id].present_card(facility, number, length)
        else:
            self.converters[device_id].present_card(facility, number, length)

    def start_traffic(self, interval_s: float = 4.0, seed: int = 7) -> None:
        """People present cards (mostly allowed ones) at random readers; when a barrier opens, a
        car stands on its loop for a moment and drives through."""
        rng = random.Random(seed)
        config = self.config
        presenters = sorted([*self.readers, *self.converters])
        if not presenters:
            return

        def barrier_of(device_id: str) -> Barrier | None:
            gate = config.gate_of(device_id)
            return self.barriers.get(gate.barrier) if gate is not None and gate.barrier else None

        def traffic() -> None:
            while not self._stop.wait(rng.expovariate(1 / interval_s)):
                device = rng.choice(presenters)
                pool = self.cards if rng.random() < 0.85 or not self.strangers else self.strangers
                facility, number = rng.choice(pool)
                with contextlib.suppress(Exception):
                    self.present(device, facility, number)
                barrier = barrier_of(device)
                if barrier is None or self._stop.wait(1.5) or barrier.position != "open":
                    continue
                barrier.vehicle = True
                self._stop.wait(1.5)
                barrier.vehicle = False

        thread = threading.Thread(target=traffic, name="protocol-traffic", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def _people(seed: int, count: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    rng = random.Random(seed)
    numbers = rng.sample(range(1, 65535), count + max(2, count // 5))
    facility = rng.randrange(1, 255)
    cards = [(facility, n) for n in numbers[:count]]
    strangers = [(facility, n) for n in numbers[count:]]
    return cards, strangers


@contextlib.contextmanager
def start_protocol_peers(
    config: Any, directory: str | Path | None = None, residents: int = 20, seed: int = 7
) -> Iterator[ProtocolPeers]:
    """Start a simulator for every OSDP, Modbus and Wiegand device of `config` on pty pairs;
    yield the peers with the configuration rewritten to use them; stop everything on exit."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="gatehouse-ptys-"))
        lines: dict[str, list[Any]] = {}
        for device in config.devices:
            if isinstance(device, SERIAL_KINDS) and device.enabled:
                lines.setdefault(device.serial.port, []).append(device)
        ports: dict[str, str] = {}
        cards, strangers = _people(seed, residents)
        peers = ProtocolPeers(config, ports, cards=cards, strangers=strangers)
        for index, (port, devices) in enumerate(sorted(lines.items())):
            cable = stack.enter_context(VirtualCable(directory, f"line{index}"))
            ports[port] = cable.path_a
            _start_line(stack, peers, cable.path_b, devices)
        peers.config = _with_ports(config, ports)
        stack.callback(peers._close)
        yield peers


def _start_line(stack: contextlib.ExitStack, peers: ProtocolPeers, path: str, devices: list[Any]) -> None:
    kinds = {type(device) for device in devices}
    if len(kinds) > 1:
        names = ", ".join(sorted(d.id for d in devices))
        raise ValueError(f"devices {names} share a port but speak different protocols")
    baudrate = devices[0].serial.baudrate
    if OsdpReaderConfig in kinds:
        readers = []
        for device in devices:
            reader = SimReader(device.address, None if device.install_mode else device.key_bytes)
            peers.readers[device.id] = reader
            readers.append(reader)
        stack.enter_context(ReaderLineSim(path, readers, baudrate=baudrate))
    elif ModbusGateConfig in kinds:
        barriers = {}
        for device in devices:
            barrier = Barrier(profile=device.profile, travel_s=1.2)
            peers.barriers[device.id] = barrier
            barriers[device.unit_id] = barrier
        board = stack.enter_context(board_in_thread(path, barriers, baudrate))
        peers.boards[devices[0].serial.port] = board
    else:
        if len(devices) > 1:
            raise ValueError(f"Wiegand converters {[d.id for d in devices]} cannot share one port")
        device = devices[0]
        peers.converters[device.id] = stack.enter_context(ConverterSim(path, device.profile, baudrate))


def _with_ports(config: Any, ports: dict[str, str]) -> Any:
    devices = []
    for device in config.devices:
        if isinstance(device, SERIAL_KINDS) and device.serial.port in ports:
            serial = device.serial.model_copy(update={"port": ports[device.serial.port]})
            device = device.model_copy(update={"serial": serial})
        devices.append(device)
    return config.model_copy(update={"devices": tuple(devices)})


class RemotePeers:
    """`ProtocolPeers` running in a child process (see `peers_in_process`). What the simulated
    devices receive (relay writes, reader commands) is pushed here as it happens and kept in
    `relay_writes` and `reader_commands`; nothing blocks the caller's event loop but `call`."""

    def __init__(
        self,
        config: Any,
        ports: dict[str, str],
        cards: list[tuple[int, int]],
        strangers: list[tuple[int, int]],
        conn: Connection,
    ) -> None:
        self.config = config
        self.ports = ports
        self.cards = cards
        self.strangers = strangers
        self.relay_writes: dict[str, list[tuple[int, int, bool, float]]] = {}
        """Configured port → (unit, relay, on, time.monotonic()) of each write its board got."""
        self.reader_commands: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        """Reader device id → (time.monotonic(), libosdp command dict) of each command it got."""
        self._conn = conn
        self._lock = threading.Lock()
        self._replies: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._listener = threading.Thread(target=self._listen, name="peer-listener", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self._replies.put((False, "the peer process ended"))
                return
            kind = message[0]
            if kind == "relay":
                _, port, unit, coil, on, at = message
                self.relay_writes.setdefault(port, []).append((unit, coil, on, at))
            elif kind == "command":
                _, device_id, at, command = message
                self.reader_commands.setdefault(device_id, []).append((at, command))
            else:
                self._replies.put((message[1], message[2]))

    def call(self, name: str, *args: Any, timeout_s: float = 10.0) -> Any:
        with self._lock:
            self._conn.send((name, args))
            try:
                ok, value = self._replies.get(timeout=timeout_s)
            except queue.Empty as err:
                raise TimeoutError(f"the peer process did not answer {name} within {timeout_s:g} s") from err
        if not ok:
            raise RuntimeError(f"the peer process failed on {name}: {value}")
        return value

    def present(self, device_id: str, facility: int, number: int, length: int = 26) -> float:
        """Present a card; returns time.monotonic() when the simulated reader accepted it."""
        return float(self.call("present", device_id, facility, number, length))

    def reader_secure(self, device_id: str) -> bool:
        return bool(self.call("reader_secure", device_id))

    def start_traffic(self, interval_s: float = 4.0, seed: int = 7) -> None:
        self.call("traffic", interval_s, seed)

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
            self.call("stop", timeout_s=10)


def _serve_peers(
    config_json: dict[str, Any], directory: str, residents: int, seed: int, conn: Connection
) -> None:
    from edge.config import GatehouseConfig

    config = GatehouseConfig.model_validate(config_json)
    sending = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with sending, contextlib.suppress(OSError):
            conn.send(message)

    with start_protocol_peers(config, directory, residents, seed) as peers:
        for port, board in peers.boards.items():
            board.listeners.append(lambda w, port=port: send(("relay", port, w.unit, w.coil, w.on, w.at)))
        for device_id, reader in peers.readers.items():
            reader.listeners.append(
                lambda c, device_id=device_id: send(("command", device_id, c.at, c.command))
            )
        send(("reply", True, (peers.ports, peers.cards, peers.strangers)))
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                return
            if name == "stop":
                send(("reply", True, None))
                return
            try:
                send(("reply", True, _peer_call(peers, name, args)))
            except Exception as err:
                send(("reply", False, f"{type(err).__name__}: {err}"))


def _peer_call(peers: ProtocolPeers, name: str, args: tuple[Any, ...]) -> Any:
    if name == "present":
        device_id, facility, number, length = args
        peers.present(device_id, facility, number, length)
        return time.monotonic()
    if name == "reader_secure":
        return peers.readers[args[0]].is_secure()
    if name == "traffic":
        peers.start_traffic(*args)
        return None
    raise ValueError(f"unknown peer call {name!r}")


@contextlib.contextmanager
def peers_in_process(
    config: Any, directory: str | Path, residents: int = 20, seed: int = 7
) -> Iterator[RemotePeers]:
    """`start_protocol_peers` in a child process: the simulators then do not share the gateway's
    interpreter, as real devices do not (benchmarks measure Gatehouse, not the simulators)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_serve_peers,
        args=(config.model_dump(mode="json"), str(directory), residents, seed, child),
        name="protocol-peers",
        daemon=True,
    )
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the protocol peers did not start within 30 s")
        _, ok, value = parent.recv()
        if not ok:
            raise RuntimeError(f"the protocol peers failed to start: {value}")
        ports, cards, strangers = value
        peers = RemotePeers(_with_ports(config, ports), ports, cards, strangers, parent)
        try:
            yield peers
        finally:
            peers.stop()
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)
