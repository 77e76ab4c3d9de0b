"""A gateway whose commands are signed with its HMAC key never loads `cryptography`: the OpenSSL
that package carries costs about 10 MB of a Raspberry Pi's memory (58 against 49 MB for
`gatehouse run` on the demo configuration)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.children import REPO, child_env

GATEWAY_ON_HMAC = """
import sys
from edge.cli import build_parser
build_parser()
import edge.cli.run, edge.gateway, sync.downlink, sync.uplink
from sync import signing
signed = signing.sign({"command": "open_gate", "nonce": signing.new_nonce()}, "k" * 64)
assert signing.verify(signed, "k" * 64) and not signing.verify({**signed, "nonce": "x"}, "k" * 64)
print(sorted(name for name in sys.modules if name.split(".")[0] == "cryptography"))
"""


def test_the_gateway_and_its_cli_on_hmac_keys_do_not_load_cryptography():
    result = subprocess.run(
        [sys.executable, "-c", GATEWAY_ON_HMAC],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
