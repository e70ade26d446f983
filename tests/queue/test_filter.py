"""Queued filter jobs on a real worker: a pipeline without scores runs as one CPU task; a
pipeline that reads a head fans out its extraction, then filters on the CPU queue. Both
write what the in-process job writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from auditor import queue
from auditor.cli import cli
from auditor.heads import save_head, train_head
from auditor.jobs.extract import ExtractOptions
from auditor.jobs.filter import FilterOptions, run_filter
from tests.heads.conftest import sae, sae_dir, split, stores  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def worker(start_worker: Any) -> Any:
    return start_worker("qf").wait_ready()


@pytest.fixture(scope="module")
def head_dir(split, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    return save_head(head, tmp_path_factory.mktemp("queue-filter-heads") / "domain")


def _same_outputs(a: Path, b: Path, result: dict[str, Any]) -> None:
    for rel in (*result["kept"], *result["dropped"]):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_queued_filter_without_scores_is_one_cpu_task(
        worker: Any, settings: Any, stores: Any, tmp_path: Path,  # noqa: F811
        queue_env: None) -> None:
    data = stores["test"][1]
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("- {type: length, min_chars: 60}\n- {type: dedup}\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["jobs", "submit", "filter", str(data), "--out",
                              str(tmp_path / "q"), "--pipeline", str(pipeline),
                              "--id-column", "id", "--set", "keep=len(text) < 150",
                              "--wait", "--timeout", "120", "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["state"] == "done" and list(status["units"]) == ["cpu"]
    local = run_filter(data, out=tmp_path / "local", options=FilterOptions(
        steps=({"type": "length", "min_chars": 60}, {"type": "dedup"}),
        keep="len(text) < 150", extract=ExtractOptions(id_column="id")))
    assert status["result"]["documents"] == local.documents == 45
    assert status["result"]["dropped_by_step"] == local.dropped_by_step
    _same_outputs(tmp_path / "q", tmp_path / "local", local.to_dict())


def test_queued_filter_on_a_head_fans_out_its_extraction(
        worker: Any, settings: Any, stores: Any, head_dir: Path,  # noqa: F811
        tiny_llama_dir: Path, sae_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    data = stores["test"][1]
    options = FilterOptions(
        keep="domain.p.sport < 0.5", heads=(str(head_dir),),
        extract=ExtractOptions(model=str(tiny_llama_dir), saes=(str(sae_dir),),
                               id_column="id", shard_size=20))
    job = queue.submit("filter", data, out=tmp_path / "q", options=options,
                       settings=settings)
    status = queue.wait(job, timeout=240, settings=settings)
    assert status["state"] == "done", status
    units = list(status["units"])
    assert units[0].startswith("rank-") and units[-2:] == ["finish", "cpu"]
    local = run_filter(data, out=tmp_path / "local", options=options)
    assert status["result"]["kept_documents"] == local.kept_documents
    assert 0 < local.kept_documents < 45
    _same_outputs(tmp_path / "q", tmp_path / "local", local.to_dict())
