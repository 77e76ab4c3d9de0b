"""The systemd units: `gatehouse service install --prefix` renders them, `systemd-analyze verify`
accepts both, `systemd-analyze security` rates the gateway's exposure at most 3.5 (the figure
docs/install.md quotes), and the options the gatehouse needs are there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.installer.cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[3]
UNITS = REPO / "systemd"
ANALYZE_TIMEOUT_S = 120
HOW_TO_GET = "systemd-analyze is missing: apt-get install systemd (listed in .ci/apt-packages-installer.txt)"


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail(HOW_TO_GET)
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S, check=False
    )


def install(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Path:
    code, out, err = run_cli(["service", "install", "--prefix", str(tmp_path), *extra], capsys)
    assert code == 0, err
    target = tmp_path / "etc" / "systemd" / "system"
    assert f"wrote {target / 'gatehouse.service'}" in out
    return target


def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = install(tmp_path, capsys)
    units = [target / "gatehouse.service", target / "gatehouse-ingest.service"]
    for unit in units:
        exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.MULTILINE)
        assert exec_start and Path(exec_start.group(1)).is_file(), "ExecStart= names this gatehouse command"
    result = systemd_analyze("verify", *map(str, units))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"systemd-analyze warned: {result.stderr}"


def exposure(unit: Path) -> float:
    result = systemd_analyze("security", "--offline=true", "--no-pager", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_gateway_unit_exposure_is_at_most_3_5_and_documented():
    level = exposure(UNITS / "gatehouse.service")
    assert level <= 3.5
    docs = (REPO / "docs" / "install.md").read_text()
    assert f"exposure level for gatehouse.service: {level:.1f}" in docs, (
        "update the figure in docs/install.md"
    )


def test_gateway_unit_has_what_the_gatehouse_needs():
    text = (UNITS / "gatehouse.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=gatehouse",
        "SupplementaryGroups=dialout video",
        "StateDirectory=gatehouse",
        "ConfigurationDirectory=gatehouse",
        "LoadCredential=GATEHOUSE_SITE_SALT:/etc/gatehouse/credentials/GATEHOUSE_SITE_SALT",
        "LoadCredential=GATEHOUSE_SIGNING_KEY:/etc/gatehouse/credentials/GATEHOUSE_SIGNING_KEY",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-ttyAMA rw",
        "DeviceAllow=char-usb_device rw",
        "DeviceAllow=char-video4linux rw",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), f"missing {line}"
    assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)
    assert not re.search(r"^PrivateDevices=(yes|true)", text, re.MULTILINE), (
        "serial ports and cameras need /dev"
    )


def test_credentials_present_are_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in ("GATEHOUSE_SITE_SALT", "GATEHOUSE_SIGNING_KEY", "GATEHOUSE_MQTT_PASSWORD"):
        (credentials / name).write_text("x" * 32)
    config = tmp_path / "site" / "gatehouse.yaml"
    target = tmp_path / "etc" / "systemd" / "system"
    code, _out, err = run_cli(
        [
            "--config",
            str(config),
            "service",
            "install",
            "--prefix",
            str(tmp_path),
            "--credentials-dir",
            str(credentials),
        ],
        capsys,
    )
    assert code == 0, err
    text = (target / "gatehouse.service").read_text()
    assert f"LoadCredential=GATEHOUSE_MQTT_PASSWORD:{credentials / 'GATEHOUSE_MQTT_PASSWORD'}" in text
    assert f"LoadCredential=GATEHOUSE_SITE_SALT:{credentials / 'GATEHOUSE_SITE_SALT'}" in text
    assert f"--config {config} run" in text
    assert f"Environment=GATEHOUSE_CONFIG={config}" in text


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, out, err = run_cli(
        ["--config", str(tmp_path / "g.yaml"), "service", "install", "--dry-run"], capsys
    )
    assert code == 0, err
    assert "write /etc/systemd/system/gatehouse.service" in out
    assert "systemctl enable gatehouse.service" in out
    assert "--groups dialout,video gatehouse" in out
    code, out, err = run_cli(
        ["service", "install", "--dry-run", "--prefix", str(tmp_path), "--ingest"], capsys
    )
    assert code == 0, err
    assert "systemctl" not in out, "--prefix only writes files"
    assert not any(tmp_path.iterdir()), "--dry-run writes nothing"


def test_missing_templates_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, _out, err = run_cli(
        ["service", "install", "--prefix", str(tmp_path), "--units-from", str(tmp_path / "nowhere")], capsys
    )
    assert code == 2
    assert "pass --units-from with the systemd/ folder" in err


def test_a_config_outside_the_dedicated_folder_keeps_its_folders_owner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    home = tmp_path / "home" / "pi"
    home.mkdir(parents=True)
    (home / "gatehouse.yaml").write_text("site: {id: x}\n")
    code, out, err = run_cli(
        ["--config", str(home / "gatehouse.yaml"), "service", "install", "--dry-run"], capsys
    )
    assert code == 0, err
    assert "chown" not in out and "chmod" not in out
    assert f"note: {home} is not /etc/gatehouse: its owner and mode are left as they are" in out
    monkeypatch.setattr("edge.cli.service.CONFIG_DIR", home)
    code, out, err = run_cli(
        ["--config", str(home / "gatehouse.yaml"), "service", "install", "--dry-run"], capsys
    )
    assert code == 0, err
    assert f"chown root:gatehouse {home}; chmod 750 {home}" in out, "the dedicated folder is managed"


def test_dry_run_lists_the_steps_in_the_order_they_are_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """The user is made before anything is given to it, and the dry run says so in that order."""
    home = tmp_path / "etc" / "gatehouse"
    (home / "tls").mkdir(parents=True)
    (home / "tls" / "gateway.key").write_text("key")
    (home / "gatehouse.yaml").write_text("site: {id: x}\n")
    monkeypatch.setattr("edge.cli.service.CONFIG_DIR", home)
    monkeypatch.setattr("edge.cli.service._user_exists", lambda name: False)
    code, out, err = run_cli(
        ["--config", str(home / "gatehouse.yaml"), "service", "install", "--dry-run", "--now"], capsys
    )
    assert code == 0, err
    steps = [line.strip().split(" ", 1)[0] for line in out.splitlines()[1:]]
    made, given, systemctl = steps.index("useradd"), steps.index("chown"), steps.index("systemctl")
    assert steps[:made] == ["write", "write"] and made < given < systemctl, out
    assert steps[systemctl:] == ["systemctl"] * 3, out


def test_a_state_dir_the_service_may_not_write_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`init --state-dir` takes any folder; the unit (ProtectSystem=strict) writes only its
    StateDirectory=. Installing a service that cannot keep its store is refused, saying what to do."""
    config = tmp_path / "gatehouse.yaml"
    for state_dir in ("/srv/gatehouse", "state", "/var/lib/gatehouse/../gatehouse-old"):
        config.write_text(f"site: {{id: x}}\ngateway:\n  id: gw\n  state_dir: {state_dir}\n")
        code, out, err = run_cli(["--config", str(config), "service", "install", "--dry-run"], capsys)
        assert code == 2, out
        shown = Path(os.path.normpath(tmp_path / state_dir))
        assert (
            f"gateway.state_dir is {shown}, but the service may write only /var/lib/gatehouse "
            "(StateDirectory=, ProtectSystem=strict) and could not keep its store; set state_dir: "
            "/var/lib/gatehouse (to keep the store on another disk, mount it there)"
        ) in err
    for state_dir in ("/var/lib/gatehouse", "/var/lib/gatehouse/site"):
        config.write_text(f"site: {{id: x}}\ngateway:\n  id: gw\n  state_dir: {state_dir}\n")
        code, out, err = run_cli(["--config", str(config), "service", "install", "--dry-run"], capsys)
        assert code == 0, err
        assert "systemctl enable gatehouse.service" in out


def test_relative_paths_are_written_into_the_unit_as_absolute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "credentials").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(
        [
            "--config",
            "gatehouse.yaml",
            "service",
            "install",
            "--prefix",
            "out",
            "--credentials-dir",
            "credentials",
        ],
        capsys,
    )
    assert code == 0, err
    text = (tmp_path / "out" / "etc" / "systemd" / "system" / "gatehouse.service").read_text()
    assert f"--config {tmp_path / 'gatehouse.yaml'} run" in text
    assert f"Environment=GATEHOUSE_CONFIG={tmp_path / 'gatehouse.yaml'}" in text
    assert f"LoadCredential=GATEHOUSE_SITE_SALT:{tmp_path / 'credentials' / 'GATEHOUSE_SITE_SALT'}" in text


def test_a_secret_the_configuration_names_but_the_folder_lacks_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The service would stop at start-up for want of it: say so before it is installed."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "GATEHOUSE_SITE_SALT").write_text("x" * 32)
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        "# ${GATEHOUSE_IN_A_COMMENT} is not a reference\n"
        "site: {id: s, salt: ${GATEHOUSE_SITE_SALT}}\n"
        "mqtt: {host: broker, username: gw, password: ${GATEHOUSE_MQTT_PASSWORD}}\n"
    )
    argv = ["--config", str(config), "service", "install", "--prefix", str(tmp_path / "root")]
    code, out, err = run_cli([*argv, "--credentials-dir", str(credentials), "--dry-run"], capsys)
    assert code == 0, err
    (note,) = [line for line in out.splitlines() if "does not hold" in line]
    assert note == (
        f"note: {config} uses ${{GATEHOUSE_MQTT_PASSWORD}}, which {credentials} does not hold: the "
        "service cannot start until it is there (a file of that name, mode 0600)"
    )
    (credentials / "GATEHOUSE_MQTT_PASSWORD").write_text("secret")
    code, out, err = run_cli([*argv, "--credentials-dir", str(credentials), "--dry-run"], capsys)
    assert code == 0 and "does not hold" not in out and "no configuration" not in out


def test_a_configuration_not_written_yet_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`service install` before `init`: the units name a file that is not there."""
    config = tmp_path / "gatehouse.yaml"
    argv = ["--config", str(config), "service", "install", "--prefix", str(tmp_path / "root"), "--dry-run"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"note: there is no configuration at {config} yet: the service cannot start until" in out


def test_a_credentials_dir_that_does_not_exist_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A mistyped --credentials-dir would give the unit LoadCredential= lines for files that are
    not there: refused, as every command that reads the secrets refuses it, and nothing written."""
    missing = tmp_path / "no-such-credentials"
    argv = [
        "--config",
        str(tmp_path / "gatehouse.yaml"),
        "service",
        "install",
        "--prefix",
        str(tmp_path / "root"),
    ]
    code, _out, err = run_cli([*argv, "--credentials-dir", str(missing)], capsys)
    assert code == 2
    assert f"--credentials-dir {missing}: no such folder" in err
    assert not (tmp_path / "root").exists()
