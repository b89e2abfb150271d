"""What the command reports as one line (a user's error) and what keeps its traceback (a bug)."""

import argparse
import errno
import os

import pytest

import fcnseg.cli as cli
from fcnseg.data.info import DataError
from fcnseg.errors import ConfigError
from fcnseg.nets.weights import WeightsError
from fcnseg.train.config import FIELD_TYPES


def raised(func) -> BaseException:
    try:
        func()
    except BaseException as e:  # noqa: BLE001 - the point is to look at it
        return e
    raise AssertionError("nothing raised")


def test_user_errors_are_named_by_their_message():
    for error in (ConfigError("--lr must be > 0"), DataError("a.png: bad"), WeightsError("w: x")):
        assert cli.user_error_message(error) == str(error)
    diverged = FloatingPointError("loss is nan at iteration 3: lower the lr")
    assert cli.user_error_message(diverged) == str(diverged)


def test_os_errors_about_files_name_the_file(tmp_path):
    folder = raised(lambda: tmp_path.write_text("x"))  # a folder where a file should be
    assert cli.user_error_message(folder) == f"{tmp_path}: Is a directory"
    missing = raised((tmp_path / "nope.json").read_text)
    assert cli.user_error_message(missing) == f"{tmp_path / 'nope.json'}: No such file or directory"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write has no file name
    assert cli.user_error_message(full) == "No space left on device"
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/runs/a/last.pt")
    assert cli.user_error_message(denied) == "/runs/a/last.pt: Permission denied"


def test_bugs_keep_their_traceback():
    bad_descriptor = raised(lambda: os.fstat(-1))
    assert isinstance(bad_descriptor, OSError) and bad_descriptor.errno == errno.EBADF
    bugs = [ValueError("x"), KeyError("mean_iu"), TypeError("y"), bad_descriptor,
            RuntimeError("size mismatch")]  # fmt: skip
    assert [cli.user_error_message(e) for e in bugs] == [None] * len(bugs)


@pytest.mark.parametrize(
    "error,status,line",
    [
        (ConfigError("--crop must be >= 1"), 2, "fcnseg: error: --crop must be >= 1"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "out"), 2,
         "fcnseg: error: out: Is a directory"),
        (FloatingPointError("loss is inf"), 2, "fcnseg: error: loss is inf"),
        (KeyboardInterrupt(), 130, "fcnseg: interrupted"),
    ],
)  # fmt: skip
def test_main_prints_one_line_for_user_errors(monkeypatch, capsys, error, status, line):
    def command(args):
        raise error

    monkeypatch.setattr(cli, "cmd_models", command)
    assert cli.main(["models"]) == status
    assert capsys.readouterr().err == line + "\n"


def test_a_script_reports_under_its_own_name_and_keeps_its_status(capsys):
    def diverges():
        raise FloatingPointError("loss is nan")

    assert cli.run_reporting("train_throughput.py", diverges) == 2
    assert capsys.readouterr().err == "train_throughput.py: error: loss is nan\n"
    assert cli.run_reporting("x", lambda: None) == 0
    assert cli.run_reporting("x", lambda: 3) == 3


@pytest.mark.parametrize("bug", [ValueError("x"), KeyError("k"), OSError(errno.EBADF, "bad")])
def test_main_lets_bugs_raise(monkeypatch, bug):
    def command(args):
        raise bug

    monkeypatch.setattr(cli, "cmd_models", command)
    with pytest.raises(type(bug)):
        cli.main(["models"])


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", list(subcommands()))  # every command, a new one too
def test_help_explains_every_option(command, capsys):
    parser = subcommands()[command]
    with pytest.raises(SystemExit) as stopped:
        cli.main([command, "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert parser.description and parser.description.split()[0] in text
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{command} {name}: no help"
        assert name in text and action.help.split()[0] in text, f"{command} {name}"


def test_every_config_field_has_help():
    assert set(cli.FIELD_HELP) == set(FIELD_TYPES)
    assert all(text.strip() for text in cli.FIELD_HELP.values())
    optional = [name for name, (_, may_be_none) in FIELD_TYPES.items() if may_be_none]
    assert optional and all("none:" in cli.FIELD_HELP[name] for name in optional)
