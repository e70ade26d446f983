"""Out-of-domain models: separation on tiny data, persistence, classify columns, reports."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.heads import load_head, load_split, save_head, train_head
from auditor.heads.card import render_card
from auditor.heads.classify import classify_store, write_predictions
from auditor.heads.domain import (
    DOMAIN_FILE,
    DOMAIN_JSON,
    fit_domain,
    load_domain,
    save_domain,
)
from auditor.report import build_report
from auditor.report.render import render_html, render_markdown


def _cluster(n: int, columns: range, seed: int, centres: int = 3) -> sp.csr_matrix:
    """``n`` documents near one of ``centres`` random sparse patterns over ``columns``."""
    rng = np.random.default_rng(seed)
    proto_rng = np.random.default_rng(1000 + columns.start)  # same centres per column range
    cols = np.array(columns)
    protos = [proto_rng.choice(cols, size=12, replace=False) for _ in range(centres)]
    X = np.zeros((n, 128))
    for i in range(n):
        active = protos[i % centres]
        keep = active[rng.random(len(active)) < 0.8]
        X[i, keep] = rng.gamma(2.0, 1.0, size=len(keep))
        noise = rng.choice(cols, size=2, replace=False)
        X[i, noise] += rng.gamma(1.0, 0.5, size=2)
    return sp.csr_matrix(X)


@pytest.fixture(scope="module")
def fitted():
    X = _cluster(200, range(0, 64), seed=0)
    labels = ["a" if i % 3 else "b" for i in range(200)]
    return fit_domain(X, labels, pooling="max", n_ref=60, random_state=0)


def test_in_domain_docs_pass_and_far_docs_fail(fitted) -> None:
    near = _cluster(100, range(0, 64), seed=7)  # new documents, same distribution
    far = _cluster(100, range(64, 128), seed=8)  # disjoint features
    s_near, s_far = fitted.score(near), fitted.score(far)
    assert fitted.in_domain(s_near).mean() >= 0.9
    assert not fitted.in_domain(s_far).any()
    assert s_far.max() < s_near.min()
    held = fitted.settings["heldout"]
    assert 0.97 <= held["in_domain_share"] <= 1.0
    assert fitted.settings["threshold"] == pytest.approx(held["quantiles"]["0.02"])
    # stratified, at most n_ref references; only the columns they use are stored
    assert len(fitted.refs) == 60 and fitted.refs.dtype == np.float16
    assert fitted.columns.max() < 64
    # an empty document is in nobody's domain
    assert not fitted.in_domain(fitted.score(sp.csr_matrix((1, 128))))[0]


def test_threshold_comes_from_out_of_fold_scores() -> None:
    # every document is a reference of the final model: scored against itself, each
    # would have a nearest-neighbour similarity of 1
    X = _cluster(100, range(0, 64), seed=3)
    model = fit_domain(X, ["a"] * 100, pooling="max", k=1)
    assert model.settings["n_ref"] == 100
    assert model.settings["heldout"]["quantiles"]["0.5"] < 0.99
    assert model.score(X).min() > 0.999


def test_fit_refuses_bad_settings() -> None:
    X = _cluster(10, range(0, 64), seed=0)
    with pytest.raises(ConfigError, match="k=0"):
        fit_domain(X, ["a"] * 10, pooling="max", k=0)
    with pytest.raises(ConfigError, match="at least 5"):
        fit_domain(X[:3], ["a"] * 3, pooling="max")
    with pytest.raises(ConfigError, match="128 features"):
        fit_domain(X, ["a"] * 10, pooling="max").score(sp.csr_matrix((2, 64)))


def test_round_trip(fitted, tmp_path: Path) -> None:
    save_domain(fitted, tmp_path)
    back = load_domain(tmp_path)
    assert back is not None
    assert back.settings == fitted.settings
    X = _cluster(30, range(0, 64), seed=5)
    np.testing.assert_array_equal(back.score(X), fitted.score(X))
    assert load_domain(tmp_path / "nothing") is None


def test_corrupt_or_mismatched_files_name_the_file(fitted, tmp_path: Path) -> None:
    save_domain(fitted, tmp_path)
    data = (tmp_path / DOMAIN_FILE).read_bytes()
    (tmp_path / DOMAIN_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="unreadable domain model") as e:
        load_domain(tmp_path)
    assert e.value.path == str(tmp_path / DOMAIN_FILE)
    (tmp_path / DOMAIN_FILE).write_bytes(data)
    settings = (tmp_path / DOMAIN_JSON).read_text()
    (tmp_path / DOMAIN_JSON).write_text(settings.replace('"n_ref": 60', '"n_ref": 61'))
    with pytest.raises(ConfigError, match=r"do not match domain\.json") as e:
        load_domain(tmp_path)
    assert e.value.path == str(tmp_path / DOMAIN_FILE)
    (tmp_path / DOMAIN_JSON).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable domain settings") as e:
        load_domain(tmp_path)
    assert e.value.path == str(tmp_path / DOMAIN_JSON)
    (tmp_path / DOMAIN_JSON).unlink()
    with pytest.raises(ConfigError, match=r"domain\.json is missing"):
        load_domain(tmp_path)


# ------------------------------------------------------------------ on a tiny real head


@pytest.fixture(scope="module")
def head(split):
    return train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")


def test_train_head_fits_a_domain_model(head, split) -> None:
    assert head.domain is not None
    assert head.domain.pooling == "max"
    assert head.card["domain"]["n_ref"] == len(split.y)  # 90 < 300: every document
    assert "## Domain" in render_card(head.config.to_dict(), head.card)


def test_classify_columns_and_persistence(head, stores, tmp_path: Path) -> None:
    store = stores["test"][0]
    frame = classify_store(store, [head], explain=2)
    assert frame.columns == ["id", "domain.label", "domain.p.sport", "domain.p.weather",
                             "domain.domain_score", "domain.in_domain", "domain.explain",
                             "domain.explained"]
    assert frame.schema["domain.in_domain"] == pl.Boolean
    scores = frame["domain.domain_score"].to_numpy()
    np.testing.assert_array_equal(frame["domain.in_domain"].to_numpy(),
                                  scores >= head.domain.threshold)
    assert frame["domain.in_domain"].mean() > 0.5  # the test split is like the training one

    saved = save_head(head, tmp_path / "h")
    assert (saved / DOMAIN_FILE).is_file() and (saved / DOMAIN_JSON).is_file()
    loaded = load_head(saved)
    again = classify_store(store, [loaded])
    # refs are stored in float16 from the start, so the scores survive the round trip
    np.testing.assert_allclose(again["domain.domain_score"].to_numpy(), scores, rtol=1e-12)

    old = tmp_path / "old"
    shutil.copytree(saved, old)
    (old / DOMAIN_FILE).unlink()
    (old / DOMAIN_JSON).unlink()
    plain = classify_store(store, [load_head(old)])
    assert plain.columns == ["id", "domain.label", "domain.p.sport", "domain.p.weather"]

    (saved / DOMAIN_FILE).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable domain model") as e:
        classify_store(store, [load_head(saved)])
    assert DOMAIN_FILE in str(e.value)


def test_multilabel_head_has_a_domain_model(stores) -> None:
    store, _, texts = stores["train"]
    labels = {d: ["sport" if d.startswith("s") else "weather"] for d in texts}
    ml = load_split(store, labels, multilabel_sep="|")
    head = train_head("topics", ml, candidate="sae-max-log1p", folds=3)
    assert head.domain is not None
    frame = classify_store(stores["test"][0], [head])
    assert frame.columns[-2:] == ["topics.domain_score", "topics.in_domain"]


def test_report_counts_documents_outside_every_domain(head, stores, tmp_path: Path
                                                       ) -> None:
    store = stores["test"][0]
    frame = classify_store(store, [head])
    n = frame.height
    # a second head whose domain excludes the first 10 documents; the first head's
    # excludes the first 4 and documents 20-29
    first = np.ones(n, dtype=bool)
    first[:4] = False
    first[20:30] = False
    second = np.ones(n, dtype=bool)
    second[:10] = False
    preds = frame.with_columns(pl.Series("domain.in_domain", first)).with_columns(
        pl.col("domain.label").alias("other.label"),
        pl.col("domain.p.sport").alias("other.p.sport"),
        pl.col("domain.p.weather").alias("other.p.weather"),
        pl.Series("other.in_domain", second))
    report = build_report(store, predictions=preds)
    assert report["domain"] == {"documents": n, "heads": ["domain", "other"],
                                "outside": {"domain": 14, "other": 10},
                                "outside_every": 4, "unknown": 0}
    md = render_markdown(report)
    assert f"Outside every head's domain: 4 of {n} documents" in md
    assert f"outside other's domain: 10 of {n}" in md
    page = html.unescape(render_html(report))
    assert f"Outside every head's domain: 4 of {n} documents" in page
    assert '<div class="v">4</div><div class="k">outside every head\'s domain</div>' in page

    # through a JSONL file the domain columns keep their types
    jsonl = write_predictions(preds, tmp_path / "p.jsonl", provenance={})
    assert build_report(store, predictions=jsonl)["domain"] == report["domain"]

    plain = build_report(store, predictions=frame.drop("domain.domain_score",
                                                       "domain.in_domain"))
    assert plain["domain"] is None
    assert "domain:" not in render_markdown(plain)
