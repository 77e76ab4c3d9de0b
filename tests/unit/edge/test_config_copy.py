"""A configuration copied elsewhere with another state directory reads as the original did."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config_edit import copy_with_state_dir
from edge.config_loader import load_config
from edge.errors import ConfigError

SOURCE = """\
# the site's gateway
site:
  id: s1
  salt: ${SALT}   # from the credentials
gateway:
  id: gw1
  state_dir: ../state   # relative to this file
mqtt:
  host: broker.local
  tls:
    ca: certs/ca.pem
"""


def test_the_copy_names_the_new_state_dir_and_keeps_the_other_paths_and_comments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SALT", "pepper-of-sixteen-or-more")
    source = tmp_path / "etc" / "gatehouse.yaml"
    source.parent.mkdir()
    source.write_text(SOURCE)
    state = tmp_path / "elsewhere" / "state"
    state.mkdir(parents=True)
    copy = state / "copy.yaml"

    copy_with_state_dir(source, copy, state)

    original, copied = load_config(source), load_config(copy)
    assert copied.state_path == state.resolve() != original.state_path
    assert copied.mqtt.tls.ca == original.mqtt.tls.ca == str(tmp_path / "etc" / "certs" / "ca.pem")
    text = copy.read_text()
    assert "${SALT}" in text and "# from the credentials" in text, "secrets stay references"
    assert copy.stat().st_mode & 0o077 == 0, "a configuration may hold secrets"


def test_a_file_without_a_gateway_section_is_refused(tmp_path: Path):
    source = tmp_path / "bad.yaml"
    source.write_text("site:\n  id: s1\n")
    with pytest.raises(ConfigError, match="no gateway: section"):
        copy_with_state_dir(source, tmp_path / "copy.yaml", tmp_path)
