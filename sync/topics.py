"""Every MQTT topic Gatehouse uses is built and parsed here, and nowhere else.

    {prefix}/{site}/{gateway}/status                 retained birth / last will
    {prefix}/{site}/{gateway}/events/{type}          events, one per message or a JSON array
    {prefix}/{site}/{gateway}/cmd/{name}             signed commands to the gateway
    {prefix}/{site}/{gateway}/cmd/{name}/reply       replies (MQTT 3.1.1, and the admin default)
    {prefix}/{site}/{gateway}/attachments/{sha256}   an attachment's bytes (a plate crop, a snapshot)

The prefix is `gatehouse/v1` unless configured otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge.config_base import ID_PATTERN

DEFAULT_PREFIX = "gatehouse/v1"
SHARE_GROUP = "ingest"

_LEVEL = re.compile(ID_PATTERN)
_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,62}$")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

TopicKind = Literal["status", "event", "cmd", "reply", "attachment"]


def _check_level(value: str, what: str) -> str:
    if not _LEVEL.match(value):
        raise ValueError(f"{what} {value!r} cannot be a topic level (a-z, 0-9, _ and -)")
    return value


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} cannot be a topic level (a-z, 0-9, _ and .)")
    return value


@dataclass(frozen=True)
class Topics:
    """The topics of one gateway."""

    site: str
    gateway: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        _check_level(self.site, "site id")
        _check_level(self.gateway, "gateway id")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def event(self, event_type: str) -> str:
        return f"{self.base}/events/{_check_name(event_type, 'event type')}"

    def attachment(self, sha256: str) -> str:
        if not _SHA256.match(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 (64 lower-case hex digits)")
        return f"{self.base}/attachments/{sha256}"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{_check_name(name, 'command name')}"

    def reply(self, name: str) -> str:
        return f"{self.cmd(name)}/reply"

    @property
    def cmd_filter(self) -> str:
        """What the gateway subscribes to: its commands, not their replies."""
        return f"{self.base}/cmd/+"


def events_filter(prefix: str = DEFAULT_PREFIX, shared: bool = True) -> str:
    """Every gateway's events; the shared form spreads them over the ingest workers."""
    plain = f"{prefix}/+/+/events/#"
    return f"$share/{SHARE_GROUP}/{plain}" if shared else plain


def attachments_filter(prefix: str = DEFAULT_PREFIX, shared: bool = True) -> str:
    """Every gateway's attachments, shared over the ingest workers like the events."""
    plain = f"{prefix}/+/+/attachments/+"
    return f"$share/{SHARE_GROUP}/{plain}" if shared else plain


def status_filter(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/+/+/status"


def reply_filter(prefix: str = DEFAULT_PREFIX, shared: bool = True) -> str:
    plain = f"{prefix}/+/+/cmd/+/reply"
    return f"$share/{SHARE_GROUP}/{plain}" if shared else plain


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    site: str
    gateway: str
    name: str | None = None


def parse(topic: str, prefix: str = DEFAULT_PREFIX) -> ParsedTopic | None:
    """The parts of one of our topics, or None for anything else."""
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) < 3 or not _LEVEL.match(levels[0]) or not _LEVEL.match(levels[1]):
        return None
    site, gateway, rest = levels[0], levels[1], levels[2:]
    if rest == ["status"]:
        return ParsedTopic("status", site, gateway)
    if len(rest) == 2 and rest[0] == "events" and _NAME.match(rest[1]):
        return ParsedTopic("event", site, gateway, rest[1])
    if len(rest) == 2 and rest[0] == "attachments" and _SHA256.match(rest[1]):
        return ParsedTopic("attachment", site, gateway, rest[1])
    if len(rest) == 2 and rest[0] == "cmd" and _NAME.match(rest[1]):
        return ParsedTopic("cmd", site, gateway, rest[1])
    if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "reply" and _NAME.match(rest[1]):
        return ParsedTopic("reply", site, gateway, rest[1])
    return None
