"""Every CLI command is a call into :mod:`auditor.jobs` (that no CLI module imports a heavy
library is checked in ``tests/test_architecture.py``).

The walk: each leaf command of the click tree must appear in :data:`CALLS` with the job
function it calls and an argument list; the function is replaced by one that raises, and
the command must reach it. A command added without a job (or calling another one) fails
here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import click
import pytest

from auditor.cli import cli, main

#: command path -> (job module, job function, arguments after the command path)
CALLS: dict[tuple[str, ...], tuple[str, str, list[str]]] = {
    ("extract",): ("auditor.jobs.extract", "run_extract", ["in.jsonl", "--out", "o"]),
    ("classify",): ("auditor.jobs.classify", "run_classify", ["some text"]),
    ("audit",): ("auditor.jobs.audit", "run_audit", ["in.jsonl", "--out", "o"]),
    ("explain",): ("auditor.jobs.explain", "run_explain", ["some text"]),
    ("report",): ("auditor.jobs.report", "run_report", ["store", "--out", "o"]),
    ("filter",): ("auditor.jobs.filter", "run_filter",
                  ["in.jsonl", "--out", "o", "--keep", "len(text) > 1"]),
    ("models", "list"): ("auditor.jobs.inspect", "models_list", []),
    ("models", "warmup"): ("auditor.jobs.warmup", "run_warmup", []),
    ("store", "info"): ("auditor.jobs.inspect", "store_info", ["store"]),
    ("store", "verify"): ("auditor.jobs.inspect", "store_verify", ["store"]),
    ("sae", "convert"): ("auditor.jobs.sae", "sae_convert", ["src", "dst"]),
    ("sae", "info"): ("auditor.jobs.sae", "sae_info", ["sae"]),
    ("sae", "collect"): ("auditor.jobs.sae", "run_sae_collect",
                         ["corpus.jsonl", "--out", "c", "--layer", "9"]),
    ("sae", "train"): ("auditor.jobs.sae", "run_sae_train",
                       ["--out", "o", "--layer", "9", "--width", "64", "--k", "4",
                        "--cache", "c"]),
    ("sae", "eval"): ("auditor.jobs.sae", "run_sae_eval", ["sae", "--cache", "c"]),
    ("probe", "compare"): ("auditor.jobs.probe", "run_probe_compare",
                           ["--features", "s", "--labels", "l.jsonl"]),
    ("probe", "curve"): ("auditor.jobs.probe", "run_probe_curve",
                         ["--features", "s", "--labels", "l.jsonl"]),
    ("probe", "train"): ("auditor.jobs.probe", "run_probe_train",
                         ["--features", "s", "--labels", "l.jsonl", "--head", "h"]),
    ("probe", "eval"): ("auditor.jobs.probe", "run_probe_eval",
                        ["h", "--features", "s", "--labels", "l.jsonl"]),
    ("probe", "predict"): ("auditor.jobs.probe", "run_probe_predict",
                           ["h", "--features", "s", "--out", "o"]),
    ("heads", "list"): ("auditor.jobs.heads", "run_heads_list", []),
    ("heads", "show"): ("auditor.jobs.heads", "run_heads_show", ["h"]),
    ("features", "build"): ("auditor.jobs.dictionary", "run_dictionary_build",
                            ["--corpus", "c.jsonl", "--out", "d"]),
    ("features", "show"): ("auditor.jobs.dictionary", "run_feature_show",
                           ["7", "--dictionary", "d"]),
    ("features", "search"): ("auditor.jobs.dictionary", "run_feature_search",
                             ["word", "--dictionary", "d"]),
    ("features", "label"): ("auditor.jobs.dictionary", "run_feature_label",
                            ["7", "a label", "--dictionary", "d"]),
    ("worker",): ("auditor.queue", "run_worker", ["--queues", "cpu"]),
    ("jobs", "submit"): ("auditor.queue", "submit", ["extract", "in.jsonl", "--out", "o"]),
    ("jobs", "status"): ("auditor.queue", "status", ["j"]),
    ("jobs", "wait"): ("auditor.queue", "wait", ["j"]),
    ("jobs", "cancel"): ("auditor.queue", "cancel", ["j"]),
    ("jobs", "resume"): ("auditor.queue", "resume", ["j"]),
    ("jobs", "list"): ("auditor.queue", "list_jobs", []),
    ("schedule", "add"): ("auditor.jobs.schedule", "schedule_add",
                          ["n", "--every", "1h", "--watch", "in", "--out", "o"]),
    ("schedule", "list"): ("auditor.jobs.schedule", "schedule_list", []),
    ("schedule", "remove"): ("auditor.jobs.schedule", "schedule_remove", ["n"]),
    ("schedule", "run-now"): ("auditor.jobs.schedule", "run_schedule", ["n"]),
    ("beat",): ("auditor.queue.beat", "run_beat", []),
}

def _leaves(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path


class _Called(Exception):
    pass


def test_every_command_is_listed() -> None:
    assert set(_leaves(cli)) == set(CALLS)


@pytest.mark.parametrize("path", sorted(CALLS), ids=" ".join)
def test_command_calls_its_job(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    module, function, args = CALLS[path]

    def called(*a: object, **k: object) -> None:
        raise _Called(function)

    monkeypatch.setattr(importlib.import_module(module), function, called)
    with pytest.raises(_Called):
        main([*path, *args])
