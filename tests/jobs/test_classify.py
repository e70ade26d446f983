"""The classify, audit and explain jobs under the contract: records, reruns, stage
markers, cancel between stages, progress, and their CLI faces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import JobCancelled, JobConflict
from auditor.heads import save_head, train_head
from auditor.jobs import audit as audit_jobs
from auditor.jobs import classify as classify_jobs
from auditor.jobs import explain as explain_jobs
from auditor.jobs import read_job
from auditor.jobs.extract import ExtractOptions
from auditor.progress import ProgressEvent
from tests.heads.conftest import sae, sae_dir, split, stores  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def head_dir(split, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    return save_head(head, tmp_path_factory.mktemp("job-heads") / "domain")


@pytest.fixture
def extract(tiny_llama_dir: Path, sae_dir: Path) -> ExtractOptions:  # noqa: F811
    return ExtractOptions(model=str(tiny_llama_dir), saes=(str(sae_dir),), id_column="id")


def _cancel_when(stage: str, events: list[ProgressEvent], token: CancelToken
                 ) -> Any:
    def on_event(event: ProgressEvent) -> None:
        events.append(event)
        if event.stage == stage and event.final:
            token.cancel()
    return on_event


def test_options_and_results_round_trip_json(extract: ExtractOptions) -> None:
    for options in (classify_jobs.ClassifyOptions(heads=("a",), explain=3, extract=extract),
                    audit_jobs.AuditOptions(heads=(), previous="/r.json", formats=("json",),
                                            extract=extract),
                    explain_jobs.ExplainOptions(heads=None, check=True, k=2, extract=extract)):
        back = type(options).from_dict(json.loads(json.dumps(options.to_dict())))
        assert back == options and isinstance(back.extract, ExtractOptions)
    result = audit_jobs.AuditResult(store="store", predictions=None,
                                    reports={"json": "report.json"}, documents=3, heads=())
    assert audit_jobs.AuditResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_classify_cancel_between_stages_rerun_and_record(
        stores, head_dir: Path, extract: ExtractOptions, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = stores["test"][1]
    options = classify_jobs.ClassifyOptions(heads=(str(head_dir),), explain=2,
                                            extract=extract)
    out = tmp_path / "classify"
    token, events = CancelToken(), []
    with pytest.raises(JobCancelled, match="the classify stage"):
        classify_jobs.run_classify(str(data), out=out, options=options,
                                   progress=_cancel_when("docs", events, token), cancel=token)
    assert (out / "store" / "_job.json").is_file() and not (out / "predictions.parquet").exists()
    events.clear()
    result = classify_jobs.run_classify(str(data), out=out, options=options,
                                        progress=events.append)
    preds = pl.read_parquet(out / result.predictions)
    assert preds.height == result.documents == 45
    assert preds["id"].n_unique() == 45  # every document exactly once
    assert result.rows is not None and len(result.rows) == 45
    assert result.rows[0]["id"] == preds["id"][0] and "domain.label" in result.rows[0]
    # the extraction finished before the cancel: its recorded result is reused
    assert [e.stage for e in events if e.final] == ["classify"]
    assert events[-1].done == events[-1].total == 1
    assert read_job(out)["state"] == "done"  # type: ignore[index]

    from auditor.heads import classify as heads_classify

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("a recorded job was recomputed")

    monkeypatch.setattr(heads_classify, "classify_store", boom)
    assert classify_jobs.run_classify(str(data), out=out, options=options) == result
    with pytest.raises(JobConflict, match="explain"):
        classify_jobs.run_classify(str(data), out=out, options=classify_jobs.ClassifyOptions(
            heads=(str(head_dir),), explain=4, extract=extract))


def test_audit_resumes_from_its_stage_markers(
        stores, head_dir: Path, extract: ExtractOptions, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = stores["test"][1]
    options = audit_jobs.AuditOptions(heads=(str(head_dir),), explain=2, formats=("json",),
                                      extract=extract)
    out = tmp_path / "audit"
    token, events = CancelToken(), []
    with pytest.raises(JobCancelled, match="the report stage"):
        audit_jobs.run_audit(str(data), out=out, options=options,
                             progress=_cancel_when("classify", events, token), cancel=token)
    assert (out / "predictions.parquet").is_file() and not (out / "report.json").exists()

    from auditor.heads import classify as heads_classify

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(heads_classify, "classify_store", boom)
    events.clear()
    result = audit_jobs.run_audit(str(data), out=out, options=options,
                                  progress=events.append)
    assert result.reports == {"json": "report.json"} and result.documents == 45
    assert json.loads((out / "report.json").read_text())["corpus"]["documents"] == 45
    assert [e.stage for e in events if e.final] == ["report"]
    assert audit_jobs.run_audit(str(data), out=out, options=options) == result


def test_explain_records_its_result(stores, head_dir: Path, extract: ExtractOptions,  # noqa: F811
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = stores["test"][1]
    options = explain_jobs.ExplainOptions(heads=(str(head_dir),), top=2, check=True, k=2,
                                          n_random=2, extract=extract)
    token, events = CancelToken(), []
    with pytest.raises(JobCancelled, match="head domain"):
        explain_jobs.run_explain(str(data), out=tmp_path / "e", options=options,
                                 progress=_cancel_when("docs", events, token), cancel=token)
    assert not (tmp_path / "e" / "explanations.json").exists()
    events.clear()
    result = explain_jobs.run_explain(str(data), out=tmp_path / "e", options=options,
                                      progress=events.append)
    assert len(result.documents) == 45 and set(result.faithfulness) == {"domain"}
    assert sorted(d["id"] for d in result.documents) == sorted(stores["test"][2])
    written = json.loads((tmp_path / "e" / result.written).read_text())
    assert explain_jobs.ExplainResult.from_dict(written) == result
    assert [e.stage for e in events if e.final] == ["explain"]
    monkeypatch.setattr(explain_jobs, "_explain_head",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert explain_jobs.run_explain(str(data), out=tmp_path / "e", options=options) == result


def test_cli_classify_audit_explain_call_their_jobs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}

    def fake_classify(input: str, *, out: Path, options: Any, **kw: Any) -> Any:
        seen["classify"] = (input, options)
        return classify_jobs.ClassifyResult(
            store="store", predictions="predictions.parquet", documents=1, heads=("safety",),
            extract={}, rows=({"id": "text", "safety.label": "insult",
                               "safety.p.insult": 0.875},))

    def fake_audit(input: str, *, out: str, options: Any, **kw: Any) -> Any:
        seen["audit"] = (input, options)
        return audit_jobs.AuditResult(store="store", predictions="predictions.parquet",
                                      reports={"json": "report.json"}, documents=12,
                                      heads=("safety",))

    def fake_explain(input: str, *, out: Path, options: Any, **kw: Any) -> Any:
        seen["explain"] = (Path(input).read_text(), options)
        return explain_jobs.ExplainResult(
            documents=({"id": "text", "safety": {
                "label": "insult", "p": 0.9, "explains": "insult", "explained_share": 1.0,
                "features": [{"feature": 7, "label": "rude words", "contribution": 0.5,
                              "activation": 1.25, "tokens": [], "evidence": None}]}},),
            faithfulness={}, heads=("safety",), provenance={})

    monkeypatch.setattr(classify_jobs, "run_classify", fake_classify)
    monkeypatch.setattr(audit_jobs, "run_audit", fake_audit)
    monkeypatch.setattr(explain_jobs, "run_explain", fake_explain)

    assert main(["classify", "you are dumb", "--head", "safety", "--explain",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "insult" in printed and "p=0.875" in printed
    path, options = seen["classify"]
    assert Path(path).name == "input.jsonl" and options.explain == 5
    assert options.heads == ("safety",) and options.extract.id_column == "id"

    assert main(["audit", "data.jsonl", "--out", str(tmp_path / "a"), "--format", "json",
                 "--previous", "old.json", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "audited 12 documents with heads safety" in printed
    assert str(tmp_path / "a" / "report.json") in printed
    _, options = seen["audit"]
    assert options.formats == ("json",) and options.previous == "old.json"

    assert main(["explain", "you are dumb", "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "safety: insult (p=0.900" in printed and "f7" in printed and "rude words" in printed
    text, options = seen["explain"]
    assert json.loads(text) == {"id": "text", "text": "you are dumb"} and options.top == 2


def test_probe_predict_refuses_an_unfinished_store_unless_partial(
        stores, head_dir: Path, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(stores["test"][0], store)
    manifest = json.loads((store / "store.json").read_text())
    manifest["expected_shards"] += 1  # a shard of its input never finished
    (store / "store.json").write_text(json.dumps(manifest))
    args = ["probe", "predict", str(head_dir), "--features", str(store), "--out",
            str(tmp_path / "p.parquet")]
    assert main(args) == 6
    assert "incomplete store" in capsys.readouterr().err
    assert main([*args, "--partial"]) == 0
    assert pl.read_parquet(tmp_path / "p.parquet").height == 45


def test_text_or_file_is_decided_by_one_stated_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []

    def fake(input: str, *, out: Path, options: Any, **kw: Any) -> Any:
        seen.append(Path(input).read_text() if Path(input).name == "input.jsonl" else input)
        return classify_jobs.ClassifyResult(store="store", predictions="p.parquet",
                                            documents=0, heads=(), extract={}, rows=())

    monkeypatch.setattr(classify_jobs, "run_classify", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("a text file")
    assert main(["classify", ""]) == 3  # never "every .txt below the current folder"
    assert "empty text" in capsys.readouterr().err
    assert main(["classify", "nope.jsonl"]) == 3  # a typo is not a text
    assert "nope.jsonl: no such dataset file" in capsys.readouterr().err
    assert main(["classify", "nope.jsonl", "--text"]) == 0
    assert main(["classify", "a.txt"]) == 0
    assert main(["classify", "just words"]) == 0
    assert json.loads(seen[0])["text"] == "nope.jsonl"
    assert seen[1] == "a.txt" and json.loads(seen[2])["text"] == "just words"


def test_no_documents_is_an_answer_not_a_crash(
        head_dir: Path, extract: ExtractOptions, tmp_path: Path) -> None:
    """Empty input, or every row skipped: classify and audit answer with empty, valid
    results (no document reaches a head)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    skipped = tmp_path / "skipped.jsonl"
    skipped.write_text('{"id": "a", "text": "   "}\n{"id": "b", "text": ""}\n')
    for data, kw in ((empty, {}), (skipped, {"skip_bad_rows": True})):
        opts = ExtractOptions.from_dict({**extract.to_dict(), **kw})
        result = classify_jobs.run_classify(
            str(data), out=tmp_path / f"c-{data.stem}",
            options=classify_jobs.ClassifyOptions(heads=(str(head_dir),), explain=2,
                                                  extract=opts))
        assert result.documents == 0 and result.rows == ()
        preds = pl.read_parquet(tmp_path / f"c-{data.stem}" / result.predictions)
        assert preds.height == 0 and "domain.label" in preds.columns
        audit = audit_jobs.run_audit(
            str(data), out=tmp_path / f"a-{data.stem}",
            options=audit_jobs.AuditOptions(heads=(str(head_dir),), formats=("json",),
                                            extract=opts))
        report = json.loads((tmp_path / f"a-{data.stem}" / "report.json").read_text())
        assert audit.documents == 0 and report["corpus"]["documents"] == 0
        explained = explain_jobs.run_explain(
            str(data), out=tmp_path / f"e-{data.stem}",
            options=explain_jobs.ExplainOptions(heads=(str(head_dir),), check=True,
                                                extract=opts))
        assert explained.documents == () and explained.faithfulness == {}


def test_a_head_that_refuses_the_sae_is_refused_before_the_model_loads(
        stores, head_dir: Path, tiny_llama_dir: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another SAE than the head's: ProvenanceMismatch from the files alone (the SAE's hash
    and the model's weights hash), without loading the model."""
    import auditor.lm
    from auditor.errors import ProvenanceMismatch
    from auditor.testing import make_random_sae

    other = make_random_sae(layer=2, d_sae=128, k=8, seed=99).save(tmp_path / "other")

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(auditor.lm, "load_model", no_model)
    options = classify_jobs.ClassifyOptions(
        heads=(str(head_dir),),
        extract=ExtractOptions(model=str(tiny_llama_dir), saes=(str(other),), id_column="id"))
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer2\.sha256"):
        classify_jobs.run_classify(str(stores["test"][1]), out=tmp_path / "o", options=options)
