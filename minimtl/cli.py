"""What every minimtl command line shares: an expected error is one line on stderr, never a traceback.

Every tool (``examples/train_mtl.py``, ``examples/predict.py``,
``examples/show_crops.py``, ``python -m minimtl.faces``, ``python -m
minimtl.data``) builds its parser from :class:`ArgumentParser` and is run
through :func:`run`::

    from minimtl import cli

    def main(argv=None):
        parser = cli.ArgumentParser(prog="predict.py", description="...")
        arguments = parser.parse_args(argv)
        if ...:
            raise cli.UsageError("--out x.png names a file, but the source is a folder: give a folder")
        ...

    if __name__ == "__main__":
        sys.exit(cli.run(main, prog="predict.py"))

:func:`run` turns what goes wrong into one line on stderr, ``<prog>: error:
<what is wrong and what to do>``, and an exit code:

=====  ===================================================================
0      done
1      bad data: a file or folder that exists but is damaged, of the wrong
       content, unsafe, or cannot be read or written (``ValueError``,
       ``OSError`` and the errors built on them), and any unexpected error
2      bad usage: the command line itself (an unknown option or value,
       options that contradict each other, a path that does not exist or
       is of the wrong kind): :class:`UsageError` and argparse's errors
130    interrupted (Ctrl-C)
=====  ===================================================================

``--debug`` (accepted by every tool) or the environment variable
``MINIMTL_DEBUG=1`` lets the exception through, with its traceback.
An unexpected exception (a bug, not a bad input) is one line too, naming
its type and asking for ``--debug``.

Output never fails on a file name that is not valid UTF-8 (a Linux file name
can be any bytes): stdout and stderr write such characters as ``\\x..`` escapes.
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import errno
import math
import os
import sys
import types
import typing
from typing import Callable, Sequence

from minimtl import memory

__all__ = ["ArgumentParser", "UsageError", "DEBUG_ENVIRONMENT_VARIABLE", "add_config_options", "config_from_arguments",
           "error_line", "integer", "number", "printable", "run", "predict_command", "train_command"]

DEBUG_ENVIRONMENT_VARIABLE = "MINIMTL_DEBUG"
USAGE_EXIT, DATA_EXIT, INTERRUPTED_EXIT = 2, 1, 130


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to change.  Exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (not usage plus error), with a ``--debug`` flag.

    Sub-command parsers made with ``add_subparsers`` are of this class too.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"show the full traceback of an error (or set {DEBUG_ENVIRONMENT_VARIABLE}=1)")

    def error(self, message: str):
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)


def integer(*, at_least: int | None = None, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number within the bounds, else a one-line error naming them."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least}, got {value}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def number(*, at_least: float | None = None, at_most: float | None = None, above: float | None = None,
           below: float | None = None) -> Callable[[str], float]:
    """An argparse ``type``: a finite number within the bounds (``above``/``below`` exclude the bound)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        for bound, fails, words in ((at_least, lambda b: value < b, "at least"), (at_most, lambda b: value > b, "at most"),
                                    (above, lambda b: value <= b, "more than"), (below, lambda b: value >= b, "less than")):
            if bound is not None and fails(bound):
                raise argparse.ArgumentTypeError(f"must be {words} {bound:g}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def add_config_options(parser: argparse.ArgumentParser, config_class: type,
                       groups: dict[str, "argparse._ArgumentGroup"] | None = None) -> None:
    """Add one option per field of the dataclass ``config_class`` (such as ``minimtl.train.TrainConfig``).

    A field ``batch_size: int = 128`` becomes ``--batch-size`` with ``type=int`` and default 128;
    its ``metadata`` (``dataclasses.field(metadata=...)``) gives the rest:

    * ``"help"``: the help text; ``"choices"``: the values allowed;
    * ``"group"``: the key in ``groups`` of the argument group it is listed in (default ``"training"``;
      without ``groups`` every option goes to ``parser``);
    * ``"command_line": False``: no option for this field.

    By annotation: ``int``, ``float``, ``str`` (and ``X | None``) take one value of that type; ``bool``
    is ``--flag`` / ``--no-flag``; a sequence of strings is comma-separated text (``--tasks smile,age``)
    and a ``dict[str, float]`` is ``name=value`` pairs (``--task-weights smile=2,age=1``), both kept as
    text in the parsed arguments so that the caller can check them with its own messages;
    :func:`config_from_arguments` turns them into values.

    Args:
        parser: the parser (or argument group) for options whose group is not in ``groups``.
        config_class: a dataclass whose fields all have defaults.
        groups: argument groups by name, e.g. ``{"model": parser.add_argument_group("model")}``.
    """
    groups = groups or {}
    for field, kind in _command_line_fields(config_class):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        options = {"dest": field.name}
        if "help" in field.metadata:
            options["help"] = field.metadata["help"]
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        if kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=default)
        elif kind == "list":
            options.update(default=",".join(default))
        elif kind == "pairs":
            options.update(default=",".join(f"{name}={value:g}" for name, value in default.items()))
        else:
            options.update(type=kind, default=default)
        group = groups.get(field.metadata.get("group", "training"), parser)
        group.add_argument("--" + field.name.replace("_", "-"), **options)


def config_from_arguments(config_class: type, arguments: argparse.Namespace, **overrides):
    """The ``config_class`` instance the options of :func:`add_config_options` were given for.

    Comma-separated text becomes a tuple of its non-empty items, stripped; ``name=value`` pairs a
    ``{name: float(value)}`` dict.  ``overrides`` (field name -> value) replace parsed values.
    """
    values = {}
    for field, kind in _command_line_fields(config_class):
        value = getattr(arguments, field.name)
        if kind == "list":
            value = tuple(item.strip() for item in value.split(",") if item.strip())
        elif kind == "pairs":
            pairs = (item.partition("=") for item in filter(None, value.split(",")))
            value = {name.strip(): float(number) for name, _, number in pairs}
        values[field.name] = value
    values.update(overrides)
    return config_class(**values)


def _command_line_fields(config_class: type):
    """``(field, kind)`` for each field with an option; kind is a type, ``"list"`` or ``"pairs"``."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.metadata.get("command_line", True):
            continue
        hint = hints[field.name]
        arguments = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
        if hint in (bool, int, float, str):
            kind = hint
        elif origin in (typing.Union, types.UnionType) and len(arguments) == 1 and arguments[0] in (int, float, str):
            kind = arguments[0]  # X | None: None only as the default
        elif origin in (tuple, list, collections.abc.Sequence) and arguments in ([str], [str, Ellipsis]):
            kind = "list"
        elif origin is dict and arguments == [str, float]:
            kind = "pairs"
        else:
            raise TypeError(f"{config_class.__name__}.{field.name}: no command-line form for {hint}; "
                            f"give it metadata={{'command_line': False}}")
        yield field, kind


def one_line(text: str) -> str:
    """``text`` with every run of white space (newlines included) made one space."""
    return " ".join(str(text).split())


def printable(text: str) -> str:
    """``text`` as it can be printed on any terminal: bytes of a non-UTF-8 file name as ``\\xff`` escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space or choose another location",
    errno.EDQUOT: "free some space or choose another location",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a file stands where a folder is needed: check the path",
    errno.EISDIR: "a folder stands where a file is needed: check the path",
    errno.EEXIST: "something already stands there: remove it or choose another location",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def _path_text(path) -> str:
    return printable(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else str(path)


def error_line(error: BaseException) -> str:
    """The one-line message for ``error``: its own message for the errors minimtl raises on purpose,
    the path, the system's reason and a hint for an operating-system error, and the type for anything else."""
    if isinstance(error, MemoryError):
        return "out of memory: close other programs, or give smaller inputs (e.g. --batch-size, --limit, --workers)"
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = _path_text(error.filename)
        if error.filename2 is not None:
            where += f" -> {_path_text(error.filename2)}"
        hint = _OS_ERROR_HINTS.get(error.errno)
        return one_line(f"{where}: {error.strerror}" + (f"; {hint}" if hint else ""))
    if isinstance(error, (UsageError, ValueError, OSError)):
        return one_line(printable(str(error) or type(error).__name__))
    return one_line(f"unexpected {type(error).__name__}: {printable(str(error))} (probably a bug in minimtl: "
                    f"run again with --debug and report the traceback)")


def _safe_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot be reconfigured
                pass


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None, *, prog: str) -> int:
    """Call ``main(argv)`` and return the exit code, turning exceptions into one line on stderr (see the module).

    ``main`` may return an int (the exit code), or anything else (0).  With ``--debug`` in ``argv``
    or ``MINIMTL_DEBUG=1`` in the environment, exceptions propagate with their tracebacks.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")
    _safe_streams()
    memory.apply_default()  # every tool: large temporaries reuse freed memory (minimtl/memory.py)
    try:
        code = main(argv)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(f"{prog}: {one_line(printable(str(exit_.code)))}", file=sys.stderr)
        return DATA_EXIT
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except BrokenPipeError:  # the output was piped into a program that stopped reading (| head)
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return DATA_EXIT
    except UsageError as error:
        if debug:
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return USAGE_EXIT
    except Exception as error:  # noqa: BLE001 - the point of this function
        if debug:
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return DATA_EXIT
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


# ------------------------------------------------------------------------- the console commands pip installs
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example_command(script: str, command: str) -> Callable[[], int]:
    """The console command ``command`` (pyproject.toml's ``[project.scripts]``): runs ``examples/<script>`` as is,
    so ``minimtl-predict photo.jpg`` and ``python examples/predict.py photo.jpg`` are one program."""
    def main() -> int:
        import runpy

        path = os.path.join(EXAMPLES, script)
        if not os.path.isfile(path):
            print(f"{command}: error: {path} is missing: {command} runs the examples of a source checkout "
                  f"(pip install -e .)", file=sys.stderr)
            return DATA_EXIT
        sys.argv[0] = command
        runpy.run_path(path, run_name="__main__")  # the script ends in sys.exit(cli.run(...))
        return 0
    main.__name__ = main.__qualname__ = command.replace("-", "_")
    return main


predict_command = _example_command("predict.py", "minimtl-predict")
train_command = _example_command("train_mtl.py", "minimtl-train")
