"""The report job: options and result records, ``_job.json`` reruns, stage markers, cancel,
progress, and the ``auditor report`` face."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditor.report as report_lib
from auditor.cancel import CancelToken
from auditor.errors import ConfigError, InputFileError, JobCancelled, JobConflict
from auditor.jobs import report as jobs
from auditor.jobs._contract import JOB_FILE, read_job
from auditor.jobs.report import REPORT_FORMATS, ReportOptions, ReportResult, run_report
from auditor.progress import ProgressEvent
from tests.report.test_report import (
    IDS_A,
    IDS_B,
    LABELS_A,
    LABELS_B,
    LONG,
    ROWS_A,
    ROWS_B,
    hand_predictions,
    make_store,
    write_texts,
)

TEXTS = [("a", LONG), ("b", LONG.replace("mountains", "hills")),
         ("c", "Rain is expected tomorrow morning, with clearing skies by noon and wind."),
         ("d", "The committee approved the budget after a long debate about the roads.")]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Any]:
    """A hand-made store with predictions, texts, feature labels and a previous report."""
    base = tmp_path / "in"
    base.mkdir()
    store = make_store(base / "store", ROWS_A, ids=IDS_A)
    preds = base / "preds.parquet"
    hand_predictions(LABELS_A).write_parquet(preds)
    texts = write_texts(base / "texts.jsonl", TEXTS)
    labels = base / "labels.json"
    labels.write_text(json.dumps({"0": "zero", "2": {"label": "two", "examples": ["ex"]}}))
    other = make_store(base / "other", ROWS_B, ids=IDS_B)
    report_lib.write_report(report_lib.build_report(other, predictions=hand_predictions(LABELS_B)),
                            base / "prev", formats=("json",))
    return {"store": str(store), "predictions": str(preds), "texts": str(texts),
            "labels": str(labels), "previous": str(base / "prev" / "report.json")}


def full_options(inputs: dict[str, Any], **changes: Any) -> ReportOptions:
    return ReportOptions(**{
        "predictions": inputs["predictions"], "texts": inputs["texts"],
        "previous": inputs["previous"], "labels": inputs["labels"], "id_column": "id",
        "title": "Job report", **changes})


def test_formats_match_the_library() -> None:
    assert REPORT_FORMATS == tuple(report_lib.FORMATS)


def test_options_and_result_round_trip() -> None:
    options = ReportOptions(predictions="p.parquet", texts="t.jsonl", previous="r.json",
                            labels="l.json", formats=("md", "HTML", "md"), title="T", sae="l0",
                            pooling="mean", text_column="body", id_column="id", max_chars=10,
                            flags={"safety": ["unsafe", "toxic"]}, max_flagged=3,
                            top_features=2, dup_threshold=0.5, near_duplicates=False,
                            overwrite=True)
    assert options.formats == ("md", "html")
    again = ReportOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options
    assert ReportOptions.from_dict(json.loads(options.to_json())) == options
    assert options.options_hash() == ReportOptions.from_dict(
        {**options.to_dict(), "overwrite": False}).options_hash()  # overwrite is not hashed
    result = ReportResult(written={"html": "report.html", "charts": "charts"}, title="T",
                          documents=4, tokens=20, flagged=2, near_duplicates=1,
                          feature_drift=0.25)
    assert ReportResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    bare = ReportResult(written={}, title="", documents=0, tokens=0)
    assert ReportResult.from_dict(json.loads(json.dumps(bare.to_dict()))) == bare


@pytest.mark.parametrize(("changes", "field"), [
    ({"formats": ("pdf",)}, "formats"),
    ({"formats": ()}, "formats"),
    ({"formats": ("html", " ")}, None),  # blanks are dropped, html stays
    ({"flags": {"safety": []}, "predictions": "p"}, "flags"),
    ({"flags": {" ": ["unsafe"]}, "predictions": "p"}, "flags"),
    ({"flags": {"safety": [""]}, "predictions": "p"}, "flags"),
    ({"flags": {"safety": ["unsafe"]}}, "flags"),  # flag rules need predictions
    ({"max_chars": 0}, "max_chars"),
    ({"max_flagged": -1}, "max_flagged"),
    ({"top_features": -1}, "top_features"),
    ({"dup_threshold": 0.0}, "dup_threshold"),
    ({"dup_threshold": 1.5}, "dup_threshold"),
    ({"text_column": ""}, "text_column"),
    ({"predictions": ""}, "predictions"),
    ({"max_chars": "many"}, "max_chars"),
])
def test_bad_options_raise_config_error_naming_the_field(changes: dict[str, Any],
                                                         field: str | None) -> None:
    if field is None:
        assert ReportOptions(**changes).formats == ("html",)
        return
    with pytest.raises(ConfigError) as info:
        ReportOptions(**changes)
    assert info.value.field == field
    assert "--" not in info.value.message  # library messages name no CLI flag


def test_run_report_writes_what_build_report_builds(inputs: dict[str, Any],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_report(inputs["store"], out=out, options=full_options(inputs))
    assert result.written == {"charts": "charts", "html": "report.html",
                              "json": "report.json", "md": "report.md"}
    assert all((out / p).exists() for p in result.written.values())
    data = json.loads((out / "report.json").read_text())
    labels, examples = report_lib.load_feature_labels(inputs["labels"])
    expected = report_lib.build_report(
        inputs["store"], predictions=inputs["predictions"], texts=inputs["texts"],
        previous=inputs["previous"], feature_labels=labels, feature_examples=examples,
        id_column="id", title="Job report", generated_at=data["generated_at"])
    assert data == expected
    assert result.title == "Job report"
    assert result.documents == 4 == data["corpus"]["documents"]
    assert result.tokens == 20 == data["corpus"]["tokens"]["total"]
    assert result.flagged == data["flagged"]["total"] == 2  # safety=unsafe by default
    assert result.near_duplicates == 1 == data["near_duplicates"]["near_duplicates"]
    assert result.feature_drift == data["drift"]["features"]["value"]
    assert result.feature_drift is not None and result.feature_drift > 0
    record = read_job(out)
    assert record is not None and record["verb"] == "report" and record["state"] == "done"
    assert ReportResult.from_dict(record["result"]) == result
    assert sorted(p.name for p in (out / "_stages").iterdir()) == [
        "report-drift.json", "report-render.json", "report-statistics.json",
        "report-texts.json"]

    bare = run_report(inputs["store"], out=tmp_path / "bare",
                      options=ReportOptions(formats=("json",)))
    assert bare.written == {"json": "report.json"}
    assert (bare.flagged, bare.near_duplicates, bare.feature_drift) == (None, None, None)
    assert sorted(p.name for p in (tmp_path / "bare" / "_stages").iterdir()) == [
        "report-render.json", "report-statistics.json"]


def _forbid(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("recomputed")

    for name in names:
        monkeypatch.setattr(report_lib, name, boom)


def test_rerun_returns_the_recorded_result(inputs: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    options = full_options(inputs)
    first = run_report(inputs["store"], out=out, options=options)
    before = (out / "report.html").stat().st_mtime_ns
    _forbid(monkeypatch, "build_statistics", "add_texts", "add_drift", "write_report",
            "load_feature_labels")
    events: list[ProgressEvent] = []
    again = run_report(inputs["store"], out=out,
                       options=ReportOptions.from_dict(options.to_dict()),
                       progress=events.append)
    assert again == first
    assert events == []
    assert (out / "report.html").stat().st_mtime_ns == before


def test_other_options_or_input_conflict_unless_overwrite(inputs: dict[str, Any],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_report(inputs["store"], out=out, options=full_options(inputs))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(JobConflict, match="top_features"):
        run_report(inputs["store"], out=out, options=full_options(inputs, top_features=1))
    changed = dict(inputs)
    changed["texts"] = str(write_texts(tmp_path / "texts2.jsonl", TEXTS[:3]))
    with pytest.raises(JobConflict, match="input"):
        run_report(inputs["store"], out=out, options=full_options(changed))
    assert ReportResult.from_dict(read_job(out)["result"]) == first  # type: ignore[index]

    md_only = run_report(inputs["store"], out=out,
                         options=full_options(inputs, formats=("md",), overwrite=True))
    assert md_only.written == {"md": "report.md", "charts": "charts"}
    assert not (out / "report.html").exists() and not (out / "report.json").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only the report's own files go
    assert sorted(p.name for p in (out / "_stages").iterdir()) == [
        "report-drift.json", "report-render.json", "report-statistics.json",
        "report-texts.json"]
    assert read_job(out)["options"]["formats"] == ["md"]  # type: ignore[index]


def test_missing_input_fails_before_anything_is_written(inputs: dict[str, Any],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputFileError) as info:
        run_report(inputs["store"], out=out,
                   options=full_options(inputs, labels=str(tmp_path / "nope.json")))
    assert info.value.field == "labels"
    assert not out.exists()


def _cancel_after(stage: str, token: CancelToken,
                  events: list[ProgressEvent]) -> Callable[[ProgressEvent], None]:
    def on_event(event: ProgressEvent) -> None:
        events.append(event)
        if event.stage == stage and event.final:
            token.cancel()

    return on_event


@pytest.mark.parametrize(("cancel_after", "kept", "forbidden"), [
    ("statistics", ["report-statistics.json"], ["build_statistics"]),
    ("texts", ["report-statistics.json", "report-texts.json"],
     ["build_statistics", "add_texts"]),
    ("drift", ["report-drift.json", "report-statistics.json", "report-texts.json"],
     ["build_statistics", "add_texts", "add_drift"]),
])
def test_cancel_between_stages_then_rerun_resumes(
        inputs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cancel_after: str, kept: list[str], forbidden: list[str]) -> None:
    out = tmp_path / "out"
    options = full_options(inputs)
    token = CancelToken()
    events: list[ProgressEvent] = []
    with pytest.raises(JobCancelled, match="report stage"):
        run_report(inputs["store"], out=out, options=options, cancel=token,
                   progress=_cancel_after(cancel_after, token, events))
    assert events[-1].stage == cancel_after and events[-1].final
    assert sorted(p.name for p in (out / "_stages").iterdir()) == kept
    assert not (out / "report.json").exists()
    assert read_job(out)["state"] == "running"  # type: ignore[index]

    with monkeypatch.context() as patch:
        _forbid(patch, *forbidden)
        resumed: list[ProgressEvent] = []
        result = run_report(inputs["store"], out=out, options=options,
                            progress=resumed.append)
    assert [e.stage for e in resumed if e.final] == ["statistics", "texts", "drift", "render"]
    data = json.loads((out / "report.json").read_text())
    # every document exactly once
    assert result.documents == 4 == data["texts"]["matched_store"] == data["texts"]["documents"]
    assert data["feature_density"]["documents"] == 4
    assert data["near_duplicates"]["documents"] == 4
    assert sum(data["heads"]["safety"]["label_counts"].values()) == 4
    fresh = run_report(inputs["store"], out=tmp_path / "fresh", options=options)
    assert fresh == result


def test_a_kill_while_rendering_resumes_from_the_built_report(
        inputs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    options = full_options(inputs)

    def killed(*_a: Any, **_k: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(report_lib, "write_report", killed)
        with pytest.raises(KeyboardInterrupt):
            run_report(inputs["store"], out=out, options=options)
    assert not (out / "report.json").exists()
    with monkeypatch.context() as patch:
        _forbid(patch, "build_statistics", "add_texts", "add_drift")
        result = run_report(inputs["store"], out=out, options=options)
    assert (out / "report.html").exists() and result.documents == 4


def test_markers_of_another_input_are_not_reused(inputs: dict[str, Any],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_report(inputs["store"], out=out, options=full_options(inputs))
    (out / JOB_FILE).unlink()  # the record is gone; the markers stay
    write_texts(Path(inputs["texts"]), TEXTS[:3])
    result = run_report(inputs["store"], out=out, options=full_options(inputs))
    data = json.loads((out / "report.json").read_text())
    assert data["texts"]["documents"] == 3 and result.near_duplicates == 1


def test_progress_events_in_order_with_a_final_done_equal_total(inputs: dict[str, Any],
                                                                tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    run_report(inputs["store"], out=tmp_path / "out", options=full_options(inputs),
               progress=events.append)
    assert all(e.job == "report" for e in events)
    order = list(dict.fromkeys(e.stage for e in events))
    assert order == ["statistics", "texts", "drift", "render"]
    for stage in order:
        mine = [e for e in events if e.stage == stage]
        first, last = events.index(mine[0]), events.index(mine[-1])
        assert all(e.stage == stage for e in events[first:last + 1])  # stages do not interleave
        assert [e.done for e in mine] == sorted(e.done for e in mine)
        assert [e.final for e in mine] == [False] * (len(mine) - 1) + [True]
        assert last_done_is_total(mine[-1])
    assert next(e for e in events if e.stage == "texts" and e.final).counters["docs"] == 4
    # render: 4 format files... html, json, md plus the Markdown file's charts
    render = [e for e in events if e.stage == "render"][-1]
    assert render.total == 3 + len(list((tmp_path / "out" / "charts").glob("*.svg")))


def last_done_is_total(event: ProgressEvent) -> bool:
    return event.final and event.total is not None and event.done == event.total


# --------------------------------------------------------------------------- the CLI face


def test_cli_report_calls_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main

    calls: list[dict[str, Any]] = []
    canned = ReportResult(written={"html": "report.html", "md": "report.md",
                                   "charts": "charts"},
                          title="T", documents=1234, tokens=56789, flagged=7,
                          near_duplicates=3, feature_drift=0.125)

    def fake(store: str, *, out: str, options: ReportOptions, progress: Any = None,
             cancel: Any = None) -> ReportResult:
        calls.append({"store": store, "out": out, "options": options, "progress": progress})
        return canned

    monkeypatch.setattr(jobs, "run_report", fake)
    out = tmp_path / "r"
    code = main(["report", "store-dir", "--out", str(out), "--predictions", "p.parquet",
                 "--texts", "t.jsonl", "--previous", "prev.json", "--labels", "l.json",
                 "--format", "HTML,md", "--title", "Weekly", "--sae", "l0", "--pool", "mean",
                 "--text-column", "body", "--id-column", "id", "--max-chars", "99",
                 "--flag", "safety=unsafe", "--flag", "safety=toxic", "--flag", "topic=code",
                 "--max-flagged", "5", "--top-features", "3", "--dup-threshold", "0.7",
                 "--no-near-duplicates", "--overwrite", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert len(calls) == 1
    assert calls[0]["store"] == "store-dir" and calls[0]["out"] == str(out)
    assert calls[0]["progress"] is None
    assert calls[0]["options"] == ReportOptions(
        predictions="p.parquet", texts="t.jsonl", previous="prev.json", labels="l.json",
        formats=("html", "md"), title="Weekly", sae="l0", pooling="mean", text_column="body",
        id_column="id", max_chars=99,
        flags={"safety": ["unsafe", "toxic"], "topic": ["code"]}, max_flagged=5,
        top_features=3, dup_threshold=0.7, near_duplicates=False, overwrite=True)
    assert f"wrote {out / 'report.html'}" in printed
    assert f"wrote {out / 'report.md'}" in printed
    assert ("1,234 documents, 56,789 tokens, 7 flagged, 3 near duplicates, "
            "feature JSD 0.1250 bits") in printed

    assert main(["report", "store-dir", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        k: str(out / v) for k, v in canned.written.items()}
    assert calls[-1]["options"] == ReportOptions()

    # options the job refuses are usage errors naming the flag; the job is not called
    assert main(["report", "s", "--out", str(out), "--flag", "safety=unsafe"]) == 2
    assert "--flag" in capsys.readouterr().err
    assert main(["report", "s", "--out", str(out), "--format", "pdf"]) == 2
    assert "--format" in capsys.readouterr().err
    assert len(calls) == 2


def test_cli_report_module_imports_no_heavy_library() -> None:
    """Not at import time, not inside a function: the face calls the job instead."""
    import ast

    import auditor.cli.report as face

    tree = ast.parse(Path(face.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    heavy = {"polars", "numpy", "matplotlib", "torch", "sklearn", "scipy", "lightgbm",
             "auditor.report", "auditor.store"}
    assert not {m for m in imported if m.split(".")[0] in heavy or m in heavy
                or any(m.startswith(h + ".") for h in heavy)}


def test_bad_store_or_out_fail_before_anything_is_written(inputs: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from auditor.errors import StoreError

    with pytest.raises(StoreError):
        run_report(tmp_path / "no-store", out=tmp_path / "out", options=ReportOptions())
    assert not (tmp_path / "out").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError) as info:
        run_report(inputs["store"], out=a_file, options=ReportOptions())
    assert info.value.field == "out" and a_file.read_text() == "x"
