"""The probe jobs under the job contract: JSON round trips, recorded reruns, conflicts,
cancel and resume, progress order; and the ``auditor probe`` face calling them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import ConfigError, JobCancelled, JobConflict
from auditor.heads import load_head
from auditor.jobs import probe as jobs
from auditor.jobs._contract import read_job
from auditor.progress import ProgressEvent
from auditor.testing import make_random_sae
from tests.heads import conftest as heads_data

POOL = ("sae-max-log1p", "sae-max-binary")


@pytest.fixture(scope="module")
def stores(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The labelled weather-vs-sport train (90) and test (45) stores of tests/heads."""
    root = tmp_path_factory.mktemp("probe-jobs")
    sae_dir = make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(root / "sae")
    splits = heads_data.extract_splits(heads_data._texts, root, model=tiny_llama_dir,
                                       sae_dir=sae_dir, passthrough=("label",))
    return {split: (store, data, {r["id"]: r["text"] for r in rows})
            for split, (store, data, rows) in splits.items()}


def _data(stores: Any, split: str = "train") -> dict[str, str]:
    store, data, _ = stores[split]
    return {"features": str(store), "labels": str(data)}


def _round_trip(record: Any) -> None:
    assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record


def _events(progress: list[ProgressEvent]) -> dict[str, list[ProgressEvent]]:
    """Events by stage, checking each stage's are in order and end with done == total."""
    by_stage: dict[str, list[ProgressEvent]] = {}
    for e in progress:
        by_stage.setdefault(e.stage, []).append(e)
    for events in by_stage.values():
        dones = [e.done for e in events]
        assert dones == sorted(dones)
        assert events[-1].final and events[-1].done == events[-1].total
        assert sum(e.final for e in events) == 1
    return by_stage


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("recomputed instead of returning the recorded result")


def _cancel_after_first(stage: str) -> tuple[CancelToken, Callable[[ProgressEvent], None]]:
    token = CancelToken()

    def progress(event: ProgressEvent) -> None:
        if event.stage == stage:
            token.cancel()

    return token, progress


# ----------------------------------------------------------------------------- records


def test_options_and_results_round_trip() -> None:
    for record in (
        jobs.ProbeTrainOptions(head="domain", representation="raw", positive_class="sport",
                               target_precision=0.9, folds=3, candidates=POOL,
                               multilabel_sep="|", id_column=None, overwrite=True),
        jobs.ProbeTrainResult(head="d", path=".", representation="raw", task="binary",
                              classes=["a", "b"], thresholds={"a": 0.4},
                              metrics={"raw": {"macro_f1": 0.5, "auroc": None}},
                              table="| t |"),
        jobs.ProbeEvalOptions(label_column="tags", multilabel_sep="|"),
        jobs.ProbeEvalResult(head="d", task="multilabel", documents=3,
                             metrics={"macro_f1": 0.5, "per_label_f1": {"a": 1.0}},
                             written="metrics.json"),
        jobs.ProbeCompareOptions(sae="layer2", folds=4, candidates=("raw",)),
        jobs.ProbeCompareResult(task="binary", documents=9, metrics={"raw": {"n": 9}},
                                table="t", written="metrics.json"),
        jobs.ProbeCurveOptions(sizes=(30, None), folds=3),
        jobs.ProbeCurveResult(curves={"raw": [{"n_train": 30, "macro_f1": 0.5}]}, table="t",
                              written="curve.json"),
        jobs.ProbePredictOptions(explain=2, filename="p.jsonl"),
        jobs.ProbePredictResult(predictions="p.jsonl", documents=4, heads=["d"]),
    ):
        _round_trip(record)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="head name") as err:
        jobs.ProbeTrainOptions(head="a/b")
    assert err.value.field == "head"
    with pytest.raises(ConfigError, match="folds"):
        jobs.ProbeCompareOptions(folds=1)
    with pytest.raises(ConfigError, match="single-label") as err:
        jobs.ProbeCurveOptions(multilabel_sep="|")
    assert err.value.field == "multilabel_sep"
    with pytest.raises(ConfigError, match="target_precision"):
        jobs.ProbeTrainOptions(head="h", target_precision=1.5)
    with pytest.raises(ConfigError, match=r"\.parquet or \.jsonl"):
        jobs.ProbePredictOptions(filename="p.csv")
    with pytest.raises(ConfigError, match="non-empty separator"):
        jobs.ProbeEvalOptions(multilabel_sep="")


# ----------------------------------------------------------------------------- train


def test_train_writes_the_head_and_reruns_from_the_record(
        stores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "domain"
    options = jobs.ProbeTrainOptions(head="domain", folds=3, candidates=POOL,
                                     positive_class="sport")
    events: list[ProgressEvent] = []
    result = jobs.run_probe_train(_data(stores), out=out, options=options,
                                  progress=events.append)
    _round_trip(result)
    assert result.path == "." and result.representation in POOL and result.task == "binary"
    assert set(result.metrics) == {*POOL, "tfidf"} and "tfidf" in result.table
    assert list(result.thresholds) == ["sport"]
    head = load_head(out / result.path)
    assert head.config.threshold == result.thresholds["sport"]
    assert (out / "CARD.md").read_text().startswith("# Head `domain`")
    assert read_job(out)["state"] == "done"
    by_stage = _events(events)
    assert list(by_stage) == ["candidates", "fit"]
    assert by_stage["candidates"][-1].total == 3 and by_stage["fit"][-1].total == 1
    # a rerun returns the record without training
    monkeypatch.setattr("auditor.heads.train_head", _boom)
    monkeypatch.setattr("auditor.heads.build.cross_validate_candidates", _boom)
    assert jobs.run_probe_train(_data(stores), out=out, options=options) == result
    with pytest.raises(JobConflict, match="options"):
        jobs.run_probe_train(_data(stores), out=out,
                             options=jobs.ProbeTrainOptions(head="domain", folds=4,
                                                            candidates=POOL))
    with pytest.raises(JobConflict, match="input"):
        jobs.run_probe_train(_data(stores, "test"), out=out, options=options)


def test_train_overwrite_and_foreign_directories(stores: Any, tmp_path: Path) -> None:
    out = tmp_path / "domain"
    options = jobs.ProbeTrainOptions(head="domain", folds=3, representation="sae-max-log1p")
    first = jobs.run_probe_train(_data(stores), out=out, options=options)
    other = jobs.ProbeTrainOptions(head="domain", folds=3, representation="sae-max-binary",
                                   overwrite=True)
    again = jobs.run_probe_train(_data(stores), out=out, options=other)
    assert first.representation == "sae-max-log1p"
    assert again.representation == "sae-max-binary"
    assert load_head(out).card["representation"]["candidate"] == "sae-max-binary"
    # a directory holding files no job wrote is not replaced without overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(JobConflict, match="not written by a job"):
        jobs.run_probe_train(_data(stores), out=foreign, options=options)
    assert not (foreign / "_job.json").exists()
    with pytest.raises(ConfigError, match="unknown representation"):
        jobs.run_probe_train(_data(stores), out=tmp_path / "x",
                             options=jobs.ProbeTrainOptions(head="x", representation="nope"))


def test_train_cancel_then_resume_scores_each_representation_once(
        stores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.model_selection as ms

    scored: list[str] = []
    real = ms.cross_val_predict

    def counting(model: Any, X: Any, *args: Any, **kwargs: Any) -> Any:
        scored.append(type(model).__name__)
        return real(model, X, *args, **kwargs)

    monkeypatch.setattr(ms, "cross_val_predict", counting)
    out = tmp_path / "domain"
    options = jobs.ProbeTrainOptions(head="domain", folds=3, candidates=POOL)
    token, progress = _cancel_after_first("candidates")
    with pytest.raises(JobCancelled, match="candidate"):
        jobs.run_probe_train(_data(stores), out=out, options=options, progress=progress,
                             cancel=token)
    assert scored == ["LinearProbe"] and read_job(out)["state"] == "running"
    assert not (out / "head.json").exists()
    events: list[ProgressEvent] = []
    result = jobs.run_probe_train(_data(stores), out=out, options=options,
                                  progress=events.append)
    # the second run scored the other two (sae-max-binary, TF-IDF) and then the
    # calibration and, for the chosen one scored in the first run, its out-of-fold
    # probabilities; no representation was cross-validated twice in the CV stage
    assert scored[1:3] == ["LinearProbe", "Pipeline"]
    fresh = jobs.run_probe_train(_data(stores), out=tmp_path / "fresh", options=options)
    assert {k: {m: v for m, v in r.items() if m != "seconds"}
            for k, r in result.metrics.items()} == \
        {k: {m: v for m, v in r.items() if m != "seconds"} for k, r in fresh.metrics.items()}
    assert result.thresholds == fresh.thresholds
    assert _events(events)["candidates"][-1].done == 3


# ----------------------------------------------------------------------------- compare


def test_compare_record_rerun_conflict_cancel(stores: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "compare"
    options = jobs.ProbeCompareOptions(folds=3, candidates=POOL)
    token, progress = _cancel_after_first("candidates")
    with pytest.raises(JobCancelled):
        jobs.run_probe_compare(_data(stores), out=out, options=options, progress=progress,
                               cancel=token)
    assert (out / "_stages" / f"candidate-{POOL[0]}.json").is_file()
    events: list[ProgressEvent] = []
    result = jobs.run_probe_compare(_data(stores), out=out, options=options,
                                    progress=events.append)
    _round_trip(result)
    assert set(result.metrics) == {*POOL, "tfidf"} and result.documents == 90
    assert json.loads((out / result.written).read_text()) == result.metrics
    assert "(best" in result.table
    assert _events(events)["candidates"][-1].done == 3
    monkeypatch.setattr("auditor.heads.build.cross_validate_candidates", _boom)
    assert jobs.run_probe_compare(_data(stores), out=out, options=options) == result
    with pytest.raises(JobConflict):
        jobs.run_probe_compare(_data(stores), out=out,
                               options=jobs.ProbeCompareOptions(folds=4, candidates=POOL))


# ----------------------------------------------------------------------------- curve


def test_curve_record_rerun_conflict_cancel(stores: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "curve"
    options = jobs.ProbeCurveOptions(sizes=(20, None), folds=3)
    token, progress = _cancel_after_first("candidates")
    with pytest.raises(JobCancelled, match="fold"):
        jobs.run_probe_curve(_data(stores), out=out, options=options, progress=progress,
                             cancel=token)
    done = sorted(p.name for p in (out / "_stages").iterdir())
    assert done == ["curve-sae-max-log1p.json"]
    events: list[ProgressEvent] = []
    result = jobs.run_probe_curve(_data(stores), out=out, options=options,
                                  progress=events.append)
    _round_trip(result)
    assert list(result.curves) == ["sae-max-log1p", "sae-max-binary", "sae-mean-log1p",
                                   "raw", "tfidf"]
    for rows in result.curves.values():
        assert [r["n_train"] for r in rows] == [20, 60]
    assert json.loads((out / "curve.json").read_text()) == result.curves
    assert "20 labels" in result.table
    assert _events(events)["candidates"][-1].done == 5
    monkeypatch.setattr("auditor.probes.learning_curve", _boom)
    assert jobs.run_probe_curve(_data(stores), out=out, options=options) == result
    with pytest.raises(JobConflict):
        jobs.run_probe_curve(_data(stores), out=out,
                             options=jobs.ProbeCurveOptions(sizes=(30,), folds=3))
    monkeypatch.undo()
    again = jobs.run_probe_curve(_data(stores), out=out,
                                 options=jobs.ProbeCurveOptions(sizes=(30,), folds=3,
                                                                overwrite=True))
    assert [r["n_train"] for r in again.curves["tfidf"]] == [30]


# ----------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def head_dir(stores: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("head") / "domain"
    jobs.run_probe_train(_data(stores), out=out,
                         options=jobs.ProbeTrainOptions(head="domain", folds=3,
                                                        representation="sae-max-log1p",
                                                        positive_class="sport"))
    return out


def test_eval_record_rerun_conflict_cancel(stores: Any, head_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "eval"
    data = {"head": str(head_dir), **_data(stores, "test")}
    options = jobs.ProbeEvalOptions()
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        jobs.run_probe_eval(data, out=out, options=options, cancel=token)
    events: list[ProgressEvent] = []
    result = jobs.run_probe_eval(data, out=out, options=options, progress=events.append)
    _round_trip(result)
    assert result.documents == 45 == result.metrics["documents"]
    assert 0 <= result.metrics["macro_f1"] <= 1 and "accuracy_at_threshold" in result.metrics
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    assert _events(events)["evaluate"][-1].done == 1
    monkeypatch.setattr("auditor.probes.evaluate_probe", _boom)
    assert jobs.run_probe_eval(data, out=out, options=options) == result
    with pytest.raises(JobConflict):
        jobs.run_probe_eval(data, out=out, options=jobs.ProbeEvalOptions(text_column="t"))
    with pytest.raises(ConfigError, match="multilabel_sep is for multilabel heads"):
        jobs.run_probe_eval(data, out=tmp_path / "e2",
                            options=jobs.ProbeEvalOptions(multilabel_sep="|"))
    with pytest.raises(ConfigError, match="no head named nope"):
        jobs.run_probe_eval({**data, "head": "nope"}, out=tmp_path / "e3", options=options)


# ----------------------------------------------------------------------------- predict


def test_predict_record_rerun_conflict_cancel(stores: Any, head_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "predict"
    data = {"features": str(stores["test"][0]), "heads": [str(head_dir)]}
    options = jobs.ProbePredictOptions(explain=2)
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        jobs.run_probe_predict(data, out=out, options=options, cancel=token)
    assert not (out / "predictions.parquet").exists()
    events: list[ProgressEvent] = []
    result = jobs.run_probe_predict(data, out=out, options=options, progress=events.append)
    _round_trip(result)
    frame = pl.read_parquet(out / result.predictions)
    assert frame.height == result.documents == 45 and frame["id"].n_unique() == 45
    assert result.heads == ["domain"]
    assert _events(events)["predict"][-1].done == 1
    monkeypatch.setattr("auditor.heads.classify.classify_store", _boom)
    assert jobs.run_probe_predict(data, out=out, options=options) == result
    with pytest.raises(JobConflict):
        jobs.run_probe_predict(data, out=out, options=jobs.ProbePredictOptions(explain=1))
    monkeypatch.undo()
    # a file anywhere: the record is not kept, the JSONL sidecar is moved with it
    target = tmp_path / "p.jsonl"
    written = jobs.predict_to_file(data, target, options=options)
    assert written.predictions == str(target) and written.documents == 45
    assert len(target.read_text().splitlines()) == 45
    side = json.loads((tmp_path / "p.jsonl.provenance.json").read_text())
    assert side["heads"]["domain"]["classes"] == ["sport", "weather"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ----------------------------------------------------------------------------- the face


def _fake(monkeypatch: pytest.MonkeyPatch, name: str, result: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(input: Any, *, out: Any, options: Any, progress: Any = None,
             cancel: Any = None) -> Any:
        calls.append({"input": input, "out": out, "options": options})
        return result

    monkeypatch.setattr(jobs, name, fake)
    return calls


_LABELS = ["--features", "S", "--labels", "L.jsonl"]


def test_cli_train_calls_the_job(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    result = jobs.ProbeTrainResult(head="topics", path=".", representation="raw",
                                   task="multilabel", classes=["a", "b"],
                                   thresholds={"a": 0.25, "b": 0.5}, metrics={},
                                   table="| the table |")
    calls = _fake(monkeypatch, "run_probe_train", result)
    assert main(["probe", "train", *_LABELS, "--head", "topics", "--multilabel-sep", "|",
                 "--folds", "3", "--representation", "raw"]) == 0
    (call,) = calls
    assert call["input"] == {"features": "S", "labels": "L.jsonl"}
    assert Path(call["out"]) == Path("heads") / "topics"
    assert call["options"] == jobs.ProbeTrainOptions(head="topics", multilabel_sep="|",
                                                     folds=3, representation="raw")
    printed = capsys.readouterr().out
    assert "| the table |" in printed and "thresholds: a 0.250, b 0.500" in printed
    assert "wrote head 'topics' to heads/topics" in printed


def test_cli_names_every_representation_and_takes_candidates(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli.probe import _REPRESENTATIONS
    from auditor.heads import CANDIDATES

    assert _REPRESENTATIONS.split(", ") == list(CANDIDATES)  # the linear ones, then LightGBM
    assert main(["probe", "train", "--help"]) == 0
    assert "sae-max-lgbm (LightGBM)" in " ".join(capsys.readouterr().out.split())
    result = jobs.ProbeTrainResult(head="h", path=".", representation="raw", task="binary",
                                   classes=["a", "b"], thresholds={}, metrics={}, table="")
    calls = _fake(monkeypatch, "run_probe_train", result)
    assert main(["probe", "train", *_LABELS, "--head", "h", "--candidates", "all"]) == 0
    assert main(["probe", "train", *_LABELS, "--head", "h",
                 "--candidates", "raw, sae-max-lgbm"]) == 0
    assert [c["options"].candidates for c in calls] == [("all",), ("raw", "sae-max-lgbm")]
    compared = jobs.ProbeCompareResult(task="binary", documents=9, metrics={}, table="",
                                       written="metrics.json")
    calls = _fake(monkeypatch, "run_probe_compare", compared)
    assert main(["probe", "compare", *_LABELS, "--candidates", "all"]) == 0
    assert calls[0]["options"].candidates == ("all",)


def test_all_candidates_add_lightgbm(stores: Any, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.heads import CANDIDATES

    result = jobs.run_probe_compare(_data(stores), out=tmp_path / "all",
                                    options=jobs.ProbeCompareOptions(folds=3,
                                                                     candidates=("all",)))
    assert set(result.metrics) == {*CANDIDATES, "tfidf"} and "sae-max-lgbm" in result.table
    with pytest.raises(ConfigError, match=r"unknown candidates.*or all") as err:
        jobs.run_probe_compare(_data(stores), out=tmp_path / "bad",
                               options=jobs.ProbeCompareOptions(candidates=("lgbm",)))
    assert err.value.field == "candidates"
    store, data, _ = stores["train"]
    assert main(["probe", "compare", "--features", str(store), "--labels", str(data),
                 "--candidates", "lgbm"]) == 2
    assert "(--candidates)" in capsys.readouterr().err


def test_cli_eval_calls_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    result = jobs.ProbeEvalResult(head="d", task="binary", documents=7,
                                  metrics={"macro_f1": 0.75, "documents": 7},
                                  written="metrics.json")
    calls = _fake(monkeypatch, "run_probe_eval", result)
    assert main(["probe", "eval", "d", *_LABELS, "--label-column", "y",
                 "--out", str(tmp_path / "e")]) == 0
    (call,) = calls
    assert call["input"] == {"head": "d", "features": "S", "labels": "L.jsonl"}
    assert call["out"] == tmp_path / "e"
    assert call["options"] == jobs.ProbeEvalOptions(label_column="y")
    printed = capsys.readouterr().out
    assert "macro_f1" in printed and "0.7500" in printed and "documents" in printed
    assert main(["probe", "eval", "d", *_LABELS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result.metrics


def test_cli_compare_and_curve_call_their_jobs(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    compared = jobs.ProbeCompareResult(task="binary", documents=9,
                                       metrics={"raw": {"macro_f1": 0.5}},
                                       table="| compare |", written="metrics.json")
    calls = _fake(monkeypatch, "run_probe_compare", compared)
    assert main(["probe", "compare", *_LABELS, "--sae", "k", "--folds", "4"]) == 0
    assert calls[0]["options"] == jobs.ProbeCompareOptions(sae="k", folds=4)
    assert capsys.readouterr().out.strip() == "| compare |"
    assert main(["probe", "compare", *_LABELS, "--json", "--out", "rec", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out) == compared.metrics
    assert calls[1]["out"] == Path("rec") and calls[1]["options"].overwrite
    curve = jobs.ProbeCurveResult(curves={"raw": [{"n_train": 30, "macro_f1": 0.5}]},
                                  table="| curve |", written="curve.json")
    calls = _fake(monkeypatch, "run_probe_curve", curve)
    assert main(["probe", "curve", *_LABELS, "--sizes", "30,all", "--folds", "3"]) == 0
    assert calls[0]["options"] == jobs.ProbeCurveOptions(sizes=(30, None), folds=3)
    assert capsys.readouterr().out.strip() == "| curve |"
    assert main(["probe", "curve", *_LABELS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == curve.curves
    # options are validated before any job runs: usage errors
    assert main(["probe", "curve", *_LABELS, "--multilabel-sep", "|"]) == 2
    assert "single-label" in capsys.readouterr().err
    assert main(["probe", "curve", *_LABELS, "--sizes", "a,b"]) == 2


def test_cli_predict_calls_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    result = jobs.ProbePredictResult(predictions="predictions.parquet", documents=1234,
                                     heads=["a", "b"])
    calls: list[dict[str, Any]] = []

    def fake(input: Any, *, out: Any, options: Any, progress: Any = None,
             cancel: Any = None) -> Any:
        calls.append({"input": input, "out": out, "options": options})
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / options.filename).write_text("x")
        return result

    monkeypatch.setattr(jobs, "run_probe_predict", fake)
    assert main(["probe", "predict", "a", "b", "--features", "S", "--out",
                 str(tmp_path / "run"), "--explain", "2"]) == 0
    assert calls[0]["input"] == {"features": "S", "heads": ["a", "b"]}
    assert calls[0]["options"] == jobs.ProbePredictOptions(explain=2)
    assert calls[0]["out"] == tmp_path / "run"
    assert "wrote 1,234 predictions to" in capsys.readouterr().out
    assert main(["probe", "predict", "a", "--features", "S", "--out",
                 str(tmp_path / "p.parquet")]) == 0
    assert calls[1]["options"] == jobs.ProbePredictOptions(filename="predictions.parquet")
    assert (tmp_path / "p.parquet").read_text() == "x"
    assert f"to {tmp_path / 'p.parquet'}" in capsys.readouterr().out
