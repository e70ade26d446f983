"""BoostedProbe: accuracy, column selection, SHAP contributions in every output shape."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from auditor.probes import BoostedProbe, LinearProbe, split_contributions
from tests.probes import make_sparse, split

FAST: dict[str, Any] = {"n_estimators": 60, "learning_rate": 0.2, "n_jobs": 1}


@pytest.mark.parametrize("n_classes", [2, 3])
def test_accuracy_on_sparse_signal(n_classes: int) -> None:
    X, y = make_sparse(n_classes=n_classes, seed=n_classes)
    Xtr, ytr, Xte, yte = split(X, y)
    probe = BoostedProbe(**FAST).fit(Xtr, ytr)
    assert probe.score(Xte, yte) > 0.8
    assert 1 <= probe.best_iteration_ <= FAST["n_estimators"]
    np.testing.assert_allclose(probe.predict_proba(Xte).sum(axis=1), 1.0)


def test_beats_linear_on_interactions() -> None:
    # XOR of two features: no linear probe can do better than chance.
    rng = np.random.default_rng(0)
    n = 1200
    a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
    y = (a ^ b).astype(int)
    X = sp.random(n, 100, density=0.05, format="csr", random_state=0)
    X = sp.csr_matrix(sp.hstack([sp.csr_matrix(np.column_stack([a, b]).astype(float)), X]))
    Xtr, ytr, Xte, yte = split(X, y)
    boosted = BoostedProbe(**FAST).fit(Xtr, ytr).score(Xte, yte)
    linear = LinearProbe(random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert boosted > 0.95
    assert linear < 0.7


def test_min_df_and_max_features_select_columns() -> None:
    X, y = make_sparse(n=300, n_features=500, nnz=3, seed=5)
    df = np.bincount(X.indices, minlength=500)
    probe = BoostedProbe(min_df=5, **FAST).fit(X, y)
    np.testing.assert_array_equal(probe.selected_features_, np.flatnonzero(df >= 5))
    top = BoostedProbe(min_df=1, max_features=10, **FAST).fit(X, y)
    assert top.selected_features_.size == 10
    assert df[top.selected_features_].min() >= np.sort(df)[-10]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("dense", [False, True])
def test_contributions_sum_to_raw_score(n_classes: int, dense: bool) -> None:
    X, y = make_sparse(n=300, n_features=50, n_classes=n_classes, seed=6)
    probe = BoostedProbe(min_df=3, **FAST).fit(X, y)
    Xq = X[:30].toarray() if dense else X[:30]
    contrib, bias = probe.contributions(Xq, with_bias=True)
    raw = probe.decision_function(Xq)
    mats = [contrib] if n_classes == 2 else contrib
    assert len(mats) == (1 if n_classes == 2 else n_classes)
    for m in mats:
        assert sp.isspmatrix_csr(m) and m.shape == (30, 50)
        # Only selected columns can carry a contribution.
        assert np.isin(m.indices, probe.selected_features_).all()
    total = np.column_stack([np.asarray(m.sum(axis=1)).ravel() for m in mats])
    np.testing.assert_allclose(total + bias.reshape(30, -1), raw.reshape(30, -1), atol=1e-6)


def _blocks(n: int, width: int, n_outputs: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, n_outputs * width))


@pytest.mark.parametrize("kind", ["dense-binary", "dense-multi", "sparse-binary",
                                  "sparse-multi-list", "sparse-multi-wide"])
def test_split_contributions_normalises_every_shape(kind: str) -> None:
    columns = np.array([2, 5, 9])
    n_outputs = 1 if "binary" in kind else 3
    arr = _blocks(4, columns.size + 1, n_outputs, seed=len(kind))
    raw: Any
    if kind.startswith("dense"):
        raw = arr
    elif kind == "sparse-multi-list":
        raw = [sp.csr_matrix(arr[:, k * 4:(k + 1) * 4]) for k in range(3)]
    else:
        raw = sp.csr_matrix(arr)
    mats, bias = split_contributions(raw, n_outputs=n_outputs, columns=columns, n_features=12)
    assert len(mats) == n_outputs and bias.shape == (4, n_outputs)
    for k, m in enumerate(mats):
        block = arr[:, k * 4:(k + 1) * 4]
        expected = np.zeros((4, 12))
        expected[:, columns] = block[:, :3]
        np.testing.assert_allclose(m.toarray(), expected)
        np.testing.assert_allclose(bias[:, k], block[:, 3])


def test_split_contributions_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="unexpected pred_contrib shape"):
        split_contributions(np.zeros((2, 7)), n_outputs=2, columns=np.arange(3), n_features=5)


def test_huge_width_is_never_densified() -> None:
    n, width = 200, 2_000_000
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    rows = np.repeat(np.arange(n), 5)
    cols = rng.integers(0, width, rows.size)
    cols[::5] = 10 + y
    X = sp.csr_matrix((rng.uniform(0.5, 1.5, rows.size), (rows, cols)), shape=(n, width))
    tracemalloc.start()
    t0 = time.perf_counter()
    probe = BoostedProbe(**FAST).fit(X, y)
    pred = probe.predict(X)
    contrib = probe.contributions(X)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (pred == y).mean() > 0.95
    assert probe.selected_features_.size < 10  # min_df=5 keeps the informative columns
    assert contrib.shape == (n, width)
    assert peak < 400e6
    assert elapsed < 20
