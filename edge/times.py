"""Stored times as people read them."""

from __future__ import annotations

from datetime import datetime, tzinfo


def in_zone(iso: str | None, zone: tzinfo, *, name_zone: bool = False) -> str:
    """A stored ISO time (UTC, `Z` or an offset) as the CLI shows times: in `zone`, to the
    second, with the zone's name when asked; "-" for none, and text that is no time as it is."""
    if not iso:
        return "-"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(zone)
    except ValueError:
        return iso
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (f" {moment:%Z}" if name_zone else "")
