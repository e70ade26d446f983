"""The feature-dictionary jobs under the job contract, on a tiny random Llama and SAE.

The model and SAE are loaded once and handed to the build job (as a worker does); the
options still name them, as the record requires.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import ConfigError, JobCancelled, JobConflict, StoreError
from auditor.jobs import dictionary as jobs
from auditor.jobs._contract import read_job
from auditor.jobs.dictionary import (
    DictionaryBuildOptions,
    DictionaryBuildResult,
    FeatureLabelOptions,
    FeatureLabelResult,
    FeatureSearchOptions,
    FeatureSearchResult,
    FeatureShowOptions,
    FeatureShowResult,
    run_dictionary_build,
    run_feature_label,
    run_feature_search,
    run_feature_show,
)
from auditor.progress import ProgressEvent
from auditor.testing import CORPUS, make_random_sae

LAYER = 1
D_SAE = 64
N_DOCS = 12
CHUNK = 4  # three chunks


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> Any:
    from auditor.lm import load_model

    return load_model(tiny_llama_dir, device="cpu")


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=LAYER, d_sae=D_SAE, k=4, seed=0).save(
        tmp_path_factory.mktemp("sae") / "sae")


@pytest.fixture(scope="module")
def sae(sae_dir: Path) -> Any:
    from auditor.sae import load_sae

    return load_sae(sae_dir)


def _corpus(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n"
                            for i, t in enumerate(texts)))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", list(CORPUS[:N_DOCS]))


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _corpus(tmp_path_factory.mktemp("corpus") / "other.jsonl",
                   list(CORPUS[N_DOCS:N_DOCS + 6]))


def _options(tiny_llama_dir: Path, sae_dir: Path, **kw: Any) -> DictionaryBuildOptions:
    base: dict[str, Any] = dict(model=str(tiny_llama_dir), sae=str(sae_dir), id_column="id",
                                max_length=24, top_contexts=3, context_tokens=2,
                                logit_tokens=4, exclude_outliers=False, chunk_docs=CHUNK)
    return DictionaryBuildOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def built(lm: Any, sae: Any, corpus: Path, tiny_llama_dir: Path, sae_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DictionaryBuildResult]:
    """An uninterrupted build: the reference for the resumed one."""
    out = tmp_path_factory.mktemp("dict") / "whole"
    result = run_dictionary_build(corpus, out=out, options=_options(tiny_llama_dir, sae_dir),
                                  model=lm, sae=sae)
    return out, result


def _tables(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(out / "features.parquet"), pl.read_parquet(out / "contexts.parquet")


# --------------------------------------------------------------------------- records


def test_options_and_results_round_trip() -> None:
    records = [
        DictionaryBuildOptions(model="m", sae="s", layer=3, max_windows=2, merge=True,
                               chunk_docs=7, device="cpu"),
        DictionaryBuildOptions(id_column="id", dtype="float32", overwrite=True),
        DictionaryBuildResult(documents=3, tokens=40, new_documents=3, new_tokens=40,
                              features=64, alive=20, merged=False, chunks=1, resumed_chunks=0,
                              seconds=0.5, files={"manifest": "dictionary.json"}),
        FeatureShowOptions(feature=3, labels="l.tsv", contexts=2, width=60),
        FeatureShowResult(dictionary="d", report={"feature": 3, "promoted": [["a", 1.0]]},
                          text="feature 3"),
        FeatureSearchOptions(word="sea", limit=5),
        FeatureSearchResult(dictionary="d", hits=[{"feature": 1, "matched": ["label"]}]),
        FeatureLabelOptions(feature=2, label="x"),
        FeatureLabelOptions(feature=2, remove=True),
        FeatureLabelResult(dictionary="d", path="d/labels.tsv", feature=2, label=None,
                           removed=True),
    ]
    for record in records:
        assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_options_validate_and_runtime_fields() -> None:
    with pytest.raises(ConfigError) as err:
        DictionaryBuildOptions(top_contexts=0)
    assert err.value.field == "top_contexts"
    with pytest.raises(ConfigError) as err:
        DictionaryBuildOptions(outlier_factor=1.0)
    assert err.value.field == "outlier_factor"
    with pytest.raises(ConfigError) as err:
        DictionaryBuildOptions(merge=True, overwrite=True)
    assert err.value.field == "merge"
    with pytest.raises(ConfigError) as err:
        FeatureLabelOptions(feature=1)  # neither a label nor remove
    assert err.value.field == "label"
    a = DictionaryBuildOptions()
    # chunking, batching and the device do not change the dictionary
    assert DictionaryBuildOptions(chunk_docs=3, token_budget=5, max_batch_size=2,
                                  device="cpu").options_hash() == a.options_hash()
    assert DictionaryBuildOptions(top_contexts=3).options_hash() != a.options_hash()
    assert DictionaryBuildOptions(merge=True).options_hash() != a.options_hash()


# --------------------------------------------------------------------------- the build job


def test_build_writes_under_out_and_rerun_returns_the_record(
        built: tuple[Path, DictionaryBuildResult], corpus: Path, tiny_llama_dir: Path,
        sae_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.features import load_dictionary, load_manifest

    out, result = built
    assert result.documents == N_DOCS and result.new_documents == N_DOCS
    assert result.chunks == 3 and result.resumed_chunks == 0 and not result.merged
    assert result.features == D_SAE and 0 < result.alive <= D_SAE
    assert sorted(p.name for p in out.iterdir()) == [
        "._job.json.lock", "_job.json", "contexts.parquet", "dictionary.json",
        "features.parquet"]
    assert all((out / name).is_file() for name in result.files.values())
    assert load_dictionary(out).height == D_SAE
    assert load_manifest(out)["totals"]["documents"] == N_DOCS
    record = read_job(out)
    assert record is not None and record["state"] == "done"
    assert record["verb"] == jobs.BUILD_VERB

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("recomputed")

    monkeypatch.setattr("auditor.features.build_dictionary", boom)
    monkeypatch.setattr(jobs, "_load", boom)
    again = run_dictionary_build(corpus, out=out, options=_options(tiny_llama_dir, sae_dir))
    assert again == result
    # a runtime field changed is the same job
    again = run_dictionary_build(corpus, out=out,
                                 options=_options(tiny_llama_dir, sae_dir, chunk_docs=5))
    assert again == result


def test_other_options_or_input_conflict_and_overwrite_replaces(
        lm: Any, sae: Any, corpus: Path, other_corpus: Path, tiny_llama_dir: Path,
        sae_dir: Path, built: tuple[Path, DictionaryBuildResult], tmp_path: Path) -> None:
    from auditor.features import load_manifest

    out = tmp_path / "dict"
    shutil.copytree(built[0], out)
    (out / "labels.tsv").write_text("feature\tlabel\n1\tmine\n")
    with pytest.raises(JobConflict, match="top_contexts"):
        run_dictionary_build(corpus, out=out,
                             options=_options(tiny_llama_dir, sae_dir, top_contexts=2),
                             model=lm, sae=sae)
    with pytest.raises(JobConflict, match="input"):
        run_dictionary_build(other_corpus, out=out, options=_options(tiny_llama_dir, sae_dir),
                             model=lm, sae=sae)
    result = run_dictionary_build(
        other_corpus, out=out, options=_options(tiny_llama_dir, sae_dir, overwrite=True),
        model=lm, sae=sae)
    assert result.documents == 6 and not result.merged
    manifest = load_manifest(out)
    assert [i["path"] for i in manifest["inputs"]] == [str(other_corpus)]
    assert (out / "labels.tsv").read_text().endswith("1\tmine\n")  # the user's edits stay


def test_merge_is_an_explicit_choice(lm: Any, sae: Any, corpus: Path, other_corpus: Path,
                                     tiny_llama_dir: Path, sae_dir: Path,
                                     built: tuple[Path, DictionaryBuildResult],
                                     tmp_path: Path) -> None:
    from auditor.features import load_manifest

    out = tmp_path / "dict"
    shutil.copytree(built[0], out)
    merge = _options(tiny_llama_dir, sae_dir, merge=True)
    result = run_dictionary_build(other_corpus, out=out, options=merge, model=lm, sae=sae)
    assert result.merged and result.documents == N_DOCS + 6 and result.new_documents == 6
    manifest = load_manifest(out)
    assert [i["path"] for i in manifest["inputs"]] == [str(corpus), str(other_corpus)]
    record = read_job(out)
    assert record is not None and record["state"] == "done"
    assert record["options"]["merge"] and not record["options"]["overwrite"]
    # merging the same corpus again would count it twice: refused, dictionary unchanged
    before = (out / "dictionary.json").read_bytes()
    for again in (other_corpus, corpus):
        with pytest.raises(ConfigError, match="already in the dictionary") as err:
            run_dictionary_build(again, out=out, options=merge, model=lm, sae=sae)
        assert err.value.field == "corpus"
    assert (out / "dictionary.json").read_bytes() == before

    # a dictionary without a job record (built by the library or an older auditor):
    # a plain build refuses it, a merge adds to it
    legacy = tmp_path / "legacy"
    shutil.copytree(built[0], legacy)
    (legacy / "_job.json").unlink()
    with pytest.raises(JobConflict, match="merge"):
        run_dictionary_build(other_corpus, out=legacy,
                             options=_options(tiny_llama_dir, sae_dir), model=lm, sae=sae)
    result = run_dictionary_build(other_corpus, out=legacy, options=merge, model=lm, sae=sae)
    assert result.merged and result.documents == N_DOCS + 6
    a, b = _tables(out), _tables(legacy)
    assert a[0].equals(b[0]) and a[1].equals(b[1])

    # a merge never folds into the output of another job
    foreign = tmp_path / "store"
    foreign.mkdir()
    (foreign / "_job.json").write_text(json.dumps({"verb": "extract", "state": "done"}))
    with pytest.raises(JobConflict, match="'extract'"):
        run_dictionary_build(corpus, out=foreign, options=merge, model=lm, sae=sae)

    # a merge into an empty directory is a plain build
    fresh = run_dictionary_build(corpus, out=tmp_path / "fresh", options=merge, model=lm,
                                 sae=sae)
    assert not fresh.merged and fresh.documents == N_DOCS


def test_cancel_after_first_chunk_then_rerun_equals_uninterrupted(
        lm: Any, sae: Any, corpus: Path, tiny_llama_dir: Path, sae_dir: Path,
        built: tuple[Path, DictionaryBuildResult], tmp_path: Path) -> None:
    out = tmp_path / "dict"
    token = CancelToken()
    events: list[ProgressEvent] = []

    def on_event(event: ProgressEvent) -> None:
        events.append(event)
        token.cancel()

    options = _options(tiny_llama_dir, sae_dir)
    with pytest.raises(JobCancelled, match="chunk 1"):
        run_dictionary_build(corpus, out=out, options=options, progress=on_event,
                             cancel=token, model=lm, sae=sae)
    assert [(e.done, e.counters["docs"]) for e in events] == [(1, CHUNK)]
    marker = json.loads((out / jobs.CHECKPOINT_DIR / "chunks.json").read_text())
    assert marker["chunks"] == 1 and marker["documents"] == CHUNK
    assert not (out / "dictionary.json").exists()  # nothing written before the end
    record = read_job(out)
    assert record is not None and record["state"] == "running"

    events.clear()
    result = run_dictionary_build(corpus, out=out, options=options, model=lm, sae=sae,
                                  progress=events.append)
    assert result.resumed_chunks == 1 and result.chunks == 3
    assert result.documents == N_DOCS and result.new_documents == N_DOCS  # each doc once
    assert events[0].done == 1 and events[0].counters["docs"] == CHUNK  # where it resumed
    assert events[-1].final and events[-1].done == events[-1].total == 3
    assert events[-1].counters["docs"] == N_DOCS
    reference = built[1]
    for name in ("documents", "tokens", "new_tokens", "alive", "features"):
        assert getattr(result, name) == getattr(reference, name), name
    got, want = _tables(out), _tables(built[0])
    assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert not (out / jobs.CHECKPOINT_DIR).exists()


def test_progress_events_in_order_end_with_done_equal_total(
        lm: Any, sae: Any, corpus: Path, tiny_llama_dir: Path, sae_dir: Path,
        tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    run_dictionary_build(corpus, out=tmp_path / "d", options=_options(tiny_llama_dir, sae_dir),
                         progress=events.append, model=lm, sae=sae)
    assert events and {e.stage for e in events} == {"chunks"}
    assert {e.job for e in events} == {jobs.BUILD_VERB}
    done = [e.done for e in events]
    assert done == sorted(done)
    last = events[-1]
    assert last.final and last.done == last.total == 3
    assert [e.final for e in events].count(True) == 1
    assert last.counters["docs"] == N_DOCS and last.counters["tokens"] > 0


def test_cancel_before_start_and_missing_corpus(lm: Any, sae: Any, tiny_llama_dir: Path,
                                                sae_dir: Path, corpus: Path,
                                                tmp_path: Path) -> None:
    from auditor.errors import InputFileError

    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled, match="chunk 0"):
        run_dictionary_build(corpus, out=tmp_path / "d", cancel=token, model=lm, sae=sae,
                             options=_options(tiny_llama_dir, sae_dir))
    with pytest.raises(InputFileError) as err:
        run_dictionary_build(tmp_path / "none.jsonl", out=tmp_path / "e", model=lm, sae=sae,
                             options=_options(tiny_llama_dir, sae_dir))
    assert err.value.field == "corpus"


def test_default_out_is_beside_the_sae(sae_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobs.default_dictionary_out(sae=str(sae_dir)) == str(sae_dir / "dictionary")
    weights = sae_dir / "sae.safetensors"
    assert jobs.default_dictionary_out(sae=str(weights)) == str(
        sae_dir / "sae.safetensors.dictionary")
    with pytest.raises(ConfigError) as err:
        jobs.default_dictionary_out(model="some/model")
    assert err.value.field == "sae"
    monkeypatch.setattr("auditor.defaults.default_sae_path", lambda: None)
    with pytest.raises(ConfigError) as err:
        jobs.resolve_dictionary(None)
    assert err.value.field == "dictionary"
    assert jobs.resolve_dictionary(tmp_path) == str(tmp_path)


# --------------------------------------------------------------------------- read / edit jobs


def test_show_search_label_jobs(built: tuple[Path, DictionaryBuildResult],
                                tmp_path: Path) -> None:
    out = tmp_path / "dict"
    shutil.copytree(built[0], out)
    shown = run_feature_show(out, options=FeatureShowOptions(feature=1, contexts=2))
    assert shown.report["feature"] == 1 and len(shown.report["contexts"]) <= 2
    assert shown.text.startswith("feature 1: ")
    assert FeatureShowResult.from_dict(json.loads(json.dumps(shown.to_dict()))) == shown
    labelled = run_feature_label(out, options=FeatureLabelOptions(feature=1, label="zebra words"))
    assert labelled.path == str(out / "labels.tsv") and not labelled.removed
    assert run_feature_show(out, options=FeatureShowOptions(feature=1)).report["label"] == \
        "zebra words"
    found = run_feature_search(out, options=FeatureSearchOptions(word="ZEBRA"))
    assert found.hits[0]["feature"] == 1 and found.hits[0]["matched"][0] == "label"
    assert FeatureSearchResult.from_dict(json.loads(json.dumps(found.to_dict()))) == found
    removed = run_feature_label(out, options=FeatureLabelOptions(feature=1, remove=True))
    assert removed.removed and removed.label is None
    assert run_feature_search(out, options=FeatureSearchOptions(word="zebra words")).hits == []
    with pytest.raises(ConfigError) as err:
        run_feature_show(out, options=FeatureShowOptions(feature=D_SAE))
    assert err.value.field == "feature"
    with pytest.raises(StoreError, match="no feature dictionary"):
        run_feature_search(tmp_path / "nowhere", options=FeatureSearchOptions(word="x"))


# --------------------------------------------------------------------------- CLI faces


_RESULT = DictionaryBuildResult(documents=12, tokens=340, new_documents=5, new_tokens=120,
                                features=64, alive=31, merged=True, chunks=2,
                                resumed_chunks=1, seconds=1.25,
                                files={"manifest": "dictionary.json"},
                                label_quality={"scored": 30, "auroc": {
                                    "n": 30, "mean": 0.71, "p25": 0.6, "p50": 0.7,
                                    "p75": 0.8, "share_ge_0.7": 0.5}})


def test_cli_build_calls_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []

    def fake(corpus: str, *, out: str, options: DictionaryBuildOptions,
             progress: Any = None) -> DictionaryBuildResult:
        calls.append({"corpus": corpus, "out": out, "options": options,
                      "progress": progress})
        return _RESULT

    monkeypatch.setattr(jobs, "run_dictionary_build", fake)
    monkeypatch.setattr(jobs, "default_dictionary_out",
                        lambda model, sae: str(tmp_path / "beside"))
    assert main(["features", "build", "--corpus", "c.jsonl", "--sae", "s", "--model", "m",
                 "--top", "3", "--context", "2", "--chunk-docs", "9", "--keep-outliers",
                 "--no-progress"]) == 0
    options = calls[0]["options"]
    assert calls[0]["corpus"] == "c.jsonl" and calls[0]["out"] == str(tmp_path / "beside")
    assert calls[0]["progress"] is None
    assert options == DictionaryBuildOptions(model="m", sae="s", top_contexts=3,
                                             context_tokens=2, chunk_docs=9,
                                             exclude_outliers=False, merge=True)
    text = capsys.readouterr().out
    assert f"dictionary merged into {tmp_path / 'beside'}" in text
    assert "documents: 12 (+5)" in text and "31 of 64 fired" in text
    assert "resumed:   1 of 2 chunks" in text
    assert "labels:    detection AUROC mean 0.71, median 0.70, 50% >= 0.7 (30 features" in text

    assert main(["features", "build", "--corpus", "c.jsonl", "--out", "o", "--rebuild",
                 "--no-progress", "--json"]) == 0
    options = calls[1]["options"]
    assert calls[1]["out"] == "o" and options.overwrite and not options.merge
    assert json.loads(capsys.readouterr().out) == {"out": "o", **_RESULT.to_dict()}
    assert main(["features", "build", "--corpus", "c.jsonl", "--out", "o", "--overwrite",
                 "--no-progress"]) == 0  # the flag the CLI names for a conflict
    assert calls[2]["options"] == options


def test_cli_show_search_label_call_the_jobs(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, Any, Any]] = []

    def show(dictionary: str | None, *, options: FeatureShowOptions) -> FeatureShowResult:
        seen.append(("show", dictionary, options))
        return FeatureShowResult(dictionary="d", report={"feature": 5, "label": "L"},
                                 text="feature 5: L")

    def search(dictionary: str | None, *,
               options: FeatureSearchOptions) -> FeatureSearchResult:
        seen.append(("search", dictionary, options))
        return FeatureSearchResult(dictionary="d", hits=[
            {"feature": 5, "score": 10.0, "label": "sea", "density": 0.25, "max": 2.0,
             "matched": ["label", "contexts"]}])

    def label(dictionary: str | None, *, options: FeatureLabelOptions) -> FeatureLabelResult:
        seen.append(("label", dictionary, options))
        return FeatureLabelResult(dictionary="d", path="d/labels.tsv", feature=5,
                                  label=options.label, removed=options.remove)

    monkeypatch.setattr(jobs, "run_feature_show", show)
    monkeypatch.setattr(jobs, "run_feature_search", search)
    monkeypatch.setattr(jobs, "run_feature_label", label)

    assert main(["features", "show", "5", "--dictionary", "d", "--contexts", "2"]) == 0
    assert capsys.readouterr().out == "feature 5: L\n"
    assert main(["features", "show", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"feature": 5, "label": "L"}
    assert seen[0] == ("show", "d", FeatureShowOptions(feature=5, contexts=2))
    assert seen[1] == ("show", None, FeatureShowOptions(feature=5))

    assert main(["features", "search", "sea", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()
    assert header.split() == ["feature", "score", "density", "label", "[matched", "in]"]
    assert row.split()[:3] == ["5", "10.00", "25.000%"] and "[label, contexts]" in row
    assert header.index("density") + len("density") == row.index("%") + 1  # aligned
    assert seen[2] == ("search", None, FeatureSearchOptions(word="sea", limit=3))

    assert main(["features", "label", "5", "sea words", "--dictionary", "d"]) == 0
    assert capsys.readouterr().out == "set label of feature 5 in d/labels.tsv\n"
    assert seen[3] == ("label", "d", FeatureLabelOptions(feature=5, label="sea words"))
    assert main(["features", "label", "5", "--remove"]) == 0
    assert "removed label of feature 5" in capsys.readouterr().out
    assert main(["features", "label", "5"]) == 2  # neither TEXT nor --remove: ConfigError


def test_a_build_killed_inside_a_chunk_resumes_from_the_last_marker(
        lm: Any, sae: Any, corpus: Path, tiny_llama_dir: Path, sae_dir: Path,
        built: tuple[Path, DictionaryBuildResult], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.features.stats import FeatureStats

    original = FeatureStats.add_tokens
    calls = []

    def dies_in_third_chunk(self: FeatureStats, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would, halfway through the chunk
        original(self, *args, **kwargs)

    out = tmp_path / "dict"
    options = _options(tiny_llama_dir, sae_dir)
    with monkeypatch.context() as patch:
        patch.setattr(FeatureStats, "add_tokens", dies_in_third_chunk)
        with pytest.raises(KeyboardInterrupt):
            run_dictionary_build(corpus, out=out, options=options, model=lm, sae=sae)
    assert list((out / jobs.CHECKPOINT_DIR / "extract").iterdir())  # the chunk it was in
    result = run_dictionary_build(corpus, out=out, options=options, model=lm, sae=sae)
    assert result.resumed_chunks == 2 and result.documents == N_DOCS
    got, want = _tables(out), _tables(built[0])
    assert got[0].equals(want[0]) and got[1].equals(want[1])


def test_an_unfinished_merge_resumes(lm: Any, sae: Any, other_corpus: Path,
                                     tiny_llama_dir: Path, sae_dir: Path,
                                     built: tuple[Path, DictionaryBuildResult],
                                     tmp_path: Path) -> None:
    merge = _options(tiny_llama_dir, sae_dir, merge=True)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    shutil.copytree(built[0], whole)
    shutil.copytree(built[0], stopped)
    reference = run_dictionary_build(other_corpus, out=whole, options=merge, model=lm, sae=sae)
    token = CancelToken()
    with pytest.raises(JobCancelled):
        run_dictionary_build(other_corpus, out=stopped, options=merge, model=lm, sae=sae,
                             cancel=token, progress=lambda event: token.cancel())
    assert (stopped / "dictionary.json").read_bytes() == (
        built[0] / "dictionary.json").read_bytes()  # the base is untouched until the end
    result = run_dictionary_build(other_corpus, out=stopped, options=merge, model=lm, sae=sae)
    assert result.resumed_chunks == 1 and result.merged
    assert result.documents == reference.documents == N_DOCS + 6
    got, want = _tables(stopped), _tables(whole)
    assert got[0].equals(want[0]) and got[1].equals(want[1])


def test_a_handed_pipeline_is_used_and_checked(lm: Any, sae: Any, corpus: Path,
                                                tiny_llama_dir: Path, sae_dir: Path,
                                                built: tuple[Path, DictionaryBuildResult],
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.jobs import Pipeline

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loaded a model")

    for loader in ("auditor.jobs._pipeline.load_pipeline", "auditor.lm.load_model",
                   "auditor.sae.load_sae"):
        monkeypatch.setattr(loader, no_loading)
    options = _options(tiny_llama_dir, sae_dir)
    warm = Pipeline(spec=options.pipeline_spec(), lm=lm, saes={"sae": sae},
                    model_dir=str(tiny_llama_dir))
    result = run_dictionary_build(corpus, out=tmp_path / "d", options=options, pipeline=warm)
    assert result.documents == N_DOCS
    assert _tables(tmp_path / "d")[0].equals(_tables(built[0])[0])
    with pytest.raises(ConfigError) as err:  # the options ask for another SAE
        run_dictionary_build(corpus, out=tmp_path / "e", pipeline=warm,
                             options=_options(tiny_llama_dir, tmp_path / "other"))
    assert err.value.field == "pipeline"
    two = Pipeline(spec=options.pipeline_spec(), lm=lm, saes={"a": sae, "b": sae},
                   model_dir=str(tiny_llama_dir))
    with pytest.raises(ConfigError, match="one SAE"):
        run_dictionary_build(corpus, out=tmp_path / "e", options=options, pipeline=two)
