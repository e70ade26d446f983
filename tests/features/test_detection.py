"""The label detection score: planted features, seeds, the skip rule, a built dictionary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from auditor.errors import ConfigError
from auditor.features import (
    DictionaryConfig,
    build_dictionary,
    load_contexts,
    load_dictionary,
    load_manifest,
    relabel_dictionary,
    score_dictionary,
    score_labels,
)
from auditor.features import labels as labels_module
from auditor.features.detection import auroc, auto_labeller, detection_score, label_words
from auditor.features.labels import coherent_promoted, llm_labeller
from auditor.io import Document
from auditor.lm import load_model
from auditor.sae import load_sae
from auditor.testing import CORPUS, make_random_sae

VOCAB = ("apple river stone cloud green table music paper window garden silver bread "
         "horse engine candle forest mirror ticket planet coffee lemon violin rocket "
         "pencil island copper tiger marble button castle").split()


def _planted(seed: int = 0, n_features: int = 12, n_contexts: int = 10) -> dict[int, list[str]]:
    """Feature 0 fires on 'zebra' (every context holds it); the others on random words."""
    rng = np.random.default_rng(seed)
    out: dict[int, list[str]] = {}
    for f in range(n_features):
        texts = []
        for _ in range(n_contexts):
            words = [str(w) for w in rng.choice(VOCAB, size=8)]
            at = int(rng.integers(1, 7))
            if f == 0:
                words[at] = "zebra"
            words[at] = f"«{words[at]}»"
            texts.append("… " + " ".join(words) + " …")
        out[f] = texts
    return out


def test_planted_zebra_feature_is_detected() -> None:
    contexts = _planted()
    report = score_labels(contexts, auto_labeller(), seed=0)
    zebra = report.by_feature()[0]
    assert "zebra" in zebra.label.split(", ")[0]
    assert zebra.auroc >= 0.99 and zebra.balanced_accuracy >= 0.9
    assert zebra.n_positive == 5 and zebra.n_negative == 10  # odd ranks; 2x negatives
    # random-word features have labels that are right only by chance
    others = [s.auroc for s in report.scores if s.feature != 0]
    assert np.mean(others) < 0.8


def test_unrelated_label_scores_chance() -> None:
    contexts = _planted()
    # words that never occur: every context scores 0, a tie everywhere
    assert detection_score("quantum accordion", contexts[0][1::2], contexts[1][:4]) == (0.5, 0.5)
    # common words that occur as often in positives as in negatives: about 0.5 on average
    rng = np.random.default_rng(1)
    given = {f: " ".join(str(w) for w in rng.choice(VOCAB, size=3)) for f in contexts}
    report = score_labels(contexts, given, seed=0)
    assert report.by_feature()[0].label == given[0]
    mean = np.mean([s.auroc for s in report.scores])
    assert abs(mean - 0.5) < 0.1, mean
    assert report.by_feature()[0].auroc < 0.8


def test_given_zebra_label_beats_unrelated_one() -> None:
    contexts = _planted()
    good = score_labels(contexts, {f: "zebra" for f in contexts}, seed=3).by_feature()[0]
    bad = score_labels(contexts, {f: "violin castle" for f in contexts}, seed=3).by_feature()[0]
    assert good.auroc == 1.0 and good.balanced_accuracy == 1.0
    assert bad.auroc < 0.75 and bad.balanced_accuracy < 0.75


def test_scores_are_deterministic_by_seed() -> None:
    contexts = _planted()
    a = score_labels(contexts, auto_labeller(), seed=7).to_dict()
    b = score_labels(dict(reversed(list(contexts.items()))), auto_labeller(), seed=7).to_dict()
    assert a == b  # feature order does not change any draw
    c = score_labels(contexts, auto_labeller(), seed=8).to_dict()
    assert a["scores"] != c["scores"]  # another seed draws other negatives
    json.dumps(a, allow_nan=False)


def test_skip_rule_counts_features_with_too_few_contexts() -> None:
    contexts = _planted(n_features=4)
    contexts[2] = contexts[2][:3]
    report = score_labels(contexts, auto_labeller(), min_contexts=4, n_features=6)
    assert sorted(report.by_feature()) == [0, 1, 3]
    summary = report.summary()
    assert summary["scored"] == 3
    assert summary["skipped"] == {"few_contexts": 1, "no_negatives": 0, "no_contexts": 2}
    # one feature alone has no negatives to draw
    alone = score_labels({0: contexts[0]}, auto_labeller())
    assert alone.scores == [] and alone.skipped_no_negatives == 1
    with pytest.raises(ConfigError) as err:
        score_labels(contexts, auto_labeller(), min_contexts=1)
    assert err.value.field == "min_contexts"
    with pytest.raises(ConfigError, match="no label for feature 1"):
        score_labels(contexts, {0: "zebra"})


def test_summary_distribution() -> None:
    summary = score_labels(_planted(), auto_labeller(), seed=0).summary()
    for key in ("auroc", "balanced_accuracy"):
        dist = summary[key]
        assert dist["n"] == 12
        assert 0 <= dist["p25"] <= dist["p50"] <= dist["p75"] <= 1
        assert 0 < dist["share_ge_0.7"] <= 1
    assert summary["seed"] == 0 and summary["negatives_per_positive"] == 2


def test_words_and_auroc() -> None:
    assert label_words("Money, cash — 'pay the «money» back' → promotes pay") == \
        ["money", "cash", "pay", "money", "back", "pay"]
    assert auroc([1.0, 0.0], [0.0]) == 0.75
    assert auroc([0.0], [1.0, 2.0]) == 0.0


# --------------------------------------------------------------------------- a built dictionary


@pytest.fixture(scope="module")
def tiny_dictionary(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = load_model(tiny_llama_dir, device="cpu")
    sae = load_sae(make_random_sae(layer=1, d_sae=32, k=4, seed=0).save(
        tmp_path_factory.mktemp("sae") / "sae"))
    out = tmp_path_factory.mktemp("dict") / "dictionary"
    docs = [Document(row=i, doc_id=f"d{i}", text=t, extra={}) for i, t in enumerate(CORPUS[:24])]
    summary = build_dictionary(docs, lm=lm, sae=sae, out=out,
                               config=DictionaryConfig(max_length=32, top_contexts=6,
                                                       context_tokens=3, logit_tokens=5,
                                                       exclude_outliers=False),
                               input_info={"path": "c.jsonl", "fingerprint": "sha256:c"})
    assert summary.label_quality == load_manifest(out)["label_quality"]
    return out


def test_summary_is_in_a_built_dictionary(tiny_dictionary: Path) -> None:
    quality = load_manifest(tiny_dictionary)["label_quality"]
    frame = load_dictionary(tiny_dictionary)
    scored = frame.filter(pl.col("detection_auroc").is_not_null())
    assert quality["scored"] == scored.height > 0
    assert quality["scored"] + sum(quality["skipped"].values()) == frame.height
    assert quality["auroc"]["mean"] == pytest.approx(scored["detection_auroc"].mean(), abs=1e-3)
    for key in ("mean", "p25", "p50", "p75", "share_ge_0.7"):
        assert quality["auroc"][key] is not None and quality["balanced_accuracy"][key] is not None
    # the stored scores are those of the library function
    again = score_dictionary(tiny_dictionary)
    assert again.summary() == quality
    # the lens is shown exactly when it is coherent
    for row in frame.iter_rows(named=True):
        assert row["lens_coherent"] == bool(coherent_promoted(row["promoted"]))
        assert ("→ promotes" in row["auto_label"]) == (
            row["lens_coherent"] and row["n_tokens_fired"] > 0)


def test_llm_labeller_is_scored_the_same_way(tiny_dictionary: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = load_contexts(tiny_dictionary)
    seen: list[list[str]] = []

    def fake_llm_label(contexts: Sequence[str], **kw: Any) -> str:
        # a "model" that answers with the firing tokens it was shown
        texts = list(contexts)
        seen.append(texts)
        assert kw["base_url"] == "http://127.0.0.1:9" and len(kw["promoted"]) == 5
        return " ".join(t[t.index("«") + 1:t.index("»")] for t in texts)

    monkeypatch.setattr(labels_module, "llm_label", fake_llm_label)
    report = score_dictionary(tiny_dictionary,
                              labeller=llm_labeller(base_url="http://127.0.0.1:9", model="m"))
    assert report.scores and len(seen) == len(report.scores)
    for f, texts in zip(report.by_feature(), seen, strict=True):
        # features are labelled in order, from their even-ranked contexts only
        even = ctx.filter((pl.col("feature") == f) & (pl.col("rank") % 2 == 0)).sort("rank")
        assert texts == even["text"].to_list()
    silent = score_dictionary(tiny_dictionary, labeller=lambda f, c, p: "nothing")
    assert {s.auroc for s in silent.scores} == {0.5}
    mean = report.summary()["auroc"]["mean"]
    assert mean > silent.summary()["auroc"]["mean"]
    with pytest.raises(ConfigError, match="http"):
        llm_labeller(base_url="ftp://x", model="m")


def test_negatives_from_a_large_pool_are_other_features_and_seeded() -> None:
    from auditor.features.detection import _negatives

    pool = [f"text {i}" for i in range(2000)]
    owners = np.arange(2000) // 10
    own = set(pool[30:40])
    a = _negatives(pool, owners, feature=3, own=own, n=10, seed=0)
    assert len(a) == len(set(a)) == 10 and not own & set(a)
    assert a == _negatives(pool, owners, feature=3, own=own, n=10, seed=0)
    assert a != _negatives(pool, owners, feature=3, own=own, n=10, seed=1)
    # a large pool that is nearly all the feature's own texts: the exact draw takes over
    dup = ["same"] * 1990 + [f"other {i}" for i in range(10)]
    got = _negatives(dup, np.full(2000, 5), feature=0, own={"same"}, n=10, seed=0)
    assert sorted(got) == sorted(dup[1990:])


def test_relabel_an_old_dictionary_in_place(tiny_dictionary: Path, tmp_path: Path) -> None:
    import shutil

    from auditor.features.files import write_dictionary_files

    old = tmp_path / "old"
    shutil.copytree(tiny_dictionary, old)
    (old / "labels.tsv").write_text("feature\tlabel\n3\tmine\n")
    manifest = {k: v for k, v in load_manifest(old).items() if k != "label_quality"}
    frame = pl.read_parquet(old / "features.parquet")
    stale = frame.drop("lens_coherent", "detection_auroc", "detection_balanced_accuracy")
    stale = stale.with_columns(pl.lit("'a' / 'A' → promotes 'isotopes'").alias("auto_label"))
    write_dictionary_files(old, stale, pl.read_parquet(old / "contexts.parquet"), manifest)
    assert "label_quality" not in load_manifest(old)

    summary = relabel_dictionary(old)
    assert summary == load_manifest(tiny_dictionary)["label_quality"]
    assert load_manifest(old)["label_quality"] == summary
    assert pl.read_parquet(old / "features.parquet").equals(frame)
    assert load_dictionary(old)["label"][3] == "mine"  # overrides untouched
