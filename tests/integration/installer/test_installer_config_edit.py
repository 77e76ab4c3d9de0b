"""`gatehouse gates add|remove|list` and `gatehouse devices add|remove`: an installer builds the
configuration from the shell. Every change is checked as a whole configuration before the file
is written; the file keeps its comments, quoting, layout, owner and mode; a refused change
leaves the file exactly as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from drivers.registry import device_kinds
from edge.cli.devices import settings_from
from edge.cli.init import credentials_directory
from edge.config_loader import load_config
from edge.errors import UsageError
from tests.integration.installer.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[3]
LINE_1 = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"
EXAMPLE_SECRETS = {
    "GATEHOUSE_SITE_SALT": "test-salt-0123456789abcdef",
    "GATEHOUSE_SIGNING_KEY": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "GATEHOUSE_MQTT_PASSWORD": "broker-password",
    "EAST_READER_KEY": "00112233445566778899aabbccddeeff",
    "NORTH_CAM_PASSWORD": "camera-password",
    "YARD_CAM_PASSWORD": "camera-password",
}


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of config/example-compound.yaml and a credentials directory holding its secrets."""
    config = tmp_path / "gatehouse.yaml"
    config.write_text((REPO / "config" / "example-compound.yaml").read_text(encoding="utf-8"))
    config.chmod(0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in EXAMPLE_SECRETS.items():
        (credentials / name).write_text(value + "\n")
    return config, credentials


def gatehouse(config: Path, credentials: Path, capsys, *argv: str) -> tuple[int, str, str]:
    changing = argv[1] in ("add", "remove")
    extra = ["--credentials-dir", str(credentials)] if changing else []
    return run_cli(["--config", str(config), *argv, *extra], capsys)


def loaded(config: Path, credentials: Path):
    with credentials_directory(credentials):
        return load_config(config)


def removed_and_added(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines only in `before`, and the lines only in `after`, in order."""
    import difflib

    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [line[2:] for line in diff if line.startswith("- ")], [
        line[2:] for line in diff if line.startswith("+ ")
    ]


def test_from_init_to_a_working_lane_with_gates_and_devices_commands(tmp_path, capsys):
    config = tmp_path / "etc" / "gatehouse.yaml"
    credentials = tmp_path / "etc" / "credentials"
    code, _out, err = run_cli(
        [
            *(
                "--config",
                str(config),
                "init",
                "--yes",
                "--site-id",
                "lotus-garden",
                "--gateway-id",
                "gw-north",
            ),
            *("--credentials-dir", str(credentials), "--state-dir", str(tmp_path / "state")),
        ],
        capsys,
    )
    assert code == 0, err
    written_by_init = config.read_text()

    code, out, err = gatehouse(
        config,
        credentials,
        capsys,
        "gates",
        "add",
        "north-in",
        "--kind",
        "vehicle",
        "--direction",
        "in",
        "--name",
        "North gate, vehicles in",
    )
    assert code == 0, err
    assert f"wrote {config}" in out
    assert f"give it devices with: gatehouse --config {config} devices add" in out, "the same file"
    code, out, err = gatehouse(
        config,
        credentials,
        capsys,
        "devices",
        "add",
        "sim_lane",
        "north-barrier",
        "travel_s=7",
        "--gate",
        "north-in",
    )
    assert code == 0, err
    assert "north-barrier: barrier of gate north-in" in out
    code, out, err = gatehouse(
        config,
        credentials,
        capsys,
        "devices",
        "add",
        "sim_camera",
        "north-cam",
        "--name",
        "North lane camera",
        "--gate",
        "north-in",
    )
    assert code == 0, err
    assert "north-cam: cameras of gate north-in" in out

    removed, _added = removed_and_added(written_by_init, config.read_text())
    assert removed == ["gates: []", "devices: []"], "init's comments and quoted values stay as they were"
    result = loaded(config, credentials)
    (gate,) = result.gates
    assert (gate.id, gate.kind, gate.direction, gate.name) == (
        "north-in",
        "vehicle",
        "in",
        "North gate, vehicles in",
    )
    assert gate.barrier == "north-barrier" and gate.cameras == ("north-cam",)
    assert [(d.id, d.kind) for d in result.devices] == [
        ("north-barrier", "sim_lane"),
        ("north-cam", "sim_camera"),
    ]
    assert result.device("north-barrier").travel_s == 7
    assert result.device("north-cam").name == "North lane camera"

    code, out, _err = gatehouse(config, credentials, capsys, "gates", "list")
    assert code == 2, "listing reads the secrets the way config check does: not found without them"
    with credentials_directory(credentials):
        code, out, err = gatehouse(config, credentials, capsys, "gates", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[:6] == ["north-in", "vehicle", "in", "north-barrier", "-", "north-cam"]


def test_a_reader_joins_an_existing_line_and_gate_and_nothing_else_moves(example, capsys):
    config, credentials = example
    before = config.read_text()
    code, out, err = gatehouse(
        config,
        credentials,
        capsys,
        "devices",
        "add",
        "osdp",
        "east-reader-3",
        f"serial.port={LINE_1}",
        "address=3",
        "scbk=${EAST_READER_KEY}",
        "--gate",
        "east-door",
    )
    assert code == 0, err
    assert "east-reader-3: serial settings taken from east-reader-in, which shares the port" in out
    removed, added = removed_and_added(before, config.read_text())
    assert removed == ["    readers: [east-reader-in, east-reader-out]"]
    assert added == [
        "    readers: [east-reader-in, east-reader-out, east-reader-3]",
        "  - kind: osdp",
        "    id: east-reader-3",
        f"    serial: {{port: {LINE_1}, baudrate: 115200}}",
        "    address: 3",
        "    scbk: ${EAST_READER_KEY}",
    ]
    assert 'protocol: "5"' in config.read_text(), "quoting is kept"
    reader = loaded(config, credentials).device("east-reader-3")
    assert reader.serial.baudrate == 115200 and reader.address == 3
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "warning" not in err, "a key named as ${NAME} is where it belongs"


@pytest.mark.parametrize(
    ("argv", "setting", "name"),
    [
        (
            ["osdp", "east-reader-3", f"serial.port={LINE_1}", "address=3", "scbk=" + "ab" * 16],
            "scbk",
            "EAST_READER_3_SCBK",
        ),
        (
            ["camera", "gate-cam", "source=rtsp://gatehouse:hunter2@192.0.2.30/stream2"],
            "the password in source",
            "GATE_CAM_PASSWORD",
        ),
    ],
)
def test_a_secret_written_out_is_added_with_a_warning_saying_where_it_belongs(
    example, capsys, argv: list[str], setting: str, name: str
):
    config, credentials = example
    code, _out, err = gatehouse(config, credentials, capsys, "devices", "add", *argv)
    assert code == 0, err
    assert f"warning: {setting} holds a secret, now written out in the configuration file" in err
    assert f"cat > {credentials / name}'" in err and f"write ${{{name}}} in its place" in err
    assert "hunter2" not in err and "ab" * 16 not in err


def test_a_camera_url_naming_its_password_as_a_secret_needs_no_warning(example, capsys):
    config, credentials = example
    source = "source=rtsp://gatehouse:${NORTH_CAM_PASSWORD}@192.0.2.30/stream2"
    code, _out, err = gatehouse(config, credentials, capsys, "devices", "add", "camera", "gate-cam", source)
    assert code == 0 and "warning" not in err, err


def test_removing_a_device_takes_it_out_of_its_gate(example, capsys):
    config, credentials = example
    code, out, err = gatehouse(config, credentials, capsys, "devices", "remove", "north-in-barrier")
    assert code == 0, err
    assert "north-in-barrier: no longer named by gate north-in" in out
    result = loaded(config, credentials)
    assert "north-in-barrier" not in [d.id for d in result.devices]
    assert result.gates[0].barrier is None
    assert "# One RS-485 line for both barrier boards" in config.read_text()

    code, out, err = gatehouse(config, credentials, capsys, "devices", "remove", "east-reader-in")
    assert code == 0, err
    assert loaded(config, credentials).gates[2].readers == ("east-reader-out",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["devices", "add", "osdpp", "r9"], "unknown device kind 'osdpp'; did you mean 'osdp'?"),
        (
            ["devices", "add", "osdp", "r9", f"serial.port={LINE_1}"],
            "  address: required; give it as address=VALUE (the reader's OSDP address",
        ),
        (
            ["devices", "add", "modbus_gate", "b9", "serial.port=/dev/ttyUSB7", "unit_id=1", "unit_idd=2"],
            "  unit_idd: not a setting of this kind; did you mean 'unit_id'?",
        ),
        (
            ["devices", "add", "osdp", "r9", f"serial.port={LINE_1}", "address=x"],
            "  address: Input should be a valid integer",
        ),
        (
            ["devices", "add", "osdp", "Bad Id", f"serial.port={LINE_1}", "address=5"],
            "  id: an id is lower-case letters, digits, - and _, starting with a letter or digit",
        ),
        (["devices", "add", "sim_reader", "east-reader-in"], "device 'east-reader-in' is already in"),
        (["devices", "add", "sim_reader", "r9", "--gate", "east-dor"], "no gate 'east-dor' in"),
        (
            ["devices", "add", "sim_lane", "b9", "--gate", "north-in"],
            "gate 'north-in' already has the barrier 'north-in-barrier'; remove that device first",
        ),
        (
            [
                "devices",
                "add",
                "wiegand",
                "w9",
                f"serial.port={LINE_1}",
                "profile=ascii_hex",
                "--gate",
                "west-door",
            ],
            f"devices[10].serial.port: devices east-reader-in and w9 share the serial port {LINE_1} "
            "but speak different protocols",
        ),
        (["devices", "remove", "north-in-cm"], "no device 'north-in-cm' in"),
        (["devices", "add", "sim_reader", "r9", "address"], "settings are written SETTING=VALUE"),
        (["gates", "add", "north-in", "--kind", "vehicle"], "gate 'north-in' is already in"),
        (
            ["gates", "remove", "north-in"],
            "rules.anti_passback[0].entry: anti-passback gate 'north-in' is not in gates",
        ),
        (
            ["gates", "add", "North In", "--kind", "vehicle"],
            "  id: an id is lower-case letters, digits, - and _, starting with a letter or digit",
        ),
    ],
)
def test_a_refused_change_says_why_and_leaves_the_file_as_it_was(example, capsys, argv, message):
    config, credentials = example
    before = config.read_bytes()
    code, out, err = gatehouse(config, credentials, capsys, *argv)
    assert code == 2
    assert message in err
    assert "wrote" not in out
    assert config.read_bytes() == before


def test_a_secret_in_a_setting_is_resolved_for_the_check_and_never_shown(example, capsys):
    config, credentials = example
    before = config.read_bytes()
    (credentials / "DOOR_KEY").write_text("not-hex-but-secret\n")
    for secret, message in [
        ("DOOR_KEY", "  scbk: must be 32 hex digits"),
        ("NO_SUCH_KEY", "scbk: secret ${NO_SUCH_KEY} is not set"),
    ]:
        reader = ["osdp", "r9", "serial.port=/dev/ttyUSB7", "address=1", f"scbk=${{{secret}}}"]
        code, _out, err = gatehouse(config, credentials, capsys, "devices", "add", *reader)
        assert code == 2
        assert message in err
        assert "not-hex-but-secret" not in err
    assert config.read_bytes() == before


def test_a_dry_run_shows_the_change_and_writes_nothing(example, capsys):
    config, credentials = example
    before = config.read_bytes()
    code, out, err = gatehouse(
        config,
        credentials,
        capsys,
        "devices",
        "add",
        "camera",
        "gate-cam",
        "source=rtsp://gatehouse:${NORTH_CAM_PASSWORD}@192.0.2.30/stream2",
        "plates.direction=in",
        "--gate",
        "west-door",
        "--dry-run",
    )
    assert code == 0, err
    assert f"+++ {config} (dry run, not written)" in out
    assert "+    cameras: [gate-cam]" in out
    assert "+    plates: {direction: in}" in out
    assert "wrote" not in out
    assert config.read_bytes() == before


def test_the_file_keeps_its_owner_when_root_edits_it(example, capsys):
    """After `gatehouse service install` the file belongs to the service's user; an edit with
    sudo must not hand it to root (the service could no longer read it)."""
    if os.geteuid() != 0:
        pytest.fail("this test gives a file away, which needs root (CI runs as root)")
    config, credentials = example
    os.chown(config, 65534, 65534)
    code, _out, err = gatehouse(config, credentials, capsys, "gates", "add", "south-in", "--kind", "vehicle")
    assert code == 0, err
    assert (config.stat().st_uid, config.stat().st_gid) == (65534, 65534)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not list(config.parent.glob(".*.tmp")), "no temporary file is left behind"


def test_settings_are_read_as_yaml_values_under_dotted_names():
    assert settings_from(
        [
            "serial.port=/dev/ttyUSB0",
            "serial.baudrate=115200",
            "address=1",
            "name=Gate: left",
            "zones=[{id: a, kind: parking, polygon: [[0, 0], [9, 0], [9, 9]]}]",
            "note=",
        ]
    ) == {
        "serial": {"port": "/dev/ttyUSB0", "baudrate": 115200},
        "address": 1,
        "name": "Gate: left",
        "zones": [{"id": "a", "kind": "parking", "polygon": [[0, 0], [9, 0], [9, 9]]}],
        "note": "",
    }
    for bad, message in [
        (["address"], "settings are written SETTING=VALUE"),
        (["serial.=1"], "settings are written SETTING=VALUE"),
        (["address=1", "address=2"], "address is given twice"),
        (["serial=x", "serial.port=y"], "serial was already given a value of its own"),
    ]:
        with pytest.raises(UsageError, match=message):
            settings_from(bad)


def test_a_text_setting_keeps_the_digits_typed(example, capsys):
    """A camera's USB index (`source=0`, as its description says) and a key of digits only are
    text settings: they are written as text, not refused as numbers."""
    config, credentials = example
    code, _out, err = gatehouse(
        config, credentials, capsys, "devices", "add", "camera", "usb-cam", "source=0"
    )
    assert code == 0, err
    assert loaded(config, credentials).device("usb-cam").source == "0"
    assert settings_from(
        ["serial.port=/dev/ttyUSB3", "address=4", "scbk=00112233445566778899001122334455"],
        device_kinds()["osdp"],
    ) == {"serial": {"port": "/dev/ttyUSB3"}, "address": 4, "scbk": "00112233445566778899001122334455"}


def test_devices_kinds_lists_each_kinds_settings_required_first(capsys):
    code, out, _err = run_cli(["devices", "kinds"], capsys)
    assert code == 0
    assert "osdp         OSDP card/PIN reader on an RS-485 line" in out
    code, out, _err = run_cli(["devices", "kinds", "osdp"], capsys)
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert rows[:3] == [["id", "required"], ["serial.port", "required"], ["address", "required"]]
    assert ["serial.baudrate", "9600"] in rows and ["feedback.led_ms", "2000"] in rows
    code, out, _err = run_cli(["devices", "kinds", "camera"], capsys)
    assert ["plates.direction", "None"] in [line.split()[:2] for line in out.splitlines()]
    assert ["zones", "[]"] in [line.split()[:2] for line in out.splitlines()]
    code, _out, err = run_cli(["devices", "kinds", "osdpp"], capsys)
    assert code == 2 and "unknown device kind 'osdpp'; did you mean 'osdp'?" in err


def test_the_next_command_gates_add_suggests_reaches_the_same_secrets(tmp_path, capsys, monkeypatch):
    """After `gates add … --credentials-dir DIR` the suggested `devices add` names DIR too: as
    printed (its placeholders filled in), it works."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "gatehouse.yaml"
    credentials = tmp_path / "credentials"
    init = ["--config", str(config), "init", "--yes", "--site-id", "lotus-garden"]
    code, _out, err = run_cli(
        [*init, "--credentials-dir", str(credentials), "--state-dir", str(tmp_path / "state")], capsys
    )
    assert code == 0, err
    code, out, err = gatehouse(config, credentials, capsys, "gates", "add", "north-in", "--kind", "vehicle")
    assert code == 0, err
    suggested = out.split("give it devices with: ", 1)[1].splitlines()[0]
    assert suggested.endswith(f"--gate north-in --credentials-dir {credentials}"), suggested
    words = suggested.replace("KIND ID SETTING=VALUE…", "sim_lane north-barrier travel_s=7").split()
    assert words[0] == "gatehouse"
    code, out, err = run_cli(words[1:], capsys)
    assert code == 0, err
    assert "north-barrier: barrier of gate north-in" in out
