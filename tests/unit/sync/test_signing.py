import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from sync import signing

KEY = "0123456789abcdef" * 4


def test_sign_then_verify() -> None:
    doc = signing.sign({"b": 1, "a": "ü", "sig": "stale"}, KEY)
    assert signing.verify(doc, KEY)
    assert not signing.verify(doc, "another key that is long enough!!")
    assert not signing.verify({**doc, "a": "u"}, KEY)
    assert not signing.verify({k: v for k, v in doc.items() if k != "sig"}, KEY)


def test_canonical_form_ignores_key_order_and_sig() -> None:
    assert signing.canonical({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert signing.canonical({"a": 1, "sig": "x"}) == b'{"a":1}'


def test_hex_keys_are_decoded_text_keys_are_not() -> None:
    assert signing.key_bytes(KEY) == bytes.fromhex(KEY)
    assert signing.key_bytes("a text key of some length, not hex") == b"a text key of some length, not hex"


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.integers(), st.text(), st.booleans())))
def test_any_document_round_trips(document: dict[str, object]) -> None:
    document.pop("sig", None)
    assert signing.verify(signing.sign(document, KEY), KEY)


def test_ed25519_sign_then_verify_and_key_formats(tmp_path) -> None:
    pem, public = signing.new_private_key_pem()
    (tmp_path / "community.pem").write_bytes(pem)
    private = signing.read_private_key(tmp_path / "community.pem")
    doc = signing.sign({"b": 1, "a": "ü"}, private)
    assert doc["alg"] == "ed25519"
    assert signing.verify(doc, signing.public_key(public))
    pem_public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signing.verify(doc, signing.public_key(pem_public.decode()))
    assert not signing.verify({**doc, "a": "u"}, signing.public_key(public))
    assert not signing.verify(doc, KEY), "an HMAC key does not accept an ed25519 document"
    for bad in ("ab" * 31, "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"):
        with pytest.raises(ValueError, match="64 hex digits or a PEM block"):
            signing.public_key(bad)
