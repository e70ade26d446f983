"""The ``auditor jobs`` and ``auditor worker`` faces parse their options and call
:mod:`auditor.queue` (no broker needed: the library calls are replaced)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor import queue
from auditor.cli import main
from auditor.jobs.audit import AuditOptions
from auditor.jobs.extract import ExtractOptions


def test_jobs_submit_builds_the_verbs_options(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Any, ...]] = []

    def submit(verb: str, input: str, *, out: Any, options: Any) -> str:
        calls.append((verb, input, out, options))
        return "job-1"

    monkeypatch.setattr(queue, "submit", submit)
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "a"}\n')
    assert main(["jobs", "submit", "audit", str(data), "--out", str(tmp_path / "o"),
                 "--sae", "s", "--head", "topic", "--shard-size", "7",
                 "--set", "extract.max_windows=2", "--set", 'formats=["json"]']) == 0
    assert capsys.readouterr().out.strip() == "job-1"
    verb, source, out, options = calls[0]
    assert (verb, source, out) == ("audit", str(data), tmp_path / "o")
    assert options == AuditOptions(heads=("topic",), formats=("json",),
                                   extract=ExtractOptions(saes=("s",), shard_size=7,
                                                          max_windows=2))
    assert main(["jobs", "submit", "extract", str(data), "--out", "o", "--skip-bad-rows",
                 "--json"]) == 0
    assert calls[1][3] == ExtractOptions(skip_bad_rows=True)
    assert capsys.readouterr().out.strip() == '{"id": "job-1"}'
    assert main(["jobs", "submit", "extract", str(data), "--out", "o", "--set", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_jobs_wait_exits_with_the_failed_jobs_error(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    from auditor.errors import RowError

    error = {**RowError("empty text", path="in.jsonl", row=12).to_dict(), "unit": "rank-2"}
    status = {"id": "j", "verb": "extract", "state": "failed", "out": "/o", "input": "i",
              "generation": 1, "world_size": 2,
              "shards": {"total": 4, "done": 2, "running": 0},
              "documents": {"total": 20, "done": 10}, "tokens": 0, "tokens_per_s": 0.0,
              "eta_s": None, "units": {},
              "failed": [{"unit": "rank-2", "error": error, "attempts": 3}],
              "error": error, "result": None, "outputs": {"out": "/o", "store": "."}}
    monkeypatch.setattr(queue, "wait", lambda job, timeout=None: status)
    assert main(["jobs", "wait", "j", "--timeout", "1"]) == 3  # an InputError's exit code
    captured = capsys.readouterr()
    assert "failed rank-2 after 3 attempt(s): in.jsonl, row 12: empty text" in captured.out
    assert "row 12" in captured.err


def test_worker_execs_the_celery_worker_with_the_device(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    import auditor.queue.worker as worker

    seen: dict[str, Any] = {}

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, argv=argv, env=env)

    monkeypatch.setattr(worker.os, "execve", execve)
    assert main(["worker", "--queues", "extract", "--device", "cuda:1", "--name", "gpu1",
                 "--without-mingle"]) == 0
    assert seen["argv"][1:] == ["-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
                                "extract", "--concurrency", "1", "--pool", "prefork",
                                "--loglevel", "INFO", "-n", "gpu1@%h", "--without-mingle"]
    assert seen["env"]["AUDITOR_DEVICE"] == "cuda:1"
    assert main(["worker", "--queues", "gpu"]) == 2
