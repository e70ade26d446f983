"""MultiLabelProbe: one binary probe per label, thresholds, persistence, contributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from auditor.explain.contributions import feature_contributions
from auditor.probes import (
    BoostedProbe,
    CalibratedProbe,
    LinearProbe,
    MultiLabelProbe,
    RuleProbe,
    load_probe,
    save_probe,
)
from tests.probes import split

N_SIGNAL = 4


def make_multilabel(
    n: int = 400, n_features: int = 60, *, n_labels: int = 3, nnz: int = 8,
    fire: float = 0.7, seed: int = 0,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """SAE-like multilabel data: float32 CSR noise plus per-label "signal" features.

    Label ``k`` is present with probability 0.4, independently of the others; when it is,
    each of its ``N_SIGNAL`` features (columns ``k*N_SIGNAL…``) fires with probability
    ``fire`` and value in [0.5, 2).
    """
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, n_labels)) < 0.4).astype(np.int64)
    noise = sp.random(n, n_features, density=nnz / n_features, format="csr",
                      random_state=seed, dtype=np.float32)
    rows, cols, vals = [], [], []
    for k in range(n_labels):
        idx = np.flatnonzero(Y[:, k])
        for j in range(N_SIGNAL):
            hit = idx[rng.random(idx.size) < fire]
            rows.append(hit)
            cols.append(np.full(hit.size, k * N_SIGNAL + j))
            vals.append(rng.uniform(0.5, 2.0, hit.size))
    signal = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n_features), dtype=np.float32,
    )
    return sp.csr_matrix(noise + signal, dtype=np.float32), Y


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, np.ndarray]:
    return make_multilabel()


# ----------------------------------------------------------------------------- fitting


def test_each_label_is_a_separately_fitted_probe(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    Xtr, Ytr, Xte, Yte = split(X, Y)
    probe = MultiLabelProbe(LinearProbe(random_state=0)).fit(Xtr, Ytr)
    assert probe.classes_.tolist() == [0, 1, 2]
    assert probe.labels_.tolist() == [0, 1, 2]
    assert probe.n_features_in_ == X.shape[1]
    assert len(probe.estimators_) == 3
    assert probe.estimators_[0] is not probe.estimators_[1]
    assert probe.estimator.get_params() == LinearProbe(random_state=0).get_params()  # unfitted
    assert not hasattr(probe.estimator, "coef_")
    proba = probe.predict_proba(Xte)
    assert proba.shape == (Xte.shape[0], 3) and proba.dtype == np.float64
    dec = probe.decision_function(Xte)
    for k in range(3):
        alone = LinearProbe(random_state=0).fit(Xtr, Ytr[:, k])
        np.testing.assert_allclose(proba[:, k], alone.predict_proba(Xte)[:, 1], rtol=0,
                                   atol=1e-12)
        np.testing.assert_allclose(dec[:, k], alone.decision_function(Xte), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(probe.estimators_[k].coef_, alone.coef_)
    pred = probe.predict(Xte)
    assert pred.shape == Yte.shape and pred.dtype == np.int64
    assert (pred == Yte).mean(axis=0).min() > 0.85  # each label learnt from its signal


def test_default_estimator_and_one_label(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    probe = MultiLabelProbe().fit(X, Y[:, :1])
    assert probe.estimator is None
    assert type(probe.estimators_[0]) is LinearProbe
    assert probe.predict_proba(X).shape == (X.shape[0], 1)
    assert probe.predict(X).shape == (X.shape[0], 1)
    # Y as a list of lists, a bool matrix or a sparse matrix is the same target.
    for Y2 in (Y.tolist(), Y.astype(bool), sp.csr_matrix(Y)):
        p2 = MultiLabelProbe(LinearProbe(random_state=0)).fit(X, Y2)
        assert p2.predict_proba(X[:3]).shape == (3, 3)


def test_thresholds_are_applied(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    probe = MultiLabelProbe(LinearProbe(random_state=0)).fit(X, Y)
    proba = probe.predict_proba(X)
    np.testing.assert_array_equal(probe.thresholds_, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(probe.predict(X), (proba >= 0.5).astype(int))
    # The same probes with other thresholds: a float for all labels, or one per label.
    probe.set_params(thresholds=0.8).fit(X, Y)
    np.testing.assert_array_equal(probe.thresholds_, [0.8, 0.8, 0.8])
    np.testing.assert_array_equal(probe.predict(X), (proba >= 0.8).astype(int))
    thr = [0.2, 0.5, 0.9]
    probe.set_params(thresholds=thr).fit(X, Y)
    assert probe.thresholds == thr  # stored unchanged
    pred = probe.predict(X)
    for k, t in enumerate(thr):
        np.testing.assert_array_equal(pred[:, k], (proba[:, k] >= t).astype(int))
    assert pred[:, 0].sum() > pred[:, 2].sum()
    # Positive iff proba >= threshold, as in choose_threshold: a threshold equal to a
    # sample's probability includes it.
    t0 = float(proba[0, 1])
    assert probe.set_params(thresholds=[0.5, t0, 0.5]).fit(X, Y).predict(X[:1])[0, 1] == 1
    with pytest.raises(ValueError, match="thresholds has shape"):
        MultiLabelProbe(thresholds=[0.5, 0.5]).fit(X, Y)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        MultiLabelProbe(thresholds=[0.5, 1.5, 0.5]).fit(X, Y)
    with pytest.raises(ValueError, match="thresholds"):  # scikit-learn's param validation
        MultiLabelProbe(thresholds=1.5).fit(X, Y)


@pytest.mark.parametrize(("Y", "match"), [
    (lambda Y: Y[:, 0], r"2-D indicator matrix .* got a 1-D y"),
    (lambda Y: np.where(np.arange(len(Y))[:, None] % 7 == 0, 2, Y),
     r"0/1 .* column 0 holds 0, 1, 2"),
    (lambda Y: np.column_stack([Y[:, 0], -Y[:, 1]]), r"0/1 .* column 1 holds -1, 0"),
    (lambda Y: np.where(Y == 1, "yes", "no"), r"0/1 .* column 0 holds 'no', 'yes'"),
    (lambda Y: np.column_stack([Y[:, :2], np.zeros(len(Y), int)]),
     r"column 2 of Y has only one class \(0 in all"),
    (lambda Y: np.column_stack([np.ones(len(Y), int), Y[:, :2]]),
     r"column 0 of Y has only one class \(1 in all"),
    (lambda Y: Y + 0.5, "Unknown label type"),
    (lambda Y: Y[:-1], "inconsistent numbers of samples"),
])
def test_bad_Y_is_refused(data: tuple[sp.csr_matrix, np.ndarray], Y: Any, match: str) -> None:
    X, Y0 = data
    with pytest.raises(ValueError, match=match):
        MultiLabelProbe().fit(X, Y(Y0))


def test_labels_name_columns(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    names = ["toxic", "pii", "medical"]
    probe = MultiLabelProbe(LinearProbe(random_state=0), labels=names).fit(X, Y)
    assert probe.labels_.tolist() == names and probe.classes_.tolist() == [0, 1, 2]
    bad = Y.copy()
    bad[:, 1] = 0
    with pytest.raises(ValueError, match=r"column 1 \('pii'\) of Y has only one class"):
        MultiLabelProbe(labels=names).fit(X, bad)
    with pytest.raises(ValueError, match="labels has 2 entries but Y has 3 columns"):
        MultiLabelProbe(labels=names[:2]).fit(X, Y)
    with pytest.raises(ValueError, match="distinct"):
        MultiLabelProbe(labels=["a", "a", "b"]).fit(X, Y)


def test_methods_follow_the_binary_probe(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    calibrated = MultiLabelProbe(CalibratedProbe(LinearProbe(random_state=0)))
    assert not hasattr(calibrated, "decision_function")
    assert not hasattr(calibrated, "contributions")
    calibrated.fit(X, Y)
    assert calibrated.predict_proba(X).shape == (X.shape[0], 3)
    rules = MultiLabelProbe(RuleProbe()).fit(X, Y)
    assert hasattr(rules, "decision_function") and not hasattr(rules, "contributions")
    assert rules.decision_function(X).shape == (X.shape[0], 3)
    with pytest.raises(ValueError, match="features"):
        rules.predict_proba(X[:, :10])


# ----------------------------------------------------------------------------- contributions


@pytest.mark.parametrize("estimator", [
    LinearProbe(feature_transform="log1p", random_state=0),
    BoostedProbe(n_estimators=20, min_df=2, n_jobs=1),
], ids=["linear", "boosted"])
def test_contributions_sum_to_decision_function(
    data: tuple[sp.csr_matrix, np.ndarray], estimator: Any
) -> None:
    X, Y = data
    probe = MultiLabelProbe(estimator).fit(X, Y)
    mats, bias = probe.contributions(X, with_bias=True)
    assert isinstance(mats, list) and len(mats) == 3 and bias.shape == (X.shape[0], 3)
    assert all(sp.issparse(m) and m.shape == X.shape for m in mats)
    dec = probe.decision_function(X)
    for k in range(3):
        np.testing.assert_allclose(np.asarray(mats[k].sum(axis=1)).ravel() + bias[:, k],
                                   dec[:, k], rtol=1e-6, atol=1e-6)
        # Label k's own signal columns carry the most weight.
        assert np.asarray(abs(mats[k]).sum(axis=0)).ravel().argmax() // N_SIGNAL == k
    no_bias = probe.contributions(X[:5])
    assert isinstance(no_bias, list) and (no_bias[1] != mats[1][:5]).nnz == 0
    # auditor.explain: one output per label, scores = decision_function.
    contrib = feature_contributions(probe, X)
    assert contrib.outputs == [0, 1, 2]
    np.testing.assert_allclose(contrib.score(), dec, rtol=1e-6, atol=1e-6)


def test_feature_contributions_of_one_label(data: tuple[sp.csr_matrix, np.ndarray]) -> None:
    X, Y = data
    probe = MultiLabelProbe(LinearProbe(random_state=0)).fit(X, Y[:, :1])
    assert feature_contributions(probe, X).outputs == [0]


# ----------------------------------------------------------------------------- persistence


def _persisted() -> list[tuple[str, MultiLabelProbe]]:
    return [
        ("default", MultiLabelProbe()),
        ("l1-thresholds-labels", MultiLabelProbe(
            LinearProbe(penalty="l1", random_state=0), thresholds=np.array([0.3, 0.5, 0.7]),
            labels=["toxic", "pii", "medical"])),
        ("boosted", MultiLabelProbe(BoostedProbe(n_estimators=20, min_df=2, n_jobs=1),
                                    thresholds=0.4)),
        ("calibrated", MultiLabelProbe(CalibratedProbe(LinearProbe(random_state=0),
                                                       method="isotonic"))),
    ]


@pytest.mark.parametrize("probe", [p for _, p in _persisted()], ids=[i for i, _ in _persisted()])
def test_round_trip(
    tmp_path: Path, data: tuple[sp.csr_matrix, np.ndarray], probe: MultiLabelProbe
) -> None:
    X, Y = data
    probe.fit(X, Y)
    out = save_probe(probe, tmp_path / "probe", card={"name": "multi"})
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["0", "1", "2"]
    assert (out / "labels" / "2" / "probe.json").exists()
    assert not (out / "labels" / "0" / "card.json").exists()
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pickle"))
    loaded = load_probe(out)
    assert type(loaded) is MultiLabelProbe
    assert all(type(a) is type(b) for a, b in zip(loaded.estimators_, probe.estimators_,
                                                   strict=True))
    if probe.estimator is None:
        assert loaded.estimator is None
    else:
        assert repr(loaded.estimator) == repr(probe.estimator)  # nested params too
    np.testing.assert_array_equal(np.asarray(loaded.thresholds), np.asarray(probe.thresholds))
    assert loaded.labels == probe.labels
    np.testing.assert_array_equal(loaded.classes_, probe.classes_)
    np.testing.assert_array_equal(loaded.labels_, probe.labels_)
    np.testing.assert_array_equal(loaded.thresholds_, probe.thresholds_)
    assert loaded.n_features_in_ == probe.n_features_in_
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    if hasattr(probe, "contributions"):
        for m1, m2 in zip(probe.contributions(X[:5]), loaded.contributions(X[:5]),
                          strict=True):
            assert (m1 != m2).nnz == 0
