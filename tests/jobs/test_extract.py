"""The extraction job under the contract: records, reruns, cancel, progress, ranks,
a preloaded pipeline, and the CLI face."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import ConfigError, IncompleteStore, JobCancelled, JobConflict
from auditor.io import ROW_NUMBERS
from auditor.jobs import extract as jobs
from auditor.jobs import load_pipeline, read_job
from auditor.progress import ProgressEvent
from auditor.store import read_features
from auditor.testing import make_random_sae

N_DOCS = 23


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extract-job") / "docs.jsonl"
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "goal", "match", "vote", "law", "code"]
    path.write_text("".join(
        json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words, 4 + i % 7)),
                    "genre": f"g{i % 3}"}) + "\n" for i in range(N_DOCS)))
    return path


@pytest.fixture(scope="module")
def sae_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=1, d_sae=64, k=4, seed=3).save(
        tmp_path_factory.mktemp("extract-sae") / "sae")


def _options(model: Path, sae: Path, **kw: Any) -> jobs.ExtractOptions:
    base: dict[str, Any] = {"model": str(model), "saes": (str(sae),), "id_column": "id",
                            "passthrough": ("genre",), "max_length": 16, "shard_size": 5,
                            "poolings": ("max", "mean")}
    return jobs.ExtractOptions(**{**base, **kw})


def _rows(store: Path, *, allow_partial: bool = False) -> tuple[list[str], np.ndarray]:
    fm = read_features(store, pooling="max", allow_partial=allow_partial)
    return list(fm.doc_ids), fm.X.toarray()


def test_options_and_result_round_trip_json() -> None:
    options = jobs.ExtractOptions(saes=("a=/x",), poolings=("max", "mean"), max_windows=2,
                                  passthrough=("label",), rank=1, world_size=3)
    assert jobs.ExtractOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert options.options_hash() == jobs.ExtractOptions(
        saes=("a=/x",), poolings=("max", "mean"), max_windows=2,
        passthrough=("label",)).options_hash()  # rank, world_size: runtime
    result = jobs.ExtractResult(store=".", summary={"docs": 3, "mean_active": {"l": 1.5}},
                                skipped=({"type": "RowError", "message": "empty"},))
    assert jobs.ExtractResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.parametrize(("kw", "field"), [({"max_length": 2}, "max_length"),
                                           ({"rank": 3, "world_size": 3}, "rank"),
                                           ({"poolings": ("median",)}, "poolings"),
                                           ({"max_chars": 0}, "max_chars")])
def test_options_refuse_bad_values(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        jobs.ExtractOptions(**kw)
    assert err.value.field == field


def test_rerun_returns_the_record_and_other_options_conflict(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "store"
    first = jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path))
    assert first.summary["docs"] == N_DOCS
    record = read_job(out)
    assert record is not None and record["verb"] == "extract" and record["state"] == "done"

    def no_loading(spec: Any) -> Any:
        raise AssertionError("a recorded job was recomputed")

    monkeypatch.setattr(jobs, "load_pipeline", no_loading)
    again = jobs.run_extract(str(data), out=out,
                             options=_options(tiny_llama_dir, sae_path, max_batch_size=3))
    assert again == first
    with pytest.raises(JobConflict, match="max_length"):
        jobs.run_extract(str(data), out=out,
                         options=_options(tiny_llama_dir, sae_path, max_length=20))
    monkeypatch.undo()
    redone = jobs.run_extract(str(data), out=out, options=_options(
        tiny_llama_dir, sae_path, max_length=20, overwrite=True))
    assert redone.summary["docs"] == N_DOCS
    assert read_features(out, pooling="max").metadata["max_length"] == 20


def test_cancel_keeps_finished_shards_and_a_rerun_completes(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    jobs.run_extract(str(data), out=whole, options=_options(tiny_llama_dir, sae_path))

    token = CancelToken()
    events: list[ProgressEvent] = []

    def cancel_after_first_shard(event: ProgressEvent) -> None:
        events.append(event)
        if event.done >= 5:
            token.cancel()

    out = tmp_path / "cancelled"
    with pytest.raises(JobCancelled, match="cancelled at"):
        jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path),
                         progress=cancel_after_first_shard, cancel=token)
    assert read_job(out)["state"] == "running"  # type: ignore[index]
    done_before = sorted(p.name for p in (out / "_done").iterdir())
    assert done_before and len(done_before) < 5  # some shards, not all
    with pytest.raises(IncompleteStore):
        _rows(out)  # readers refuse an unfinished store unless asked
    ids, _ = _rows(out, allow_partial=True)  # what is there reads back whole
    assert ids == [f"d{i}" for i in range(len(ids))]

    events.clear()
    result = jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path),
                              progress=events.append)
    assert result.summary["docs_skipped_done"] == 5 * len(done_before)
    ids, X = _rows(out)
    whole_ids, whole_X = _rows(whole)
    assert ids == whole_ids == [f"d{i}" for i in range(N_DOCS)]  # every document once
    np.testing.assert_array_equal(X, whole_X)
    # progress: in order, ends with done == total
    dones = [e.done for e in events]
    assert dones == sorted(dones) and events[-1].final
    assert events[-1].done == events[-1].total == N_DOCS
    assert events[-1].stage == "docs" and "tokens" in events[-1].counters


def test_three_ranks_in_three_processes_equal_one(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    jobs.run_extract(str(data), out=single, options=_options(tiny_llama_dir, sae_path))
    shared = tmp_path / "shared"
    script = (
        "import json, sys\n"
        "from auditor.jobs import extract as jobs\n"
        "options = jobs.ExtractOptions.from_dict(json.loads(sys.argv[1]))\n"
        "jobs.run_extract(sys.argv[2], out=sys.argv[3], options=options)\n")
    procs = [subprocess.Popen(
        [sys.executable, "-c", script,
         json.dumps(_options(tiny_llama_dir, sae_path, rank=r, world_size=3).to_dict()),
         str(data), str(shared)], stderr=subprocess.PIPE, text=True) for r in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for r in range(3):
        assert read_job(shared, job_file=f"_job.rank-{r}-of-3.json")["state"] == "done"  # type: ignore[index]
    manifest = json.loads((shared / "store.json").read_text())
    assert sorted(manifest["ranks"]) == ["0", "1", "2"]
    assert manifest["shards"]["rows"] == N_DOCS
    ids, X = _rows(shared)
    single_ids, single_X = _rows(single)
    assert ids == single_ids
    np.testing.assert_array_equal(X, single_X)
    a = read_features(shared, pooling="mean", columns=["genre"])
    b = read_features(single, pooling="mean", columns=["genre"])
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert a.extra is not None and b.extra is not None
    assert a.extra["genre"].to_list() == b.extra["genre"].to_list()
    # the job as a whole, run once more with one rank, finds every shard done
    whole = jobs.run_extract(str(data), out=shared, options=_options(tiny_llama_dir, sae_path))
    assert whole.summary["docs"] == 0 and whole.summary["docs_skipped_done"] == N_DOCS


def test_overwrite_with_several_ranks_is_refused() -> None:
    with pytest.raises(ConfigError, match="other ranks' shards") as err:
        jobs.ExtractOptions(rank=0, world_size=2, overwrite=True)
    assert err.value.field == "overwrite"


def test_a_handed_pipeline_is_used_not_reloaded(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = _options(tiny_llama_dir, sae_path)
    pipeline = load_pipeline(options.pipeline_spec())

    def no_loading(spec: Any) -> Any:
        raise AssertionError("the job loaded a model it was handed")

    monkeypatch.setattr(jobs, "load_pipeline", no_loading)
    result = jobs.run_extract(str(data), out=tmp_path / "s", options=options,
                              pipeline=pipeline)
    assert result.summary["docs"] == N_DOCS
    other = make_random_sae(layer=1, d_sae=64, k=4, seed=9).save(tmp_path / "other")
    with pytest.raises(ConfigError, match="the job asks for") as err:
        jobs.run_extract(str(data), out=tmp_path / "t", options=_options(tiny_llama_dir, other),
                         pipeline=pipeline)
    assert err.value.field == "pipeline"


def test_cli_extract_is_a_call_into_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}

    def fake(input: str, *, out: str, options: jobs.ExtractOptions, **kw: Any
             ) -> jobs.ExtractResult:
        seen.update(input=input, out=out, options=options)
        return jobs.ExtractResult(store=".", summary={
            "docs": 7, "docs_skipped_done": 2, "shards_written": 1, "shards_skipped": 1,
            "tokens": 1234, "windows": 9, "seconds": 2.0, "tokens_per_s": 617.0,
            "truncated_docs": 0, "mean_active": {"layer1": 12.5},
            "excluded_tokens": {"layer1": 3}, "bytes_written": 2_000_000},
            skipped=({"type": "RowError", "message": "empty text", "path": "x.jsonl",
                      "row": 4},))

    monkeypatch.setattr(jobs, "run_extract", fake)
    code = main(["extract", "in.jsonl", "--out", str(tmp_path / "o"), "--sae", "s=/x",
                 "--pool", "mean", "--max-length", "64", "--rank", "1", "--world-size", "2",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen["input"] == "in.jsonl" and seen["options"].poolings == ("mean",)
    assert seen["options"].saes == ("s=/x",) and seen["options"].max_length == 64
    assert (seen["options"].rank, seen["options"].world_size) == (1, 2)
    assert "7 new, 2 already done" in captured.out and "617 tokens/s" in captured.out
    assert "skipped: x.jsonl, row 4: empty text" in captured.err


def test_a_resume_with_other_row_settings_never_mixes_stores(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path) -> None:
    """Settings that decide which rows land in which shard and what each row holds are
    part of what a resume compares: the job record refuses them, and so does the store
    itself when there is no record (a store killed before its job was recorded)."""
    from auditor.errors import ProvenanceMismatch

    out = tmp_path / "s"
    token = CancelToken()

    def stop_after_first_shard(event: ProgressEvent) -> None:
        if event.done >= 5:
            token.cancel()

    with pytest.raises(JobCancelled):
        jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path),
                         progress=stop_after_first_shard, cancel=token)
    for changed, key in (({"max_chars": 30}, "max_chars"),
                         ({"id_column": ROW_NUMBERS}, "id_column"),
                         ({"passthrough": ()}, "passthrough"),
                         ({"skip_bad_rows": True}, "skip_bad_rows")):
        with pytest.raises(JobConflict, match=key):
            jobs.run_extract(str(data), out=out,
                             options=_options(tiny_llama_dir, sae_path, **changed))
        (out / "_job.json").rename(out / "job.bak")
        with pytest.raises(ProvenanceMismatch, match=rf"input\.read\.{key}"):
            jobs.run_extract(str(data), out=out,
                             options=_options(tiny_llama_dir, sae_path, **changed))
        assert not (out / "_job.json").exists()  # the refused run claims nothing
        (out / "job.bak").rename(out / "_job.json")
    jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path))
    ids, _ = _rows(out)
    assert ids == [f"d{i}" for i in range(N_DOCS)]


def test_overwrite_with_a_bad_input_keeps_the_old_store(
        tiny_llama_dir: Path, sae_path: Path, data: Path, tmp_path: Path) -> None:
    """The new store is built beside the old one: a bad row in the new input (found late,
    after shards were written) leaves the old store whole and readable."""
    from auditor.errors import RowError

    out = tmp_path / "s"
    jobs.run_extract(str(data), out=out, options=_options(tiny_llama_dir, sae_path))
    before, before_X = _rows(out)
    bad = tmp_path / "bad.jsonl"
    rows = [json.dumps({"id": f"n{i}", "text": "fresh words here", "genre": "g"})
            for i in range(12)]
    bad.write_text("\n".join([*rows, json.dumps({"id": "x", "text": " ", "genre": "g"})]))
    with pytest.raises(RowError, match="row 12"):
        jobs.run_extract(str(bad), out=out,
                         options=_options(tiny_llama_dir, sae_path, overwrite=True))
    after, after_X = _rows(out)
    assert after == before
    np.testing.assert_array_equal(after_X, before_X)
    result = jobs.run_extract(str(bad), out=out, options=_options(
        tiny_llama_dir, sae_path, overwrite=True, skip_bad_rows=True))
    assert result.summary["docs"] == 12 and _rows(out)[0] == [f"n{i}" for i in range(12)]
