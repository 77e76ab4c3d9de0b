"""The rules: turn what drivers observed into recorded events, decisions and commands.

Order matters and is kept everywhere here: an event is committed to the store before anything
acts on it (the barrier opens only after its `access.granted` is durable)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from drivers.base import (
    Availability,
    CardPresented,
    Command,
    GateCondition,
    GateStateChanged,
    Health,
    Observation,
    OpenGate,
    PlateRead,
    ReaderFeedback,
    Tamper,
    VehiclePassage,
    ZoneCondition,
    ZoneSample,
)
from edge.events import (
    AccessPayload,
    Attachment,
    DeviceHealthPayload,
    DevicePayload,
    Event,
    EventFactory,
    GateStatePayload,
    OccupancyPayload,
    PlatePayload,
)
from edge.privacy import credential_ref
from edge.rules.access import AccessDecider, Decision
from edge.rules.alerts import AlertEngine
from edge.store import Store

log = logging.getLogger(__name__)

Commander = Callable[[str, Command], Awaitable[None]]

GATE_CONDITIONS: dict[str, tuple[str, str]] = {
    "stuck": ("critical", "barrier did not reach its limit in time"),
    "held_open": ("warning", "barrier held open too long"),
    "forced_open": ("critical", "barrier opened without a command"),
}


class Rules:
    def __init__(
        self,
        config: Any,
        store: Store,
        factory: EventFactory,
        alerts: AlertEngine,
        commander: Commander,
        *,
        clock: Callable[[], float] = time.time,
        health_interval_s: float = 60.0,
    ) -> None:
        self.config = config
        self.store = store
        self.factory = factory
        self.alerts = alerts
        self.commander = commander
        self.clock = clock
        self.decider = AccessDecider(store, config.site.salt)
        self.health_interval_s = health_interval_s
        self._last_health: dict[str, float] = {}
        self.decision_hooks: list[Callable[[Observation, Event], None]] = []

    async def record(
        self,
        event_type: str,
        payload: Any,
        device: str | None = None,
        attachments: tuple[Attachment, ...] = (),
    ) -> Event:
        return await self.store.append_async(
            self.factory.make(event_type, payload, device=device, attachments=attachments)
        )

    def _gate_of(self, device: str) -> Any:
        return self.config.gate_of(device)

    async def handle(self, observation: Observation) -> None:
        match observation:
            case CardPresented():
                await self._card(observation)
            case PlateRead():
                await self._plate(observation)
            case GateStateChanged():
                await self._gate_state(observation)
            case GateCondition():
                await self._gate_condition(observation)
            case VehiclePassage():
                pass
            case ZoneSample():
                await self._zone_sample(observation)
            case ZoneCondition():
                await self._zone_condition(observation)
            case Tamper():
                await self._tamper(observation)
            case Availability():
                await self.device_availability(observation.device, observation.online, observation.reason)
            case Health():
                await self._health(observation)

    async def _card(self, seen: CardPresented) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else "unassigned"
        now_ms = int(self.clock() * 1000)
        decision = await asyncio.to_thread(
            self.decider.credential, seen.kind, seen.credential, gate_id, now_ms
        )
        ref = credential_ref(seen.credential, self.config.site.salt, seen.kind, seen.card_format)
        payload = AccessPayload(
            gate=gate_id,
            credential=ref,
            subject=decision.subject,
            reason=decision.reason,
            direction=_direction(gate),
        )
        event = await self.record(_access_type(decision), payload, device=seen.device)
        for hook in self.decision_hooks:
            hook(seen, event)
        await self._act(seen.device, gate, decision)

    async def _plate(self, seen: PlateRead) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else "unassigned"
        attachments: tuple[Attachment, ...] = ()
        crop = None
        if seen.crop_jpeg:
            crop, size = await asyncio.to_thread(self.store.put_attachment, seen.crop_jpeg)
            attachments = (Attachment(sha256=crop, size=size, role="crop"),)
        await self.record(
            "vehicle.plate",
            PlatePayload(
                plate=seen.plate,
                colour=seen.colour,
                confidence=seen.confidence,
                lane=gate_id,
                direction=seen.direction or _direction(gate),
                box=seen.box,
                frames=seen.frames,
                crop=crop,
            ),
            device=seen.device,
            attachments=attachments,
        )
        if gate is None or gate.kind != "vehicle":
            return
        decision = await asyncio.to_thread(self.decider.plate, seen.plate, gate_id, int(self.clock() * 1000))
        payload = AccessPayload(
            gate=gate_id,
            plate=seen.plate,
            subject=decision.subject,
            reason=decision.reason,
            direction=seen.direction or _direction(gate),
        )
        event = await self.record(_access_type(decision), payload, device=seen.device)
        for hook in self.decision_hooks:
            hook(seen, event)
        if decision.granted and gate.open_on_plate and gate.barrier:
            await self.commander(gate.barrier, OpenGate(reason=f"plate {seen.plate}"))

    async def _act(self, reader: str, gate: Any, decision: Decision) -> None:
        if gate is not None and decision.granted and gate.barrier:
            await self.commander(gate.barrier, OpenGate(reason=decision.reason))
        await self.commander(reader, ReaderFeedback(granted=decision.granted))

    async def _gate_state(self, seen: GateStateChanged) -> None:
        gate = self._gate_of(seen.device)
        await self.record(
            "gate.state",
            GateStatePayload(
                gate=gate.id if gate else seen.device,
                state=seen.state,
                previous=seen.previous,  # type: ignore[arg-type]
                commanded=seen.commanded,
                detail=seen.detail,
            ),
            device=seen.device,
        )

    async def _gate_condition(self, seen: GateCondition) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else seen.device
        key = f"gate.{seen.condition}:{gate_id}"
        if not seen.active:
            await self.alerts.clear(key, reason=seen.detail or "condition over")
            return
        severity, text = GATE_CONDITIONS[seen.condition]
        await self.alerts.raise_(
            f"gate.{seen.condition}",
            key,
            f"{gate_id}: {text}" + (f" ({seen.detail})" if seen.detail else ""),
            severity=severity,  # type: ignore[arg-type]
            device=seen.device,
            gate=gate_id,
        )

    async def _zone_sample(self, seen: ZoneSample) -> None:
        await self.record(
            "occupancy.sample",
            OccupancyPayload(
                zone=seen.zone, count=seen.count, occupied=seen.occupied, capacity=seen.capacity
            ),
            device=seen.device,
        )

    async def _zone_condition(self, seen: ZoneCondition) -> None:
        key = f"zone.{seen.condition}:{seen.device}:{seen.zone}"
        if not seen.active:
            await self.alerts.clear(key, reason=seen.detail or "zone clear")
            return
        kind = "fire_lane.blocked" if seen.condition == "blocked" else "gate.crowding"
        detail: dict[str, Any] = {"zone": seen.zone}
        if seen.plate:
            detail["plate"] = seen.plate
        if seen.crop_jpeg:
            detail["crop"], _ = await asyncio.to_thread(self.store.put_attachment, seen.crop_jpeg)
        text = f"zone {seen.zone}: {seen.detail or seen.condition}"
        if seen.plate:
            text += f" (plate {seen.plate})"
        await self.alerts.raise_(
            kind,
            key,
            text,
            severity="critical" if seen.condition == "blocked" else "warning",
            device=seen.device,
            detail=detail,
        )

    async def _tamper(self, seen: Tamper) -> None:
        key = f"device.tamper:{seen.device}"
        if seen.active:
            await self.alerts.raise_(
                "device.tamper",
                key,
                f"{seen.device}: tamper ({seen.detail or 'reported'})",
                severity="critical",
                device=seen.device,
            )
        else:
            await self.alerts.clear(key, reason=seen.detail or "tamper cleared")

    async def _health(self, seen: Health) -> None:
        now = self.clock()
        if now - self._last_health.get(seen.device, 0.0) < self.health_interval_s:
            return
        self._last_health[seen.device] = now
        await self.record("device.health", DeviceHealthPayload(metrics=seen.metrics), device=seen.device)

    async def device_availability(
        self,
        device: str,
        online: bool,
        reason: str,
        *,
        kind: str | None = None,
        restarts: int = 0,
        alert: bool = False,
    ) -> None:
        """Record device.online / device.offline and raise or clear the device's offline alert."""
        await self.record(
            "device.online" if online else "device.offline",
            DevicePayload(kind=kind, reason=reason, restarts=restarts),
            device=device,
        )
        key = f"device.offline:{device}"
        if online:
            await self.alerts.clear(key, reason="back online")
        elif alert:
            await self.alerts.raise_(
                "device.offline",
                key,
                f"{device} is offline: {reason}",
                severity="critical",
                device=device,
                detail={"restarts": restarts},
            )


def _access_type(decision: Decision) -> str:
    return "access.granted" if decision.granted else "access.denied"


def _direction(gate: Any) -> str | None:
    if gate is None or gate.direction == "both":
        return None
    return str(gate.direction)
