"""Voting across the frames of one vehicle pass: many per-frame readings, one plate event.

A pass starts with the first reading and ends when no plate has been read for `pass_gap_s`
(by the injected clock). Each reading votes for its plate with its confidence; the winner is
reported once, with the best crop among its own readings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.plates.pipeline import PlateResult


@dataclass(frozen=True, slots=True)
class PassResult:
    plate: str
    confidence: float  # winner's share of the votes × its best confidence
    colour: str | None
    box: tuple[int, int, int, int]
    frames: int  # readings in the pass
    crop: np.ndarray = field(repr=False)


class PassVoter:
    def __init__(self, clock: Callable[[], float], pass_gap_s: float = 2.0, min_votes: int = 1) -> None:
        self.clock = clock
        self.pass_gap_s = pass_gap_s
        self.min_votes = min_votes
        self._reads: list[PlateResult] = []
        self._last_read = 0.0

    @property
    def open(self) -> bool:
        return bool(self._reads)

    def add(self, results: list[PlateResult]) -> PassResult | None:
        """Add one frame's readings (best first); returns a finished pass when this frame
        belongs to a new one."""
        finished = self.poll()
        if results:
            self._reads.append(results[0])
            self._last_read = self.clock()
        return finished

    def poll(self) -> PassResult | None:
        """Close the pass if it has been quiet long enough."""
        if self._reads and self.clock() - self._last_read >= self.pass_gap_s:
            return self.close()
        return None

    def close(self) -> PassResult | None:
        reads, self._reads = self._reads, []
        if len(reads) < self.min_votes:
            return None
        votes: dict[str, float] = defaultdict(float)
        for read in reads:
            votes[read.plate] += read.confidence
        winner = max(votes, key=lambda plate: votes[plate])
        mine = [read for read in reads if read.plate == winner]
        best = max(mine, key=lambda read: read.confidence)
        share = votes[winner] / sum(votes.values())
        return PassResult(
            plate=winner,
            confidence=round(share * best.confidence, 3),
            colour=best.colour,
            box=best.box,
            frames=len(reads),
            crop=best.crop,
        )
