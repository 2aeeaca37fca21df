"""minimtl.cli: an expected error is one line on stderr with a documented exit code, never a traceback."""
import errno
import os

import pytest

from minimtl import cli


def _main_raising(error):
    def main(argv):
        raise error
    return main


@pytest.mark.parametrize("error, code", [
    (cli.UsageError("--epochs 0: give at least 1"), 2),
    (ValueError("model.npz is truncated"), 1),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "photo.jpg"), 1),
    (KeyboardInterrupt(), 130),
    (RuntimeError("boom"), 1),
])
def test_run_turns_errors_into_one_line_and_an_exit_code(error, code, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENVIRONMENT_VARIABLE, raising=False)
    assert cli.run(_main_raising(error), [], prog="tool") == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: ")
    assert "Traceback" not in err


def test_error_line_says_what_and_where():
    assert cli.error_line(cli.UsageError("--out x.png\nnames a file")) == "--out x.png names a file"
    line = cli.error_line(PermissionError(errno.EACCES, "Permission denied", "/root/out"))
    assert line.startswith("/root/out: Permission denied; check its permissions")
    line = cli.error_line(RuntimeError("boom"))
    assert "unexpected RuntimeError: boom" in line and "--debug" in line


def test_debug_lets_the_traceback_through(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENVIRONMENT_VARIABLE, raising=False)
    with pytest.raises(ValueError):
        cli.run(_main_raising(ValueError("x")), ["--debug"], prog="tool")
    monkeypatch.setenv(cli.DEBUG_ENVIRONMENT_VARIABLE, "1")
    with pytest.raises(cli.UsageError):
        cli.run(_main_raising(cli.UsageError("x")), [], prog="tool")


def test_return_value_is_the_exit_code():
    assert cli.run(lambda argv: 3, [], prog="tool") == 3
    assert cli.run(lambda argv: None, [], prog="tool") == 0
    assert cli.run(lambda argv: True, [], prog="tool") == 0


def test_parser_errors_are_one_line_with_exit_code_2(capsys):
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--epochs", type=cli.integer(at_least=1))
    parser.add_argument("--lr", type=cli.number(above=0))

    def main(argv):
        parser.parse_args(argv)

    for argv, words in ((["--epochs", "0"], "at least 1"), (["--epochs", "two"], "whole number"),
                        (["--lr", "nan"], "finite"), (["--lr", "0"], "more than 0"), (["--nope"], "unrecognized")):
        assert cli.run(main, argv, prog="tool") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert parser.parse_args(["--epochs", "3", "--lr", "0.5"]).epochs == 3


def test_printable_escapes_a_file_name_that_is_not_utf8():
    name = os.fsdecode(b"caf\xe9.jpg")
    assert cli.printable(name) == "caf\\xe9.jpg"
    assert cli.printable("plain.jpg") == "plain.jpg"
    line = cli.error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", name))
    line.encode("utf-8")  # would raise UnicodeEncodeError for an unescaped surrogate
    assert "caf\\xe9.jpg" in line


def test_console_commands_run_the_example_scripts(capsys, monkeypatch):
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    scripts = tomllib.loads((Path(cli.__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["minimtl-predict"] == "minimtl.cli:predict_command"
    assert scripts["minimtl-train"] == "minimtl.cli:train_command"
    for command, words in ((cli.predict_command, "--camera"), (cli.train_command, "--datasets")):
        monkeypatch.setattr("sys.argv", ["x", "--help"])
        with pytest.raises(SystemExit) as exit_:
            command()
        assert exit_.value.code == 0 and words in capsys.readouterr().out
