"""Configuration errors are for installers: file, line, key path, what was expected, a
suggestion; exit code 2; no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.cli.config_cmd import schema_text
from edge.config_loader import load_config, parse_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
site:
  id: compound-7
  salt: ${TEST_SITE_SALT}
gateway:
  id: gw-north
  state_dir: {state}
gates:
  - id: north-in
    kind: vehicle
    barrier: north-barrier
devices:
  - kind: sim_lane
    id: north-barrier
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(text.replace("{state}", str(tmp_path / "state")))
    return path


@pytest.fixture(autouse=True)
def salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SITE_SALT", "a-long-enough-test-salt")


def test_good_config_loads_and_secret_is_substituted(tmp_path: Path):
    config = load_config(write(tmp_path, GOOD))
    assert config.site.salt == "a-long-enough-test-salt"
    assert config.gate_of("north-barrier").id == "north-in"


def test_secret_from_systemd_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TEST_SITE_SALT")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "TEST_SITE_SALT").write_text("salt-from-credentials-dir\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_config(write(tmp_path, GOOD)).site.salt == "salt-from-credentials-dir"


def test_outside_systemd_secrets_come_from_where_init_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`sudo gatehouse config check` (or `events`, `devices list`) on an installed gateway sees
    the secrets the service will, with no CREDENTIALS_DIRECTORY to set by hand."""
    monkeypatch.delenv("TEST_SITE_SALT")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    credentials = tmp_path / "etc" / "credentials"
    credentials.mkdir(parents=True)
    (credentials / "TEST_SITE_SALT").write_text("salt-written-by-init\n")
    monkeypatch.setattr("edge.config_loader.DEFAULT_CREDENTIALS_DIR", credentials)
    assert load_config(write(tmp_path, GOOD)).site.salt == "salt-written-by-init"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match="is not set"):
        load_config(write(tmp_path, GOOD))


def test_missing_secret_names_the_variable_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TEST_SITE_SALT")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr("edge.config_loader.DEFAULT_CREDENTIALS_DIR", tmp_path / "none")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD))
    assert "gatehouse.yaml:3:9 site.salt: secret ${TEST_SITE_SALT} is not set" in str(err.value)


def test_a_missing_secret_names_the_file_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Outside systemd the installer is told which file was missing and how to point at the
    folder `gatehouse init --credentials-dir` wrote the secrets to; in the service's journal, how
    to have the unit load it."""
    monkeypatch.delenv("TEST_SITE_SALT")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    default = tmp_path / "etc" / "credentials"
    default.mkdir(parents=True)
    monkeypatch.setattr("edge.config_loader.DEFAULT_CREDENTIALS_DIR", default)
    for folder in (default, tmp_path / "elsewhere"):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, GOOD))
        assert (
            f"secret ${{TEST_SITE_SALT}} is not set: not in the environment, and no file "
            f"{folder / 'TEST_SITE_SALT'}; put the secret in that file"
        ) in str(err.value)
        assert "CREDENTIALS_DIRECTORY=DIR before any gatehouse command" in str(err.value)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD))
    assert (
        "secret ${TEST_SITE_SALT} is not set: the unit loads no TEST_SITE_SALT (LoadCredential=); put "
        f"the secret in {default / 'TEST_SITE_SALT'} (mode 0600), then run `sudo gatehouse service "
        "install` again"
    ) in str(err.value)


def test_misspelt_key_gets_line_path_and_suggestion(tmp_path: Path):
    text = GOOD.replace("    barrier: north-barrier", "    barier: north-barrier")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "gatehouse.yaml:10:5 gates[0].barier: unknown key 'barier'; did you mean 'barrier'?" in str(
        err.value
    )


def test_misspelt_device_key_inside_a_union_member(tmp_path: Path):
    text = GOOD + "    stuck_probabilty: 0.5\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert (
        "devices[0].stuck_probabilty: unknown key 'stuck_probabilty'; did you mean 'stuck_probability'?"
        in str(err.value)
    )
    assert ":14:5 " in str(err.value)


def test_out_of_range_value_says_what_was_expected(tmp_path: Path):
    text = GOOD + "    stuck_probability: 7\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "devices[0].stuck_probability: Input should be less than or equal to 1 (got 7)" in message


def test_unknown_device_kind_lists_known_kinds(tmp_path: Path):
    text = GOOD.replace("kind: sim_lane", "kind: sim_lan")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "devices[0].kind: unknown device kind 'sim_lan'; did you mean 'sim_lane'?" in str(err.value)


def test_dangling_device_reference_points_at_the_line_naming_it(tmp_path: Path):
    text = GOOD.replace("barrier: north-barrier", "barrier: south-barrier")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert (
        "gatehouse.yaml:10:5 gates[0].barrier: gate 'north-in' names device 'south-barrier', which is not "
        "in devices (known: north-barrier)"
    ) in str(err.value)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "rules:\n  anti_passback:\n    - {entry: north-in, exit: north-out}\n",
            "rules.anti_passback[0].exit: anti-passback gate 'north-out' is not in gates (known: north-in)",
        ),
        (
            "rules:\n  alerts:\n    outputs:\n      - {device: north-barier, output: siren}\n",
            "rules.alerts.outputs[0].device: alert output device 'north-barier' is not in devices "
            "(known: north-barrier)",
        ),
        (
            "rules:\n  alerts:\n    outputs:\n      - {device: north-barrier, output: siren}\n",
            "rules.alerts.outputs[0].output: device 'north-barrier' has no output 'siren' (a sim_lane has "
            "none; sirens and strobes are relays of a modbus_gate board, named in its profile.outputs)",
        ),
    ],
)
def test_rules_name_only_configured_gates_and_devices(tmp_path: Path, rules: str, message: str):
    """A misspelt gate in an anti-passback pair, or a siren on a device that is not there, would
    otherwise be silently ignored."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD + rules))
    assert message in str(err.value)
    assert ":1:1 (top level)" not in str(err.value), "the error points at the line naming it"


def test_yaml_syntax_error_has_position(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"gatehouse.yaml:\d+:\d+: not valid YAML"):
        load_config(write(tmp_path, "site:\n  id: [unclosed\n"))


def test_missing_file_says_how_to_create_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="gatehouse init"):
        load_config(tmp_path / "absent.yaml")


def test_duplicate_key_is_an_error():
    with pytest.raises(ConfigError, match="key appears twice"):
        parse_config("site: {id: a, salt: aaaaaaaaaaaaaaaaaa}\nsite: {id: b}\n", "x.yaml")


def test_config_check_exit_codes_and_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    good = write(tmp_path, GOOD)
    assert main(["--config", str(good), "config", "check"]) == 0
    assert "OK — site compound-7, gateway gw-north, 1 gate, 1 device" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("kind: vehicle", "kind: vehicles"))
    assert main(["--config", str(bad), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "gates[0].kind" in err and "Traceback" not in err


def test_config_check_as_a_process(tmp_path: Path):
    bad = write(tmp_path, GOOD.replace("id: gw-north", "id: GW North"))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "--config", str(bad), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "gateway.id" in result.stderr
    assert "Traceback" not in result.stderr


def test_committed_schema_is_current():
    committed = (REPO / "config" / "gatehouse.schema.json").read_text()
    assert committed == schema_text(), "run: gatehouse config schema > config/gatehouse.schema.json"
    assert json.loads(committed)["additionalProperties"] is False


@pytest.mark.parametrize("name", ["demo.yaml", "example-compound.yaml"])
def test_example_configs_are_valid(name: str, monkeypatch: pytest.MonkeyPatch):
    for secret in (
        "GATEHOUSE_SITE_SALT",
        "GATEHOUSE_SIGNING_KEY",
        "GATEHOUSE_MQTT_PASSWORD",
        "EAST_READER_KEY",
        "NORTH_CAM_PASSWORD",
        "YARD_CAM_PASSWORD",
    ):
        monkeypatch.setenv(secret, "0123456789abcdef0123456789abcdef")
    config = load_config(REPO / "config" / name)
    assert config.devices


def test_every_field_has_a_description():
    schema = json.loads(schema_text())
    missing: list[str] = []

    def walk(node: dict, path: str) -> None:
        for key, value in node.get("properties", {}).items():
            if "description" not in value and key != "kind":
                missing.append(f"{path}.{key}")

    for name, definition in schema.get("$defs", {}).items():
        walk(definition, name)
    walk(schema, "root")
    assert not missing, f"fields without description: {missing}"


def test_a_bad_secret_value_is_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEST_SITE_SALT", "short-secret")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD))
    assert "site.salt" in str(err.value)
    assert "short-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: !foo bar\n", "x.yaml:1:7 site: could not determine a constructor for the tag '!foo'"),
        ("site: !!int abc\n", "x.yaml:1:7 site: 'abc' cannot be read as !!int"),
        ("site:\n  ? [a, b]\n  : 1\n", "x.yaml:2:5 site: a key must be a plain name, not a list"),
        ("site: &a [*a]\n", "x.yaml:1:7 site[0]: this alias refers to the value that contains it"),
        ("site: !!set {a: null}\n", "x.yaml:1:7 site: the tag !!set is not supported here"),
    ],
)
def test_yaml_that_parses_but_cannot_be_built_names_line_and_key(text: str, expected: str):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert expected in str(err.value)


def test_config_check_on_unbuildable_yaml_and_on_a_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["--config", str(write(tmp_path, "site: !foo bar\n")), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "gatehouse.yaml:1:7 site: could not determine a constructor" in err
    assert "internal error" not in err
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert main(["--config", str(folder), "config", "check"]) == 2
    assert f"{folder}: is a directory" in capsys.readouterr().err


def test_an_unreadable_secret_file_names_the_secret_and_says_to_use_sudo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TEST_SITE_SALT")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    secret = credentials / "TEST_SITE_SALT"
    secret.write_text("salt-from-credentials-dir\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = GOOD.replace("{state}", str(tmp_path / "state"))
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        # as a non-root user meets the root-only credentials directory `gatehouse init` makes
        if self == secret:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert (
        f"x.yaml:3:9 site.salt: secret ${{TEST_SITE_SALT}} is not set for this user: {secret} cannot be "
        "read (permission denied); run the command with sudo"
    ) in str(err.value)


def test_a_secret_file_that_is_not_text_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TEST_SITE_SALT")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "TEST_SITE_SALT").write_bytes(b"\xff\xfe\x00salt")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with pytest.raises(ConfigError, match=r"site.salt: secret \$\{TEST_SITE_SALT\}: .* is not UTF-8 text"):
        load_config(write(tmp_path, GOOD))


def test_relative_paths_are_taken_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "gatehouse.yaml"
    path.write_text(
        GOOD.replace("{state}", "state/here")
        + "mqtt:\n  tls: {ca: tls/ca.pem, cert: /abs/gw.pem}\n"
        + "inference:\n  plate_detector: {path: models/det.onnx, sha256: "
        + "ab" * 32
        + "}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "etc" / "gatehouse.yaml")
    assert config.store_path == folder / "state" / "here" / "gatehouse.db"
    assert config.mqtt.tls.ca == str(folder / "tls" / "ca.pem")
    assert config.mqtt.tls.cert == "/abs/gw.pem"
    assert config.inference.plate_detector.path == str(folder / "models" / "det.onnx")


def test_the_demo_store_is_in_the_repository_whatever_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    assert load_config(REPO / "config" / "demo.yaml").state_path == REPO / "config" / ".." / "state" / "demo"


def test_an_unknown_time_zone_is_refused_as_init_refuses_it(tmp_path: Path):
    text = GOOD.replace("  id: compound-7\n", "  id: compound-7\n  timezone: Mars/Olympus\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "gatehouse.yaml:3:3 site.timezone: unknown time zone 'Mars/Olympus'; use an IANA name" in str(
        err.value
    )


MERGED = """\
site: {id: compound-7, salt: a-long-enough-test-salt}
gateway: {id: gw-north, state_dir: /tmp/gatehouse-test-state}
devices:
  - &reader
    kind: sim_reader
    id: r1
    interval_s: 3
  - <<: *reader
    id: r2
"""


def test_yaml_merge_keys_are_supported_and_the_mappings_own_keys_win():
    config = parse_config(MERGED, "x.yaml")
    assert [(d.id, d.kind, d.interval_s) for d in config.devices] == [
        ("r1", "sim_reader", 3),
        ("r2", "sim_reader", 3),
    ]


def test_merge_key_errors_are_placed_and_explained():
    with pytest.raises(ConfigError, match=r"x.yaml:7:5 devices\[1\].interval_s: Input should be greater"):
        parse_config(MERGED.replace("interval_s: 3", "interval_s: -3"), "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml:8:9 devices\[1\]: '<<' merges a mapping"):
        parse_config(MERGED.replace("<<: *reader", "<<: 5"), "x.yaml")


SHARED_PORT = """\
site: {{id: compound-7, salt: test-salt-long-enough}}
gateway: {{id: gw-north, state_dir: /var/lib/gatehouse}}
devices:
  - {{kind: {first}, id: first, serial: {{port: /dev/ttyUSB0}}{first_extra}}}
  - {{kind: {second}, id: second, serial: {{port: /dev/ttyUSB0{second_serial}}}{second_extra}}}
"""
OSDP, MODBUS, WIEGAND = (
    ("osdp", ", address: 1"),
    ("modbus_gate", ", unit_id: 1"),
    ("wiegand", ", profile: stx_etx"),
)


@pytest.mark.parametrize(
    ("first", "second", "second_serial", "expected"),
    [
        (
            OSDP,
            MODBUS,
            "",
            "devices[1].serial.port: devices first and second share the serial port /dev/ttyUSB0 but speak "
            "different protocols (osdp, modbus_gate); give each protocol its own adapter",
        ),
        (WIEGAND, WIEGAND, "", "devices[1].serial.port: devices first and second share the serial port"),
        (
            OSDP,
            (OSDP[0], ", address: 2"),
            ", reconnect_min_s: 2",
            "devices[1].serial.reconnect_min_s: devices first and second share the serial port /dev/ttyUSB0 "
            "but their serial settings differ (reconnect_min_s)",
        ),
        (MODBUS, (MODBUS[0], ", unit_id: 2"), ", parity: E", "devices[1].serial.parity: "),
        (
            OSDP,
            OSDP,
            "",
            "devices[1].address: devices first and second share the serial port /dev/ttyUSB0 and both "
            "use OSDP address 1; give each reader its own address",
        ),
        (
            MODBUS,
            MODBUS,
            "",
            "devices[1].unit_id: devices first and second share the serial port /dev/ttyUSB0 and both "
            "use Modbus unit 1; give each board its own unit id",
        ),
    ],
    ids=[
        "osdp-and-modbus",
        "two-wiegand",
        "osdp-settings-differ",
        "modbus-settings-differ",
        "osdp-one-address",
        "modbus-one-unit",
    ],
)
def test_devices_sharing_a_serial_port_must_be_able_to(
    first: tuple[str, str], second: tuple[str, str], second_serial: str, expected: str
) -> None:
    text = SHARED_PORT.format(
        first=first[0],
        first_extra=first[1],
        second=second[0],
        second_extra=second[1],
        second_serial=second_serial,
    )
    with pytest.raises(ConfigError, match=r"devices .* share the serial port /dev/ttyUSB0") as err:
        parse_config(text, "x.yaml")
    assert expected in str(err.value)


def test_readers_and_boards_may_share_a_line_with_the_same_settings() -> None:
    for kind, extra in (("osdp", "address"), ("modbus_gate", "unit_id")):
        text = SHARED_PORT.format(
            first=kind,
            first_extra=f", {extra}: 1",
            second=kind,
            second_extra=f", {extra}: 2",
            second_serial="",
        )
        assert len(parse_config(text, "x.yaml").devices) == 2


def test_one_adapter_named_by_two_paths_is_refused(tmp_path: Path) -> None:
    """/dev/ttyUSB0 and its /dev/serial/by-id link are one adapter: the two drivers would each
    open it, and the second would fail with a misleading 'in use by another program'."""
    adapter = tmp_path / "ttyUSB0"
    adapter.touch()
    by_id = tmp_path / "usb-FTDI_FT232R-if00-port0"
    by_id.symlink_to(adapter)
    text = (
        "site: {id: compound-7, salt: test-salt-long-enough}\n"
        "gateway: {id: gw-north, state_dir: /var/lib/gatehouse}\n"
        "devices:\n"
        f"  - {{kind: osdp, id: first, address: 1, serial: {{port: {by_id}}}}}\n"
        f"  - {{kind: osdp, id: second, address: 2, serial: {{port: {adapter}}}}}\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert (
        f"devices[1].serial.port: devices first and second name one adapter ({adapter}) by two "
        f"paths, {by_id} and {adapter}; write the same path for both"
    ) in str(err.value)
