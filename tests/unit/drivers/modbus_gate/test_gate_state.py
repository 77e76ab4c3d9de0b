"""The barrier state machine, fed by hand: no board, no clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import GateCondition, GateStateChanged, VehiclePassage
from drivers.modbus_gate.config import BoardProfile
from drivers.modbus_gate.state import GateStateMachine, Inputs

CLOSED = Inputs(open_limit=False, closed_limit=True)
BETWEEN = Inputs(open_limit=False, closed_limit=False)
OPEN = Inputs(open_limit=True, closed_limit=False)


def machine() -> GateStateMachine:
    return GateStateMachine("gate", travel_timeout_s=5.0, held_open_s=30.0)


def kinds(observations):
    out = []
    for o in observations:
        if isinstance(o, GateStateChanged):
            out.append(o.state)
        elif isinstance(o, GateCondition):
            out.append(f"{o.condition}={'on' if o.active else 'off'}")
        elif isinstance(o, VehiclePassage):
            out.append("passage")
    return out


def test_a_commanded_cycle():
    m = machine()
    assert kinds(m.update(CLOSED, 0.0)) == ["closed"]
    assert kinds(m.command("open", 1.0)) == ["opening"]
    assert kinds(m.update(BETWEEN, 1.1)) == []
    assert kinds(m.update(OPEN, 2.0)) == ["open"]
    assert m.expect is None
    assert kinds(m.command("close", 3.0)) == ["closing"]
    assert kinds(m.update(BETWEEN, 3.1)) == []
    assert kinds(m.update(CLOSED, 4.0)) == ["closed"]


def test_stuck_then_recovered():
    m = machine()
    m.update(CLOSED, 0.0)
    m.command("open", 0.0)
    assert kinds(m.update(BETWEEN, 4.9)) == []
    assert kinds(m.update(BETWEEN, 5.0)) == ["stuck=on", "fault"]
    assert kinds(m.update(OPEN, 6.0)) == ["stuck=off", "open"]


def test_forced_open_and_its_end():
    m = machine()
    m.update(CLOSED, 0.0)
    assert kinds(m.update(BETWEEN, 1.0)) == ["forced_open=on", "opening"]
    assert kinds(m.update(OPEN, 2.0)) == ["open"]
    assert kinds(m.update(BETWEEN, 3.0)) == ["closing"]
    assert kinds(m.update(CLOSED, 4.0)) == ["forced_open=off", "closed"]


def test_held_open_waits_for_a_free_loop():
    m = machine()
    m.update(CLOSED, 0.0)
    m.command("open", 0.0)
    m.update(OPEN, 1.0)
    car = Inputs(open_limit=True, closed_limit=False, loop=True)
    assert kinds(m.update(car, 20.0)) == []
    assert kinds(m.update(car, 40.0)) == []
    assert kinds(m.update(OPEN, 41.0)) == ["passage"]
    assert kinds(m.update(OPEN, 70.0)) == []
    assert kinds(m.update(OPEN, 71.0)) == ["held_open=on"]
    assert kinds(m.update(BETWEEN, 72.0)) == ["held_open=off", "closing"]


def test_fault_input_and_crossed_limits():
    m = machine()
    m.update(CLOSED, 0.0)
    faulted = m.update(Inputs(False, True, fault=True), 1.0)
    assert kinds(faulted) == ["fault"]
    crossed = m.update(Inputs(True, True), 2.0)
    assert kinds(crossed) == []
    assert m.state == "fault"


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.booleans(),
            st.booleans(),
            st.booleans(),
            st.sampled_from([None, "open", "close"]),
        ),
        max_size=60,
    )
)
def test_conditions_alternate_and_states_change(steps):
    m = machine()
    now = 0.0
    seen: dict[str, list[bool]] = {}
    last_state = None
    for open_limit, closed_limit, loop, fault, command in steps:
        now += 1.7
        out = m.command(command, now) if command else []
        out += m.update(Inputs(open_limit, closed_limit, loop, fault), now)
        for o in out:
            if isinstance(o, GateCondition):
                seen.setdefault(o.condition, []).append(o.active)
            if isinstance(o, GateStateChanged):
                assert o.state != last_state
                last_state = o.state
    for flips in seen.values():
        assert flips == [i % 2 == 0 for i in range(len(flips))]


def test_profile_reads_its_inputs_in_one_span():
    assert BoardProfile().input_span == (0, 4)
    assert BoardProfile(
        open_limit_input=8, closed_limit_input=9, loop_input=None, fault_input=12
    ).input_span == (
        8,
        5,
    )
