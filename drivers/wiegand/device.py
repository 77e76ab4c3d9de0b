"""The Wiegand-converter driver: serial bytes → frames → parity-checked card reads."""

from __future__ import annotations

import logging
import time

from drivers.base import CardPresented, Driver, DriverContext, Emit, Health
from drivers.serial.collect import CardCollector
from drivers.serial.port import Backoff, LinkState, PortLost, SerialPort, reopen
from drivers.wiegand.bits import WiegandError, decode_bits
from drivers.wiegand.config import WiegandReaderConfig
from drivers.wiegand.framing import Deframer, Frame
from edge.errors import DeviceNotReady

log = logging.getLogger(__name__)

REJECTIONS_LOGGED_EVERY_S = 60.0
"""A noisy line (an RS-485 pair without bias idles as garbage) rejects frames many times a
second: the log says so at most this often; `rejected_frames` in health counts every one."""


def credential_of(frame: Frame) -> tuple[str, str]:
    """(credential, card format) of a frame; raises WiegandError when parity or length is bad."""
    if frame.number is not None:
        return frame.number, "decimal"
    if frame.bits is None or frame.length is None:
        raise WiegandError("empty frame")
    card = decode_bits(frame.bits, frame.length)
    return card.credential, card.format


class WiegandReader(Driver):
    kind = "wiegand"
    config_model = WiegandReaderConfig
    config: WiegandReaderConfig

    def __init__(self, config: WiegandReaderConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.deframer = Deframer(config.profile)
        self.bad_reads = 0
        self._last: tuple[str, float] | None = None
        self._rejections_logged_at: float | None = None

    @property
    def rejected(self) -> int:
        """Frames the converter sent that failed their check, plus bad parity reads."""
        return self.deframer.rejected + self.bad_reads

    async def run(self, emit: Emit) -> None:
        port = SerialPort(self.config.serial)
        link = LinkState(self.id, emit)
        backoff = Backoff(self.config.serial.reconnect_min_s, self.config.serial.reconnect_max_s)
        port.open()
        link.up()
        try:
            while True:
                try:
                    data = await port.read(timeout_s=self.config.read_timeout_s)
                except PortLost as err:
                    link.down(str(err))
                    self.deframer.buffer.clear()
                    await reopen(port, link, backoff, emit.alive)
                    link.up()
                    continue
                if data:
                    self._frames(data, emit)
                emit.alive()
        finally:
            port.close()

    def _frames(self, data: bytes, emit: Emit) -> None:
        rejected, bad_reads = self.deframer.rejected, self.bad_reads
        now = time.monotonic()
        for frame in self.deframer.feed(data, now):
            try:
                credential, card_format = credential_of(frame)
            except WiegandError as err:
                self.bad_reads += 1
                log.warning("%s: bad card read (%s)", self.id, err)
                continue
            last, self._last = self._last, (credential, now)
            if last and last[0] == credential and now - last[1] < self.config.repeat_window_s:
                continue
            emit(CardPresented(self.id, credential, self.config.kind_of_credential, card_format, now))
        logged_at = self._rejections_logged_at
        if self.deframer.rejected != rejected and (
            logged_at is None or now - logged_at >= REJECTIONS_LOGGED_EVERY_S
        ):
            self._rejections_logged_at = now
            log.warning(
                "%s: %d frame(s) rejected so far (last: %s)",
                self.id,
                self.deframer.rejected,
                self.deframer.last_rejection,
            )
        if (self.deframer.rejected, self.bad_reads) != (rejected, bad_reads):
            emit(Health(self.id, {"rejected_frames": self.deframer.rejected, "bad_reads": self.bad_reads}))

    async def self_test(self, timeout_s: float, out_dir: str) -> str:
        """Open the port and wait for a card."""
        port = SerialPort(self.config.serial)
        port.open()
        collect = CardCollector()
        found = collect.cards
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and not found:
                data = await port.read(timeout_s=min(0.5, max(0.01, deadline - time.monotonic())))
                if data:
                    self._frames(data, collect)
        finally:
            port.close()
        lines = [f"{self.config.serial.port} opened; profile {self.config.profile}"]
        if self.deframer.rejected or self.bad_reads:
            lines.append(
                f"{self.deframer.rejected} frame(s) did not fit the profile"
                f" (last: {self.deframer.last_rejection or 'bad parity'}); try `gatehouse probe`"
            )
        if not found:
            raise DeviceNotReady("\n".join([*lines, f"no card within {timeout_s:g} s"]))
        card = found[0]
        lines.append(f"read {card.credential} ({card.card_format})")
        return "\n".join(lines)
