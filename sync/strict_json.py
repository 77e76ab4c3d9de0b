"""JSON as the MQTT contract means it: what JSON does not have (NaN, Infinity) is refused, since
neither the community database's JSON columns, other readers, nor a signer in another language
would produce or accept it."""

from __future__ import annotations

import json
from typing import Any


def loads(payload: bytes | str) -> Any:
    """The document; ValueError for text that is not strict JSON (RecursionError when too deep)."""
    return json.loads(payload, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
