"""The rules: turn what drivers observed into recorded events, decisions, alerts and commands.

Order matters and is kept everywhere here: an event is committed to the store before anything
acts on it (the barrier opens only after its `access.granted` is durable).

Besides the observations, time drives some alerts: a barrier open too long, a vehicle parked in
a fire lane, a device that stayed offline, a nearly full disk, an old sync backlog. `tick()`
checks them and records device health held back by thinning (the gateway calls it every
`rules.alerts.check_interval_s` through `run_checks()`); all time comes from the injected
`clock`."""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import (
    CardPresented,
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
from edge.errors import StoreFull
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
from edge.privacy import credential_hash, credential_ref
from edge.rules.access import AccessDecider, Decision, GateRef, Recorder
from edge.rules.alerts import AlertEngine, Commander
from edge.rules.config import RulesConfig
from edge.store import Store

log = logging.getLogger(__name__)

GATE_CONDITIONS: dict[str, str] = {
    "stuck": "barrier did not reach its limit in time",
    "held_open": "barrier held open too long",
    "forced_open": "barrier opened without a command",
}
UNKNOWN_PLATES_TRACKED = 10_000
GRANTS_READ_BACK = 64
"""the latest grants read back at start for tailgating (through the outbox's type index)"""
REPEAT_READ_S = 3.0
"""The same credential or plate at the same gate within this time of its grant (or of its last
repeat) is the same presentation: a card held to the reader, a converter repeating a frame, the
camera reading the car once more. It is not decided, recorded or opened for again."""


@dataclass
class _Offline:
    since: float
    reason: str
    kind: str | None
    restarts: int


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
        self.settings: RulesConfig = getattr(config, "rules", None) or RulesConfig()
        self.store = store
        self.factory = factory
        self.alerts = alerts
        self.alerts.configure(self.settings.alerts, commander)
        self.commander = commander
        self.clock = clock
        self.decider = AccessDecider(
            store, config.site.salt, self.settings.anti_passback, ZoneInfo(config.site.timezone)
        )
        self.health_interval_s = health_interval_s
        self._health_recorded: dict[str, float] = {}
        self._health_pending: dict[str, dict[str, float | int | str | None]] = {}
        self.decision_hooks: list[Callable[[Observation, Event], None]] = []
        self._credits: dict[str, collections.deque[float]] = self._recent_grants()
        self._granted: dict[tuple[str, str], float] = {}
        self._open_since: dict[str, float] = {}
        self._unknown: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._occupied_since: dict[tuple[str, str], float] = {}
        self._offline: dict[str, _Offline] = {}
        self._noted: set[asyncio.Future[int]] = set()

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

    def note(self, event_type: str, payload: Any, device: str | None = None) -> None:
        """Record telemetry without waiting for its commit. Nothing acts on it, so the next
        observation (perhaps a card at the gate) need not wait behind its commit: it shares
        that observation's commit instead, in the same order."""
        future = self.store.submit(self.factory.make(event_type, payload, device=device))
        self._noted.add(future)
        future.add_done_callback(self._noted_done)

    def _noted_done(self, future: asyncio.Future[int]) -> None:
        self._noted.discard(future)
        if not future.cancelled() and (err := future.exception()) is not None:
            log.error("telemetry not recorded: %s", err)

    async def settled(self) -> None:
        """Wait until the telemetry `note()` handed over is committed (or has failed)."""
        if self._noted:
            await asyncio.wait(set(self._noted))

    def _gate_of(self, device: str) -> Any:
        return self.config.gate_of(device)

    def _device_role(self, device: str) -> str:
        """camera, reader or device: which alert kinds a device's trouble becomes."""
        gate = self._gate_of(device)
        if gate is not None and device in gate.cameras:
            return "camera"
        if gate is not None and device in gate.readers:
            return "reader"
        try:
            kind = str(self.config.device(device).kind)
        except (KeyError, AttributeError):
            return "device"
        if "camera" in kind or "rtsp" in kind:
            return "camera"
        if "reader" in kind or kind in ("osdp", "wiegand"):
            return "reader"
        return "device"

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
                await self._passage(observation)
            case ZoneSample():
                await self._zone_sample(observation)
            case ZoneCondition():
                await self._zone_condition(observation)
            case Tamper():
                await self._tamper(observation)
            case Health():
                await self._health(observation)

    # access decisions

    def _repeat(self, gate_id: str, credential: str) -> bool:
        """Whether this read repeats a grant of the same credential at the same gate within
        `REPEAT_READ_S`; a repeat extends the presentation. Older grants are forgotten."""
        now = self.clock()
        for slot, at in list(self._granted.items()):
            if not 0 <= now - at < REPEAT_READ_S:
                del self._granted[slot]
        if (gate_id, credential) not in self._granted:
            return False
        self._granted[(gate_id, credential)] = now
        return True

    async def _card(self, seen: CardPresented) -> None:
        gate = self._gate_of(seen.device)
        ref = GateRef(gate.id, gate.direction) if gate else GateRef("unassigned")
        digest = credential_hash(seen.credential, self.config.site.salt, seen.kind)
        if self._repeat(ref.id, digest):
            await self.commander(seen.device, ReaderFeedback(granted=True))
            return
        now_ms = int(self.clock() * 1000)
        credential = credential_ref(seen.credential, self.config.site.salt, seen.kind, seen.card_format)
        decision, event = await self._decide(
            lambda record: self.decider.credential(seen.kind, seen.credential, ref, now_ms, record),
            lambda decided: AccessPayload(
                gate=ref.id,
                credential=credential,
                subject=decided.subject,
                reason=decided.reason,
                direction=_direction(gate),
                household=decided.household,
                pass_id=decided.pass_id,
                detail=decided.detail,
            ),
            seen.device,
            (ref.id, digest),
        )
        for hook in self.decision_hooks:
            hook(seen, event)
        if decision.blocked:  # before the reader's LED: the guards' alert must not wait for it
            await self.alerts.raise_(
                "card.blocklisted",
                f"card.blocklisted:{digest[:16]}",
                f"{ref.id}: {decision.detail}",
                device=seen.device,
                gate=ref.id,
                detail={"credential": credential.model_dump(), "event": str(event.id)},
            )
        await self._act(seen.device, gate, decision)

    async def _plate(self, seen: PlateRead) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else "unassigned"
        attachments: tuple[Attachment, ...] = ()
        crop = None
        if seen.crop_jpeg:
            crop, size = await asyncio.to_thread(self.store.put_attachment, seen.crop_jpeg)
            attachments = (Attachment(sha256=crop, size=size, role="crop"),)
        direction = seen.direction or _direction(gate)
        await self.record(
            "vehicle.plate",
            PlatePayload(
                plate=seen.plate,
                colour=seen.colour,
                confidence=seen.confidence,
                lane=gate_id,
                direction=direction,
                box=seen.box,
                frames=seen.frames,
                crop=crop,
            ),
            device=seen.device,
            attachments=attachments,
        )
        presentation = (gate_id, f"plate:{seen.plate}")
        if gate is None or gate.kind != "vehicle" or self._repeat(*presentation):
            return
        now_ms = int(self.clock() * 1000)
        ref = GateRef(gate.id, direction or gate.direction)
        decision, event = await self._decide(
            lambda record: self.decider.plate(seen.plate, ref, now_ms, record),
            lambda decided: AccessPayload(
                gate=gate_id,
                plate=seen.plate,
                subject=decided.subject,
                reason=decided.reason,
                direction=direction,
                household=decided.household,
                pass_id=decided.pass_id,
                detail=decided.detail,
            ),
            seen.device,
            presentation,
            attachments,
        )
        for hook in self.decision_hooks:
            hook(seen, event)
        if decision.granted and gate.open_on_plate and gate.barrier:
            self._credit(gate.id)
            await self.commander(gate.barrier, OpenGate(reason=f"plate {seen.plate}"))
        if decision.blocked:
            await self.alerts.raise_(
                "plate.blocklisted",
                f"plate.blocklisted:{seen.plate}",
                f"{gate_id}: {decision.detail}",
                device=seen.device,
                gate=gate_id,
                detail={"plate": seen.plate, "crop": crop, "event": str(event.id)},
            )
        elif decision.reason == "unknown":
            await self._unknown_plate(seen, gate_id, crop)

    async def _decide(
        self,
        decide: Callable[[Recorder], tuple[Decision, Event | None]],
        payload_of: Callable[[Decision], AccessPayload],
        device: str,
        presentation: tuple[str, str],
        attachments: tuple[Attachment, ...] = (),
    ) -> tuple[Decision, Event]:
        """Decide and record the decision as one commit: when the store is full (StoreFull) it
        is neither, so not acted on, and the next read is a new presentation. A recorded grant
        starts its `presentation` (gate, credential), whose repeats are not decided again."""

        def record(decision: Decision) -> Event:
            payload = payload_of(decision)
            return self.factory.make(_access_type(decision), payload, device=device, attachments=attachments)

        decision, event = await asyncio.to_thread(decide, record)
        assert event is not None
        if decision.granted:
            self._granted[presentation] = self.clock()
        return decision, event

    async def _unknown_plate(self, seen: PlateRead, gate_id: str, crop: str | None) -> None:
        settings = self.settings.alerts
        now = self.clock()
        seen_at = self._unknown.pop(seen.plate, None) or collections.deque()
        seen_at.append(now)
        while seen_at and now - seen_at[0] > settings.unknown_plate_window_min * 60:
            seen_at.popleft()
        self._unknown[seen.plate] = seen_at
        while len(self._unknown) > UNKNOWN_PLATES_TRACKED:
            self._unknown.popitem(last=False)
        if len(seen_at) >= settings.unknown_plate_repeats:
            await self.alerts.raise_(
                "plate.unknown_repeat",
                f"plate.unknown_repeat:{seen.plate}",
                f"{gate_id}: unknown plate {seen.plate} read {len(seen_at)} times in "
                f"{settings.unknown_plate_window_min:g} min",
                device=seen.device,
                gate=gate_id,
                detail={"plate": seen.plate, "reads": len(seen_at), "crop": crop},
            )

    async def _act(self, reader: str, gate: Any, decision: Decision) -> None:
        if gate is not None and decision.granted and gate.barrier:
            self._credit(gate.id)
            await self.commander(gate.barrier, OpenGate(reason=decision.reason))
        await self.commander(reader, ReaderFeedback(granted=decision.granted))

    async def open_gate(self, gate_id: str, *, by: str = "operator", reason: str = "operator") -> Event:
        """Open a gate on an operator's word (the `open_gate` command): recorded as an
        access.granted with reason `operator` before the barrier moves."""
        gate = next((g for g in self.config.gates if g.id == gate_id), None)
        if gate is None or not gate.barrier:
            known = ", ".join(g.id for g in self.config.gates if g.barrier) or "none"
            raise KeyError(f"no gate {gate_id!r} with a barrier (known: {known})")
        event = await self.record(
            "access.granted",
            AccessPayload(
                gate=gate.id,
                subject=by,
                reason="operator",
                direction=_direction(gate),
                detail=f"opened by {by}: {reason}",
            ),
            device=gate.barrier,
        )
        self._credit(gate.id)
        await self.commander(gate.barrier, OpenGate(reason=f"operator {by}: {reason}"))
        return event

    # tailgating: passages on the vehicle loop against grants

    def _recent_grants(self) -> dict[str, collections.deque[float]]:
        """The grants of the last tailgating window at gates with a barrier, read back from the
        store: a restart (or a reload of the configuration) between a grant and its vehicle's
        passage must not make that vehicle a tailgater. The passages since are not recorded,
        so for one window after a start a grant may be counted that a vehicle already used."""
        barriers = {gate.id for gate in self.config.gates if gate.barrier}
        now_ms = self.clock() * 1000
        since_ms = now_ms - self.settings.alerts.tailgate_window_s * 1000
        rows = self.store.read().execute(
            "SELECT ts_ms, json_extract(body, '$.payload.gate') FROM outbox WHERE type = 'access.granted' "
            "ORDER BY seq DESC LIMIT ?",
            (GRANTS_READ_BACK,),
        )
        credits: dict[str, collections.deque[float]] = {}
        for ts_ms, gate_id in reversed(rows.fetchall()):
            if ts_ms >= since_ms and gate_id in barriers:  # one from after now (a clock set back) is now
                credits.setdefault(gate_id, collections.deque(maxlen=64)).append(min(ts_ms, now_ms) / 1000)
        return credits

    def _credit(self, gate_id: str) -> None:
        self._credits.setdefault(gate_id, collections.deque(maxlen=64)).append(self.clock())

    async def _passage(self, seen: VehiclePassage) -> None:
        gate = self._gate_of(seen.device)
        if gate is None:
            return
        now = self.clock()
        window = self.settings.alerts.tailgate_window_s
        credits = self._credits.setdefault(gate.id, collections.deque(maxlen=64))
        while credits and now - credits[0] > window:
            credits.popleft()
        if credits:
            credits.popleft()
            return
        await self.alerts.raise_(
            "gate.tailgating",
            f"gate.tailgating:{gate.id}",
            f"{gate.id}: a vehicle passed with no grant in the last {window:g} s (tailgating)",
            device=seen.device,
            gate=gate.id,
        )

    # barrier states and conditions

    async def _gate_state(self, seen: GateStateChanged) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else seen.device
        await self.record(
            "gate.state",
            GateStatePayload(
                gate=gate_id,
                state=seen.state,
                previous=seen.previous,  # type: ignore[arg-type]
                commanded=seen.commanded,
                detail=seen.detail,
            ),
            device=seen.device,
        )
        if seen.state in ("opening", "open"):
            self._open_since.setdefault(gate_id, self.clock())
            if not seen.commanded and seen.previous in ("closed", "closing"):
                await self._gate_alert("forced_open", gate_id, seen.device, "moved without a command")
        elif seen.state == "closing":
            # the arm is coming down: whatever reopens it (the next car's grant) is a new opening
            self._open_since.pop(gate_id, None)
        elif seen.state == "closed":
            self._open_since.pop(gate_id, None)
            for condition in ("forced_open", "held_open"):
                await self.alerts.clear(f"gate.{condition}:{gate_id}", reason="barrier closed")

    async def _gate_alert(self, condition: str, gate_id: str, device: str, detail: str) -> None:
        await self.alerts.raise_(
            f"gate.{condition}",
            f"gate.{condition}:{gate_id}",
            f"{gate_id}: {GATE_CONDITIONS[condition]}" + (f" ({detail})" if detail else ""),
            device=device,
            gate=gate_id,
        )

    async def _gate_condition(self, seen: GateCondition) -> None:
        gate = self._gate_of(seen.device)
        gate_id = gate.id if gate else seen.device
        if not seen.active:
            await self.alerts.clear(
                f"gate.{seen.condition}:{gate_id}", reason=seen.detail or "condition over"
            )
            return
        await self._gate_alert(seen.condition, gate_id, seen.device, seen.detail)

    # zones

    async def _zone_sample(self, seen: ZoneSample) -> None:
        self.note(
            "occupancy.sample",
            OccupancyPayload(
                zone=seen.zone, count=seen.count, occupied=seen.occupied, capacity=seen.capacity
            ),
            device=seen.device,
        )
        if seen.zone not in self.settings.fire_lanes:
            return
        slot = (seen.device, seen.zone)
        if seen.count == 0:
            # also an alert raised before a restart, when this process never saw the lane occupied
            self._occupied_since.pop(slot, None)
            await self.alerts.clear(f"zone.blocked:{seen.device}:{seen.zone}", reason="zone free")
            return
        since = self.clock() - (seen.vehicle_dwell_s or 0.0)
        self._occupied_since[slot] = min(self._occupied_since.get(slot, since), since)
        await self._fire_lane(slot, seen.plate)

    async def _fire_lane(self, slot: tuple[str, str], plate: str | None = None) -> None:
        since = self._occupied_since.get(slot)
        limit = self.settings.alerts.fire_lane_blocked_s
        if since is None or self.clock() - since < limit:
            return
        device, zone = slot
        minutes = (self.clock() - since) / 60
        await self.alerts.raise_(
            "fire_lane.blocked",
            f"zone.blocked:{device}:{zone}",
            f"fire lane {zone}: a vehicle has stood there for {minutes:.0f} min"
            + (f" (plate {plate})" if plate else ""),
            device=device,
            detail={"zone": zone, "plate": plate, "since_ms": int(since * 1000)},
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
        await self.alerts.raise_(kind, key, text, device=seen.device, detail=detail)

    # devices

    async def _tamper(self, seen: Tamper) -> None:
        role = self._device_role(seen.device)
        kind = {"camera": "camera.tampered", "reader": "reader.tamper"}.get(role, "device.tamper")
        key = f"{kind}:{seen.device}"
        if seen.active:
            await self.alerts.raise_(
                kind, key, f"{seen.device}: tamper ({seen.detail or 'reported'})", device=seen.device
            )
        else:
            await self.alerts.clear(key, reason=seen.detail or "tamper cleared")

    async def _health(self, seen: Health) -> None:
        """Periodic health becomes at most one `device.health` per `health_interval_s` per
        device. A Health that comes when the device's interval is over is recorded at once.
        Within the interval the metrics wait, merged (a later value of a metric replaces the
        earlier one, other metrics are kept), and are recorded together once the interval is
        over: by the next Health, or by `tick()` if none comes. So the last value
        of a burst (bad_reads 5, not 1) and a metric that came second (dropped_events after
        bad_reads) are both recorded, and a device keeps at most one dict of waiting metrics.

        A state change (power lost) is recorded at once, as the driver reported it. What was
        waiting for that device is recorded just before it, as its own event: the timeline
        then shows the counters as they stood before the change, in the order observed, and
        the state change keeps its own shape (`{"power": "lost"}`) rather than being mixed
        with counters. This costs at most one early periodic event per state change; the
        interval then starts again."""
        now = self.clock()
        if seen.state_change:
            self._record_health(seen.device, now)
            self.note("device.health", DeviceHealthPayload(metrics=dict(seen.metrics)), device=seen.device)
            return
        self._health_pending.setdefault(seen.device, {}).update(seen.metrics)
        if self._health_due(seen.device, now):
            self._record_health(seen.device, now)

    def _health_due(self, device: str, now: float) -> bool:
        last = self._health_recorded.get(device)
        # A clock set back (NTP after a boot without a real-time clock) must not hold health
        # back until it catches up again.
        return last is None or now < last or now - last >= self.health_interval_s

    def _record_health(self, device: str, now: float) -> None:
        """Record the device's waiting health metrics, if any, and start its interval."""
        metrics = self._health_pending.pop(device, None)
        if not metrics:
            return
        self._health_recorded[device] = now
        self.note("device.health", DeviceHealthPayload(metrics=metrics), device=device)

    def flush_health(self, *, everything: bool = False) -> None:
        """Record the waiting health metrics of every device whose interval is over, or of
        every device when `everything` is set (the gateway is stopping)."""
        now = self.clock()
        for device in list(self._health_pending):
            if everything or self._health_due(device, now):
                self._record_health(device, now)

    def _offline_key(self, device: str) -> tuple[str, str]:
        kind = "camera.offline" if self._device_role(device) == "camera" else "device.offline"
        return kind, f"{kind}:{device}"

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
        """Record device.online / device.offline. An offline device becomes an alert at once
        when `alert` is set (the supervisor gave up restarting it), else once it has stayed
        offline for `offline_grace_s`; coming back online clears it."""
        await self.record(
            "device.online" if online else "device.offline",
            DevicePayload(kind=kind, reason=reason, restarts=restarts),
            device=device,
        )
        key = self._offline_key(device)[1]
        if online:
            self._offline.pop(device, None)
            await self.alerts.clear(key, reason="back online")
            return
        self._offline.setdefault(device, _Offline(self.clock(), reason, kind, restarts))
        if alert or self.settings.alerts.offline_grace_s == 0:
            await self._offline_alert(device)

    async def _offline_alert(self, device: str) -> None:
        state = self._offline[device]
        alert_kind, key = self._offline_key(device)
        what = "camera" if alert_kind == "camera.offline" else "device"
        await self.alerts.raise_(
            alert_kind,
            key,
            f"{what} {device} is offline: {state.reason}",
            device=device,
            detail={"restarts": state.restarts, "since_ms": int(state.since * 1000)},
        )

    # time-driven checks

    async def tick(self) -> None:
        """Check the conditions that time alone brings about, and record held-back health."""
        self.flush_health()
        now = self.clock()
        settings = self.settings.alerts
        for gate_id, since in list(self._open_since.items()):
            if now - since >= settings.held_open_s:
                gate = next((g for g in self.config.gates if g.id == gate_id), None)
                device = gate.barrier if gate and gate.barrier else gate_id
                await self._gate_alert("held_open", gate_id, device, f"open for {now - since:.0f} s")
        for slot in list(self._occupied_since):
            await self._fire_lane(slot)
        for device, state in list(self._offline.items()):
            if now - state.since >= settings.offline_grace_s:
                await self._offline_alert(device)
        await self._disk()
        if getattr(self.config, "mqtt", None) is not None:
            await self._backlog()
        await self.alerts.check()

    async def _disk(self) -> None:
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self.store.path.parent)
        except OSError as err:
            log.warning("cannot measure free disk space: %s", err)
            return
        free_pct = 100.0 * usage.free / usage.total if usage.total else 100.0
        limit = self.settings.alerts.disk_free_min_pct
        key = "disk.nearly_full:state"
        if free_pct < limit:
            await self.alerts.raise_(
                "disk.nearly_full",
                key,
                f"only {free_pct:.1f}% ({usage.free / 1e9:.2f} GB) free on the disk of "
                f"{self.store.path.parent}; free space or lower the store quota: once it is full, cards "
                "and plates are no longer decided (no gate opens by them) until there is room again",
                detail={"free_bytes": usage.free, "total_bytes": usage.total},
            )
        elif free_pct >= limit + 2:
            await self.alerts.clear(key, reason=f"{free_pct:.1f}% free")

    async def _backlog(self) -> None:
        backlog = await asyncio.to_thread(self.store.backlog)
        limit_min = self.settings.alerts.backlog_max_age_min
        key = "sync.backlog_old:uplink"
        age_min = (self.clock() * 1000 - backlog.oldest_ts_ms) / 60_000 if backlog.oldest_ts_ms else 0.0
        if age_min > limit_min:
            await self.alerts.raise_(
                "sync.backlog_old",
                key,
                f"{backlog.count} events not synced, the oldest {age_min:.0f} min old; is the uplink down?",
                detail={"count": backlog.count, "oldest_ts_ms": backlog.oldest_ts_ms},
            )
        else:
            await self.alerts.clear(key, reason="backlog caught up")

    async def run_checks(self) -> None:
        """Call `tick()` every `check_interval_s` until cancelled. A failing check is logged;
        a full store only when it starts and ends (the checks run every few seconds).

        When cancelled (the gateway stopping), the health still held back by thinning is
        handed to the store, so that the last counters are not lost; the gateway cancels
        this task and waits for its end before it waits for `settled()` and closes the store."""
        try:
            await self._check_periodically()
        finally:
            try:
                self.flush_health(everything=True)
            except Exception as err:
                log.error("health held back by thinning not recorded at stop: %s", err)

    async def _check_periodically(self) -> None:
        store_full = False
        while True:
            await asyncio.sleep(self.settings.alerts.check_interval_s)
            try:
                await self.tick()
            except StoreFull as err:
                if not store_full:
                    log.error("periodic rule checks cannot record their alerts: %s", err)
                store_full = True
                continue
            except Exception:
                log.exception("periodic rule checks failed")
                continue
            if store_full:
                log.info("periodic rule checks record their alerts again")
                store_full = False


def _access_type(decision: Decision) -> str:
    return "access.granted" if decision.granted else "access.denied"


def _direction(gate: Any) -> str | None:
    if gate is None or gate.direction == "both":
        return None
    return str(gate.direction)
