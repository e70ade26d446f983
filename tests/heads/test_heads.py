"""Heads end to end on a tiny random Llama + random SAE: train, save, load, classify, explain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from auditor.cli import main
from auditor.errors import ConfigError, ProvenanceMismatch
from auditor.extract import ExtractConfig
from auditor.heads import (
    HeadConfig,
    cross_validate_candidates,
    load_head,
    load_heads,
    load_split,
    save_head,
    train_head,
)
from auditor.heads.classify import classify_store, write_predictions
from auditor.jobs.classify import heads_extract_settings
from auditor.testing import make_random_sae
from tests.heads.conftest import CONFIG, extract_to


def _decoder(sae) -> tuple[np.ndarray, np.ndarray, float]:
    return sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy(), 1.0


def test_load_split_has_every_representation(split) -> None:
    assert split.sae["max"].shape == split.sae["mean"].shape == (90, 128)
    assert split.raw is not None and split.raw.shape == (90, 32)
    assert sorted(set(split.y.tolist())) == ["sport", "weather"]
    assert split.texts is not None and len(split.texts) == 90


def test_cross_validation_scores_candidates_and_tfidf_on_same_folds(split) -> None:
    cv = cross_validate_candidates(split, folds=3)
    assert set(cv) == {"sae-max-log1p", "sae-max-binary", "sae-mean-log1p", "raw", "tfidf"}
    for m in cv.values():
        assert 0.0 <= m["macro_f1"] <= 1.0 and m["oof_proba"].shape == (90, 2)
    # keyword-separable data: the text baseline and the SAE probe both learn it
    assert cv["tfidf"]["macro_f1"] > 0.9 and cv["sae-max-log1p"]["auroc"] > 0.8


def test_sae_head_round_trip_and_threshold(split, stores, tmp_path: Path) -> None:
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    assert head.config.threshold is not None and head.config.positive_class == "sport"
    cal = head.card["calibration"]
    assert set(cal["oof_ece"]) == {"sigmoid", "none"}
    assert cal["method"] == min(cal["oof_ece"], key=cal["oof_ece"].get)
    assert (type(head.probe).__name__ == "CalibratedProbe") == (cal["method"] == "sigmoid")
    assert head.card["cross_validation"]["sae-max-log1p"]["macro_f1"] > 0.5
    out = save_head(head, tmp_path / "domain", card_markdown="# card")
    again = load_head(out)
    assert again.config == head.config
    store = stores["test"][0]
    a, b = head.read(store), again.read(store)
    np.testing.assert_allclose(head.predict_proba(a), again.predict_proba(b))
    proba = again.predict_proba(b)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    labels = again.labels(proba)
    expected = np.where(proba[:, again.config.classes.index("sport")] >= again.config.threshold,
                        "sport", "weather")
    assert labels.tolist() == expected.tolist()
    with pytest.raises(ConfigError, match="not empty"):
        save_head(head, out)
    # a target precision picks another (higher or equal) threshold
    strict = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                        positive_class="sport", target_precision=0.95)
    assert strict.config.threshold_rule.startswith("precision >= 0.95")


def test_raw_head_is_explained_through_the_sae_decoder(split, stores, sae) -> None:
    head = train_head("domain", split, candidate="raw", folds=3, sae_decoder=_decoder(sae))
    assert head.config.representation == "raw" and head.decoder is not None
    inputs = head.read(stores["test"][0])
    contrib = head.contributions(inputs)
    base = head.probe.estimator_
    np.testing.assert_allclose(contrib.score()[:, 0], base.decision_function(inputs.X),
                               rtol=1e-6, atol=1e-6)
    # independent check of the feature + decoder-bias part: w·decode(mean codes) + b
    recon = sae.decode(torch.from_numpy(inputs.activations.toarray()).float()).double().numpy()
    expected = recon @ base.feature_weights_[0] + base.feature_intercept_[0]
    feats = np.asarray(contrib.values[0].sum(1)).ravel() + contrib.bias[:, 0]
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)
    cov = contrib.coverage()
    assert ((cov >= 0) & (cov <= 1)).all()


def test_head_refuses_other_features(split, stores, tiny_llama_dir: Path, tmp_path: Path,
                                     sae_dir: Path) -> None:
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3)
    data = stores["test"][1]
    other_sae = make_random_sae(layer=2, d_sae=128, k=8, seed=9).save(tmp_path / "other")
    extract_to(data, tmp_path / "o", model=tiny_llama_dir, sae=other_sae, config=CONFIG)
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer2\.sha256"):
        head.read(tmp_path / "o")
    longer = ExtractConfig(poolings=("max",), max_length=32, max_windows=2)
    extract_to(data, tmp_path / "l", model=tiny_llama_dir, sae=sae_dir, config=longer)
    with pytest.raises(ProvenanceMismatch, match=r"extract\.max_length"):
        head.read(tmp_path / "l")
    no_mean = ExtractConfig(poolings=("max",), max_length=24, max_windows=2)
    extract_to(data, tmp_path / "m", model=tiny_llama_dir, sae=sae_dir, config=no_mean)
    head.read(tmp_path / "m")  # max pooling is all this head needs
    raw_head = train_head("domain", split, candidate="raw", folds=3,
                          sae_decoder=(np.zeros((128, 32)), np.zeros(32), 1.0))
    with pytest.raises(ProvenanceMismatch, match="pooling"):
        raw_head.read(tmp_path / "m")


def test_classify_store_columns_and_explanations(split, stores) -> None:
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    store = stores["test"][0]
    frame = classify_store(store, [head], explain=3, feature_labels={5: "five"})
    assert frame.columns == ["id", "domain.label", "domain.p.sport", "domain.p.weather",
                             "domain.domain_score", "domain.in_domain", "domain.explain",
                             "domain.explained"]
    assert frame.height == 45
    np.testing.assert_allclose(frame["domain.p.sport"] + frame["domain.p.weather"], 1.0)
    contrib = head.contributions(head.read(store))
    for i, row in enumerate(frame.iter_rows(named=True)):
        expl = row["domain.explain"]
        assert 1 <= len(expl) <= 3
        mags = [abs(e["contribution"]) for e in expl]
        assert mags == sorted(mags, reverse=True)
        top = contrib.top(i, k=3)
        assert [e["feature"] for e in expl] == [t.feature for t in top]
        for e in expl:
            assert e["activation"] > 0 and e["label"] == ("five" if e["feature"] == 5 else None)
    with pytest.raises(ConfigError, match="unique"):
        classify_store(store, [head, head])
    with pytest.raises(ConfigError, match="no heads"):
        classify_store(store, [])


def test_predictions_files_carry_provenance(split, stores, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    head = train_head("domain", split, candidate="sae-mean-log1p", folds=3)
    frame = classify_store(stores["test"][0], [head], explain=2)
    p = write_predictions(frame, tmp_path / "p.parquet", provenance={"model": {"id": "m"}})
    meta = json.loads(pq.read_schema(p).metadata[b"auditor"])
    assert meta["model"]["id"] == "m"
    assert pl.read_parquet(p).equals(frame)
    j = write_predictions(frame, tmp_path / "p.jsonl", provenance={"x": 1})
    assert pl.read_ndjson(j).height == frame.height
    assert json.loads((tmp_path / "p.jsonl.provenance.json").read_text()) == {"x": 1}
    with pytest.raises(ConfigError, match=r"\.parquet or \.jsonl"):
        write_predictions(frame, tmp_path / "p.csv", provenance={})


@pytest.mark.parametrize("candidate", ["sae-max-log1p", "raw"])
def test_feature_weights_rank_the_separating_features(split, sae, candidate: str) -> None:
    head = train_head("domain", split, candidate=candidate, folds=3,
                      sae_decoder=_decoder(sae))
    weights = head.feature_weights(k=4)
    assert set(weights) == {"sport", "weather"}
    base = head.probe.estimator_ if hasattr(head.probe, "estimator_") else head.probe
    w = (base.feature_weights_[0] if candidate != "raw"
         else head.decoder[0][:, 0])  # binary: one output, towards classes[1] = weather
    for cls, sign in (("weather", 1.0), ("sport", -1.0)):
        feats = [f for f, _ in weights[cls]]
        assert feats == list(np.argsort(-sign * w, kind="stable")[:len(feats)])
        assert all(v > 0 for _, v in weights[cls])


def test_head_config_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = HeadConfig(name="safety", classes=["benign", "insult"], positive_class="insult",
                     threshold=0.4, extract={"max_length": 128})
    assert HeadConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="representation"):
        HeadConfig(name="x", classes=["a", "b"], representation="tfidf")
    with pytest.raises(ConfigError, match="positive_class"):
        HeadConfig(name="x", classes=["a", "b"], positive_class="c")
    with pytest.raises(ConfigError, match="binary"):
        HeadConfig(name="x", classes=["a", "b", "c"], threshold=0.5)
    with pytest.raises(ConfigError, match="name"):
        HeadConfig(name="a.b", classes=["a", "b"])
    with pytest.raises(ConfigError, match="unknown head settings"):
        HeadConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match=r"no head\.json"):
        load_head(tmp_path)
    with pytest.raises(ConfigError, match="no head named nope"):
        load_heads(["nope"], directory=tmp_path)


def test_heads_must_agree_on_extraction(split) -> None:
    a = train_head("a", split, candidate="sae-max-log1p", folds=3)
    b = train_head("b", split, candidate="sae-mean-log1p", folds=3)
    cfg = heads_extract_settings([a, b])
    assert cfg["poolings"] == ["max", "mean"] and cfg["max_length"] == 24 and not cfg["raw_mean"]
    b.config.extract["max_length"] = 64
    with pytest.raises(ConfigError, match="disagree on extraction setting max_length"):
        heads_extract_settings([a, b])


def test_cli_train_eval_predict_list_show_classify(stores, tiny_llama_dir: Path, sae_dir: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    train_store, train_data, _ = stores["train"]
    test_store, test_data, _ = stores["test"]
    heads_dir = tmp_path / "heads"
    assert main(["probe", "train", "--features", str(train_store), "--labels", str(train_data),
                 "--head", "domain", "--out", str(heads_dir / "domain"), "--folds", "3",
                 "--representation", "sae-max-log1p", "--positive-class", "sport"]) == 0
    printed = capsys.readouterr().out
    assert "sae-max-log1p (head" in printed and "tfidf" in printed
    card_md = (heads_dir / "domain" / "CARD.md").read_text()
    assert card_md.startswith("# Head `domain`")
    assert f"torch {torch.__version__}, transformers " in card_md
    assert "| libraries (extraction) | gguf " in card_md

    assert main(["probe", "eval", str(heads_dir / "domain"), "--features", str(test_store),
                 "--labels", str(test_data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["documents"] == 45 and 0 <= metrics["macro_f1"] <= 1

    preds = tmp_path / "preds.parquet"
    assert main(["probe", "predict", str(heads_dir / "domain"), "--features", str(test_store),
                 "--out", str(preds), "--explain", "2"]) == 0
    capsys.readouterr()
    assert pl.read_parquet(preds).height == 45

    assert main(["heads", "list", "--dir", str(heads_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in listed] == ["domain"]
    assert main(["heads", "show", str(heads_dir / "domain"), "--features", "3"]) == 0
    shown = capsys.readouterr().out
    assert "cross-validation" in shown and "towards `sport`:" in shown

    out = tmp_path / "classified.jsonl"
    assert main(["classify", str(test_data), "--head", str(heads_dir / "domain"),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--id-column", "id",
                 "--out", str(out), "--explain", "3"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 45 and {"id", "domain.label", "domain.p.sport"} <= set(rows[0])
    assert len(rows[0]["domain.explain"]) <= 3
    side = json.loads((tmp_path / "classified.jsonl.provenance.json").read_text())
    assert side["heads"]["domain"]["classes"] == ["sport", "weather"]
    assert side["extract"]["max_length"] == 24  # the head's settings, not the default

    assert main(["classify", "goal match team score", "--head", str(heads_dir / "domain"),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--explain"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("text\n") and "domain" in printed and "p=" in printed

    # a head that does not exist: usage error naming it
    assert main(["classify", "hello", "--head", "nope", "--model", str(tiny_llama_dir),
                 "--sae", str(sae_dir)]) == 2
    assert "no head named nope" in capsys.readouterr().err


def test_audit_writes_store_predictions_and_reports(stores, tiny_llama_dir: Path,
                                                    sae_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.jobs import AuditOptions, ExtractOptions, run_audit

    train_store, _, _ = stores["train"]
    head = train_head("domain", load_split(train_store, "label"), candidate="sae-max-log1p",
                      folds=3, positive_class="sport")
    head_dir = save_head(head, tmp_path / "heads" / "domain")
    test_data = stores["test"][1]
    out = tmp_path / "audit"
    assert main(["audit", str(test_data), "--out", str(out), "--head", str(head_dir),
                 "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--id-column", "id",
                 "--explain", "2"]) == 0
    printed = capsys.readouterr().out
    assert "audited 45 documents with heads domain" in printed
    for name in ("report.html", "report.json", "report.md", "predictions.parquet"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["corpus"]["documents"] == 45
    assert list(report["heads"]) == ["domain"]
    assert report["sources"]["predictions"] == str(out / "predictions.parquet")
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.height == 45 and "domain.explain" in preds.columns
    # the same audit again returns the recorded job without recomputing
    args = ["audit", str(test_data), "--out", str(out), "--head", str(head_dir),
            "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--id-column", "id",
            "--explain", "2"]
    before = (out / "predictions.parquet").stat().st_mtime_ns
    assert main(args) == 0
    assert "audited 45 documents" in capsys.readouterr().out
    assert (out / "predictions.parquet").stat().st_mtime_ns == before
    # other options are refused, naming them and the flag that replaces the run
    assert main([*args, "--format", "json"]) != 0
    err = capsys.readouterr().err
    assert "formats" in err and "--overwrite" in err
    # a store written with other settings (here: by an older auditor version, which kept
    # no job records) is refused on a rerun, naming the key and the flag, and --overwrite
    # starts it afresh
    manifest = out / "store" / "store.json"
    record = json.loads(manifest.read_text())
    record["provenance"]["auditor_version"] = "0.0.1"
    manifest.write_text(json.dumps(record))
    (out / "_job.json").unlink()
    (out / "store" / "_job.json").unlink()
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "auditor_version" in err and "--overwrite" in err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads(manifest.read_text())["provenance"]["auditor_version"] != "0.0.1"
    assert pl.read_parquet(out / "predictions.parquet").height == 45
    # a second audit of the same data with the first as 'previous' reports drift
    extract = ExtractOptions(model=str(tiny_llama_dir), saes=(str(sae_dir),), id_column="id")
    again = run_audit(str(test_data), out=tmp_path / "audit2",
                      options=AuditOptions(heads=(str(head_dir),), extract=extract,
                                           previous=str(out / "report.json"),
                                           formats=("json",)))
    drift = json.loads((tmp_path / "audit2" / again.reports["json"]).read_text())["drift"]
    assert drift is not None
    # no heads: a report without predictions
    bare = run_audit(str(test_data), out=tmp_path / "audit3",
                     options=AuditOptions(heads=(), extract=extract, formats=("json",)))
    assert bare.predictions is None and bare.heads == ()


def test_heads_refuse_another_sae_before_extracting(stores, tiny_llama_dir: Path,
                                                   tmp_path: Path) -> None:
    """A head that cannot read the features fails before the extraction, not after it."""
    from auditor.jobs import AuditOptions, ClassifyOptions, ExtractOptions, run_audit, run_classify

    train_store, _, _ = stores["train"]
    head = train_head("domain", load_split(train_store, "label"), candidate="sae-max-log1p",
                      folds=3, positive_class="sport")
    head_dir = save_head(head, tmp_path / "heads" / "domain")
    other = make_random_sae(layer=2, d_sae=128, k=8, seed=4).save(tmp_path / "other")
    test_data = stores["test"][1]
    seen: list[Any] = []
    out = tmp_path / "audit"
    extract = ExtractOptions(model=str(tiny_llama_dir), saes=(str(other),), id_column="id")
    with pytest.raises(ProvenanceMismatch, match=r"head 'domain'.*saes\.layer2\.sha256"):
        run_audit(str(test_data), out=out,
                  options=AuditOptions(heads=(str(head_dir),), extract=extract),
                  progress=seen.append)
    # no document read, no shard written
    assert seen == [] and not (out / "store" / "store.json").exists()
    store = tmp_path / "classify-store"
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer2\.sha256"):
        run_classify(str(test_data), out=tmp_path / "classify",
                     options=ClassifyOptions(heads=(str(head_dir),), extract=extract,
                                             store=str(store)),
                     progress=seen.append)
    assert seen == [] and not (store / "store.json").exists()


def test_dictionary_annotations_found_from_the_weights_file(
        stores, tiny_llama_dir: Path, sae, tmp_path: Path) -> None:
    """Store provenance names the SAE's weights file; the dictionary sits in its folder."""
    from auditor.features import dictionary_annotations
    from auditor.jobs.dictionary import (
        DictionaryBuildOptions,
        default_dictionary_out,
        run_dictionary_build,
    )

    sae_dir = sae.save(tmp_path / "sae")
    assert dictionary_annotations(sae_dir / "sae.safetensors") == (None, None)
    assert dictionary_annotations(None) == (None, None)
    run_dictionary_build(stores["test"][1], out=default_dictionary_out(sae=str(sae_dir)),
                         options=DictionaryBuildOptions(model=str(tiny_llama_dir),
                                                        sae=str(sae_dir), id_column="id",
                                                        max_length=24, top_contexts=2))
    labels, examples = dictionary_annotations(sae_dir / "sae.safetensors")
    assert labels is not None and examples is not None
    assert len(labels) == 128 and examples
    assert all(1 <= len(v) <= 2 for v in examples.values())


def test_lightgbm_head_round_trip_explain_and_show(split, stores, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.explain import faithfulness

    head = train_head("domain", split, candidate="sae-max-lgbm", folds=3,
                      positive_class="sport")
    assert head.card["representation"]["candidate"] == "sae-max-lgbm"
    out = save_head(head, tmp_path / "lgbm")
    assert list((out / "probe").rglob("booster.txt"))  # LightGBM's text model, no pickle
    again = load_head(out)
    store = stores["test"][0]
    inputs = again.read(store)
    np.testing.assert_allclose(head.predict_proba(head.read(store)),
                               again.predict_proba(inputs))
    contrib = again.contributions(inputs)  # TreeSHAP, exact sum to the raw score
    from auditor.explain import base_probe

    np.testing.assert_allclose(contrib.score()[:, 0],
                               base_probe(again.probe).decision_function(inputs.X),
                               rtol=1e-5, atol=1e-5)
    frame = classify_store(store, [again], explain=2)
    # up to 2 features that fired, then up to 2 whose not firing counted (TreeSHAP)
    assert frame["domain.explain"].list.len().max() <= 4
    for i, expl in enumerate(frame["domain.explain"].to_list()):
        ev = contrib.evidence(i, k=2, activations=inputs.activations)
        assert [(e["feature"], e["present"]) for e in expl] == \
            [(f.feature, f.present) for f in [*ev.present, *ev.absent]]
        assert all((e["activation"] > 0) == e["present"] for e in expl)
    assert faithfulness(again, inputs, k=2, n_random=2)["documents"] == 45
    assert main(["heads", "show", str(out)]) == 0
    assert "no per-feature weights" in capsys.readouterr().out
