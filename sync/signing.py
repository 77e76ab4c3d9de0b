"""Command signatures over a canonical form, by one of two algorithms:

- `hmac-sha256` with the gateway's own provisioned key (the community database keeps a copy of
  each gateway's key);
- `ed25519` with the community database's signing key: the gateway holds only the public half,
  so no secret travels between gateway and community, and a gateway's key cannot sign for any
  other gateway.

The canonical form is the command's JSON object without its `sig` member, serialised with
sorted keys, no insignificant whitespace and UTF-8 text (`json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`). It includes `alg`, so the algorithm cannot be
swapped. The verifier canonicalises the object it parsed, not a re-serialised model, so a
signer in another language only has to produce the same bytes. Keep floats out of signed
arguments; integers and strings serialise alike everywhere.

`cryptography` is imported only where an Ed25519 key is made, read or used: its OpenSSL costs a
gateway about 10 MB of memory, which one on HMAC keys need not carry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HMAC = "hmac-sha256"
ED25519 = "ed25519"
ALGORITHMS = (HMAC, ED25519)
ALG_FIELD = "alg"
SIG_FIELD = "sig"
_HEX_KEY = re.compile(r"^(?:[0-9a-fA-F]{2}){32,}$")
_HEX_32_BYTES = re.compile(r"^[0-9a-fA-F]{64}$")
_SIGNATURE = {HMAC: re.compile(r"[0-9a-fA-F]{64}"), ED25519: re.compile(r"[0-9a-fA-F]{128}")}

SigningKey: TypeAlias = "str | bytes | Ed25519PrivateKey"
"""What signs: a gateway's HMAC key, or the community's Ed25519 private key."""
VerifyingKey: TypeAlias = "str | bytes | Ed25519PublicKey"
"""What checks: the gateway's HMAC key, or the community's Ed25519 public key."""


def key_bytes(key: str | bytes) -> bytes:
    """The HMAC key: a string of 64 or more hex digits is decoded, any other text is used as
    its UTF-8 bytes."""
    if isinstance(key, bytes):
        return key
    if _HEX_KEY.match(key):
        return bytes.fromhex(key)
    return key.encode()


def canonical(document: Mapping[str, Any]) -> bytes:
    unsigned = {name: value for name, value in document.items() if name != SIG_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(document: Mapping[str, Any], key: str | bytes) -> str:
    return hmac.new(key_bytes(key), canonical(document), hashlib.sha256).hexdigest()


def algorithm_of(key: SigningKey | VerifyingKey) -> str:
    return HMAC if isinstance(key, str | bytes) else ED25519


def sign(document: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of the document with its `alg` and `sig` set."""
    signed = {name: value for name, value in document.items() if name != SIG_FIELD}
    signed[ALG_FIELD] = algorithm_of(key)
    if isinstance(key, str | bytes):
        signed[SIG_FIELD] = signature(signed, key)
    else:
        signed[SIG_FIELD] = key.sign(canonical(signed)).hex()
    return signed


def verify(document: Mapping[str, Any], key: VerifyingKey) -> bool:
    """True when the document names this key's algorithm and its `sig` (hex, either case) is that
    algorithm's signature of its canonical form under this key. A document holding text that is
    not Unicode (a lone surrogate) has no UTF-8 form, so no signer can have signed it."""
    alg = algorithm_of(key)
    claimed = document.get(SIG_FIELD)
    if document.get(ALG_FIELD, HMAC) != alg:
        return False
    if not isinstance(claimed, str) or not _SIGNATURE[alg].fullmatch(claimed):
        return False
    try:
        if isinstance(key, str | bytes):
            return hmac.compare_digest(claimed.lower(), signature(document, key))
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(bytes.fromhex(claimed), canonical(document))
        except InvalidSignature:
            return False
        return True
    except UnicodeEncodeError:
        return False


def public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex digits or a PEM block; ValueError saying what is
    expected otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    if _HEX_32_BYTES.match(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    try:
        loaded = serialization.load_pem_public_key(text.encode())
    except ValueError as err:
        raise ValueError("an Ed25519 public key is 64 hex digits or a PEM block (BEGIN PUBLIC KEY)") from err
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"the PEM block holds a {type(loaded).__name__}, not an Ed25519 public key")
    return loaded


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as 64 hex digits, as `gateway.command_public_key` takes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The community's Ed25519 signing key from a PEM file (`openssl genpkey -algorithm ed25519`,
    or `gatehouse admin signer new`); ValueError or OSError saying why not."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not an Ed25519 private key")
    return loaded


def new_private_key_pem() -> tuple[bytes, str]:
    """A new Ed25519 signing key as an unencrypted PKCS#8 PEM, and its public key in hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_hex(key)


def new_nonce() -> str:
    return secrets.token_hex(16)
