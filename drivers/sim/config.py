"""Configuration of the event-level simulated devices."""

from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import DeviceConfig, GateSlot
from edge.config_base import StrictModel


class PopulationConfig(StrictModel):
    seed: int = Field(
        default=7, description="random seed: the same seed gives the same people, cards and plates"
    )
    residents: int = Field(
        default=40,
        ge=1,
        le=100_000,
        description="simulated residents, each with a card and some with a car",
    )
    resident_share: float = Field(default=0.75, ge=0, le=1, description="share of presentations by residents")
    visitor_share: float = Field(default=0.1, ge=0, le=1, description="share by visitors with a pass")


class SimReaderConfig(DeviceConfig):
    kind: Literal["sim_reader"] = Field(description="simulated card/QR reader")
    gate_slot: ClassVar[GateSlot] = "readers"
    interval_s: float = Field(default=4.0, gt=0, description="mean time between presentations")
    population: PopulationConfig = Field(default_factory=PopulationConfig, description="who shows up")


class SimLaneConfig(DeviceConfig):
    kind: Literal["sim_lane"] = Field(description="simulated barrier with a vehicle loop")
    gate_slot: ClassVar[GateSlot] = "barrier"
    travel_s: float = Field(default=1.5, gt=0, description="time the arm takes to open or close")
    open_hold_s: float = Field(default=5.0, gt=0, description="time the arm stays open before closing")
    stuck_probability: float = Field(
        default=0.02, ge=0, le=1, description="chance that an opening arm sticks"
    )


class SimCameraConfig(DeviceConfig):
    kind: Literal["sim_camera"] = Field(description="simulated lane camera reporting plate reads")
    gate_slot: ClassVar[GateSlot] = "cameras"
    interval_s: float = Field(default=6.0, gt=0, description="mean time between vehicles")
    population: PopulationConfig = Field(default_factory=PopulationConfig, description="who drives up")
