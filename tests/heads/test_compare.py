"""The SAE-vs-baselines comparison on a tiny model and real labelled text (the bundled
sample: which of six sources a text comes from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.errors import ConfigError
from auditor.heads import cross_validate_candidates, load_split
from auditor.heads.card import metrics_table
from auditor.testing import make_random_sae

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "audit-sample.jsonl"


def test_compare_on_sample(tiny_llama_dir: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    sae = make_random_sae(layer=2, d_sae=256, k=16).save(tmp_path / "sae")
    store = tmp_path / "store"
    assert main(["extract", str(SAMPLE), "--model", str(tiny_llama_dir), "--sae", str(sae),
                 "--out", str(store), "--id-column", "id", "--max-length", "64",
                 "--raw-mean", "--json"]) == 0
    capsys.readouterr()
    # task: which source is a text from (6 classes, 30-80 documents each)
    assert main(["probe", "compare", "--features", str(store), "--labels", str(SAMPLE),
                 "--label-column", "source", "--folds", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    # max pooling only in this store: the mean-pooled candidate is left out
    assert set(results) == {"sae-max-log1p", "sae-max-binary", "raw", "tfidf"}
    for m in results.values():
        assert m["n"] == 300 and 0.0 <= m["macro_f1"] <= 1.0
        assert len(m["confusion_matrix"]) == 6
    # real text: TF-IDF separates these sources well above chance (1/6)
    assert results["tfidf"]["accuracy"] > 0.6
    table = metrics_table(results, chosen="sae-max-log1p")
    assert "(best" in table and "tfidf" in table and "(head" in table

    # learning curve over label counts, every representation on the same folds
    assert main(["probe", "curve", "--features", str(store), "--labels", str(SAMPLE),
                 "--label-column", "source", "--folds", "3", "--sizes", "30,all",
                 "--json"]) == 0
    curves = json.loads(capsys.readouterr().out)
    assert set(curves) == set(results)
    for rows in curves.values():
        assert [r["n_train"] for r in rows] == [30, 200]
        assert all(0.0 <= r["macro_f1"] <= 1.0 for r in rows)
    assert curves["tfidf"][1]["macro_f1"] > curves["tfidf"][0]["macro_f1"]
    assert main(["probe", "curve", "--features", str(store), "--labels", str(SAMPLE),
                 "--label-column", "source", "--folds", "3", "--sizes", "3"]) == 2


def test_compare_needs_two_classes(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from auditor.extract import extract_features
    from auditor.io import Document
    from auditor.lm import load_model

    lm = load_model(tiny_llama_dir)
    docs = [Document(row=i, doc_id=str(i), text=f"text number {i}", extra={}) for i in range(6)]
    extract_features(docs, lm=lm, saes={"s": make_random_sae()}, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="two classes"):
        load_split(tmp_path / "s", {str(i): "a" for i in range(6)})
    split = load_split(tmp_path / "s", {str(i): "ab"[i % 2] for i in range(6)})
    with pytest.raises(ConfigError, match="documents for 5-fold"):
        cross_validate_candidates(split)
