"""The `rules:` section: anti-passback pairs, alert thresholds, the alert rate limit and the local
siren or strobe.

    rules:
      anti_passback:
        - {entry: north-in, exit: north-out}
      fire_lanes: [fire-lane]
      alerts:
        fire_lane_blocked_s: 600
        outputs:
          - {device: relay-board, output: siren, severities: [critical]}
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.config_base import StrictModel
from edge.events import Severity


class AntiPassbackPair(StrictModel):
    entry: str = Field(description="gate id where people or vehicles come in")
    exit: str = Field(description="gate id where they leave")
    reset_after_h: float = Field(
        default=18.0,
        gt=0,
        description="forget who is inside after this many hours (someone left without badging)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> AntiPassbackPair:
        if self.entry == self.exit:
            raise ValueError(f"anti-passback needs two gates; both are {self.entry!r}")
        return self


class AlertOutput(StrictModel):
    """A relay that a raised alert switches on (siren, strobe) until it is acknowledged or
    cleared, or `hold_s` has passed."""

    device: str = Field(description="device id of the relay board (a barrier board's spare relay)")
    output: str = Field(description="output name on that device, e.g. siren or strobe")
    severities: tuple[Severity, ...] = Field(
        default=("critical",), description="alert severities that drive this output"
    )
    kinds: tuple[str, ...] = Field(
        default=(), description="only these alert kinds (e.g. gate.forced_open); empty: every kind"
    )
    hold_s: float = Field(default=120.0, gt=0, description="switch off after this long even if nobody acks")


class AlertsConfig(StrictModel):
    held_open_s: float = Field(
        default=60.0, gt=0, description="an open barrier with no command to close for this long: held open"
    )
    tailgate_window_s: float = Field(
        default=30.0,
        gt=0,
        description="a vehicle passage more than this long after the last grant counts as tailgating",
    )
    unknown_plate_repeats: int = Field(
        default=3, ge=2, description="an unknown plate read this many times within the window: alert"
    )
    unknown_plate_window_min: float = Field(
        default=60.0, gt=0, description="window for counting an unknown plate's returns"
    )
    fire_lane_blocked_s: float = Field(
        default=600.0, gt=0, description="a vehicle in a fire lane for this long: alert"
    )
    offline_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="a device or camera that stays offline for this long: alert",
    )
    disk_free_min_pct: float = Field(
        default=10.0, gt=0, lt=100, description="free space on the state directory's disk below this: alert"
    )
    backlog_max_age_min: float = Field(
        default=30.0, gt=0, description="unsynced events older than this many minutes: alert"
    )
    momentary_clear_min: float = Field(
        default=15.0,
        gt=0,
        description="alerts about a moment (tailgating, blocklisted, unknown plate) clear this long "
        "after their last repeat",
    )
    max_per_kind_per_min: int = Field(
        default=20,
        ge=1,
        description="rate limit: new warnings of one kind, or critical alerts of one key (one gate, "
        "one device), per minute; beyond it they are counted and one alerts.flood alert is raised",
    )
    check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often time-based conditions (held open, disk, backlog) are checked",
    )
    outputs: tuple[AlertOutput, ...] = Field(default=(), description="sirens and strobes driven by alerts")


class RulesConfig(StrictModel):
    anti_passback: tuple[AntiPassbackPair, ...] = Field(
        default=(), description="in/out gate pairs where one may not enter twice without leaving"
    )
    fire_lanes: tuple[str, ...] = Field(
        default=(), description="zone names that must stay free (their occupancy samples are watched)"
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="alert thresholds and outputs")
