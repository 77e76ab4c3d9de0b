"""Building paho-mqtt clients the way every Gatehouse component wants them: VERSION2 callbacks,
MQTT 5 or 3.1.1, TLS or username/password, and paho's own reconnect turned off (the caller owns
the reconnect loop, and `Backoff` is its policy), plus a connect that fails when no CONNACK
arrives in time."""

from __future__ import annotations

import contextlib
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import AuthFailed, GatehouseError
from sync.config import MqttConfig

STOP_TIMEOUT_S = 5.0


class MqttError(GatehouseError):
    """The broker cannot be reached or refused us; retry with backoff."""


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Full jitter: a random delay up to min(high, low * 2^attempt), at least `low`/2."""
    ceiling = min(high, low * (2 ** min(attempt, 20)))
    return max(low / 2, rng.uniform(0, ceiling))


class Backoff:
    """The wait before each connect after the first, whether the last one failed or was lost:
    full-jitter exponential between `reconnect_min_s` and `reconnect_max_s`. The delays start
    again from `reconnect_min_s` only after a connection that held for `reconnect_max_s`, so a
    broker that takes the connection and drops it at once (an ACL that denies our publishes, a
    packet over its limit, our client id taken over) is not hammered in a loop."""

    def __init__(self, config: MqttConfig, rng: random.Random | None = None) -> None:
        self.low = config.reconnect_min_s
        self.high = config.reconnect_max_s
        self.attempt = 0
        self._rng = rng or random.Random()
        self._connected_at: float | None = None

    def connected(self) -> None:
        self._connected_at = time.monotonic()

    def wait(self, stopping: threading.Event) -> None:
        """Wait the next delay, or until `stopping` is set."""
        if self._connected_at is not None and time.monotonic() - self._connected_at >= self.high:
            self.attempt = 0
        self._connected_at = None
        delay = backoff_delay(self.attempt, self.low, self.high, self._rng)
        self.attempt += 1
        stopping.wait(delay)


def is_v5(config: MqttConfig) -> bool:
    return config.protocol == "5"


def new_client(config: MqttConfig, client_id: str, *, clean: bool) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if is_v5(config) else mqtt.MQTTv311,
        clean_session=None if is_v5(config) else clean,
        reconnect_on_failure=False,
    )
    client.connect_timeout = config.connect_timeout_s
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls is not None:
        client.tls_set(
            ca_certs=config.tls.ca,
            certfile=config.tls.cert,
            keyfile=config.tls.key,
            cert_reqs=ssl.CERT_NONE if config.tls.insecure_skip_verify else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(config.tls.insecure_skip_verify)
    return client


def connect_properties(config: MqttConfig, session_expiry_s: int) -> Properties | None:
    if not is_v5(config):
        return None
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    return properties


def connect(
    client: mqtt.Client,
    config: MqttConfig,
    *,
    clean: bool,
    session_expiry_s: int,
    connack: threading.Event,
    outcome: dict[str, Any],
    pump: Callable[[float], None] | None = None,
) -> None:
    """Open the connection and wait for a successful CONNACK. The client's on_connect must set
    `outcome["reason"]` and `connack`; its on_disconnect must set `connack` too (a TLS 1.3
    broker refuses a client certificate only after `connect()` has returned). Without `pump`
    paho's network thread runs the connection; with it, the caller's thread does, and
    `pump(timeout)` runs its network I/O."""
    try:
        client.connect(
            config.host,
            config.port,
            keepalive=config.keepalive_s,
            clean_start=clean if is_v5(config) else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties(config, session_expiry_s),
        )
    except (OSError, ValueError) as err:
        raise MqttError(f"cannot reach the broker at {config.host}:{config.port}: {err}") from err
    if pump is None:
        client.loop_start()
        answered = connack.wait(config.connect_timeout_s)
    else:
        deadline = time.monotonic() + config.connect_timeout_s
        while not connack.is_set() and (left := deadline - time.monotonic()) > 0:
            pump(min(left, 0.05))
        answered = connack.is_set()
    if not answered:
        stop(client)
        raise MqttError(f"no CONNACK from {config.host}:{config.port} within {config.connect_timeout_s} s")
    reason = outcome.get("reason")
    if reason is None or reason.is_failure:
        stop(client)
        text = str(reason) if reason is not None else "the connection closed before CONNACK"
        if reason is not None and reason.value in (0x86, 0x87, 0x8C):
            raise AuthFailed(f"the broker refused the credentials: {text}")
        raise MqttError(f"the broker refused the connection: {text}")


def stop(client: mqtt.Client) -> None:
    """Disconnect and stop the network thread, without waiting forever on a dead broker."""
    with contextlib.suppress(Exception):
        client.disconnect()
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT_S)


class Session:
    """CONNACK and disconnect bookkeeping of one connection; wire its callbacks to a client."""

    def __init__(self) -> None:
        self.connack = threading.Event()
        self.closed = threading.Event()
        self.outcome: dict[str, Any] = {}

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.outcome["reason"] = reason
        self.connack.set()

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.outcome.setdefault("reason", None)
        self.outcome["disconnect"] = reason
        self.closed.set()
        self.connack.set()
