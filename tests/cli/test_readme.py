"""The README's command lines say what `--help` says: each flag given to `auditor CMD` is
one of CMD's flags, and measured claims repeated from a help text carry the same number."""

from __future__ import annotations

import re
from pathlib import Path

import click

from auditor.cli import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _command_lines() -> list[str]:
    """Every `auditor …` inline code span and fenced-block line of the README."""
    lines = re.findall(r"`(auditor [^`]+)`", README)
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("auditor "):
                lines.append(line)
    return lines


def _flags(command: click.Command) -> set[str]:
    return {o for p in command.params
            for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def test_readme_commands_use_their_own_flags() -> None:
    lines = _command_lines()
    assert len(lines) > 20
    wrong = []
    for line in lines:
        command: click.Command = cli
        for token in line.split()[1:]:
            if not isinstance(command, click.Group) or token not in command.commands:
                break
            command = command.commands[token]
        if isinstance(command, click.Group):
            continue  # `auditor probe train/eval/…`: a list of commands, not a command line
        known = _flags(command) | {"--help", "-h"}
        wrong += [(line, t) for t in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)
                  if t not in known]
    assert not wrong


def test_readme_gives_the_measured_speed_up_of_the_help() -> None:
    train = cli.commands["sae"].commands["train"]  # type: ignore[attr-defined]
    (option,) = [p for p in train.params if "--encoder-dtype" in getattr(p, "opts", ())]
    (speed,) = re.findall(r"(\d+\.\d+)x faster", option.help)
    claims = re.findall(r"(\d+\.\d+)× faster \(`bench/train_step\.py`", README)
    assert claims == [speed]
