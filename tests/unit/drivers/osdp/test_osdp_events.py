"""Turning libosdp's event dicts into credentials, and the reader's configuration."""

from __future__ import annotations

import osdp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.osdp.config import OsdpReaderConfig
from drivers.osdp.device import card_from_event
from drivers.wiegand.bits import WiegandError, bits_to_bytes, encode_bits


def raw(value: int, length: int) -> dict:
    return {
        "event": osdp.Event.CardRead,
        "reader_no": 0,
        "format": osdp.CardFormat.Wiegand,
        "direction": 0,
        "length": length,
        "data": bits_to_bytes(value, length),
    }


def test_wiegand_26_read():
    card = card_from_event("r", raw(encode_bits(10, 20), 26), 1.5)
    assert (card.credential, card.card_format, card.monotonic) == ("10:20", "wiegand26", 1.5)


def test_ascii_read():
    event = {"event": osdp.Event.CardRead, "format": osdp.CardFormat.ASCII, "data": b" 0042 "}
    assert card_from_event("r", event, 0.0).credential == "0042"


@settings(deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "format": st.sampled_from([0, 1, 2, 7]),
            "length": st.integers(-1, 300),
            "data": st.binary(max_size=40),
        }
    )
)
def test_any_card_event_gives_a_card_or_a_wiegand_error(event):
    try:
        card = card_from_event("r", {"event": osdp.Event.CardRead, **event}, 0.0)
    except WiegandError:
        return
    assert card.credential


def config(**fields) -> OsdpReaderConfig:
    return OsdpReaderConfig.model_validate(
        {"id": "r", "kind": "osdp", "serial": {"port": "/dev/ttyUSB0"}, "address": 1, **fields}
    )


def test_key_is_32_hex_digits():
    assert config(scbk="00112233 44556677 8899AABB CCDDEEFF").key_bytes == bytes.fromhex(
        "00112233445566778899aabbccddeeff"
    )
    with pytest.raises(ValidationError, match="32 hex digits"):
        config(scbk="1234")


def test_install_mode_needs_the_new_key():
    with pytest.raises(ValidationError, match="install_mode"):
        config(install_mode=True)
