"""The PP-OCRv4 text recogniser, run by our own session with our own pre- and post-processing,
and the fitting of its output to Chinese plate templates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from edge.errors import ModelError
from models.manifest import ModelSpec
from models.plates import grammar
from models.plates.ctc import constrained_decode, greedy_decode, sequence_log_likelihood
from models.runtime import SessionFactory

REC_HEIGHT = 48
REC_MAX_WIDTH = 320
HOME_PROVINCE_BIAS = math.log(1.5)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the recogniser made of one plate crop."""

    raw: str  # unconstrained best path
    plate: str | None  # the Chinese plate it fits, None when it does not fit one
    confidence: float  # 0..1
    char_probs: tuple[float, ...] = ()


class Fit(NamedTuple):
    """The best plate-shaped reading of one recogniser output."""

    text: str
    relative: float  # log-likelihood of its path relative to the unconstrained best path (≤ 0)
    chars: tuple[float, ...]  # peak probability of each character
    han: float  # probability on Chinese characters (any) where the first character peaks


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def load_charset(session: Any) -> list[str]:
    """The class list: blank, the dictionary stored in the model's metadata, then a space."""
    meta = session.get_modelmeta().custom_metadata_map
    text = meta.get("character")
    if not text:
        raise ModelError("the recogniser model carries no character dictionary in its metadata")
    return ["<blank>", *text.splitlines(), " "]


def _informative_frames(log_probs: np.ndarray, blank_floor: float = math.log(0.995)) -> np.ndarray:
    """Frames worth decoding: a run of near-certain blanks counts once (it only separates
    characters), which shortens the Viterbi pass without changing its outcome in practice."""
    sure_blank = log_probs[:, 0] >= blank_floor
    repeat = np.zeros_like(sure_blank)
    repeat[1:] = sure_blank[1:] & sure_blank[:-1]
    return np.flatnonzero(~repeat)


class PlateRecogniser:
    """Reads plate crops (BGR, already straightened) into plate text with a confidence."""

    def __init__(
        self,
        factory: SessionFactory,
        spec: ModelSpec,
        home_province: str | None = None,
        min_fit_ratio: float = 0.35,
        min_char_prob: float = 0.05,
        min_province_prob: float = 0.25,
        min_han_mass: float = 0.9,
    ) -> None:
        self.factory = factory
        self.spec = spec
        self.home_province = home_province
        self.min_fit_ratio = min_fit_ratio
        self.min_char_prob = min_char_prob
        self.min_province_prob = min_province_prob
        self.min_han_mass = min_han_mass
        self._session: Any = None
        self._charset: list[str] = []
        self._index: dict[str, int] = {}
        self._templates: list[tuple[grammar.Template, list[np.ndarray]]] = []
        self._separators: np.ndarray = np.zeros(0, dtype=np.int64)
        self._han: np.ndarray = np.zeros(0, dtype=np.int64)
        self.calls = 0

    def _ensure(self) -> Any:
        if self._session is None:
            session = self.factory.session(self.spec)
            self._charset = load_charset(session)
            index = {ch: i for i, ch in enumerate(self._charset) if i > 0}
            self._index = index
            self._templates = [
                (t, [np.array([index[c] for c in allowed if c in index]) for allowed in t.positions])
                for t in grammar.TEMPLATES
            ]
            self._separators = np.array(
                sorted({index[c] for c in grammar.SEPARATORS if c in index} | {len(index)})
            )
            self._han = np.array([i for i, ch in enumerate(self._charset) if _is_han(ch)])
            self._session = session
        return self._session

    def probabilities(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Per crop, the T×C softmax output (T depends on the crop's width)."""
        import cv2

        session = self._ensure()
        widths = []
        resized = []
        for crop in crops:
            h, w = crop.shape[:2]
            width = int(min(REC_MAX_WIDTH, max(REC_HEIGHT, math.ceil(REC_HEIGHT * w / max(h, 1)))))
            resized.append(cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR))
            widths.append(width)
        batch_width = max(widths)
        batch = np.zeros((len(crops), 3, REC_HEIGHT, batch_width), dtype=np.float32)
        for i, image in enumerate(resized):
            batch[i, :, :, : widths[i]] = image.transpose(2, 0, 1) / 127.5 - 1.0
        self.calls += 1
        out = session.run(None, {session.get_inputs()[0].name: batch})[0]
        steps_per_px = out.shape[1] / batch_width
        return [out[i, : max(1, math.ceil(widths[i] * steps_per_px))] for i in range(len(crops))]

    def _fold_separators(self, probs: np.ndarray) -> np.ndarray:
        """Separator dots and spaces count as blanks: a plate's `·` is not a character."""
        folded = probs.copy()
        folded[:, 0] += probs[:, self._separators].sum(axis=1)
        folded[:, self._separators] = 0.0
        return np.log(np.maximum(folded, 1e-12))

    def fit(
        self, probs: np.ndarray, templates: list[tuple[grammar.Template, list[np.ndarray]]] | None = None
    ) -> Fit | None:
        """The best plate-shaped label sequence for one T×C output."""
        self._ensure()
        folded = self._fold_separators(probs)
        frames = _informative_frames(folded)
        log_probs = folded[frames]
        upper_bound = float(log_probs.max(axis=1).sum())
        best: Fit | None = None
        for template, positions in templates or self._templates:
            bias = self._bias(template, positions)
            found = constrained_decode(log_probs, positions, bias)
            if found is None:
                continue
            labels, score, peaks = found
            if bias is not None:
                score -= float(bias[0][positions[0] == labels[0]].sum())
            text = "".join(self._charset[c] for c in labels)
            chars = tuple(float(probs[frames[t], c]) for t, c in zip(peaks, labels, strict=True))
            relative = score - upper_bound
            if best is None or relative > best.relative:
                han = float(probs[frames[peaks[0]], self._han].sum())
                best = Fit(text, relative, chars, han)
        return best

    def _bias(
        self, template: grammar.Template, positions: list[np.ndarray]
    ) -> list[np.ndarray | None] | None:
        if not self.home_province or template.positions[0] != grammar.PROVINCES:
            return None
        home = self._charset.index(self.home_province) if self.home_province in self._charset else -1
        first = np.where(positions[0] == home, HOME_PROVINCE_BIAS, 0.0)
        return [first, *([None] * (len(positions) - 1))]

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        """Read single-row plate crops, each on its own."""
        if not crops:
            return []
        return self.read_groups([[crop] for crop in crops])

    def read_views(self, views: list[np.ndarray]) -> Reading:
        """Read one single-row plate from several crops of it (different margins)."""
        return self.read_groups([views])[0]

    def read_groups(self, groups: list[list[np.ndarray]]) -> list[Reading]:
        """Read several plates, each from several crops of it. Each crop proposes its best
        plate-shaped reading; the proposal the crops agree on best (CTC likelihood summed over
        them) wins. One recogniser run per plate: the crops of a batch are padded to its widest,
        so a plate's reading does not depend on the other plates in the picture, and the
        runtime's memory stays that of one plate's batch."""
        return [self._vote(self.probabilities(views)) for views in groups]

    def _vote(self, probs: list[np.ndarray]) -> Reading:
        raw = greedy_decode(probs[0], self._charset).text
        fits = [found for p in probs if (found := self.fit(p)) is not None]
        if not fits:
            return Reading(raw, None, 0.0)
        if len(probs) == 1:
            return self._judge(raw, fits[0])
        proposals: dict[str, Fit] = {}
        for fit in fits:
            known = proposals.get(fit.text)
            if known is not None:
                fit = fit._replace(chars=tuple(map(max, known.chars, fit.chars)), han=max(known.han, fit.han))
            proposals[fit.text] = fit
        folded = [self._fold_separators(p) for p in probs]
        bounds = [float(lp.max(axis=1).sum()) for lp in folded]
        scored = []
        for text in proposals:
            labels = [self._index[ch] for ch in text]
            total = sum(
                sequence_log_likelihood(lp, labels) - bound for lp, bound in zip(folded, bounds, strict=True)
            )
            scored.append((total / len(folded), text))
        relative, text = max(scored)
        return self._judge(raw, proposals[text]._replace(relative=relative))

    def read_double(self, upper: np.ndarray, lower: np.ndarray) -> Reading:
        """Read a double-layer plate: province and letter above, serial below."""
        top, bottom = self.probabilities([upper, lower])
        self._ensure()
        results = []
        for template, positions in self._templates:
            split = template.double_split
            head = self.fit(top, [(template, positions[:split])])
            tail = self.fit(bottom, [(template, positions[split:])])
            if head is None or tail is None:
                continue
            results.append(
                Fit(head.text + tail.text, head.relative + tail.relative, head.chars + tail.chars, head.han)
            )
        raw = greedy_decode(top, self._charset).text + greedy_decode(bottom, self._charset).text
        if not results:
            return Reading(raw, None, 0.0)
        return self._judge(raw, max(results, key=lambda r: r.relative))

    def _judge(self, raw: str, fit: Fit) -> Reading:
        """Accept a fitted reading only when the model itself found it plausible: the fitted
        path keeps a fair share of the best path's probability, no character was guessed, and
        the model saw a province there. A province counts as seen when it is likely itself, or
        when the model was sure of a Chinese character at that place and only took it for a
        look-alike outside the province set (海 for 浙, 湖 for 湘): a foreign plate has a Latin
        letter or nothing there."""
        text, chars = fit.text, fit.chars
        fit_ratio = min(1.0, math.exp(fit.relative / max(len(text), 1)))
        confidence = fit_ratio * min(chars) ** 0.5 if chars else 0.0
        province_seen = chars[0] >= self.min_province_prob or fit.han >= self.min_han_mass
        plausible = fit_ratio >= self.min_fit_ratio and min(chars) >= self.min_char_prob and province_seen
        return Reading(raw, text if plausible else None, confidence if plausible else 0.0, chars)
