"""Statistics the benches print."""

from __future__ import annotations


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank value below which `share` (0..1) of `values` lie; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")
