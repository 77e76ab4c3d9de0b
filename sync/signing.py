"""Command signatures: HMAC-SHA256 with the gateway's provisioned key over a canonical form.

The canonical form is the command's JSON object without its `sig` member, serialised with
sorted keys, no insignificant whitespace and UTF-8 text (`json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`). The verifier canonicalises the object it parsed,
not a re-serialised model, so a signer in another language only has to produce the same bytes.
Keep floats out of signed arguments; integers and strings serialise alike everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

ALGORITHM = "hmac-sha256"
SIG_FIELD = "sig"
_HEX_KEY = re.compile(r"^(?:[0-9a-fA-F]{2}){32,}$")
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


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


def sign(document: Mapping[str, Any], key: str | bytes) -> dict[str, Any]:
    """A copy of the document with its `sig` set."""
    signed = {name: value for name, value in document.items() if name != SIG_FIELD}
    signed[SIG_FIELD] = signature(signed, key)
    return signed


def verify(document: Mapping[str, Any], key: str | bytes) -> bool:
    """True when the document's `sig` (64 hex digits, either case) is the HMAC of its canonical
    form under this key. A document holding text that is not Unicode (a lone surrogate) has no
    UTF-8 form, so no signer can have signed it."""
    claimed = document.get(SIG_FIELD)
    if not isinstance(claimed, str) or not _HEX_SIGNATURE.fullmatch(claimed):
        return False
    try:
        expected = signature(document, key)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(claimed.lower(), expected)


def new_nonce() -> str:
    return secrets.token_hex(16)
