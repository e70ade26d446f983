"""Queued jobs on real Celery workers and the real Redis: the same store as in-process,
two workers on one job, atomic claims, progress, cancel and resume, a poisoned shard, and
the ``auditor jobs`` commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from auditor import queue
from auditor.cli import main
from auditor.jobs.extract import ExtractOptions, run_extract
from auditor.queue.state import RedisState
from auditor.settings import QueueSettings
from tests.queue.conftest import store_frame, wait_for, write_docs

N_DOCS = 40


@pytest.fixture(scope="module")
def workers(start_worker: Any) -> tuple[Any, Any]:
    a, b = start_worker("qa"), start_worker("qb")
    return a.wait_ready(), b.wait_ready()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_docs(tmp_path_factory.mktemp("queue-data") / "docs.jsonl", N_DOCS)


def _options(model: Path, sae: Path, **kw: Any) -> ExtractOptions:
    base: dict[str, Any] = {"model": str(model), "saes": (str(sae),), "id_column": "id",
                            "max_length": 16, "shard_size": 5, "poolings": ("max", "mean")}
    return ExtractOptions(**{**base, **kw})


_REFERENCE: dict[str, Any] = {}


def _reference(options: ExtractOptions, data: Path, tmp: Path) -> Any:
    """The store an in-process run of the same job writes."""
    key = options.to_json() + str(data)
    if key not in _REFERENCE:
        out = tmp / f"reference-{len(_REFERENCE)}"
        run_extract(data, out=out, options=options)
        _REFERENCE[key] = store_frame(out)
    return _REFERENCE[key]


def test_two_workers_fill_one_job_as_in_process_with_growing_progress(
        workers: Any, settings: QueueSettings, tiny_llama_dir: Path, sae_path: Path,
        data: Path, tmp_path: Path) -> None:
    options = _options(tiny_llama_dir, sae_path)
    job = queue.submit("extract", data, out=tmp_path / "store", options=options,
                       settings=settings)
    seen: list[int] = []

    def ended() -> dict[str, Any] | None:
        current = queue.status(job, settings=settings)
        seen.append(current["shards"]["done"])
        return current if current["state"] in ("done", "failed", "cancelled") else None

    status = wait_for(ended, timeout=120, what="the job to end")
    assert status["state"] == "done", status
    total = status["shards"]["total"]
    assert total == 8 and status["world_size"] == 8
    assert seen == sorted(seen) and seen[-1] == total
    assert any(0 < n < total for n in seen), seen  # done/total grew while it ran
    assert status["documents"] == {"total": N_DOCS, "done": N_DOCS}
    ranks = {n: u for n, u in status["units"].items() if n.startswith("rank-")}
    assert all(u["state"] == "done" and u["attempts"] == 1 for u in ranks.values())
    # both workers took shard tasks; each shard was written by one task, once
    assert {u["worker"].split("@")[0] for u in ranks.values()} == {"qa", "qb"}
    outputs = [s for u in ranks.values() for s in u["outputs"]]
    assert sorted(outputs, key=int) == [str(i) for i in range(total)]
    assert status["result"]["summary"]["docs"] == N_DOCS
    assert store_frame(tmp_path / "store").equals(_reference(options, data, tmp_path))
    manifest = json.loads((tmp_path / "store" / "_job" / "manifest.json").read_text())
    assert manifest["provenance"]["model"]["weights_sha256"]
    assert manifest["input_fingerprint"].startswith("sha256:")


def test_a_unit_is_claimed_by_one_worker_at_a_time(redis_db: Any,
                                                    settings: QueueSettings) -> None:
    state = RedisState(settings)
    barrier = threading.Barrier(8)
    claims: list[Any] = []

    def claim(i: int) -> None:
        barrier.wait()
        claims.append(state.claim("job-x", "rank-0", f"worker-{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    won = [c for c in claims if c is not None]
    assert len(claims) == 8 and len(won) == 1
    assert state.holder("job-x", "rank-0") == won[0].token.rsplit(":", 1)[0]
    won[0].release()
    again = state.claim("job-x", "rank-0", "worker-9")
    assert again is not None
    again.release()


def test_cancel_stops_the_job_and_resume_finishes_it(
        workers: Any, settings: QueueSettings, tiny_llama_dir: Path, sae_path: Path,
        data: Path, tmp_path: Path) -> None:
    options = _options(tiny_llama_dir, sae_path, shard_size=2)
    out = tmp_path / "store"
    job = queue.submit("extract", data, out=out, options=options, settings=settings)
    status = queue.cancel(job, settings=settings)
    assert status["state"] == "cancelled"

    def settled() -> dict[str, Any] | None:
        current = queue.status(job, settings=settings)
        running = [n for n, u in current["units"].items() if u["state"] == "running"]
        return None if running else current

    stopped = wait_for(settled, timeout=60, what="the workers to stop")
    assert stopped["state"] == "cancelled"
    assert stopped["shards"]["done"] < stopped["shards"]["total"] == 20
    # nothing more is written once it stopped (the old tasks are no-ops)
    queued_before = stopped["shards"]["done"]
    assert queue.status(job, settings=settings)["shards"]["done"] == queued_before

    resumed = queue.resume(job, settings=settings)
    assert resumed["generation"] == 2 and resumed["state"] in ("queued", "running", "done")
    status = queue.wait(job, timeout=120, poll=0.1, settings=settings)
    assert status["state"] == "done", status
    assert status["shards"]["done"] == 20
    assert store_frame(out).equals(_reference(options, data, tmp_path))


def test_a_poisoned_shard_fails_the_job_after_max_attempts_naming_the_row(
        workers: Any, settings: QueueSettings, tiny_llama_dir: Path, sae_path: Path,
        tmp_path: Path) -> None:
    data = write_docs(tmp_path / "poisoned.jsonl", 20, bad=12)
    options = _options(tiny_llama_dir, sae_path)
    out = tmp_path / "store"
    job = queue.submit("extract", data, out=out, options=options, settings=settings)
    status = queue.wait(job, timeout=120, poll=0.1, settings=settings)
    assert status["state"] == "failed", status
    assert status["error"]["type"] == "RowError" and status["error"]["row"] == 12
    failed = status["failed"]
    assert failed and all(f["attempts"] == settings.max_attempts for f in failed)
    assert failed[0]["error"]["row"] == 12
    # the shard tasks before the bad row stop reading after their shard: they succeed
    assert status["units"]["rank-0"]["state"] == status["units"]["rank-1"]["state"] == "done"
    # the shards before the bad row were written and read back whole (a partial store)
    frame = store_frame(out, allow_partial=True)
    assert frame["doc_id"].to_list() == [f"d{i}" for i in range(10)]


def test_jobs_commands_submit_wait_status_list(
        workers: Any, queue_env: None, tiny_llama_dir: Path, sae_path: Path, data: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-store"
    code = main(["jobs", "submit", "extract", str(data), "--out", str(out),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_path), "--id-column", "id",
                 "--shard-size", "5", "--max-length", "16", "--pool", "max", "--pool", "mean",
                 "--wait", "--timeout", "120", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["state"] == "done"
    assert store_frame(out).equals(
        _reference(_options(tiny_llama_dir, sae_path), data, tmp_path))
    assert main(["jobs", "status", printed["id"]]) == 0
    text = capsys.readouterr().out
    assert f"job {printed['id']}  extract  done" in text and "shards 8/8 done" in text
    assert main(["jobs", "list", "--state", "done", "--json"]) == 0
    assert printed["id"] in {j["id"] for j in json.loads(capsys.readouterr().out)}
    assert main(["jobs", "wait", printed["id"], "--timeout", "5"]) == 0


def test_a_queued_audit_chains_the_store_to_its_cpu_stage(
        workers: Any, queue_env: None, tiny_llama_dir: Path, sae_path: Path, data: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.jobs.audit import AuditOptions, run_audit

    out = tmp_path / "audit"
    code = main(["jobs", "submit", "audit", str(data), "--out", str(out),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_path), "--id-column", "id",
                 "--set", "heads=[]", "--set", 'formats=["json"]',
                 "--wait", "--timeout", "120", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0 and status["state"] == "done", status
    assert list(status["units"]) == ["rank-0", "finish", "cpu"]  # extract, then cpu
    assert status["units"]["cpu"]["worker"].split("@")[0] in ("qa", "qb")
    options = AuditOptions(heads=(), formats=("json",), extract=_options(
        tiny_llama_dir, sae_path, shard_size=1000, poolings=("max",)))
    local = run_audit(data, out=tmp_path / "local", options=options)
    assert status["result"] == local.to_dict()
    assert store_frame(out / "store").equals(store_frame(tmp_path / "local" / "store"))
    report = json.loads((out / "report.json").read_text())
    assert report["corpus"]["documents"] == N_DOCS
