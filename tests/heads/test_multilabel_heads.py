"""Multilabel heads on the tiny random Llama + random SAE: documents mix weather, sport and
night words, and carry every label whose words they contain (possibly none)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from auditor.cli import main
from auditor.errors import ConfigError
from auditor.explain import faithfulness
from auditor.heads import (
    HeadConfig,
    cross_validate_candidates,
    evaluate_candidates,
    label_set,
    load_head,
    load_split,
    save_head,
    train_head,
)
from auditor.heads.classify import classify_store
from tests.heads.conftest import FILLER, SPORT, WEATHER, extract_splits

NIGHT = "night moon dark midnight stars lamp sleep owl dream late".split()
WORDS = {"weather": WEATHER, "sport": SPORT, "night": NIGHT}
NAMES = ["night", "sport", "weather"]  # sorted, as load_split orders them


def _docs(n: int, seed: int) -> list[dict[str, object]]:
    """Each label independently (weather 1/2, sport 2/5, night 1/3); its words mixed in."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = [lab for lab, p in (("weather", 0.5), ("sport", 0.4), ("night", 0.33))
                  if rng.random() < p]
        pool = [w for lab in labels for w in WORDS[lab]]
        text = " ".join(rng.choice(pool if pool and rng.random() < 0.6 else FILLER)
                        for _ in range(rng.randint(8, 30)))
        rows.append({"id": f"m{seed}-{i}", "text": text, "labels": labels,
                     "tags": " | ".join(labels)})
    return rows


@pytest.fixture(scope="module")
def ml_stores(tiny_llama_dir: Path, sae_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    splits = extract_splits(_docs, tmp_path_factory.mktemp("multilabel-data"),
                            model=tiny_llama_dir, sae_dir=sae_dir,
                            passthrough=("labels", "tags"))
    return {split: (store, data, {r["id"]: r["text"] for r in rows},
                    {r["id"]: r["labels"] for r in rows})
            for split, (store, data, rows) in splits.items()}


@pytest.fixture(scope="module")
def ml_split(ml_stores):
    store, _, texts, _ = ml_stores["train"]
    return load_split(store, "labels", texts=texts, multilabel_sep="|")


@pytest.fixture(scope="module")
def ml_head(ml_split):
    return train_head("topics", ml_split, candidate="sae-max-log1p", folds=3)


def _decoder(sae) -> tuple[np.ndarray, np.ndarray, float]:
    return sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy(), 1.0


def test_multilabel_config_round_trip_and_errors() -> None:
    cfg = HeadConfig(name="topics", classes=NAMES, multilabel=True,
                     thresholds=[0.3, 0.5, 0.7], extract={"max_length": 24})
    assert cfg.task == "multilabel"
    assert HeadConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    np.testing.assert_array_equal(cfg.label_thresholds(), [0.3, 0.5, 0.7])
    default = HeadConfig(name="topics", classes=NAMES, multilabel=True)
    np.testing.assert_array_equal(default.label_thresholds(), [0.5, 0.5, 0.5])
    # a head.json written before multilabel heads existed loads with the defaults
    old = HeadConfig(name="domain", classes=["sport", "weather"], positive_class="sport",
                     threshold=0.4).to_dict()
    del old["multilabel"], old["thresholds"]
    again = HeadConfig.from_dict(old)
    assert again.task == "binary" and not again.multilabel and again.thresholds is None
    with pytest.raises(ConfigError, match="3 thresholds for 2 labels"):
        HeadConfig(name="x", classes=["a", "b"], multilabel=True, thresholds=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match=r"\[0, 1\].*'b'"):
        HeadConfig(name="x", classes=["a", "b"], multilabel=True, thresholds=[0.5, 1.5])
    with pytest.raises(ConfigError, match="multilabel heads"):
        HeadConfig(name="x", classes=["a", "b"], thresholds=[0.5, 0.5])
    with pytest.raises(ConfigError, match="per-label thresholds"):
        HeadConfig(name="x", classes=["a", "b"], multilabel=True, positive_class="a",
                   threshold=0.5)
    with pytest.raises(ConfigError, match="distinct"):
        HeadConfig(name="x", classes=["a", "a"], multilabel=True)
    with pytest.raises(ConfigError, match="not multilabel"):
        again.label_thresholds()


def test_load_split_reads_lists_and_separated_strings(ml_stores, ml_split) -> None:
    store, _, _, labels = ml_stores["train"]
    assert ml_split.multilabel and ml_split.label_names == NAMES
    assert ml_split.Y is not None and ml_split.Y.shape == (90, 3)
    assert ml_split.sae["max"].shape == (90, 128) and ml_split.raw is not None
    for i, d in enumerate(ml_split.doc_ids):
        assert sorted(ml_split.y[i]) == sorted(labels[d])
        assert [NAMES[k] for k in np.flatnonzero(ml_split.Y[i])] == sorted(labels[d])
    assert (ml_split.Y.sum(axis=1) == 0).any()  # documents without labels are kept
    assert (ml_split.Y.sum(axis=1) >= 2).any()
    by_tags = load_split(store, "tags", multilabel_sep="|")
    np.testing.assert_array_equal(by_tags.Y, ml_split.Y)
    by_map = load_split(store, {d: "|".join(v) for d, v in labels.items()}, multilabel_sep="|")
    np.testing.assert_array_equal(by_map.Y, ml_split.Y)
    assert label_set(" sport |night||", "|") == ["sport", "night"]
    # the single-label reading of the same store is unchanged
    assert not load_split(store, "tags").multilabel
    with pytest.raises(ConfigError, match="non-empty separator"):
        load_split(store, "labels", multilabel_sep="")
    with pytest.raises(ConfigError, match="at least two labels"):
        load_split(store, {d: ["night"] for d in labels}, multilabel_sep="|")


def test_cross_validation_scores_candidates_and_tfidf(ml_split) -> None:
    cv = cross_validate_candidates(ml_split, folds=3)
    assert set(cv) == {"sae-max-log1p", "sae-max-binary", "sae-mean-log1p", "raw", "tfidf"}
    for m in cv.values():
        assert m["oof_proba"].shape == (90, 3)
        assert 0.0 <= m["micro_f1"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
        assert set(m["per_label_f1"]) == set(NAMES) and m["auroc"] is not None
    assert cv["tfidf"]["macro_f1"] > 0.8 and cv["sae-max-log1p"]["auroc"] > 0.6


def test_train_save_load_round_trip_and_thresholds(ml_head, ml_stores, ml_split,
                                                   tmp_path: Path) -> None:
    head = ml_head
    assert head.config.multilabel and head.config.classes == NAMES
    assert head.config.positive_class is None and head.config.threshold is None
    thr = head.config.label_thresholds()
    assert thr.shape == (3,) and ((thr >= 0) & (thr <= 1)).all()
    np.testing.assert_array_equal(head.probe.thresholds_, thr)
    card = head.card
    assert card["calibration"]["method"] == "none" and card["calibration"]["reason"]
    assert card["threshold"]["values"] == dict(zip(NAMES, thr.tolist(), strict=True))
    assert card["training"]["documents"] == 90
    assert card["training"]["documents_without_labels"] == int((ml_split.Y.sum(1) == 0).sum())
    assert {"sae-max-log1p", "tfidf"} <= set(card["cross_validation"])
    out = save_head(head, tmp_path / "topics", card_markdown="# card")
    again = load_head(out)
    assert again.config == head.config and again.config.task == "multilabel"
    store = ml_stores["test"][0]
    proba = again.predict_proba(again.read(store))
    np.testing.assert_array_equal(head.predict_proba(head.read(store)), proba)
    assert proba.shape == (45, 3)
    # present iff p >= the label's own threshold, most probable first
    sets = again.label_sets(proba)
    for i, s in enumerate(sets):
        assert set(s) == {NAMES[k] for k in range(3) if proba[i, k] >= thr[k]}
        ps = [proba[i, NAMES.index(lab)] for lab in s]
        assert ps == sorted(ps, reverse=True)
    assert [list(v) for v in again.labels(proba)] == sets
    always_never = dataclasses.replace(again.config, thresholds=[0.0, 1.0, 0.5])
    again.config = always_never
    for i, s in enumerate(again.label_sets(proba)):
        assert "night" in s and "sport" not in s
        assert ("weather" in s) == (proba[i, 2] >= 0.5)
    weights = head.feature_weights(k=3)
    assert set(weights) == set(NAMES)
    for k, lab in enumerate(NAMES):
        w = head.probe.estimators_[k].feature_weights_[0]
        assert [f for f, _ in weights[lab]] == list(np.argsort(-w, kind="stable")[:3])


def test_binary_options_and_one_value_labels_are_refused(ml_split, ml_stores) -> None:
    with pytest.raises(ConfigError, match="positive_class is for binary heads"):
        train_head("topics", ml_split, candidate="sae-max-log1p", folds=3,
                   positive_class="sport")
    store, _, _, labels = ml_stores["train"]
    always = load_split(store, {d: [*v, "everywhere"] for d, v in labels.items()},
                        multilabel_sep="|")
    with pytest.raises(ConfigError, match="label 'everywhere' has only one value"):
        train_head("topics", always, candidate="sae-max-log1p", folds=3)
    ids = list(labels)
    rare = load_split(store, {d: [*v, "rare"] if d in ids[:2] else v
                              for d, v in labels.items()}, multilabel_sep="|")
    with pytest.raises(ConfigError, match=r"'rare': \[2, 88\]"):
        cross_validate_candidates(rare, folds=3)


def test_classify_store_multilabel_columns(ml_head, ml_stores, split) -> None:
    store = ml_stores["test"][0]
    frame = classify_store(store, [ml_head], explain=3, feature_labels={5: "five"})
    assert frame.columns == ["id", "topics.labels", "topics.label", "topics.p.night",
                             "topics.p.sport", "topics.p.weather", "topics.domain_score",
                             "topics.in_domain", "topics.explain", "topics.explained"]
    assert frame.schema["topics.labels"] == pl.List(pl.String)
    inputs = ml_head.read(store)
    proba = ml_head.predict_proba(inputs)
    np.testing.assert_allclose(frame.select(f"topics.p.{n}" for n in NAMES).to_numpy(), proba)
    contrib = ml_head.contributions(inputs)
    sets = ml_head.label_sets(proba)
    assert frame["topics.labels"].to_list() == sets
    assert frame["topics.label"].to_list() == [s[0] if s else None for s in sets]
    assert frame["topics.label"].null_count() == sum(not s for s in sets)
    explained_labels = ml_head.explained_labels(proba)
    for i, row in enumerate(frame.iter_rows(named=True)):
        explained = row["topics.label"] or NAMES[int(np.argmax(proba[i]))]
        assert explained_labels[i] == explained
        top = contrib.top(i, output=contrib.output_index(explained), k=3)
        assert [e["feature"] for e in row["topics.explain"]] == [t.feature for t in top]
        assert row["topics.explained"] == 1.0
    # a single-label head's columns are the same beside a multilabel head
    single = train_head("domain", split, candidate="sae-max-log1p", folds=3)
    alone = classify_store(ml_stores["test"][0], [single], explain=2)
    both = classify_store(ml_stores["test"][0], [single, ml_head], explain=2)
    assert both.select(alone.columns).equals(alone)
    # faithfulness on label sets: removing what supports each explained label lowers its
    # probability at least as much as any k random features (linear, one output per label)
    check = faithfulness(ml_head, inputs, k=2, n_random=4)
    assert check["documents"] == 45
    present = check["present"]
    drops = np.array(present["per_document"])
    assert (drops >= np.array(present["control_per_document"]) - 1e-12).all()
    assert present["drop"]["mean"] > 0 and 0 <= present["flip_rate"] <= 1
    assert present["difference"]["low"] > 0
    # a linear probe on sparse features names no absent evidence
    assert check["absent"]["documents"] == 0


def test_raw_multilabel_head_is_explained_through_the_decoder(ml_split, ml_stores,
                                                              sae) -> None:
    head = train_head("topics", ml_split, candidate="raw", folds=3, sae_decoder=_decoder(sae))
    assert head.config.representation == "raw" and head.decoder is not None
    assert head.decoder[0].shape == (128, 3)
    inputs = head.read(ml_stores["test"][0])
    contrib = head.contributions(inputs)
    assert contrib.outputs == NAMES
    np.testing.assert_allclose(contrib.score(), head.probe.decision_function(inputs.X),
                               rtol=1e-6, atol=1e-6)
    assert set(head.feature_weights(k=2)) == set(NAMES)
    frame = classify_store(ml_stores["test"][0], [head], explain=2)
    assert ((frame["topics.explained"] >= 0) & (frame["topics.explained"] <= 1)).all()


def test_evaluate_candidates_on_a_multilabel_test_split(ml_split, ml_stores) -> None:
    store, _, texts, _ = ml_stores["test"]
    test = load_split(store, "tags", texts=texts, multilabel_sep="|")
    full = evaluate_candidates(ml_split, test, candidates=("sae-max-log1p",))
    assert set(full) == {"sae-max-log1p", "tfidf"}
    assert full["tfidf"]["n"] == 45 and full["tfidf"]["n_train"] == 90
    assert full["tfidf"]["macro_f1"] > 0.7
    sub = evaluate_candidates(ml_split, test, candidates=("sae-max-log1p",), n_labels=60,
                              seeds=(0, 1))
    assert sub["sae-max-log1p"]["n_train"] == 60 and "macro_f1_std" in sub["sae-max-log1p"]
    with pytest.raises(ConfigError, match="test split is not"):
        evaluate_candidates(ml_split, load_split(store, "tags"), candidates=())


def test_cli_train_eval_list_predict_multilabel(ml_stores, tiny_llama_dir: Path,
                                                sae_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    train_store, train_data, _, _ = ml_stores["train"]
    test_store, test_data, _, labels = ml_stores["test"]
    heads_dir = tmp_path / "heads"
    assert main(["probe", "train", "--features", str(train_store), "--labels",
                 str(train_data), "--label-column", "labels", "--multilabel-sep", "|",
                 "--head", "topics", "--out", str(heads_dir / "topics"), "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "micro_f1" in printed and "tfidf" in printed and "thresholds: night" in printed
    head = load_head(heads_dir / "topics")
    assert head.config.multilabel and head.card["training"]["multilabel_sep"] == "|"
    card_md = (heads_dir / "topics" / "CARD.md").read_text()
    assert "| task | multilabel:" in card_md and "micro_f1" in card_md
    # separated strings train the same labels
    assert main(["probe", "train", "--features", str(train_store), "--labels",
                 str(train_data), "--label-column", "tags", "--multilabel-sep", "|",
                 "--head", "tags", "--out", str(heads_dir / "tags"), "--folds", "3",
                 "--representation", "sae-max-log1p"]) == 0
    capsys.readouterr()
    assert load_head(heads_dir / "tags").config.classes == NAMES

    assert main(["probe", "eval", str(heads_dir / "topics"), "--features", str(test_store),
                 "--labels", str(test_data), "--label-column", "labels", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["documents"] == 45 and set(metrics["per_label_f1"]) == set(NAMES)
    for key in ("micro_f1", "macro_f1", "auroc", "macro_f1_at_threshold"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["support"] == {n: sum(n in v for v in labels.values()) for n in NAMES}
    assert main(["probe", "eval", str(heads_dir / "tags"), "--features", str(test_store),
                 "--labels", str(test_data), "--label-column", "tags"]) == 0
    text = capsys.readouterr().out
    assert "macro_f1_at_threshold" in text and "f1.night" in text
    assert "subset_accuracy_at_threshold 0." in text

    assert main(["heads", "list", "--dir", str(heads_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {h["name"]: h["task"] for h in listed} == {"tags": "multilabel",
                                                      "topics": "multilabel"}
    assert main(["heads", "show", str(heads_dir / "tags"), "--features", "2"]) == 0
    assert "towards `night`:" in capsys.readouterr().out

    preds = tmp_path / "preds.parquet"
    assert main(["probe", "predict", str(heads_dir / "tags"), "--features", str(test_store),
                 "--out", str(preds), "--explain", "2"]) == 0
    capsys.readouterr()
    frame = pl.read_parquet(preds)
    assert frame.height == 45 and frame.schema["tags.labels"] == pl.List(pl.String)

    assert main(["classify", "goal match moon night", "--head", str(heads_dir / "tags"),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("text\n") and "tags" in printed
    assert main(["explain", "goal match moon night", "--head", str(heads_dir / "tags"),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--top", "2",
                 "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)["documents"][0]["tags"]
    assert set(entry["labels"]) <= set(NAMES) and entry["label"] in NAMES
    assert entry["explains"] == entry["label"] and len(entry["present"]) <= 2
    assert main(["explain", "goal match moon night", "--head", str(heads_dir / "tags"),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--top", "1",
                 "--no-tokens"]) == 0
    assert "tags: [" in capsys.readouterr().out


def test_report_counts_every_present_label(ml_head, ml_stores) -> None:
    from auditor.report import build_report

    store = ml_stores["test"][0]
    frame = classify_store(store, [ml_head], explain=2)
    report = build_report(store, predictions=frame)
    section = report["heads"]["topics"]
    assert section["multilabel"] is True
    sets = frame["topics.labels"].to_list()
    for name in NAMES:
        assert section["label_counts"].get(name, 0) == sum(name in s for s in sets)
    assert section["label_counts"].get("(none)", 0) == sum(not s for s in sets)
    # each label is profiled against the documents without it
    assert set(section["top_features"]) <= set(NAMES)
