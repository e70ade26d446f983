"""The ``auditor`` command line: one module per command group.

Every command parses its options, calls a job in :mod:`auditor.jobs` and prints the result;
the workers and the HTTP API call the same jobs. Errors from
the :mod:`auditor.errors` tree are printed as one line naming the file/row/tensor and end
the process with that branch's exit code (see :data:`auditor.errors.EXIT_CODES`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from auditor import __version__
from auditor.errors import AuditorError, ConfigError, SAEError, exit_code_for

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return (and, as a script, exit with) the process exit code."""
    try:
        # without standalone mode, click returns (not raises) a command's Exit code
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="auditor",
                        standalone_mode=False)
    except _ReaderGone:
        _silence_stdout()
        return 0
    except AuditorError as err:
        click.echo(f"error: {_for_cli(err, sys.argv[1:] if argv is None else argv)}",
                   err=True)
        return exit_code_for(err)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    return code if isinstance(code, int) else 0


#: How a library message names a setting the caller can change: ``set overwrite``, or with
#: a value ``set id_column to '#row'``.
_SETTING = re.compile(r"\bset ([a-z][a-z0-9_]*)\b(?: to ('[^']*'|-?\d[\w.]*))?")


def _for_cli(err: AuditorError, argv: Sequence[str]) -> str:
    """An error's one line in the command's terms: library messages name settings (``set
    overwrite``, ``set k``, ``set id_column to '#row'``), and the command's flags replace
    them (``use --overwrite``, ``use --k``, ``use --id-column '#row'``); a settings error
    whose field is one of its flags ends with ``(--sae)``."""
    flags = _command_flags(argv)

    def flag(m: re.Match[str]) -> str:
        name = "--" + m.group(1).replace("_", "-")
        if name not in flags:
            return m.group(0)
        return f"use {name}" + (f" {m.group(2)}" if m.group(2) else "")

    text = _SETTING.sub(flag, str(err))
    hint = _flag_hint(err, flags)
    return text if not hint or hint.strip(" ()") in text else text + hint


def _flag_hint(err: AuditorError, flags: set[str]) -> str:
    """The command-line flag behind a settings error's field, ``(--sae)`` (library messages
    name fields, not flags); nothing for an input error, whose field is a column."""
    if err.field is None or not isinstance(err, ConfigError | SAEError):
        return ""
    flag = "--" + err.field.replace("_", "-")
    return f" ({flag})" if flag in flags else ""


def _command_flags(argv: Sequence[str]) -> set[str]:
    """The flags of the command ``argv`` runs (of every command when it names none)."""
    command: click.Command = cli
    for token in argv:
        if not isinstance(command, click.Group) or token not in command.commands:
            break
        command = command.commands[token]
    if isinstance(command, click.Group):
        return _all_flags()
    return {o for p in command.params for o in getattr(p, "opts", ())}


def _all_flags() -> set[str]:
    flags: set[str] = set()
    todo: list[click.Command] = [cli]
    while todo:
        command = todo.pop()
        flags.update(o for p in command.params for o in getattr(p, "opts", ()))
        if isinstance(command, click.Group):
            todo.extend(command.commands.values())
    return flags


class _ReaderGone(Exception):
    """The process reading our output closed it (``auditor … | head``)."""


class _Group(click.Group):
    """The top group: a broken pipe on output (help included) becomes :class:`_ReaderGone`,
    which :func:`main` ends quietly with 0, as ``cat`` or ``grep`` do when ``head`` has read
    enough (click would print nothing and exit 1). Python ignores SIGPIPE, so the write
    raises instead of killing the process; restoring SIGPIPE's default would also kill a
    worker on a broken socket."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as e:
            raise _ReaderGone from e

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            raise _ReaderGone from e


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not complain."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (captured output): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _run() -> None:  # console-script entry point
    sys.exit(main())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def cli() -> None:
    """auditor: classify and audit datasets with sparse-autoencoder features."""


def _register() -> None:
    from auditor.cli.extract import extract
    from auditor.cli.features import features
    from auditor.cli.filter import filter_
    from auditor.cli.heads import heads
    from auditor.cli.jobs import jobs
    from auditor.cli.models import models
    from auditor.cli.probe import probe
    from auditor.cli.report import report
    from auditor.cli.run import audit, classify, explain
    from auditor.cli.sae import sae
    from auditor.cli.schedule import beat, schedule
    from auditor.cli.store import store
    from auditor.cli.worker import worker

    for command in (extract, models, sae, probe, heads, classify, audit, explain, features,
                    report, filter_, store, worker, jobs):
        cli.add_command(command)
    for command in (schedule, beat):
        cli.add_command(command)


_register()
