"""The real thing: a ``celery beat`` process with the schedules-file scheduler and a real
worker on the local Redis (database 12). A schedule added while beat runs (no restart) with
a 2 s interval drives runs on the worker: the first snapshot audits the two files there,
the second only the file added after it, with drift against the first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.jobs.schedule import schedule_add, schedule_remove
from tests.queue.conftest import ROOT, Worker, flushed_redis, wait_for
from tests.schedule.conftest import write_watched

REDIS_URL = "redis://127.0.0.1:6379/12"
#: Limits long enough for a task that loads the model and audits (a shared 2-core box).
ENV = {
    "AUDITOR_BROKER_URL": REDIS_URL,
    "AUDITOR_VISIBILITY_TIMEOUT": "300",
    "AUDITOR_TIME_LIMIT": "240",
    "AUDITOR_SOFT_TIME_LIMIT": "200",
    "AUDITOR_CLAIM_TTL": "3",
    "AUDITOR_RETRY_DELAY": "0.5",
    "AUDITOR_RESTORE_INTERVAL": "1",
}


@pytest.fixture
def redis12() -> Iterator[Any]:
    yield from flushed_redis(REDIS_URL)


class Beat:
    """A real ``auditor beat`` process (its own process group, stopped by its pid)."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.log = logs / "beat.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditor", "beat", "--schedule-state",
                 str(logs / "beat-state"), "--max-interval", "1", "--loglevel", "INFO"],
                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


@pytest.fixture
def services(redis12: Any, tmp_path: Path) -> Iterator[Callable[[], tuple[Worker, Beat]]]:
    started: list[Any] = []
    env = {**ENV, "AUDITOR_SCHEDULES": str(tmp_path / "schedules.json")}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start() -> tuple[Worker, Beat]:
        worker = Worker("sched", logs, "extract,cpu", env)
        started.append(worker)
        beat = Beat(logs, env)
        started.append(beat)
        return worker, beat

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def worker_only(redis12: Any, tmp_path: Path) -> Iterator[Worker]:
    env = {**ENV, "AUDITOR_SCHEDULES": str(tmp_path / "schedules.json")}
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = Worker("runnow", logs, "extract,cpu", env)
    yield worker
    worker.stop()


def _finished(out: Path) -> list[Path]:
    root = out / "snapshots"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "summary.json").is_file())


def test_beat_drives_two_runs_on_a_real_worker(
        services: Any, tiny_llama_dir: Path, sched_sae_dir: Path, safety_head: Path,
        tmp_path: Path) -> None:
    from auditor.schedule import ScheduleSpec

    watch, out = tmp_path / "in", tmp_path / "out"
    write_watched(watch / "a.jsonl", 8, unsafe=0.0, seed=1)
    write_watched(watch / "b.jsonl", 8, unsafe=0.0, seed=2)
    worker, beat = services()
    worker.wait_ready()

    def beat_up() -> bool:
        if beat.proc.poll() is not None:
            raise AssertionError(f"beat exited:\n{beat.text()[-3000:]}")
        return "0 schedule(s)" in beat.text()

    wait_for(beat_up, timeout=30, what="beat to read the (empty) schedules file")
    file = str(tmp_path / "schedules.json")
    schedule_add(ScheduleSpec(name="every2s", every="2s", watch=str(watch), out=str(out),
                              heads=(str(safety_head),), model=str(tiny_llama_dir),
                              saes=(str(sched_sae_dir),), explain=2),
                 schedules=file)

    def snapshots(n: int) -> Callable[[], list[Path]]:
        def check() -> list[Path]:
            for proc, name in ((worker.proc, "worker"), (beat.proc, "beat")):
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited:\n{worker.text()[-2000:]}\n"
                                         f"{beat.text()[-2000:]}")
            found = _finished(out)
            return found if len(found) >= n else []
        return check

    first = wait_for(snapshots(1), timeout=90, what="the first scheduled snapshot",
                     interval=0.2)[0]
    assert "every2s" in beat.text()  # picked up without a restart
    files1 = json.loads((first / "files.json").read_text())
    assert sorted(s["source"] for s in files1["sources"]) == ["a.jsonl", "b.jsonl"]

    write_watched(watch / "c.jsonl", 8, unsafe=1.0, seed=3)
    found = wait_for(snapshots(2), timeout=60, what="the second scheduled snapshot",
                     interval=0.2)
    assert found[0] == first and len(found) == 2
    second = found[1]
    files2 = json.loads((second / "files.json").read_text())
    assert [s["source"] for s in files2["sources"]] == ["c.jsonl"]
    report = json.loads((second / "report.json").read_text())
    assert report["drift"]["previous"]["source"] == str(first / "report.json")
    assert report["drift"]["labels"]["safety"]["total_variation"] > 0.5
    assert report["changes"]["previous_snapshot"] == first.name
    # the index is rebuilt just after summary.json (and the seen ledger) are written
    wait_for(lambda: f'href="snapshots/{second.name}/report.html"'
             in (out / "index.html").read_text(), timeout=20, what="the rebuilt index")
    assert "auditor.schedule_run" in worker.text()

    schedule_remove("every2s", schedules=file)
    def dropped() -> bool:
        loads = [line for line in beat.text().splitlines() if "schedule(s) from" in line]
        return "beat: 0 schedule(s)" in loads[-1]

    wait_for(dropped, timeout=20, what="beat to drop the removed schedule")


def test_run_now_queue_runs_on_a_real_worker(
        worker_only: Worker, tiny_llama_dir: Path, sched_sae_dir: Path, safety_head: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main
    from auditor.schedule import ScheduleSpec

    watch, out = tmp_path / "in", tmp_path / "out"
    write_watched(watch / "a.jsonl", 6, unsafe=0.0, seed=4)
    file = str(tmp_path / "schedules.json")
    schedule_add(ScheduleSpec(name="weekly", every="0 3 * * 1", watch=str(watch),
                              out=str(out), heads=(str(safety_head),),
                              model=str(tiny_llama_dir), saes=(str(sched_sae_dir),)),
                 schedules=file)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AUDITOR_SCHEDULES", file)
    # A name the workers' file does not hold is refused here, before anything is sent.
    assert main(["schedule", "run-now", "weekyl", "--queue"]) != 0
    assert "no schedule named 'weekyl'; did you mean weekly?" in capsys.readouterr().err
    assert main(["schedule", "run-now", "weekly", "--queue", "--device", "cpu"]) != 0
    assert "worker's device" in capsys.readouterr().err
    worker_only.wait_ready()
    assert main(["schedule", "run-now", "weekly", "--queue"]) == 0
    assert "sent a run of schedule weekly to the workers" in capsys.readouterr().out

    def done() -> list[Path]:
        if worker_only.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker_only.text()[-3000:]}")
        return _finished(out)

    (snapshot,) = wait_for(done, timeout=90, what="the queued run's snapshot", interval=0.2)
    files = json.loads((snapshot / "files.json").read_text())
    assert [s["source"] for s in files["sources"]] == ["a.jsonl"]
