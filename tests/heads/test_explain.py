"""Faithfulness check, token-level evidence and `auditor explain` on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from auditor.cli import main
from auditor.errors import ConfigError, StoreError
from auditor.explain import faithfulness, render_evidence, token_evidence
from auditor.extract import ExtractConfig
from auditor.heads import save_head, train_head
from auditor.jobs import ExplainOptions, ExtractOptions, run_explain
from tests.heads.conftest import extract_to


def _decoder(sae) -> tuple[np.ndarray, np.ndarray, float]:
    return sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy(), 1.0


@pytest.mark.parametrize("candidate", ["sae-max-log1p", "raw", "sae-max-lgbm"])
def test_top_features_matter_more_than_random_ones(split, stores, sae, candidate: str) -> None:
    head = train_head("domain", split, candidate=candidate, folds=3, positive_class="sport",
                      sae_decoder=_decoder(sae))
    inputs = head.read(stores["test"][0])
    result = faithfulness(head, inputs, k=3, n_random=5)
    assert result["documents"] == 45 and result["k"] == 3 and "ratio" not in result
    present = result["present"]
    assert len(present["per_document"]) == present["documents"] > 30
    # removing what supports the decision lowers its probability, and more than chance
    assert present["drop"]["mean"] > 0
    assert present["difference"]["mean"] > 0
    assert present["drop"]["low"] <= present["drop"]["mean"] <= present["drop"]["high"]
    assert 0.0 <= present["flip_rate"] <= 1.0
    if candidate != "sae-max-lgbm":  # linear: absent features contribute nothing
        assert result["absent"]["documents"] == 0
    with pytest.raises(ConfigError):
        faithfulness(head, inputs, k=0)


def test_raw_head_changes_match_recomputed_score(split, stores, sae) -> None:
    """For a raw head, zeroing a feature = subtracting its decoded vector from x̄, and
    making one fire at value v = adding v times it."""
    from auditor.explain.faithfulness import _rescore

    head = train_head("domain", split, candidate="raw", folds=3, sae_decoder=_decoder(sae))
    inputs = head.read(stores["test"][0])
    feats = np.asarray(inputs.activations[0].indices[:2])
    z = inputs.activations[0].toarray().ravel()
    off = np.asarray(sorted(set(range(z.size)) - set(np.flatnonzero(z)))[:2])
    p = _rescore(head, inputs, 0, [(feats, np.zeros(2)), (off, np.array([0.5, 1.5]))])
    W = sae.W_dec.detach().double().numpy()
    x = inputs.X[0] - (z[feats] @ W[feats])
    np.testing.assert_allclose(p[:1], head.probe.predict_proba(x[None, :]), rtol=1e-6,
                               atol=1e-8)
    x = inputs.X[0] + np.array([0.5, 1.5]) @ W[off]
    np.testing.assert_allclose(p[1:], head.probe.predict_proba(x[None, :]), rtol=1e-6,
                               atol=1e-8)


def test_token_evidence_agrees_with_pooled_max(stores, tiny_llama_dir: Path, sae_dir: Path,
                                               tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from auditor.store import read_features

    data = stores["test"][1]
    config = ExtractConfig(poolings=("max",), max_length=24, max_windows=2, save_tokens=True)
    extract_to(data, tmp_path / "t", model=tiny_llama_dir, sae=sae_dir, config=config)
    fm = read_features(tmp_path / "t", pooling="max", columns=[])
    doc = fm.doc_ids[0]
    row = fm.X[0]
    feats = row.indices[:3].tolist()
    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    tokens, hits = token_evidence(tmp_path / "t", doc, feats, tokenizer=tok)
    assert tokens and all(t[2] is not None for t in tokens)
    for f in feats:
        assert hits[f], f  # it fired somewhere: it has a pooled max
        assert hits[f][0].value == pytest.approx(row[0, f], rel=1e-5)  # strongest = the max
        assert "«" in render_evidence(tokens, hits[f])
    assert render_evidence(tokens, []) == "(does not fire)"
    with pytest.raises(StoreError, match="no per-token codes for document"):
        token_evidence(tmp_path / "t", "missing", feats)
    extract_to(data, tmp_path / "n", model=tiny_llama_dir, sae=sae_dir,
               config=ExtractConfig(poolings=("max",), max_length=24))
    with pytest.raises(StoreError, match="save_tokens"):
        token_evidence(tmp_path / "n", doc, feats)


def test_explain_cli_and_job(split, stores, tiny_llama_dir: Path, sae_dir: Path,
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    head_dir = save_head(head, tmp_path / "domain")
    assert main(["explain", "goal match team score goal", "--head", str(head_dir),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--check", "--k", "2",
                 "--random", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("text\n") and "domain:" in printed and "«" in printed
    assert "faithfulness domain (k=2, 1 documents;" in printed
    assert "present (fired), zeroed: 1 docs, drop" in printed and "difference" in printed
    assert "absent (did not fire), made to fire: no document" in printed
    assert "ratio" not in printed and "present (fired):" in printed
    extract = ExtractOptions(model=str(tiny_llama_dir), saes=(str(sae_dir),), id_column="id")
    result = run_explain(str(stores["test"][1]), out=tmp_path / "explain",
                         options=ExplainOptions(heads=(str(head_dir),), extract=extract,
                                                top=3)).to_dict()
    assert len(result["documents"]) == 45
    entry = result["documents"][0]["domain"]
    assert len(entry["present"]) <= 3 and entry["present"][0]["tokens"]
    assert entry["absent"] == []  # a linear head: absent features contribute nothing
    json.dumps(result, default=str)
    with pytest.raises(ConfigError, match="at most 10"):
        run_explain(str(stores["test"][1]), out=tmp_path / "small",
                    options=ExplainOptions(heads=(str(head_dir),), extract=extract, max_docs=10))
