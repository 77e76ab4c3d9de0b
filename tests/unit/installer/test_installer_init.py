"""`gatehouse init`, non-interactive and with prompts: the YAML (mode 0600) names its secrets as
${NAME}, the secrets are generated into the credentials directory, and the written file passes
`gatehouse config check` with them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge.cli import main
from edge.cli.init import credentials_directory
from edge.config_loader import load_config


def init(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(
        [
            "--config",
            str(tmp_path / "etc" / "gatehouse.yaml"),
            "init",
            "--credentials-dir",
            str(tmp_path / "etc" / "credentials"),
            "--state-dir",
            str(tmp_path / "state"),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_by_flags_writes_a_private_config_and_generates_secrets(tmp_path, capsys):
    code, out, err = init(
        tmp_path,
        capsys,
        "--yes",
        "--site-id",
        "lotus-garden",
        "--site-name",
        "Lotus Garden",
        "--timezone",
        "Asia/Shanghai",
        "--home-province",
        "津",
    )
    assert code == 0, err
    config = tmp_path / "etc" / "gatehouse.yaml"
    credentials = tmp_path / "etc" / "credentials"
    assert mode(config) == 0o600
    assert mode(credentials) == 0o700
    salt = (credentials / "GATEHOUSE_SITE_SALT").read_text().strip()
    key = (credentials / "GATEHOUSE_SIGNING_KEY").read_text().strip()
    assert len(salt) == 64 and len(key) == 64 and salt != key
    assert mode(credentials / "GATEHOUSE_SITE_SALT") == 0o600
    text = config.read_text()
    assert "salt: ${GATEHOUSE_SITE_SALT}" in text and "signing_key: ${GATEHOUSE_SIGNING_KEY}" in text
    assert salt not in text and key not in text
    assert f"#   sudo CREDENTIALS_DIRECTORY={credentials} gatehouse --config {config} config check\n" in text
    assert f"wrote {config} (mode 0600): site lotus-garden, gateway gw-" in out
    steps = out[out.index("next: ") :]
    # the steps reach the file written here, with its secrets, not /etc/gatehouse's
    run = f"sudo CREDENTIALS_DIRECTORY={credentials} gatehouse --config {config}"
    assert (
        steps.index(f"{run} gates add") < steps.index(f"{run} devices add") < steps.index(f"{run} provision")
    ), "gates and devices come before provision, which registers them"
    assert (
        f"{run} devices add KIND ID SETTING=VALUE… --gate ID  # `gatehouse probe PORT` finds them\n" in steps
    ), "a hint beside a command is a shell comment: the line pasted runs the command"
    with credentials_directory(credentials):
        loaded = load_config(config)
    assert loaded.site.salt == salt
    assert loaded.gateway.signing_key == key
    assert loaded.site.home_province == "津"
    assert loaded.site.name == "Lotus Garden"
    assert loaded.gateway.id.startswith("gw-") and len(loaded.gateway.id) == 11

    code = main(["--config", str(config), "config", "check"])
    assert code == 2, "without the credentials the secrets are missing"
    assert "secret ${GATEHOUSE_SITE_SALT} is not set" in capsys.readouterr().err
    with credentials_directory(credentials):
        assert main(["--config", str(config), "config", "check"]) == 0
    assert "OK — site lotus-garden" in capsys.readouterr().out


def test_running_init_again_keeps_the_secrets(tmp_path, capsys):
    assert init(tmp_path, capsys, "--yes", "--site-id", "a-site")[0] == 0
    salt = (tmp_path / "etc" / "credentials" / "GATEHOUSE_SITE_SALT").read_text()
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", "a-site")
    assert code == 2
    assert "exists; pass --force to overwrite it" in err
    code, out, err = init(tmp_path, capsys, "--yes", "--site-id", "a-site", "--force", "--gateway-id", "gw-2")
    assert code == 0, err
    assert "kept existing secret" in out
    assert (tmp_path / "etc" / "credentials" / "GATEHOUSE_SITE_SALT").read_text() == salt


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--site-id", "Lotus Garden"],
            "--site-id: site id 'Lotus Garden': an id is lower-case letters, digits, - and _",
        ),
        (["--site-id", "x", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--site-id", "x", "--home-province", "津门"], "home province must be one character"),
        ([], "--site-id is required with --yes or without a terminal"),
    ],
)
def test_bad_answers_are_explained(tmp_path, capsys, flags, message):
    code, _out, err = init(tmp_path, capsys, "--yes", *flags)
    assert code == 2
    assert message in err
    assert not (tmp_path / "etc" / "gatehouse.yaml").exists()


def test_interactive_init_asks_again_until_the_answer_is_valid(tmp_path, capsys, monkeypatch):
    answers = iter(["Bad Id", "lotus-garden", "Lotus Garden", "", "", ""])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    code, _out, err = init(tmp_path, capsys)
    assert code == 0, err
    assert "site id 'Bad Id': an id is lower-case" in err
    text = (tmp_path / "etc" / "gatehouse.yaml").read_text()
    assert 'id: "lotus-garden"' in text and 'timezone: "Asia/Shanghai"' in text
    assert "home_province" not in text


@pytest.mark.parametrize("value", ["1024", "0755", "yes", "2024-01-01", "01"])
def test_ids_that_look_like_numbers_booleans_or_dates_read_back_as_written(tmp_path, capsys, value):
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", value, "--gateway-id", value)
    assert code == 0, err
    with credentials_directory(tmp_path / "etc" / "credentials"):
        config = load_config(tmp_path / "etc" / "gatehouse.yaml")
    assert config.site.id == value and config.gateway.id == value


def test_a_configuration_that_would_not_load_writes_nothing(tmp_path, capsys):
    credentials = tmp_path / "etc" / "credentials"
    credentials.mkdir(parents=True)
    (credentials / "GATEHOUSE_SITE_SALT").write_text("short\n")
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", "lotus-garden")
    assert code == 2
    assert f"{tmp_path / 'etc' / 'gatehouse.yaml'} was not written, nothing was generated:" in err
    assert "site.salt" in err
    assert not (tmp_path / "etc" / "gatehouse.yaml").exists()
    assert not (credentials / "GATEHOUSE_SIGNING_KEY").exists()


def test_a_relative_state_dir_is_written_as_the_folder_meant(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", "lotus-garden", "--state-dir", "here")
    assert code == 0, err
    with credentials_directory(tmp_path / "etc" / "credentials"):
        assert load_config(tmp_path / "etc" / "gatehouse.yaml").state_path == tmp_path / "here"


def test_end_of_input_at_a_prompt_writes_nothing(tmp_path, capsys, monkeypatch):
    def no_more_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", no_more_input)
    code, _out, err = init(tmp_path, capsys)
    assert code == 2
    assert "no answer (end of input): nothing was written" in err
    assert not (tmp_path / "etc").exists()


def test_init_writes_the_secrets_where_credentials_directory_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for every command: --credentials-dir, else $CREDENTIALS_DIRECTORY (as install.md
    teaches for `config check`), else /etc/gatehouse/credentials."""
    folder = tmp_path / "my-credentials"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    config = tmp_path / "gatehouse.yaml"
    argv = ["--config", str(config), "init", "--yes", "--site-id", "lotus-garden", "--site-name", "Lotus"]
    assert main([*argv, "--timezone", "Asia/Shanghai", "--state-dir", str(tmp_path / "state")]) == 0
    assert (folder / "GATEHOUSE_SITE_SALT").is_file() and (folder / "GATEHOUSE_SIGNING_KEY").is_file()
    assert main(["--config", str(config), "config", "check"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("which", ["credentials", "config"])
def test_a_file_where_a_folder_belongs_is_named_not_an_internal_error(tmp_path, capsys, which):
    """--credentials-dir naming a file, or --config inside a file: the installer is told which
    path is not a folder."""
    blocker = tmp_path / "etc" if which == "config" else tmp_path / "etc" / "credentials"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder\n")
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", "lotus-garden")
    assert code == 2, err
    assert "internal error" not in err
    assert f"{blocker} is a file, not a folder" in err


def test_config_check_takes_the_credentials_dir_its_error_names(tmp_path, capsys, monkeypatch):
    """The secret-not-set message tells the installer to name the folder with --credentials-dir:
    `config check`, the check install.md has them run after init, takes it."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    code, _out, err = init(tmp_path, capsys, "--yes", "--site-id", "lotus-garden")
    assert code == 0, err
    config = str(tmp_path / "etc" / "gatehouse.yaml")
    assert main(["--config", config, "config", "check"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "name that folder: CREDENTIALS_DIRECTORY=DIR before any gatehouse command, or --credentials-dir DIR"
        in said
    )
    credentials = str(tmp_path / "etc" / "credentials")
    assert main(["--config", config, "config", "check", "--credentials-dir", credentials]) == 0
    assert f"{config}: OK — site lotus-garden" in capsys.readouterr().out
    assert main(["--config", config, "config", "check", "--credentials-dir", str(tmp_path / "none")]) == 2
    assert f"--credentials-dir {tmp_path / 'none'}: no such folder" in capsys.readouterr().err
