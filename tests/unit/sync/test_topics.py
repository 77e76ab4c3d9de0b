import pytest

from sync import topics
from sync.topics import Topics


def test_gateway_topics() -> None:
    t = Topics("oak-court", "gw-1")
    assert t.status == "gatehouse/v1/oak-court/gw-1/status"
    assert t.event("access.granted") == "gatehouse/v1/oak-court/gw-1/events/access.granted"
    assert t.cmd("open_gate") == "gatehouse/v1/oak-court/gw-1/cmd/open_gate"
    assert t.reply("pass.issue") == "gatehouse/v1/oak-court/gw-1/cmd/pass.issue/reply"
    assert t.cmd_filter == "gatehouse/v1/oak-court/gw-1/cmd/+"
    assert t.attachment("ab" * 32) == f"gatehouse/v1/oak-court/gw-1/attachments/{'ab' * 32}"
    with pytest.raises(ValueError, match="not a sha256"):
        t.attachment("AB" * 32)


def test_filters() -> None:
    assert topics.events_filter() == "$share/ingest/gatehouse/v1/+/+/events/#"
    assert topics.events_filter(shared=False) == "gatehouse/v1/+/+/events/#"
    assert topics.status_filter() == "gatehouse/v1/+/+/status"
    assert topics.attachments_filter() == "$share/ingest/gatehouse/v1/+/+/attachments/+"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("gatehouse/v1/s/g/status", topics.ParsedTopic("status", "s", "g")),
        ("gatehouse/v1/s/g/events/gate.state", topics.ParsedTopic("event", "s", "g", "gate.state")),
        ("gatehouse/v1/s/g/cmd/open_gate", topics.ParsedTopic("cmd", "s", "g", "open_gate")),
        ("gatehouse/v1/s/g/cmd/snapshot/reply", topics.ParsedTopic("reply", "s", "g", "snapshot")),
        ("gatehouse/v1/s/g/attachments/" + "0f" * 32, topics.ParsedTopic("attachment", "s", "g", "0f" * 32)),
        ("gatehouse/v1/s/g/attachments/not-a-digest", None),
        ("gatehouse/v2/s/g/status", None),
        ("gatehouse/v1/s/g/other", None),
        ("gatehouse/v1/S!/g/status", None),
    ],
)
def test_parse(topic: str, expected: topics.ParsedTopic | None) -> None:
    assert topics.parse(topic) == expected


def test_bad_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="topic level"):
        Topics("oak/court", "gw")
    with pytest.raises(ValueError, match="topic level"):
        Topics("oak", "gw").event("a/#")
