"""Queued classify and explain, with a head, on real workers: the same results as the
in-process jobs (classify fans out to shard tasks then its CPU stage; explain is one task
on the extract queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor import queue
from auditor.jobs.classify import ClassifyOptions, run_classify
from auditor.jobs.explain import ExplainOptions, run_explain
from auditor.jobs.extract import ExtractOptions
from tests.heads.conftest import (  # noqa: F401 (fixtures)
    sae,
    sae_dir,
    save_domain_head,
    split,
    stores,
)


@pytest.fixture(scope="module")
def worker(start_worker: Any) -> Any:
    return start_worker("qh").wait_ready()


@pytest.fixture(scope="module")
def head_dir(split, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return save_domain_head(split, tmp_path_factory.mktemp("queue-heads"))


def test_queued_classify_and_explain_equal_in_process(
        worker: Any, settings: Any, stores: Any, head_dir: Path,  # noqa: F811
        tiny_llama_dir: Path, sae_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    data = stores["test"][1]
    extract = ExtractOptions(model=str(tiny_llama_dir), saes=(str(sae_dir),), id_column="id")

    options = ClassifyOptions(heads=(str(head_dir),), explain=2, extract=extract)
    job = queue.submit("classify", data, out=tmp_path / "q-classify", options=options,
                       settings=settings)
    status = queue.wait(job, timeout=180, settings=settings)
    assert status["state"] == "done", status
    assert list(status["units"])[-1] == "cpu"
    local = run_classify(str(data), out=tmp_path / "classify", options=options)
    queued = pl.read_parquet(tmp_path / "q-classify" / local.predictions)
    assert queued.equals(pl.read_parquet(tmp_path / "classify" / local.predictions))
    assert queued.height == 45

    options_e = ExplainOptions(heads=(str(head_dir),), top=2, extract=extract)
    job = queue.submit("explain", data, out=tmp_path / "q-explain", options=options_e,
                       settings=settings)
    status = queue.wait(job, timeout=180, settings=settings)
    assert status["state"] == "done", status
    local_e = run_explain(str(data), out=tmp_path / "explain", options=options_e)
    assert status["result"]["documents"] == local_e.to_dict()["documents"]
