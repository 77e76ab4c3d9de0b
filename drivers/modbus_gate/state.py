"""The barrier's state machine, fed with polled inputs and commands; no I/O here.

closed → opening → open → closing → closed, with `fault` when the controller says so, both
limits are on, or the arm reaches no limit within the travel timeout (stuck). It also watches
for an arm that leaves the closed limit with no command (forced open), an arm left open with
no vehicle (held open), and the loop going free (a vehicle passed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.base import GateCondition, GateStateChanged, Observation, VehiclePassage

Condition = Literal["stuck", "held_open", "forced_open"]
State = Literal["closed", "opening", "open", "closing", "fault", "unknown"]


@dataclass(frozen=True, slots=True)
class Inputs:
    open_limit: bool
    closed_limit: bool
    loop: bool = False
    fault: bool = False


class GateStateMachine:
    def __init__(self, device: str, travel_timeout_s: float, held_open_s: float) -> None:
        self.device = device
        self.travel_timeout_s = travel_timeout_s
        self.held_open_s = held_open_s
        self.state: State = "unknown"
        self.inputs: Inputs | None = None
        self.expect: Literal["open", "close"] | None = None
        self.expect_since = 0.0
        self.open_since: float | None = None
        self.free_since: float | None = None
        self.active: set[Condition] = set()

    @property
    def loop_occupied(self) -> bool:
        return bool(self.inputs and self.inputs.loop)

    def command(self, direction: Literal["open", "close"], now: float) -> list[Observation]:
        """A relay was pulsed: the arm should now move that way."""
        self.expect = direction
        self.expect_since = now
        out: list[Observation] = []
        if direction == "open":
            out += self._clear("forced_open")
        target: State = "opening" if direction == "open" else "closing"
        done = (direction == "open" and self.state == "open") or (
            direction == "close" and self.state == "closed"
        )
        if not done:
            out += self._set_state(target, commanded=True)
        return out

    def update(self, inputs: Inputs, now: float) -> list[Observation]:
        out: list[Observation] = []
        before = self.inputs
        self.inputs = inputs
        if before is not None and before.loop and not inputs.loop:
            out.append(VehiclePassage(self.device))
        if inputs.loop:
            self.free_since = None
        elif self.free_since is None:
            self.free_since = now

        state, detail = self._physical(inputs, now)
        left_closed = before is not None and before.closed_limit and not inputs.closed_limit
        if left_closed and self.expect != "open" and not inputs.fault:
            out += self._raise("forced_open", "the arm left the closed limit with no command")
        if inputs.closed_limit:
            out += self._clear("forced_open")

        if self.expect is not None:
            reached = (self.expect == "open" and inputs.open_limit) or (
                self.expect == "close" and inputs.closed_limit
            )
            if reached:
                self.expect = None
                out += self._clear("stuck")
            elif now - self.expect_since >= self.travel_timeout_s and not inputs.fault:
                limit = "open" if self.expect == "open" else "closed"
                waited = f"{self.travel_timeout_s:g} s"
                detail = f"no {limit} limit {waited} after the {self.expect} command"
                out += self._raise("stuck", detail)
                state = "fault"
        elif inputs.open_limit or inputs.closed_limit:
            out += self._clear("stuck")

        if state == "open":
            if self.open_since is None:
                self.open_since = now
            quiet_since = max(self.open_since, self.free_since or now)
            if not inputs.loop and now - quiet_since >= self.held_open_s:
                out += self._raise(
                    "held_open", f"open for {self.held_open_s:g} s with no vehicle on the loop"
                )
        else:
            self.open_since = None
            out += self._clear("held_open")

        out += self._set_state(state, commanded=self.expect is not None, detail=detail)
        return out

    def _physical(self, inputs: Inputs, now: float) -> tuple[State, str | None]:
        if inputs.fault:
            return "fault", "the barrier controller reports a fault"
        if inputs.open_limit and inputs.closed_limit:
            return "fault", "both limit inputs are on; check the limit switch wiring"
        if inputs.open_limit:
            return "open", None
        if inputs.closed_limit:
            return "closed", None
        if self.expect == "open":
            return "opening", None
        if self.expect == "close":
            return "closing", None
        if self.state in ("closed", "opening"):
            return "opening", None
        if self.state in ("open", "closing"):
            return "closing", None
        return self.state, None

    def _set_state(self, state: State, *, commanded: bool, detail: str | None = None) -> list[Observation]:
        if state == self.state:
            return []
        previous = self.state
        self.state = state
        return [GateStateChanged(self.device, state, previous, commanded, detail)]

    def _raise(self, condition: Condition, detail: str) -> list[Observation]:
        if condition in self.active:
            return []
        self.active.add(condition)
        return [GateCondition(self.device, condition, True, detail)]

    def _clear(self, condition: Condition) -> list[Observation]:
        if condition not in self.active:
            return []
        self.active.discard(condition)
        return [GateCondition(self.device, condition, False)]
