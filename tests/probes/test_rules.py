"""RuleProbe: recovers planted OR-rules, describes them, refuses multiclass."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from auditor.probes import RuleProbe
from auditor.probes._base import select_columns
from tests.probes import make_sparse


def _planted(n: int = 800, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Unsafe iff f3 > 1.0 or f7 fires; plus noise features (values < 1)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, 40, density=0.1, format="lil", random_state=seed)
    X[:, 3] = 0
    X[:, 7] = 0
    f3 = np.where(rng.random(n) < 0.5, rng.uniform(0.1, 2.0, n), 0.0)
    f7 = np.where(rng.random(n) < 0.2, rng.uniform(0.1, 1.0, n), 0.0)
    X[:, 3] = f3[:, None]
    X[:, 7] = f7[:, None]
    y = np.where((f3 > 1.0) | (f7 > 0), "unsafe", "safe")
    return sp.csr_matrix(X), y


def test_recovers_planted_rule() -> None:
    X, y = _planted()
    probe = RuleProbe(max_thresholds=32).fit(X, y)
    assert {c.feature for c in probe.rule_} == {3, 7}
    by_feature = {c.feature: c.threshold for c in probe.rule_}
    assert 0.85 < by_feature[3] <= 1.0
    assert by_feature[7] == 0.0
    assert probe.score(X, y) > 0.97
    text = probe.describe()
    assert text.startswith("unsafe if ") and " or " in text and "f7 > 0.00" in text
    names = [f"feat{i}" for i in range(40)]
    assert "feat3 > " in probe.describe(names)
    assert probe.rule_[-1].recall > 0.95 and probe.rule_[-1].precision > 0.95


def test_predict_is_the_rule_and_proba_is_calibrated() -> None:
    X, y = make_sparse(n=600, n_features=100, seed=3)
    probe = RuleProbe(max_features=3).fit(X, y)
    fired = np.zeros(X.shape[0], dtype=bool)
    dense = X.toarray()
    for c in probe.rule_:
        fired |= dense[:, c.feature] > c.threshold
    np.testing.assert_array_equal(probe.predict(X) == probe.classes_[1], fired)
    p = probe.predict_proba(X)[:, 1]
    assert set(np.round(p, 12)) <= {round(probe.proba_fired_, 12),
                                    round(probe.proba_not_fired_, 12)}
    assert probe.proba_fired_ > 0.5 > probe.proba_not_fired_
    np.testing.assert_allclose(probe.decision_function(X), np.log(p / (1 - p)))


def test_probabilities_are_the_smoothed_rates_by_hand() -> None:
    # One feature fires on 10 rows (9 positive) and not on 10 (1 positive): with unit
    # weights the probabilities are Laplace's (9 + 1) / (10 + 2) and (1 + 1) / (10 + 2).
    X = sp.csr_matrix(np.r_[np.ones(10), np.zeros(10)][:, None])
    y = np.r_[np.ones(9), 0, 1, np.zeros(9)].astype(int)
    probe = RuleProbe(class_weight=None).fit(X, y)
    assert [(c.feature, c.threshold) for c in probe.rule_] == [(0, 0.0)]
    assert probe.proba_fired_ == pytest.approx(10 / 12, rel=1e-12)
    assert probe.proba_not_fired_ == pytest.approx(2 / 12, rel=1e-12)
    np.testing.assert_allclose(probe.predict_proba(X)[:, 1], np.r_[[10 / 12] * 10, [2 / 12] * 10])


@pytest.mark.parametrize("empty_rows", [[0], [2, 3], [5], [4, 5], [0, 1, 2, 3, 4, 5]])
def test_select_columns_with_empty_rows(empty_rows: list[int]) -> None:
    # Rows without a stored entry, the last ones too (a document with no active feature at
    # the end of a batch made np.add.reduceat index past the data and RuleProbe crash).
    dense = np.arange(1.0, 6 * 5 + 1).reshape(6, 5) * (np.arange(5) % 2 == 0)
    dense[empty_rows] = 0
    X = sp.csr_matrix(dense)
    for columns in ([0, 2], [1, 3], [0, 1, 2, 3, 4], [4]):
        got = select_columns(X, np.array(columns))
        assert sp.issparse(got) and got.shape == (6, len(columns))
        np.testing.assert_array_equal(got.toarray(), dense[:, columns])


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_probabilities_are_the_weighted_smoothed_rates(class_weight: str | None) -> None:
    # Imbalanced (~30 % positive) so "balanced" weights differ from 1; the rule's rates are
    # recomputed here from the rule itself: (weighted positives + w̄) / (weight + 2 w̄).
    X, y = make_sparse(n=1000, n_features=60, seed=5, fire=0.5)
    y = np.where((y == 1) & (np.random.default_rng(5).random(y.size) < 0.45), 1, 0)
    probe = RuleProbe(max_features=3, class_weight=class_weight).fit(X, y)
    dense = X.toarray()
    fired = np.zeros(len(y), dtype=bool)
    for c in probe.rule_:
        fired |= dense[:, c.feature] > c.threshold
    pos = y == 1
    if class_weight is None:
        w = np.ones(len(y))
    else:
        w = np.where(pos, len(y) / (2 * pos.sum()), len(y) / (2 * (~pos).sum()))
    wbar = w.mean()
    expected_fired = (w[fired & pos].sum() + wbar) / (w[fired].sum() + 2 * wbar)
    expected_not = (w[~fired & pos].sum() + wbar) / (w[~fired].sum() + 2 * wbar)
    assert 0 < fired.sum() < len(y) and probe.rule_
    assert probe.proba_fired_ == pytest.approx(expected_fired, rel=1e-9)
    assert probe.proba_not_fired_ == pytest.approx(expected_not, rel=1e-9)


def test_max_features_and_min_precision() -> None:
    X, y = make_sparse(n=600, n_features=100, seed=4, fire=0.3)
    assert len(RuleProbe(max_features=2).fit(X, y).rule_) <= 2
    strict = RuleProbe(min_precision=0.95).fit(X, y)
    assert strict.rule_
    assert all(c.precision >= 0.95 for c in strict.rule_)


def test_no_rule_found() -> None:
    X = sp.csr_matrix(np.zeros((6, 3)))
    probe = RuleProbe().fit(X, [0, 1, 0, 1, 0, 1])
    assert probe.rule_ == ()
    assert "no rule found" in probe.describe()
    np.testing.assert_allclose(probe.predict_proba(X)[:, 1], 0.5)


def test_multiclass_is_refused() -> None:
    X, y = make_sparse(n=90, n_features=20, n_classes=3)
    with pytest.raises(ValueError, match="binary"):
        RuleProbe().fit(X, y)


def test_huge_width_is_never_densified() -> None:
    n, width = 200, 2_000_000
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    rows = np.repeat(np.arange(n), 5)
    cols = rng.integers(0, width, rows.size)
    cols[::5] = np.where(y == 1, 123_456, 7)
    X = sp.csr_matrix((rng.uniform(0.5, 1.5, rows.size), (rows, cols)), shape=(n, width))
    tracemalloc.start()
    t0 = time.perf_counter()
    probe = RuleProbe().fit(X, y)
    pred = probe.predict(X)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert probe.rule_[0].feature == 123_456
    assert (pred == y).mean() > 0.95
    assert peak < 400e6
    assert elapsed < 20
