"""Finding or starting an MQTT broker, for the demo, the benches and the tests.

`ensure_broker(config)`:
1. a configured broker (`mqtt:` in the configuration) is used as it is;
2. else a broker answering on 127.0.0.1:1883 is used;
3. else mosquitto, when installed, is started on a free port (state in a temporary folder);
4. else the pure-Python broker amqtt (`pip install gatehouse[broker]`) is started on a free
   port in a thread of its own. amqtt 0.12 speaks MQTT 3.1.1 only and has no shared
   subscriptions: the handle says so (`protocol="3.1.1"`, `shared_subscriptions=False`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import GatehouseError
from sync.config import MqttConfig

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 1883
START_TIMEOUT_S = 10.0
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(GatehouseError):
    """No broker could be found or started."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL_HOST, 0))
        return int(probe.getsockname()[1])


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections there and says CONNACK to an MQTT CONNECT."""
    connect = bytes.fromhex("101000044d5154540402003c0004") + b"ping"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect)
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_PATHS if os.access(path, os.X_OK)), None)


@dataclass
class Mosquitto:
    """A mosquitto process on a free port with its own configuration and state folder.

    `listeners` are extra configuration lines (a TLS listener, say); persistence is on, so
    MQTT 3.1.1 sessions survive `restart()` (mosquitto 2.0.11 does not restore MQTT 5 ones)."""

    workdir: Path
    port: int = 0
    extra: Sequence[str] = ()
    binary: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.binary = self.binary or find_mosquitto()
        if self.binary is None:
            raise BrokerError("mosquitto is not installed; install it with: apt-get install mosquitto")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {LOCAL_HOST}",
            "allow_anonymous true",
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 20",
            "log_type error",
            "log_type warning",
            f"log_dest file {self.log_path}",
            *self.extra,
        ]
        if os.geteuid() == 0:
            # as root, mosquitto would switch to the `mosquitto` user and lose our files
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        self.write_config()
        assert self.binary is not None
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise BrokerError(f"mosquitto exited at start: {err}{log}")
            if answers(LOCAL_HOST, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not answer on port {self.port} within {START_TIMEOUT_S} s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        self.thaw(process)
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stderr:
            process.stderr.close()

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts TCP connections, nothing answers."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self, process: subprocess.Popen[bytes] | None = None) -> None:
        target = process or self.process
        if target is not None and target.poll() is None:
            target.send_signal(signal.SIGCONT)

    def mqtt_config(self, **overrides: Any) -> MqttConfig:
        return MqttConfig(host=LOCAL_HOST, port=self.port, **overrides)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Amqtt:
    """The pure-Python broker, in a thread with its own event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: Any = None
        self._thread = threading.Thread(target=self._main, name="amqtt", daemon=True)

    def _main(self) -> None:
        import asyncio

        from amqtt.broker import Broker  # type: ignore[import-not-found]

        async def serve() -> None:
            broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"{LOCAL_HOST}:{self.port}"}},
                    "plugins": {
                        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                    },
                }
            )
            await broker.start()
            stop = asyncio.Event()
            self._stop = (asyncio.get_running_loop(), stop)
            self._ready.set()
            await stop.wait()
            await broker.shutdown()

        try:
            asyncio.run(serve())
        except BaseException as err:
            self._error = err
            self._ready.set()

    def start(self) -> _Amqtt:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            raise BrokerError(f"amqtt did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            loop, event = self._stop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        self._thread.join(START_TIMEOUT_S)


@dataclass
class BrokerHandle:
    """Where the broker is, and how to let go of it."""

    config: MqttConfig
    kind: str
    _owned: Any = None
    shared_subscriptions: bool = True
    """False for amqtt (0.12 has neither MQTT 5 nor $share): run a single ingest worker"""
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        if self._owned is not None:
            self._owned.stop()
            self._owned = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_broker(config: MqttConfig | None = None) -> BrokerHandle:
    """A broker to talk to: the configured one, a local one, or one we start."""
    if config is not None:
        return BrokerHandle(config, "configured")
    if answers(LOCAL_HOST, LOCAL_PORT):
        return BrokerHandle(MqttConfig(host=LOCAL_HOST, port=LOCAL_PORT), "local")
    if find_mosquitto() is not None:
        tmp = tempfile.TemporaryDirectory(prefix="gatehouse-mosquitto-")
        broker = Mosquitto(Path(tmp.name)).start()
        return BrokerHandle(broker.mqtt_config(), "mosquitto", broker, tmp)
    try:
        import amqtt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as err:
        raise BrokerError(
            "no MQTT broker: none is configured, none answers on 127.0.0.1:1883, mosquitto is "
            "not installed (apt-get install mosquitto) and neither is amqtt "
            "(pip install 'gatehouse[broker]')"
        ) from err
    port = free_port()
    embedded = _Amqtt(port).start()
    config = MqttConfig(host=LOCAL_HOST, port=port, protocol="3.1.1")
    return BrokerHandle(config, "amqtt", embedded, shared_subscriptions=False)
