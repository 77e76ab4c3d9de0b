"""A real mosquitto for tests: a plain listener and a TLS one (client certificates required),
with a throw-away CA made with the `cryptography` package; stop, restart and freeze it.

    from tests.support.mosquitto import start_broker
    with start_broker(tmp_path) as broker:
        broker.port, broker.tls_port, broker.certs.ca, broker.freeze(), broker.restart()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sync.broker import Mosquitto, find_mosquitto, free_port
from sync.config import MqttConfig, TlsConfig
from tests.support.pki import make_pki

HOW_TO_GET = "mosquitto is not installed: apt-get install mosquitto (CI's .ci/run does this)"


class TestBroker(Mosquitto):
    """mosquitto with a plain listener on `port` and a TLS listener on `tls_port`."""

    __test__ = False

    def __init__(self, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        if find_mosquitto() is None:
            raise RuntimeError(HOW_TO_GET)
        self.certs = make_pki(workdir / "certs")
        self.tls_port = free_port()
        tls = (
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {self.certs.ca}",
            f"certfile {self.certs.server_cert}",
            f"keyfile {self.certs.server_key}",
            "require_certificate true",
        )
        super().__init__(workdir, extra=(*extra, *tls))

    def tls_config(self, *, rogue: bool = False, **overrides: Any) -> MqttConfig:
        cert, key = (
            (self.certs.rogue_cert, self.certs.rogue_key)
            if rogue
            else (self.certs.client_cert, self.certs.client_key)
        )
        return MqttConfig(
            host="127.0.0.1",
            port=self.tls_port,
            tls=TlsConfig(ca=str(self.certs.ca), cert=str(cert), key=str(key)),
            **overrides,
        )


def start_broker(workdir: Path, extra: tuple[str, ...] = ()) -> TestBroker:
    broker = TestBroker(workdir, extra)
    broker.start()
    return broker
