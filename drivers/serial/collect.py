"""An `Emit` that keeps the credentials a driver reports: what self-tests wait for."""

from __future__ import annotations

from drivers.base import CardPresented, Observation


class CardCollector:
    def __init__(self) -> None:
        self.cards: list[CardPresented] = []

    def __call__(self, observation: Observation) -> None:
        if isinstance(observation, CardPresented):
            self.cards.append(observation)

    def alive(self) -> None:
        return None
