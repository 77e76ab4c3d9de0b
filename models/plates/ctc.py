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
    alignment, peak frame per position), or None when there are too few frames.

    States per frame: `char[k, j]` (emitting class j of position k) and `gap[k]` (the blank
    before position k; `gap[length]` is the trailing blank). All positions are updated at once."""
    steps = log_probs.shape[0]
    length = len(positions)
    if steps < length:
        return None
    width = max(len(classes) for classes in positions)
    classes = np.zeros((length, width), dtype=np.int64)
    valid = np.zeros((length, width), dtype=bool)
    for k, allowed in enumerate(positions):
        classes[k, : len(allowed)] = allowed
        valid[k, : len(allowed)] = True
    emit = np.where(valid[None], log_probs[:, classes], _NEG)
    if bias is not None:
        for k, extra in enumerate(bias):
            if extra is not None:
                emit[:, k, : len(positions[k])] += extra
    blank = log_probs[:, 0]
    rows = np.arange(length)
    # previous position's class table, to forbid moving to the same class without a blank
    prev_classes = np.vstack([np.full((1, width), -1), classes[:-1]])
    char = np.full((length, width), _NEG)
    gap = np.full(length + 1, _NEG)
    char_from = np.full((steps, length, width), -1, dtype=np.int16)
    gap_from = np.full((steps, length + 1), -1, dtype=np.int16)
    gap[0] = blank[0]
    char[0] = emit[0, 0]
    for t in range(1, steps):
        # best and second-best class of each position at t-1 (for position k+1's entry)
        order = np.argsort(char, axis=1)
        top = order[:, -1]
        second = order[:, -2] if width > 1 else order[:, -1]
        top_val = char[rows, top]
        second_val = char[rows, second] if width > 1 else np.full(length, _NEG)
        prev_top = np.concatenate(([0], top[:-1]))
        prev_top_val = np.concatenate(([_NEG], top_val[:-1]))
        prev_second = np.concatenate(([0], second[:-1]))
        prev_second_val = np.concatenate(([_NEG], second_val[:-1]))
        top_class = prev_classes[rows, prev_top]
        clash = classes == top_class[:, None]
        enter_val = np.where(clash, prev_second_val[:, None], prev_top_val[:, None])
        enter_src = np.where(clash, prev_second[:, None], prev_top[:, None])
        from_gap = np.broadcast_to(gap[:length, None], (length, width))
        best = char
        source = np.full((length, width), -1, dtype=np.int16)
        better = from_gap > best
        best = np.where(better, from_gap, best)
        source[better] = -2
        better = enter_val > best
        best = np.where(better, enter_val, best)
        source = np.where(better, enter_src, source).astype(np.int16)
        new_gap = np.empty(length + 1)
        new_gap[0] = gap[0] + blank[t]
        enter_gap = top_val > gap[1:]
        new_gap[1:] = np.where(enter_gap, top_val, gap[1:]) + blank[t]
        gap_from[t, 1:] = np.where(enter_gap, top, -1)
        char = np.where(valid, best + emit[t], _NEG)
        char_from[t] = source
        gap = new_gap
    last = char[length - 1, : len(positions[length - 1])]
    end_j = int(last.argmax())
    in_gap = bool(gap[length] >= last[end_j])
    score = float(gap[length] if in_gap else last[end_j])
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
        labels[k] = int(classes[k, j])
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
