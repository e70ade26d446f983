"""The filter with a model: head thresholds and labels, SAE feature rules, reasons with
contributing features, reuse of a store, refusal of another input's store, and the same
decisions from Filter.run with a ModelScorer as from the job (tiny Llama, random SAE,
a head trained on a keyword task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.errors import ConfigError, ProvenanceMismatch
from auditor.filter import Filter, ModelScorer
from auditor.heads import load_head, save_head, train_head
from auditor.jobs import PipelineSpec, load_pipeline
from auditor.jobs.extract import ExtractOptions
from auditor.jobs.filter import FilterOptions, run_filter
from auditor.store import read_features
from tests.heads.conftest import sae, sae_dir, split, stores  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def head_dir(split, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    return save_head(head, tmp_path_factory.mktemp("filter-heads") / "domain")


@pytest.fixture(scope="module")
def data(stores, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The test split with extra columns (one nested) and an empty text."""
    rows = [json.loads(line) for line in stores["test"][1].read_text().splitlines()]
    for i, r in enumerate(rows):
        r["source"] = "forum" if i % 2 else "news"
        r["meta"] = {"n": i, "tags": ["x"] * (i % 3)}
    rows[4]["text"] = ""
    path = tmp_path_factory.mktemp("filter-data") / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _extract(model: Path, sae_path: Path) -> ExtractOptions:
    return ExtractOptions(model=str(model), saes=(str(sae_path),), id_column="id")


def _lines(out: Path, parts: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for p in parts for x in (out / p).read_text().splitlines()]


@pytest.fixture(scope="module")
def scored(data: Path, head_dir: Path, tiny_llama_dir: Path, sae_dir: Path,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("filter-scored") / "out"
    options = FilterOptions(
        keep="domain.p.sport < 0.5", heads=(str(head_dir),), explain=3,
        steps=({"type": "label", "head": "domain", "drop": ["nothing"]},),
        extract=_extract(tiny_llama_dir, sae_dir), shard_rows=20)
    return out, run_filter(data, out=out, options=options)


def test_head_threshold_with_reasons_and_every_row_accounted(scored: Any, data: Path,
                                                             head_dir: Path) -> None:
    out, result = scored
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    kept, dropped = _lines(out, result.kept), _lines(out, result.dropped)
    assert len(kept) + len(dropped) == len(rows) == 45
    assert {r["id"] for r in kept} | {r["id"] for r in dropped} == {r["id"] for r in rows}
    assert all(r.keys() == rows[0].keys() for r in kept)
    empty = next(r for r in dropped if r["id"] == rows[4]["id"])
    assert empty["reason"]["step"] == "input"
    import polars as pl

    preds = pl.read_parquet(out / result.predictions)
    p = dict(zip(preds["id"], preds["domain.p.sport"], strict=True))
    assert all(p[r["id"]] < 0.5 for r in kept)
    by_head = [r for r in dropped if r["reason"]["kind"] == "keep"]
    assert by_head and all(p[r["id"]] >= 0.5 for r in by_head)
    assert len(by_head) == sum(1 for r in rows if r["id"] in p and p[r["id"]] >= 0.5)
    reason = by_head[0]["reason"]
    assert reason["value"]["domain.p.sport"] == pytest.approx(p[by_head[0]["id"]])
    evidence = reason["heads"][0]
    assert evidence["head"] == "domain" and evidence["label"] == "sport"
    assert 1 <= len(evidence["features"]) <= 3
    assert {"feature", "contribution", "activation"} <= set(evidence["features"][0])
    summary = json.loads((out / "filter.json").read_text())
    assert summary["labels"]["domain"]["sport"]["dropped"] == len(by_head)
    assert summary["top_features"]["keep domain.p.sport < 0.5"]
    assert summary["provenance"]["model"]


def test_feature_rule_reads_the_store(scored: Any, data: Path, tmp_path: Path,
                                      head_dir: Path, tiny_llama_dir: Path,
                                      sae_dir: Path) -> None:  # noqa: F811
    out, _ = scored
    features = read_features(out / "store", pooling="max")
    counts = np.asarray((features.X > 0).sum(axis=0)).ravel()
    f = int(np.argmax(np.where(counts < features.X.shape[0], counts, 0)))
    values = dict(zip(features.doc_ids, features.X[:, f].toarray().ravel(),
                      strict=True))
    cut = float(np.median([v for v in values.values() if v > 0]))
    options = FilterOptions(steps=({"type": "feature", "index": f, "max": cut},),
                            store=str(out / "store"), extract=_extract(tiny_llama_dir,
                                                                       sae_dir))
    result = run_filter(data, out=tmp_path / "o", options=options)
    assert not (tmp_path / "o" / "store").exists()  # the given store was reused
    dropped = _lines(tmp_path / "o", result.dropped)
    by_feature = {r["id"] for r in dropped if r["reason"]["kind"] == "feature"}
    assert by_feature == {i for i, v in values.items() if v >= cut}
    one = next(r for r in dropped if r["reason"]["kind"] == "feature")["reason"]
    assert one["features"][0]["feature"] == f
    assert one["value"] == pytest.approx(values[next(
        r["id"] for r in dropped if r["reason"]["kind"] == "feature")])


def test_reused_predictions_decide_the_same(scored: Any, data: Path, tmp_path: Path,
                                            head_dir: Path) -> None:
    out, result = scored
    options = FilterOptions(keep="domain.p.sport < 0.5", heads=(str(head_dir),),
                            predictions=str(out / "predictions.parquet"),
                            extract=ExtractOptions(id_column="id"), shard_rows=20)
    again = run_filter(data, out=tmp_path / "o", options=options)
    assert not (tmp_path / "o" / "store").exists()
    assert [r["id"] for r in _lines(tmp_path / "o", again.kept)] == \
        [r["id"] for r in _lines(out, result.kept)]


def test_another_inputs_store_is_refused(scored: Any, tmp_path: Path, head_dir: Path,
                                         stores: Any) -> None:  # noqa: F811
    out, _ = scored
    options = FilterOptions(keep="domain.p.sport < 0.5", heads=(str(head_dir),),
                            store=str(out / "store"), extract=ExtractOptions(id_column="id"))
    with pytest.raises(ProvenanceMismatch, match="another input"):
        run_filter(stores["train"][1], out=tmp_path / "o", options=options)
    with pytest.raises(ConfigError, match=r"'safty'.*installed head.*did you mean safety"):
        run_filter(stores["train"][1], out=tmp_path / "o2", options=FilterOptions(
            keep="safty.p.insult < 0.5", extract=ExtractOptions(id_column="id")))


def test_filter_run_with_a_model_scorer_matches_the_job(scored: Any, data: Path,
                                                        head_dir: Path, tiny_llama_dir: Path,
                                                        sae_dir: Path) -> None:  # noqa: F811
    out, result = scored
    pipeline = load_pipeline(PipelineSpec(model=str(tiny_llama_dir), saes=(str(sae_dir),)))
    scorer = ModelScorer([load_head(head_dir)], lm=pipeline.lm, saes=pipeline.saes)
    docs = [json.loads(x) for x in data.read_text().splitlines()]
    f = Filter(keep="domain.p.sport < 0.5", scorer=scorer, id_column="id", batch_size=16)
    kept = [d["id"] for d in f.run(docs)]
    assert kept == [r["id"] for r in _lines(out, result.kept)]
    assert len(f.dropped) == result.dropped_documents
