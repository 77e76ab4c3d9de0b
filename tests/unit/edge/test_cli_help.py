"""Installers discover the CLI with --help: every command and sub-command must explain itself."""

from __future__ import annotations

import argparse

import pytest

from edge.cli import build_parser, main


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from walk(sub, (*path, name))


def test_every_command_has_help_text():
    commands = list(walk(build_parser()))
    assert len(commands) >= 6
    missing = [" ".join(path) for path, help_text, _ in commands if not help_text or not help_text.strip()]
    assert not missing, f"commands without help: {missing}"


def test_every_option_has_help_text():
    missing = []
    for path, _, parser in walk(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.help in (None, "") and action.dest != "help":
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize("command", ["run", "demo", "events", "status", "config"])
def test_core_commands_exist(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip()


def test_a_command_group_without_an_action_says_what_it_takes_and_fails(capsys: pytest.CaptureFixture[str]):
    groups = [
        path
        for path, _, parser in walk(build_parser())
        if len(path) == 1
        and path != ("alerts",)  # alone, it lists the open alerts
        and any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    ]
    assert {("config",), ("service",), ("devices",)} <= set(groups)
    for path in groups:
        assert main(list(path)) != 0, path
        captured = capsys.readouterr()
        assert f"gatehouse {path[0]} " in captured.out + captured.err, path
        assert "Gatehouse gateway: readers, barriers and cameras" not in captured.out, path


def test_probe_refuses_a_baud_rate_of_zero(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "/dev/ttyNOPE", "--baud", "0"])
    assert exit_info.value.code == 2
    assert "a baud rate is more than 0, e.g. 9600 (got 0)" in capsys.readouterr().err


def test_probe_says_what_a_baud_rate_is(capsys: pytest.CaptureFixture[str]):
    """Not argparse's "invalid _baud value", which names a Python function."""
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "/dev/ttyNOPE", "--baud", "9600bps"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --baud: a baud rate is a whole number of bit/s, e.g. 9600 (got 9600bps)" in err
    assert "_baud" not in err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--listen", "-1", "seconds to listen, 0 or more, e.g. 5 (got -1)"),
        ("--listen", "nan", "seconds to listen, 0 or more, e.g. 5 (got nan)"),
        ("--units", "1-300", "'1-300': numbers must be within 1-247"),
        ("--units", "one", "'one': write numbers like 0-3 or 1,2,7"),
        ("--osdp-addresses", "0-200", "'0-200': numbers must be within 0-126"),
    ],
)
def test_probe_checks_its_ranges_before_probing(
    option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
):
    """A typo in --units is a usage error naming the option, said at once: not after the OSDP
    scan (seconds per baud rate), and not when the port is missing."""
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "/dev/ttyNOPE", option, value])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert f"argument {option}: {says}" in captured.err
    assert "probing" not in captured.out


@pytest.mark.parametrize(
    "argv",
    [
        ["camera", "snapshot", "cam", "--timeout"],
        ["devices", "test", "reader", "--timeout"],
        ["doctor", "--timeout"],
        ["admin", "pass", "issue", "site", "gw", "--plate", "津A12345", "--hours"],
        ["admin", "open-gate", "site", "gw", "north-in", "--ttl-s"],
        ["demo", "--duration"],
    ],
)
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_durations_must_be_above_zero(argv: list[str], value: str, capsys: pytest.CaptureFixture[str]):
    """A timeout of -1 would only end in 'no frame within -1 s'; argparse says what is wrong."""
    with pytest.raises(SystemExit) as stopped:
        main([*argv, value])
    assert stopped.value.code == 2
    assert f"'{value}' is not a number above 0" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_ingest_runs_at_least_one_worker(value: str, capsys: pytest.CaptureFixture[str]):
    """`--workers 0` said '0 worker(s)' and ran one."""
    with pytest.raises(SystemExit) as stopped:
        main(["ingest", "--workers", value])
    assert stopped.value.code == 2
    assert f"argument --workers: '{value}' is not a whole number of 1 or more" in capsys.readouterr().err
