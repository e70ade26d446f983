"""The heads jobs under the job contract (build, eval; list and show read only), and their
faces: ``auditor heads`` and ``scripts/build_heads.py``."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import ConfigError, JobCancelled, JobConflict
from auditor.heads import GUARDED_EXTRACT, HEAD_EXTRACT, load_head
from auditor.jobs import heads as jobs
from auditor.jobs._contract import read_job
from auditor.progress import ProgressEvent
from auditor.testing import make_random_sae
from tests.heads import conftest as heads_data

REPO = Path(__file__).resolve().parents[2]
TASK = jobs.HeadTask("domain", description="Weather or sport.", positive_class="sport",
                     candidates=("sae-max-log1p",))


def _round_trip(record: Any) -> None:
    assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record


def _stages(events: list[ProgressEvent]) -> list[str]:
    """Stages in order of first event; each stage's events in order, ending done == total."""
    order: list[str] = []
    for e in events:
        if e.stage not in order:
            order.append(e.stage)
    for stage in order:
        mine = [e for e in events if e.stage == stage]
        assert [e.done for e in mine] == sorted(e.done for e in mine)
        assert mine[-1].final and mine[-1].done == mine[-1].total
    return order


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("recomputed instead of returning the recorded result")


@pytest.fixture(scope="module")
def setup(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Labelled weather-vs-sport data (train 90, test 45) and a tiny model + random SAE."""
    root = tmp_path_factory.mktemp("heads-jobs")
    data = root / "domain"
    data.mkdir()
    for split, n, seed in (("train", 90, 0), ("test", 45, 1)):
        rows = heads_data._texts(n, seed)
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sae_dir = make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(root / "sae")
    options = jobs.HeadsBuildOptions(tasks=(TASK,), model=str(tiny_llama_dir),
                                     saes=(str(sae_dir),),
                                     extract=heads_data.CONFIG.to_dict(), n_labels=30,
                                     seeds=(0,))
    return {"input": {"domain": str(data)}, "options": options, "root": root}


@pytest.fixture(scope="module")
def built(setup: dict[str, Any]) -> tuple[Path, jobs.HeadsBuildResult, list[ProgressEvent]]:
    out = setup["root"] / "build"
    events: list[ProgressEvent] = []
    result = jobs.run_heads_build(setup["input"], out=out, options=setup["options"],
                                  progress=events.append)
    return out, result, events


# ----------------------------------------------------------------------------- records


def test_records_round_trip() -> None:
    for record in (
        TASK, jobs.HeadsBuildOptions(), jobs.HeadsBuildOptions(tasks=(TASK,), until="data",
                                                               extract={"max_length": 24}),
        jobs.HeadsBuildResult(stages=["data"], heads={"a": "heads/a"},
                              data={"a": {"splits": {}}}, table="| t |"),
        jobs.HeadsEvalOptions(candidates=("raw",), seeds=(1,)),
        jobs.HeadsEvalResult(head="a", test={"raw": {"macro_f1": 0.5}}, test_200={},
                             test_head={"macro_f1": 0.5}, written="eval.json"),
        jobs.HeadsListResult(heads=[{"name": "a", "test_macro_f1": None}],
                             search_path=[{"path": "/m", "origin": "shipped",
                                           "exists": True}]),
        jobs.HeadsShowOptions(features=3),
        jobs.HeadsShowResult(head="a", card="# c", no_weights=None,
                             weights={"x": [{"feature": 1, "weight": 0.5, "label": None}]}),
    ):
        _round_trip(record)
    assert [t.name for t in jobs.HeadsBuildOptions().tasks] == ["safety", "topic", "quality"]
    with pytest.raises(ConfigError, match="distinct"):
        jobs.HeadsBuildOptions(tasks=(TASK, TASK))


def test_head_settings_have_one_source() -> None:
    """HEAD_EXTRACT and GUARDED_EXTRACT live in auditor.heads.head, re-exported; a head
    records the guarded settings of its training store through one function."""
    from auditor.heads import guarded_settings
    from auditor.heads import head as head_module

    assert HEAD_EXTRACT is head_module.HEAD_EXTRACT
    assert GUARDED_EXTRACT is head_module.GUARDED_EXTRACT
    assert set(guarded_settings({"extract": HEAD_EXTRACT.to_dict()})) <= set(GUARDED_EXTRACT)


# ----------------------------------------------------------------------------- build


def test_build_writes_heads_and_reruns_from_the_record(
        built: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    out, result, events = built
    _round_trip(result)
    assert result.stages == ["data", "extract", "train"]
    assert result.heads == {"domain": "heads/domain"}
    assert result.data["domain"]["splits"]["test"]["used"] == 45
    head = load_head(out / result.heads["domain"])
    assert head.config.positive_class == "sport" and head.config.extract["max_length"] == 24
    card = head.card
    assert set(card["test"]) == {"sae-max-log1p", "tfidf"}
    assert card["test_200"]["tfidf"]["n_train"] == 30 and card["notes"]
    assert card["data"]["source"] == "given"
    assert "macro_f1_at_threshold" in card["test_head"]
    assert "| domain | sport, weather | sae-max-log1p (CV) |" in result.table
    assert _stages(events) == ["data", "extract", "train"]
    assert read_job(out)["state"] == "done"
    monkeypatch.setattr("auditor.heads.train_head", _boom)
    monkeypatch.setattr("auditor.jobs.extract.run_extract", _boom)
    assert jobs.run_heads_build(setup["input"], out=out, options=setup["options"]) == result
    with pytest.raises(JobConflict, match="seed"):
        jobs.run_heads_build(setup["input"], out=out,
                             options=jobs.HeadsBuildOptions.from_dict(
                                 {**setup["options"].to_dict(), "seed": 1}))


def test_build_cancel_resume_and_stop_after_a_stage(
        setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import auditor.jobs.extract as extract_jobs

    extracted: list[str] = []
    real = extract_jobs.run_extract

    def counting(data: Any, *, out: Any, **kwargs: Any) -> Any:
        extracted.append(Path(out).name)
        return real(data, out=out, **kwargs)

    monkeypatch.setattr(extract_jobs, "run_extract", counting)
    out = tmp_path / "build"
    data_only = jobs.HeadsBuildOptions.from_dict({**setup["options"].to_dict(),
                                                  "until": "data"})
    first = jobs.run_heads_build(setup["input"], out=out, options=data_only)
    assert first.stages == ["data"] and first.heads == {} and extracted == []
    assert (out / "domain" / "train.jsonl").is_file()
    token = CancelToken()

    def progress(event: ProgressEvent) -> None:
        if event.stage == "extract":
            token.cancel()

    # another stage to stop after is other options: refused unless overwrite, which
    # keeps what the stages already made
    with pytest.raises(JobConflict):
        jobs.run_heads_build(setup["input"], out=out, options=setup["options"])
    everything = jobs.HeadsBuildOptions.from_dict({**setup["options"].to_dict(),
                                                   "overwrite": True})
    with pytest.raises(JobCancelled, match="extraction of domain/test"):
        jobs.run_heads_build(setup["input"], out=out, options=everything,
                             progress=progress, cancel=token)
    assert extracted == ["train.store"]
    monkeypatch.setattr(jobs, "_stage_data", _boom)  # the data stage is not redone
    result = jobs.run_heads_build(setup["input"], out=out, options=everything)
    assert extracted == ["train.store", "test.store"]  # each store extracted once
    assert result.heads == {"domain": "heads/domain"}
    target = tmp_path / "models" / "heads"
    (installed,) = jobs.install_heads(out, result, target)
    assert installed == target / "domain"
    assert load_head(installed).config == load_head(out / "heads" / "domain").config
    assert sorted(p.name for p in installed.iterdir()) == [
        "CARD.md", "domain.json", "domain.safetensors", "head.json", "probe"]
    assert "| domain |" in jobs.heads_table(target)


# ----------------------------------------------------------------------------- eval


def test_eval_record_rerun_conflict_cancel(built: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out_build, _, _ = built
    d = out_build / "domain"
    data = {"head": str(out_build / "heads" / "domain"), "train": str(d / "train.store"),
            "test": str(d / "test.store"), "train_texts": str(d / "train.jsonl"),
            "test_texts": str(d / "test.jsonl")}
    out = tmp_path / "eval"
    options = jobs.HeadsEvalOptions(candidates=("sae-max-log1p",), n_labels=30, seeds=(0,))
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        jobs.run_heads_eval(data, out=out, options=options, cancel=token)
    events: list[ProgressEvent] = []
    result = jobs.run_heads_eval(data, out=out, options=options, progress=events.append)
    _round_trip(result)
    card = load_head(data["head"]).card
    assert result.test == card["test"] and result.test_head == card["test_head"]
    assert json.loads((out / "eval.json").read_text())["test_200"] == result.test_200
    assert _stages(events) == ["evaluate"]
    monkeypatch.setattr("auditor.heads.evaluate_candidates", _boom)
    assert jobs.run_heads_eval(data, out=out, options=options) == result
    with pytest.raises(JobConflict):
        jobs.run_heads_eval(data, out=out, options=jobs.HeadsEvalOptions(n_labels=40))
    with pytest.raises(ConfigError, match="input needs"):
        jobs.run_heads_eval({"head": data["head"]}, out=tmp_path / "x", options=options)


# ----------------------------------------------------------------------------- list, show


def test_list_and_show_read_installed_heads(built: Any) -> None:
    out, _, _ = built
    listed = jobs.run_heads_list(str(out / "heads"))
    _round_trip(listed)
    (row,) = listed.heads
    assert row["name"] == "domain" and row["task"] == "binary"
    assert row["origin"] == "given" and row["shadowed_by"] is None and row["error"] is None
    assert listed.search_path == [{"path": str(out / "heads"), "origin": "given",
                                   "exists": True}]
    assert row["test_macro_f1"] == load_head(out / "heads" / "domain").card["test_head"][
        "macro_f1_at_threshold"]
    shown = jobs.run_heads_show(str(out / "heads" / "domain"),
                                options=jobs.HeadsShowOptions(features=2))
    _round_trip(shown)
    assert shown.card.startswith("# Head `domain`") and shown.no_weights is None
    assert set(shown.weights or {}) == {"sport", "weather"}
    assert all(len(v) <= 2 for v in (shown.weights or {}).values())
    bare = jobs.run_heads_show(str(out / "heads" / "domain"),
                               options=jobs.HeadsShowOptions(features=0))
    assert bare.weights is None and bare.card == shown.card


# ----------------------------------------------------------------------------- faces


def _patch(monkeypatch: pytest.MonkeyPatch, name: str,
           result: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return result

    monkeypatch.setattr(jobs, name, fake)
    return calls


def test_cli_heads_list_and_show_call_the_jobs(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"name": "safety", "task": "binary", "classes": ["benign", "insult"],
             "representation": "sae-max-lgbm", "test_macro_f1": 0.84, "path": "p",
             "description": "Flags insults.", "origin": "shipped", "shadowed_by": None,
             "error": None}]
    calls = _patch(monkeypatch, "run_heads_list", jobs.HeadsListResult(
        heads=rows, search_path=[{"path": "somewhere", "origin": "given", "exists": True}]))
    assert main(["heads", "list", "--dir", "somewhere"]) == 0
    assert calls == [(("somewhere",), {})]
    printed = capsys.readouterr().out
    assert "safety" in printed and "0.840" in printed and "Flags insults." in printed
    assert "1. somewhere (given)" in printed and "p (shipped)" in printed
    assert main(["heads", "list", "--json"]) == 0
    assert calls[1] == ((None,), {})
    assert json.loads(capsys.readouterr().out) == rows
    shown = jobs.HeadsShowResult(head="safety", card="# Head `safety`", no_weights=None,
                                 weights={"insult": [{"feature": 7, "weight": 1.5,
                                                      "label": "insults"}]})
    calls = _patch(monkeypatch, "run_heads_show", shown)
    assert main(["heads", "show", "safety", "--features", "3"]) == 0
    assert calls == [(("safety",), {"options": jobs.HeadsShowOptions(features=3)})]
    printed = capsys.readouterr().out
    assert "# Head `safety`" in printed and "towards `insult`:" in printed
    assert "f7      +1.500  insults" in printed
    _patch(monkeypatch, "run_heads_show",
           jobs.HeadsShowResult(head="s", card="# c", weights=None, no_weights="trees"))
    assert main(["heads", "show", "s"]) == 0
    assert "(no per-feature weights: trees;" in capsys.readouterr().out


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("build_heads_script",
                                                  REPO / "scripts" / "build_heads.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_script_calls_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    script = _script()
    result = jobs.HeadsBuildResult(
        stages=["data"], heads={},
        data={"topic": {"splits": {"train": {"used": 5, "available": 9, "labels": {}}}}},
        table="")
    calls = _patch(monkeypatch, "run_heads_build", result)
    installed: Callable[..., list[Path]] = lambda out, res, target: []  # noqa: E731
    monkeypatch.setattr(jobs, "install_heads", installed)
    assert script.main(["--stage", "data", "--task", "topic", "--work", str(tmp_path),
                        "--seed", "3"]) == 0
    ((args, kwargs),) = calls
    assert args == (None,) and kwargs["out"] == tmp_path
    options = kwargs["options"]
    assert [t.name for t in options.tasks] == ["topic"] and options.seed == 3
    assert options.until == "data" and options.overwrite
    assert "[data] topic/train: 5 of 9 documents" in capsys.readouterr().out
    assert script.stratified_sample is jobs.stratified_sample  # bench/window.py uses it
