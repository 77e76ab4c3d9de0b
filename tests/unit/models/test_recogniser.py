"""How the recogniser judges a fitted reading: when the province counts as seen (issue 5)."""

from __future__ import annotations

from models.manifest import default_spec
from models.plates.recogniser import Fit, PlateRecogniser
from models.runtime import SessionFactory

CLEAR_SERIAL = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def recogniser() -> PlateRecogniser:
    return PlateRecogniser(SessionFactory(1), default_spec("ppocr_rec"))


def test_likely_province_is_accepted() -> None:
    reading = recogniser()._judge("浙A72220", Fit("浙A72220", 0.0, (0.9, *CLEAR_SERIAL), 0.95))
    assert reading.plate == "浙A72220"


def test_chinese_look_alike_counts_as_a_province() -> None:
    # the model was sure of a Chinese character (海), the template chose the likeliest province
    reading = recogniser()._judge("海A72220", Fit("浙A72220", -1.0, (0.1, *CLEAR_SERIAL), 0.99))
    assert reading.plate == "浙A72220"
    assert 0 < reading.confidence <= 1


def test_no_chinese_character_is_not_forced_into_a_province() -> None:
    # a foreign plate: a Latin letter or nothing where a province would be
    reading = recogniser()._judge("TZC207", Fit("皖TZC207", -1.0, (0.1, *CLEAR_SERIAL), 0.4))
    assert reading.plate is None and reading.confidence == 0.0
