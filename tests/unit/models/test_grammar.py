"""Chinese plate grammar and string normalisation, with property-based tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.plates import grammar
from models.plates.grammar import ALNUM, AUTHORITY, DIGITS, LETTERS, PROVINCES, SUFFIXES, normalise

province = st.sampled_from(PROVINCES)
authority = st.sampled_from(AUTHORITY)
alnum = st.sampled_from(ALNUM)
digit = st.sampled_from(DIGITS)


@st.composite
def plates(draw: st.DrawFn) -> str:
    head = draw(province) + draw(authority)
    kind = draw(st.sampled_from(["ordinary", "suffix", "nev_small", "nev_large"]))
    if kind == "ordinary":
        return head + "".join(draw(alnum) for _ in range(5))
    if kind == "suffix":
        return head + "".join(draw(alnum) for _ in range(4)) + draw(st.sampled_from(SUFFIXES))
    if kind == "nev_small":
        return head + draw(st.sampled_from("DF")) + draw(alnum) + "".join(draw(digit) for _ in range(4))
    return head + "".join(draw(digit) for _ in range(5)) + draw(st.sampled_from("DF"))


def test_known_plates() -> None:
    assert normalise("京PC5U22") == "京PC5U22"
    assert normalise("京P·C5U22") == "京PC5U22"
    assert normalise(" 川 a 095q5 ") == "川A095Q5"
    assert normalise("渝B3587学") == "渝B3587学"
    assert normalise("皖AD12345") == "皖AD12345"  # new-energy, small
    assert normalise("皖A12345F") == "皖A12345F"  # new-energy, large
    assert normalise("粤OA2160") == "粤OA2160"  # police authority letter O


def test_serial_never_holds_i_or_o() -> None:
    # I and O cannot be in a serial: the only reading is the digit
    assert normalise("京A1234I") == "京A12341"
    assert normalise("京A1O234") == "京A10234"


def test_look_alikes_only_where_the_format_forces() -> None:
    # authority must be a letter: 8 can only be B
    assert normalise("京812345") == "京B12345"
    # ordinary serials take letters and digits: nothing to fix
    assert normalise("京A8B0D1") == "京A8B0D1"
    # new-energy small: the last four are digits, D and B there are 0 and 8
    assert normalise("京AD1234B") == "京AD12348"


def test_foreign_plates_are_not_forced() -> None:
    for foreign in ["RK828AG", "6MMD595", "ABC1234", "WA56660", "HH9G5W", ""]:
        assert normalise(foreign) is None


@given(plates())
def test_valid_plates_are_fixed_points(plate: str) -> None:
    assert grammar.is_valid(plate)
    assert normalise(plate) == plate


@given(st.text(max_size=12))
def test_normalise_returns_a_valid_plate_or_none(text: str) -> None:
    result = normalise(text)
    assert result is None or grammar.is_valid(result)
    if result is not None:
        assert normalise(result) == result
        assert "I" not in result[2:] and "O" not in result[2:]


@given(st.text(alphabet=LETTERS + DIGITS + "IO -·", max_size=10))
def test_no_province_never_becomes_chinese(text: str) -> None:
    assert normalise(text) is None
