"""Personal data as the gateway may keep it: credentials only as a keyed hash and the last 4."""

import hashlib
import hmac

from edge.events import CredentialRef


def normalise_credential(raw: str, kind: str) -> str:
    """A credential as it is hashed: upper case, and a card number or PIN without the spaces it is
    printed or typed with (`0012 3456 78`), which no reader sends."""
    text = raw.strip().upper()
    return "".join(text.split()) if kind in ("card", "pin") else text


def credential_hash(raw: str, salt: str, kind: str) -> str:
    """HMAC-SHA256 keyed with the site's salt, over the kind and the normalised credential, so the
    same card hashes alike at every gateway of a site and differently at another site."""
    message = f"{kind}:{normalise_credential(raw, kind)}".encode()
    return hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()


def credential_ref(raw: str, salt: str, kind: str, card_format: str | None = None) -> CredentialRef:
    normalised = normalise_credential(raw, kind)
    return CredentialRef(
        kind=kind,  # type: ignore[arg-type]
        hash=credential_hash(normalised, salt, kind),
        last4=normalised[-4:],
        format=card_format,
    )
