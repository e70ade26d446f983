"""LinearProbe: accuracy, weights in the original space, contributions, sparsity."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from auditor.probes import LinearProbe
from tests.probes import make_sparse, split


@pytest.mark.parametrize("n_classes", [2, 3])
def test_accuracy_on_sparse_signal(n_classes: int) -> None:
    X, y = make_sparse(n_classes=n_classes, seed=n_classes)
    Xtr, ytr, Xte, yte = split(X, y)
    probe = LinearProbe(random_state=0).fit(Xtr, ytr)
    assert probe.classes_.tolist() == list(range(n_classes))
    assert probe.score(Xte, yte) > 0.85
    proba = probe.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert probe.feature_weights_.shape == (1 if n_classes == 2 else n_classes, X.shape[1])


@pytest.mark.parametrize("penalty", ["l1", "l2", "elasticnet"])
@pytest.mark.parametrize("scaling", ["maxabs", "standard", "none"])
@pytest.mark.parametrize("feature_transform", ["none", "log1p", "binarize"])
def test_options_fit_and_keep_signal(penalty: str, scaling: str, feature_transform: str) -> None:
    X, y = make_sparse(n=300, n_features=80, seed=1)
    probe = LinearProbe(penalty=penalty, scaling=scaling, feature_transform=feature_transform,
                        random_state=0).fit(X, y)
    assert probe.score(X, y) > 0.8
    # Signal features (0..7) weigh more than noise ones.
    w = np.abs(probe.feature_weights_[0])
    assert w[:8].mean() > 2 * w[8:].mean()


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("feature_transform", ["none", "log1p"])
def test_contributions_sum_to_decision_function(n_classes: int, feature_transform: str) -> None:
    X, y = make_sparse(n=300, n_features=60, n_classes=n_classes, seed=2)
    probe = LinearProbe(feature_transform=feature_transform, random_state=0).fit(X, y)
    contrib, bias = probe.contributions(X[:25], with_bias=True)
    dec = probe.decision_function(X[:25])
    if n_classes == 2:
        assert sp.isspmatrix_csr(contrib) and contrib.shape == (25, 60)
        np.testing.assert_allclose(np.asarray(contrib.sum(axis=1)).ravel() + bias, dec)
    else:
        assert isinstance(contrib, list) and len(contrib) == n_classes
        total = np.column_stack([np.asarray(c.sum(axis=1)).ravel() for c in contrib])
        np.testing.assert_allclose(total + bias, dec)
    # Contributions are only where the input is non-zero.
    first = contrib if n_classes == 2 else contrib[0]
    assert first.nnz <= X[:25].nnz


def test_feature_weights_act_on_raw_features() -> None:
    X, y = make_sparse(n=300, n_features=60, seed=3)
    probe = LinearProbe(scaling="standard", random_state=0).fit(X, y)
    raw = np.asarray(X @ probe.feature_weights_.T).ravel() + probe.intercept_[0]
    np.testing.assert_allclose(raw, probe.decision_function(X))


def test_huge_width_is_never_densified() -> None:
    n, width = 200, 2_000_000
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    rows = np.repeat(np.arange(n), 5)
    cols = rng.integers(0, width, rows.size)
    cols[::5] = 10 + y  # one informative column per class
    X = sp.csr_matrix((rng.uniform(0.5, 1.5, rows.size), (rows, cols)), shape=(n, width))
    tracemalloc.start()
    t0 = time.perf_counter()
    probe = LinearProbe(random_state=0).fit(X, y)
    pred = probe.predict(X)
    contrib = probe.contributions(X)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (pred == y).mean() > 0.95
    assert contrib.shape == (n, width) and sp.issparse(contrib)
    assert peak < 400e6  # dense would be 3.2 GB
    assert elapsed < 20


def test_input_matrix_is_not_modified() -> None:
    X, y = make_sparse(n=200, n_features=40, seed=4)
    before = X.copy()
    LinearProbe(feature_transform="log1p", random_state=0).fit(X, y).contributions(X)
    assert (X != before).nnz == 0
