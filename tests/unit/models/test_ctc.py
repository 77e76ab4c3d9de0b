"""CTC decoding constrained by the plate grammar, on hand-made probability matrices."""

from __future__ import annotations

import numpy as np

from models.plates.ctc import constrained_decode, greedy_decode, sequence_log_likelihood

CHARSET = ["<blank>", "京", "A", "D", "0", "1", "2"]


def frames(*rows: dict[str, float]) -> np.ndarray:
    out = np.full((len(rows), len(CHARSET)), 1e-4)
    for t, row in enumerate(rows):
        for ch, p in row.items():
            out[t, CHARSET.index(ch)] = p
        out[t] /= out[t].sum()
    return out


def idx(chars: str) -> np.ndarray:
    return np.array([CHARSET.index(c) for c in chars])


def test_forbidden_glyph_becomes_likeliest_allowed_one() -> None:
    probs = frames(
        {"京": 0.9},
        {"<blank>": 0.9},
        {"0": 0.6, "D": 0.3},  # authority position: a letter is required
        {"<blank>": 0.9},
        {"1": 0.9},
    )
    assert greedy_decode(probs, CHARSET).text == "京01"
    labels, _, peaks = constrained_decode(np.log(probs), [idx("京"), idx("AD"), idx("012")])
    assert "".join(CHARSET[c] for c in labels) == "京D1"
    assert peaks == [0, 2, 4]


def test_repeated_character_needs_a_blank() -> None:
    probs = frames({"1": 0.9}, {"<blank>": 0.9}, {"1": 0.9})
    labels, _, _ = constrained_decode(np.log(probs), [idx("12"), idx("12")])
    assert [CHARSET[c] for c in labels] == ["1", "1"]
    merged = frames({"1": 0.9}, {"1": 0.9}, {"<blank>": 0.9})
    labels, _, _ = constrained_decode(np.log(merged), [idx("12"), idx("12")])
    assert [CHARSET[c] for c in labels] != ["1", "1"]


def test_too_few_frames() -> None:
    probs = frames({"1": 0.9})
    assert constrained_decode(np.log(probs), [idx("1"), idx("2")]) is None


def test_likelihood_prefers_the_true_sequence() -> None:
    probs = np.log(frames({"京": 0.9}, {"A": 0.8}, {"<blank>": 0.9}, {"1": 0.9}))
    assert sequence_log_likelihood(probs, idx("京A1").tolist()) > sequence_log_likelihood(
        probs, idx("京A2").tolist()
    )


def test_home_province_settles_a_near_tie_only() -> None:
    provinces = idx("京A")  # stand-ins: two first-position choices
    near_tie = np.log(frames({"京": 0.45, "A": 0.40}, {"<blank>": 0.9}, {"1": 0.9}))
    clear = np.log(frames({"京": 0.80, "A": 0.05}, {"<blank>": 0.9}, {"1": 0.9}))
    home_bias = [np.where(provinces == CHARSET.index("A"), np.log(1.5), 0.0), None]
    positions = [provinces, idx("12")]
    tie_labels, _, _ = constrained_decode(near_tie, positions, home_bias)
    clear_labels, _, _ = constrained_decode(clear, positions, home_bias)
    assert CHARSET[tie_labels[0]] == "A"
    assert CHARSET[clear_labels[0]] == "京"
