"""Chinese licence plates: what a valid plate looks like, and how a reading is normalised.

A plate is a province character, an issuing-authority letter and a serial:
- the authority letter is A-Z without I (O is the police's, as in 粤O);
- ordinary (blue, yellow, black, white): 5 characters, letters and digits, never I or O;
  the last may instead be 学 (learner), 警 (police), 挂 (trailer), 港 or 澳 (cross-border);
- new-energy (green): 6 characters, `D`/`F` then a letter or digit then 4 digits (small cars),
  or 5 digits then `D`/`F` (large vehicles).

Each plate format is a template: one set of allowed characters per position. Readings are fitted
to templates: the recogniser's CTC output directly (see `ctc.constrained_decode`), or a string
(`normalise`), where a look-alike is swapped only where the template allows one reading of it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O
AUTHORITY = LETTERS + "O"  # the issuing-authority letter; O is used by police (粤O)
DIGITS = "0123456789"
ALNUM = LETTERS + DIGITS
SUFFIXES = "学警挂港澳"
NEV_MARK = "DF"


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    positions: tuple[str, ...]
    double_split: int = 2  # characters on the upper row of a double-layer plate

    def __len__(self) -> int:
        return len(self.positions)

    def matches(self, text: str) -> bool:
        return len(text) == len(self.positions) and all(
            ch in allowed for ch, allowed in zip(text, self.positions, strict=True)
        )


ORDINARY = Template("ordinary", (PROVINCES, AUTHORITY, ALNUM, ALNUM, ALNUM, ALNUM, ALNUM + SUFFIXES))
NEW_ENERGY_SMALL = Template(
    "new_energy_small", (PROVINCES, AUTHORITY, NEV_MARK, ALNUM, DIGITS, DIGITS, DIGITS, DIGITS)
)
NEW_ENERGY_LARGE = Template(
    "new_energy_large", (PROVINCES, AUTHORITY, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, NEV_MARK)
)
TEMPLATES: tuple[Template, ...] = (ORDINARY, NEW_ENERGY_SMALL, NEW_ENERGY_LARGE)

_PLATE_RE = re.compile(
    rf"^[{PROVINCES}][{AUTHORITY}]"
    rf"(?:[{ALNUM}]{{4}}[{ALNUM}{SUFFIXES}]"
    rf"|[{NEV_MARK}][{ALNUM}][{DIGITS}]{{4}}"
    rf"|[{DIGITS}]{{5}}[{NEV_MARK}])$"
)

# What a glyph may really be, when the template forbids what was read.
_LOOKALIKES: dict[str, str] = {
    "0": "DQ",
    "D": "0",
    "Q": "0",
    "O": "0",
    "8": "B",
    "B": "8",
    "I": "1",
    "2": "Z",
    "Z": "2",
    "5": "S",
    "S": "5",
}

# For drawing on pictures with fonts that have no Chinese glyphs.
PINYIN = dict(
    zip(
        PROVINCES + SUFFIXES,
        [
            "Jing",
            "Jin",
            "Hu",
            "Yu",
            "Ji",
            "Yu",
            "Yun",
            "Liao",
            "Hei",
            "Xiang",
            "Wan",
            "Lu",
            "Xin",
            "Su",
            "Zhe",
            "Gan",
            "E",
            "Gui",
            "Gan",
            "Jin",
            "Meng",
            "Shan",
            "Ji",
            "Min",
            "Gui",
            "Yue",
            "Qing",
            "Zang",
            "Chuan",
            "Ning",
            "Qiong",
            "Xue",
            "Jing",
            "Gua",
            "Gang",
            "Ao",
        ],
        strict=True,
    )
)

SEPARATORS = "·.•-_ ・∙:：丶。,，"


def ascii_label(text: str) -> str:
    """The plate with its Chinese characters spelt out: 京A12345 → Jing-A12345."""
    spelt = [f"-{PINYIN[ch]}-" if ch in PINYIN else ch for ch in text]
    return "".join(spelt).strip("-").replace("--", "-")


def is_valid(text: str) -> bool:
    """Whether `text` is a well-formed Chinese plate (no normalisation)."""
    return bool(_PLATE_RE.match(text))


def template_of(text: str) -> Template | None:
    for template in TEMPLATES:
        if template.matches(text):
            return template
    return None


def is_new_energy(text: str) -> bool:
    return template_of(text) in (NEW_ENERGY_SMALL, NEW_ENERGY_LARGE)


def clean(text: str) -> str:
    """Full-width to half-width, upper case, separators and spaces removed."""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(ch for ch in folded if ch not in SEPARATORS and not ch.isspace())


def _fit(text: str, template: Template) -> tuple[str, int] | None:
    """Fit a cleaned string to a template: the fitted text and how many characters were
    swapped, or None. A character is swapped only when the template forbids it and exactly one
    of its look-alikes is allowed there."""
    if len(text) != len(template):
        return None
    out: list[str] = []
    swaps = 0
    for ch, allowed in zip(text, template.positions, strict=True):
        if ch in allowed:
            out.append(ch)
            continue
        options = [alt for alt in _LOOKALIKES.get(ch, "") if alt in allowed]
        if len(options) != 1:
            return None
        out.append(options[0])
        swaps += 1
    return "".join(out), swaps


def normalise(text: str) -> str | None:
    """The Chinese plate a string stands for, or None when it is not one.

    Never invents a province: a reading without a province character (a foreign plate, or a
    partial read) is not a Chinese plate."""
    cleaned = clean(text)
    if not cleaned or cleaned[0] not in PROVINCES:
        return None
    fits = [fit for template in TEMPLATES if (fit := _fit(cleaned, template)) is not None]
    if not fits:
        return None
    fits.sort(key=lambda fit: fit[1])
    if len(fits) > 1 and fits[0][1] == fits[1][1] and fits[0][0] != fits[1][0]:
        return None
    return fits[0][0]
