"""CTC decoding of the recogniser's output (T time steps × C classes, softmax, class 0 blank).

`greedy_decode` is the plain best path. `constrained_decode` finds the best alignment whose
label sequence fits a plate template (one allowed set per position): a Viterbi pass over the
CTC topology, so a glyph the template forbids is replaced by the likeliest allowed one at the
same frames, and only there."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NEG = -1e9


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    log_prob: float  # of the best alignment
    char_probs: tuple[float, ...]  # peak probability of each character


def greedy_decode(probs: np.ndarray, charset: list[str]) -> Decoded:
    best = probs.argmax(axis=1)
    peak = probs.max(axis=1)
    text: list[str] = []
    conf: list[float] = []
    previous = -1
    for index, p in zip(best.tolist(), peak.tolist(), strict=True):
        if index != previous and index != 0:
            text.append(charset[index])
            conf.append(p)
        elif index == previous and index != 0 and conf:
            conf[-1] = max(conf[-1], p)
        previous = index
    return Decoded("".join(text), float(np.log(np.maximum(peak, 1e-12)).sum()), tuple(conf))


def constrained_decode(
    log_probs: np.ndarray,
    positions: list[np.ndarray],
    bias: list[np.ndarray | None] | None = None,
) -> tuple[list[int], float, list[int]] | None:
    """Best CTC alignment of a label sequence whose label k is drawn from `positions[k]` (class
    indices). `log_probs` is T×C with blank at 0; `bias[k]` is added to the scores of position
    k's classes (a prior, e.g. for the home province). Returns (class per position, score of the
    alignment, peak frame per position), or None when there are too few frames."""
    steps = log_probs.shape[0]
    length = len(positions)
    if steps < length:
        return None
    width = max(len(classes) for classes in positions)
    emit = np.full((steps, length, width), _NEG)
    for k, classes in enumerate(positions):
        emit[:, k, : len(classes)] = log_probs[:, classes]
        if bias is not None and bias[k] is not None:
            emit[:, k, : len(classes)] += bias[k]
    blank = log_probs[:, 0]
    char = np.full((steps, length, width), _NEG)
    gap = np.full((steps, length + 1), _NEG)
    # back pointers: char: -1 stayed, -2 came from the gap before, j>=0 from class j of k-1;
    # gap: -1 stayed, j>=0 from class j of the position before it
    char_from = np.full((steps, length, width), -1, dtype=np.int16)
    gap_from = np.full((steps, length + 1), -1, dtype=np.int16)
    gap[0, 0] = blank[0]
    char[0, 0] = emit[0, 0]
    for t in range(1, steps):
        gap[t, 0] = gap[t - 1, 0] + blank[t]
        for k in range(length):
            n = len(positions[k])
            best = char[t - 1, k, :n].copy()
            source = np.full(n, -1, dtype=np.int16)
            from_gap = gap[t - 1, k]
            better = from_gap > best
            best[better] = from_gap
            source[better] = -2
            if k > 0:
                prev = char[t - 1, k - 1, : len(positions[k - 1])]
                order = np.argsort(prev)[::-1]
                top = order[0]
                second = order[1] if len(order) > 1 else order[0]
                clash = positions[k] == positions[k - 1][top]
                pick = np.where(clash, second, top)
                value = prev[pick]
                if len(order) == 1:
                    value = np.where(clash, _NEG, value)
                better = value > best
                best[better] = value[better]
                source[better] = pick[better]
            char[t, k, :n] = best + emit[t, k, :n]
            char_from[t, k, :n] = source
        for k in range(1, length + 1):
            prev = char[t - 1, k - 1, : len(positions[k - 1])]
            j = int(prev.argmax())
            if prev[j] > gap[t - 1, k]:
                gap[t, k] = prev[j] + blank[t]
                gap_from[t, k] = j
            else:
                gap[t, k] = gap[t - 1, k] + blank[t]
    last = char[steps - 1, length - 1, : len(positions[length - 1])]
    end_j = int(last.argmax())
    in_gap = gap[steps - 1, length] >= last[end_j]
    score = float(gap[steps - 1, length] if in_gap else last[end_j])
    if score <= _NEG / 2:
        return None
    labels = [0] * length
    peaks = [0] * length
    peak_p = [_NEG] * length
    k, j = (length, -1) if in_gap else (length - 1, end_j)
    for t in range(steps - 1, -1, -1):
        if in_gap:
            source = int(gap_from[t, k])
            if t > 0 and k > 0 and source >= 0:
                in_gap, k, j = False, k - 1, source
            continue
        labels[k] = int(positions[k][j])
        if log_probs[t, labels[k]] > peak_p[k]:
            peak_p[k] = float(log_probs[t, labels[k]])
            peaks[k] = t
        source = int(char_from[t, k, j])
        if t == 0 or source == -1:
            continue
        if source == -2:
            in_gap = True
        else:
            k, j = k - 1, source
    return labels, score, peaks


def sequence_log_likelihood(log_probs: np.ndarray, labels: list[int]) -> float:
    """log P(labels | frames) under CTC: the sum over every alignment (forward algorithm)."""
    steps = log_probs.shape[0]
    extended = [0]
    for label in labels:
        extended += [label, 0]
    size = len(extended)
    ext = np.array(extended)
    alpha = np.full(size, _NEG)
    alpha[0] = log_probs[0, 0]
    if size > 1:
        alpha[1] = log_probs[0, ext[1]]
    skip = np.zeros(size, dtype=bool)
    skip[2:] = (ext[2:] != 0) & (ext[2:] != ext[:-2])
    for t in range(1, steps):
        shifted1 = np.concatenate(([_NEG], alpha[:-1]))
        shifted2 = np.concatenate(([_NEG, _NEG], alpha[:-2]))
        shifted2 = np.where(skip, shifted2, _NEG)
        alpha = np.logaddexp(np.logaddexp(alpha, shifted1), shifted2) + log_probs[t, ext]
    tail = alpha[-2:] if size > 1 else alpha[-1:]
    return float(np.logaddexp.reduce(tail))
