"""Transfer evaluation (leave one source out) and choosing a head's representation by it,
on tiny synthetic splits whose truth is known.

The synthetic split: groups A, B and C, each half ``pos`` and half ``neg``. The ``max``
(and ``mean``) SAE pooling carries a *spurious* feature per group: feature ``k`` fires
for ``pos`` documents of group ``k`` only, so within the training data it separates the
classes perfectly (cross-validation loves it) but says nothing about a held-out group.
The raw activations carry a *shared*, noisy signal (column 0 ≈ the class, ~85 %
accurate) in every group. Transfer must pick ``raw``; cross-validation picks the SAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.heads import LabelledSplit, best_candidate, cross_validate_candidates, train_head
from auditor.heads.card import render_card, transfer_section
from auditor.heads.transfer import (
    best_by_transfer,
    read_groups,
    regularised,
    select_by_transfer,
    transfer_evaluation,
    variant_name,
)
from auditor.jobs import heads as jobs

PAIR = ("sae-max-log1p", "raw")
N_SPURIOUS = 3


def synthetic_split(sizes: dict[str, int], *, seed: int = 0, one_class: dict[str, str]
                    | None = None) -> tuple[LabelledSplit, np.ndarray]:
    """A split and its groups (see the module docstring); ``one_class`` gives groups all
    of one label (their spurious feature is group-specific like the others')."""
    rng = np.random.default_rng(seed)
    one_class = one_class or {}
    ys, gs = [], []
    for g, n in sizes.items():
        labels = ([one_class[g]] * n if g in one_class
                  else ["pos" if i % 2 else "neg" for i in range(n)])
        ys += labels
        gs += [g] * n
    y = np.array(ys, dtype=object)
    groups = np.array(gs, dtype=object)
    n = len(y)
    names = sorted(sizes)
    width = N_SPURIOUS + 10
    sae = np.abs(rng.normal(0, 0.3, size=(n, width))) * (rng.random((n, width)) < 0.3)
    for i, (g, lab) in enumerate(zip(groups, y, strict=True)):
        k = names.index(g) % N_SPURIOUS
        sae[i, :N_SPURIOUS] = 0.0
        if lab == "pos":
            sae[i, k] = 3.0
    pos = (y == "pos").astype(float)
    raw = rng.normal(0, 1, size=(n, 8))
    raw[:, 0] = 2 * pos - 1 + rng.normal(0, 0.9, size=n)
    texts = [f"w{g}{lab} filler text here" for g, lab in zip(groups, y, strict=True)]
    X = sp.csr_matrix(sae)
    split = LabelledSplit([f"d{i}" for i in range(n)], y, {"max": X, "mean": X}, raw, texts,
                          {"saes": {}})
    return split, groups


@pytest.fixture(scope="module")
def three() -> tuple[LabelledSplit, np.ndarray]:
    return synthetic_split({"A": 60, "B": 60, "C": 60})


@pytest.fixture(scope="module")
def evaluated(three: tuple[LabelledSplit, np.ndarray]) -> dict[str, Any]:
    split, groups = three
    return transfer_evaluation(split, groups, candidates=PAIR, n_labels=10, seed=0)


def test_cv_prefers_the_spurious_feature_transfer_the_shared_signal(
        three: tuple[LabelledSplit, np.ndarray], evaluated: dict[str, Any]) -> None:
    split, _ = three
    cv = cross_validate_candidates(split, candidates=PAIR, folds=3, baseline=False)
    assert best_candidate(cv) == "sae-max-log1p"
    assert cv["sae-max-log1p"]["macro_f1"] > 0.95
    name, scale = best_by_transfer(evaluated, cv)
    assert name == "raw"
    assert scale in (0.25, 1.0, 4.0)
    for g in ("A", "B", "C"):
        scores = evaluated["groups"][g]["all"]
        assert scores["raw@C×1"] > 0.7
        assert scores["raw@C×1"] > scores["sae-max-log1p@C×1"] + 0.2
    assert evaluated["mean"]["all"]["raw@C×1"] > evaluated["mean"]["all"]["sae-max-log1p@C×1"]
    # TF-IDF's words are group-specific too: it does not transfer either
    assert evaluated["mean"]["all"]["tfidf"] < 0.7


def test_result_shape_and_small_data_regime(evaluated: dict[str, Any]) -> None:
    json.dumps(evaluated)  # JSON-safe
    assert evaluated["scored"] == ["A", "B", "C"] and evaluated["skipped"] == {}
    a = evaluated["groups"]["A"]
    assert a["n"] == 60 and a["classes"] == {"neg": 30, "pos": 30}
    assert a["metric"] == "macro_f1" and a["n_train"] == 120 and a["n_train_few"] == 20
    assert set(a["all"]) == set(a["few"]) == set(evaluated["variants"])
    assert set(evaluated["variants"]) == {variant_name(c, s) for c in PAIR
                                          for s in (0.25, 1.0, 4.0)} | {"tfidf"}


def test_skipped_and_one_class_groups() -> None:
    split, groups = synthetic_split({"A": 60, "B": 60, "C": 60, "D": 6, "E": 30, "F": 30},
                                    one_class={"E": "pos", "F": "other"})
    r = transfer_evaluation(split, groups, candidates=("raw",), C_scales=(1.0,), n_labels=None,
                            min_group_docs=20)
    assert r["skipped"]["D"] == "6 documents (< 20)"
    assert "none of its classes (other) is labelled in the other groups" in r["skipped"]["F"]
    assert r["groups"]["F"]["classes"] == {"other": 30}
    assert r["scored"] == ["A", "B", "C", "E"]
    e = r["groups"]["E"]
    assert e["metric"] == "accuracy" and e["classes"] == {"pos": 30}
    assert 0.6 < e["all"]["raw@C×1"] <= 1.0
    assert r["groups"]["A"]["few"] is None and r["mean"]["few"] is None


def test_unseen_classes_left_out_of_the_score() -> None:
    split, groups = synthetic_split({"A": 60, "B": 60})
    split.y[:4] = "rare"  # only in group A: no other group is labelled with it
    X = split.sae["max"].tolil()
    X[:4, :] = 0.0
    X[:4, -1] = 5.0  # a feature of its own, so the three-class fit on A converges
    split.sae = {"max": X.tocsr(), "mean": X.tocsr()}
    r = transfer_evaluation(split, groups, candidates=("sae-max-log1p",), C_scales=(1.0,),
                            n_labels=None)
    a = r["groups"]["A"]
    assert a["unseen"] == {"rare": 4} and a["n_scored"] == 56 and a["n"] == 60


def test_best_by_transfer_ties_and_errors() -> None:
    result: dict[str, Any] = {"variants": {"raw@C×1": {"candidate": "raw", "C_scale": 1.0},
                           "raw@C×4": {"candidate": "raw", "C_scale": 4.0},
                           "sae-max-log1p@C×1": {"candidate": "sae-max-log1p", "C_scale": 1.0},
                           "tfidf": {"candidate": "tfidf", "C_scale": 1.0}},
              "mean": {"all": {"raw@C×1": 0.8, "raw@C×4": 0.8001, "sae-max-log1p@C×1": 0.8,
                               "tfidf": 0.99}}}
    cv = {"raw": {"macro_f1": 0.7}, "sae-max-log1p": {"macro_f1": 0.9}}
    assert best_by_transfer(result, cv) == ("sae-max-log1p", 1.0)  # tie → better CV
    cv["raw"]["macro_f1"] = 0.95
    assert best_by_transfer(result, cv) == ("raw", 1.0)  # then the factor nearest 1
    result["mean"]["all"]["raw@C×4"] = 0.9
    assert best_by_transfer(result) == ("raw", 4.0)  # the baseline is never chosen
    with pytest.raises(ConfigError, match="no held-out group"):
        best_by_transfer({"variants": {}, "mean": {"all": None}})


def test_regularised() -> None:
    from auditor.heads import CANDIDATES

    assert regularised(CANDIDATES["sae-max-log1p"], 0.25).C == 0.25
    lgbm = regularised(CANDIDATES["sae-max-lgbm"], 4.0)
    assert lgbm.min_child_samples == 5 and lgbm.make().min_child_samples == 5
    with pytest.raises(ConfigError, match="> 0"):
        regularised(CANDIDATES["raw"], 0.0)


def test_select_by_transfer_falls_back(three: tuple[LabelledSplit, np.ndarray]) -> None:
    split, groups = three
    none = select_by_transfer(split, None, candidates=PAIR, cv={}, group_column="source")
    assert none.candidate is None and "no source column" in none.chosen_by
    one = select_by_transfer(split, ["x"] * len(groups), candidates=PAIR, cv={},
                             group_column="source")
    assert one.candidate is None and one.card["fallback"] == "one source only (x)"
    few = select_by_transfer(split, groups, candidates=("raw",), cv={}, C_scales=(1.0,),
                             group_column="source", min_group_docs=61)
    assert few.candidate is None and few.card["fallback"].startswith("0 of 3 groups")
    assert set(few.card["skipped"]) == {"A", "B", "C"}


def _decoder(split: LabelledSplit) -> tuple[np.ndarray, np.ndarray, float]:
    assert split.raw is not None
    rng = np.random.default_rng(0)
    return (rng.normal(size=(split.sae["max"].shape[1], split.raw.shape[1])),
            np.zeros(split.raw.shape[1]), 1.0)


def test_train_head_by_transfer_and_card(three: tuple[LabelledSplit, np.ndarray],
                                         evaluated: dict[str, Any]) -> None:
    split, groups = three
    head = train_head("t", split, candidates=PAIR, folds=3, groups=groups,
                      select_by="transfer", group_column="source", transfer_results=evaluated,
                      sae_decoder=_decoder(split))
    rep = head.card["representation"]
    assert rep["candidate"] == "raw" and "leaving one source out" in rep["chosen_by"]
    scale = head.card["transfer"]["chosen"]["C_scale"]
    assert rep["regularisation"] == {"C_scale": scale, "C": 0.05 * scale}
    assert head.probe  # fitted
    md = render_card(head.config.to_dict(), head.card)
    assert "## Transfer (leave one source out)" in md
    assert "| held-out source | docs | classes | metric |" in md
    assert "| A | 60 | neg 30, pos 30 | macro_f1 |" in md
    assert "**≤ 10 labels per class**" in md
    assert "Chosen by transfer: **raw**" in md
    cv_head = train_head("t", split, candidates=PAIR, folds=3, select_by="cv")
    assert cv_head.card["representation"]["candidate"] == "sae-max-log1p"
    assert "transfer" not in cv_head.card and transfer_section(cv_head.card) == []


def test_train_head_falls_back_to_cv(three: tuple[LabelledSplit, np.ndarray]) -> None:
    split, _ = three
    head = train_head("t", split, candidates=PAIR, folds=3, select_by="transfer",
                      group_column="source")
    assert head.card["representation"]["candidate"] == "sae-max-log1p"
    assert "not by transfer: the data has no source column" in \
        head.card["representation"]["chosen_by"]
    lines = transfer_section(head.card)
    assert lines[0] == "## Transfer (leave one source out)"
    assert "Chosen by cross-validation, not by transfer: the data has no source column." \
        in lines
    with pytest.raises(ConfigError, match="select_by"):
        train_head("t", split, candidates=PAIR, folds=3, select_by="best")


def test_read_groups(tmp_path: Path) -> None:
    from auditor.store import FeatureStoreWriter

    prov = {"saes": {"l": {"d_sae": 4}}, "pooling": ["max"]}
    w = FeatureStoreWriter(tmp_path / "s", provenance=prov)
    w.write_shard(0, pl.DataFrame({
        "doc_id": ["a", "b", "c"], "row": [0, 1, 2], "n_tokens": [3, 3, 3],
        "l.indices": [[0], [1], [2]], "l.max": [[1.0], [1.0], [1.0]],
        "l.n_excluded": [0, 0, 0], "label": ["x", "y", "x"], "source": ["s1", None, "s2"]}))
    w.finalize(summary={}, n_shards=1)
    groups = read_groups(tmp_path / "s", ["c", "a", "b"], "source")
    assert groups is not None and groups.tolist() == ["s2", "s1", ""]
    assert read_groups(tmp_path / "s", ["a"], "lang") is None


def test_head_task_round_trips_with_transfer_fields() -> None:
    task = jobs.HeadTask("x", group_column="lang", select_by="cv")
    assert jobs.HeadTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    default = jobs.HeadTask("y")
    assert (default.group_column, default.select_by) == ("source", "transfer")


def test_build_train_stage_falls_back_with_one_source(tiny_llama_dir: Path,
                                                       tmp_path: Path) -> None:
    from auditor.testing import make_random_sae
    from tests.heads import conftest as heads_data

    data = tmp_path / "domain"
    data.mkdir()
    for split, n, seed in (("train", 60, 0), ("test", 30, 1)):
        rows = [{**r, "source": "only"} for r in heads_data._texts(n, seed)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sae_dir = make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(tmp_path / "sae")
    task = jobs.HeadTask("domain", positive_class="sport", candidates=("sae-max-log1p",))
    options = jobs.HeadsBuildOptions(tasks=(task,), model=str(tiny_llama_dir),
                                     saes=(str(sae_dir),), extract=heads_data.CONFIG.to_dict(),
                                     n_labels=20, seeds=(0,))
    result = jobs.run_heads_build({"domain": str(data)}, out=tmp_path / "build",
                                  options=options)
    card = json.loads((tmp_path / "build" / result.heads["domain"] / "probe" / "card.json")
                      .read_text())
    # without the source column in the store, or with one source in it: chosen by CV
    assert card["transfer"]["chosen"] is None
    assert card["transfer"]["fallback"] in ("the data has no source column",
                                            "one source only (only)")
    assert "not by transfer" in card["representation"]["chosen_by"]
    md = (tmp_path / "build" / result.heads["domain"] / "CARD.md").read_text()
    assert "Chosen by cross-validation, not by transfer" in md


def test_bench_synthetic_runs(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "bench" / "heads.py"
    spec = importlib.util.spec_from_file_location("bench_heads", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["heads.py", "--synthetic", "--docs", "150", "--d-sae",
                                      "200", "--active", "10", "--n-labels", "20",
                                      "--candidates", "sae-max-binary", "--folds", "3"])
    bench.main()
    out = capsys.readouterr().out
    assert "## In-domain: 3-fold cross-validation" in out
    assert "## Transfer (leave one source out)" in out
    assert "| src0 | 50 |" in out and "**≤ 20 labels per class**" in out
    assert "choice by CV: sae-max-binary; by transfer: sae-max-binary" in out
    assert "x the cross-validation" in out


def test_build_train_stage_selects_by_transfer_with_two_sources(
        tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two scorable sources the train stage chooses by transfer and the card shows
    the table (the store's groups stand in for the ``source`` passthrough column)."""
    import auditor.heads.transfer as transfer
    from auditor.testing import make_random_sae
    from tests.heads import conftest as heads_data

    data = tmp_path / "domain"
    data.mkdir()
    for split, n, seed in (("train", 90, 0), ("test", 30, 1)):
        rows = heads_data._texts(n, seed)
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[str] = []

    def two_sources(store: Any, doc_ids: Any, column: str) -> np.ndarray:
        seen.append(column)
        return np.array([f"s{i % 2}" for i in range(len(doc_ids))], dtype=object)

    monkeypatch.setattr(transfer, "read_groups", two_sources)
    sae_dir = make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(tmp_path / "sae")
    task = jobs.HeadTask("domain", positive_class="sport",
                         candidates=("sae-max-log1p", "sae-max-binary"))
    options = jobs.HeadsBuildOptions(tasks=(task,), model=str(tiny_llama_dir),
                                     saes=(str(sae_dir),), extract=heads_data.CONFIG.to_dict(),
                                     n_labels=10, seeds=(0,))
    result = jobs.run_heads_build({"domain": str(data)}, out=tmp_path / "build",
                                  options=options)
    head = tmp_path / "build" / result.heads["domain"]
    card = json.loads((head / "probe" / "card.json").read_text())
    assert seen == ["source"]
    chosen = card["transfer"]["chosen"]
    assert chosen is not None and card["transfer"]["scored"] == ["s0", "s1"]
    assert card["representation"]["candidate"] == chosen["candidate"]
    assert card["representation"]["regularisation"]["C_scale"] == chosen["C_scale"]
    assert "leaving one source out" in card["representation"]["chosen_by"]
    md = (head / "CARD.md").read_text()
    assert "## Transfer (leave one source out)" in md and "| s0 | 45 |" in md
    assert "Representation chosen by transfer (leave one source out)" in md


def test_train_head_transfer_compares_only_what_it_is_given(
        three: tuple[LabelledSplit, np.ndarray]) -> None:
    split, groups = three
    head = train_head("t", split, candidates=PAIR, folds=3, groups=groups,
                      select_by="transfer", group_column="source",
                      transfer_candidates=("raw",), transfer_scales=(0.25, 1.0),
                      sae_decoder=_decoder(split))
    tr = head.card["transfer"]
    assert tr["C_scales"] == [0.25, 1.0]
    assert sorted(tr["variants"]) == ["raw@C×0.25", "raw@C×1", "tfidf"]
    assert head.card["representation"]["candidate"] == "raw"
    task = jobs.HeadTask("x", transfer_candidates=("raw",), transfer_scales=(0.5,))
    assert jobs.HeadTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
