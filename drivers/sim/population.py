"""A deterministic population for the simulators and the demo: residents with cards and cars,
visitors with passes, strangers, and the odd blocklisted plate."""

from __future__ import annotations

import random
from dataclasses import dataclass

PROVINCES = "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
SERIAL = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True)
class Resident:
    person: str
    household: str
    building: str
    card: str
    plate: str | None


@dataclass(frozen=True)
class Visitor:
    name: str
    plate: str
    token: str


def _plate(rng: random.Random, province: str) -> str:
    return province + rng.choice("ABC") + "".join(rng.choice(SERIAL) for _ in range(5))


class Population:
    """The same seed gives the same people, cards and plates, so the demo's allow-list and its
    simulated readers and cameras agree."""

    def __init__(self, seed: int = 7, residents: int = 40, province: str = "津") -> None:
        rng = random.Random(seed)
        self.residents = [
            Resident(
                person=f"person-{i:04d}",
                household=f"household-{i // 2:04d}",
                building=f"building-{1 + i % 6}",
                card=str(rng.randrange(10_000_000, 99_999_999)),
                plate=_plate(rng, province) if rng.random() < 0.7 else None,
            )
            for i in range(residents)
        ]
        self.visitors = [
            Visitor(
                name=f"visitor-{i:03d}",
                plate=_plate(rng, rng.choice(PROVINCES)),
                token=f"QR{rng.getrandbits(64):016X}",
            )
            for i in range(max(3, residents // 8))
        ]
        self.strangers_cards = [str(rng.randrange(10_000_000, 99_999_999)) for _ in range(20)]
        self.strangers_plates = [_plate(rng, rng.choice(PROVINCES)) for _ in range(20)]
        self.blocklisted_plate = _plate(rng, province)
