"""Metrics, thresholds and calibration against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from auditor.errors import ConfigError
from auditor.probes import (
    BoostedProbe,
    CalibratedProbe,
    LinearProbe,
    choose_threshold,
    cross_validate_probe,
    evaluate_probe,
    expected_calibration_error,
    learning_curve,
)
from auditor.probes.calibration import fit_isotonic, fit_platt
from tests.probes import make_sparse, split

# ----------------------------------------------------------------------------- metrics


def test_evaluate_binary_by_hand() -> None:
    y = [0, 0, 1, 1]
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    m = evaluate_probe(y, np.column_stack([1 - p1, p1]), [0, 1])
    assert m["accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # bins: 0.9 (both right) -> |1 - 0.9|; 0.6 (both wrong) -> |0 - 0.6|; each half the data
    assert m["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["support"] == [2, 2]
    assert m["classes"] == [0, 1] and m["n"] == 4


def test_evaluate_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    classes = np.array(["a", "b", "c"])
    y = classes[rng.integers(0, 3, 60)]
    proba = rng.dirichlet(np.ones(3), size=60)
    m = evaluate_probe(y, proba, classes)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr",
                                                     labels=classes))
    pred = classes[proba.argmax(axis=1)]
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert sum(m["support"]) == 60 and len(m["confusion_matrix"]) == 3
    assert np.trace(np.array(m["confusion_matrix"])) == np.sum(pred == y)


def test_evaluate_single_class_and_bad_input() -> None:
    m = evaluate_probe([1, 1], np.array([[0.2, 0.8], [0.4, 0.6]]), [0, 1])
    assert m["auroc"] is None and m["pr_auc"] is None and m["accuracy"] == 1.0
    with pytest.raises(ConfigError, match="not in classes"):
        evaluate_probe([2], np.array([[0.5, 0.5]]), [0, 1])
    with pytest.raises(ConfigError, match="n_samples, n_classes"):
        evaluate_probe([0, 1], np.array([0.5, 0.5]), [0, 1])


def test_ece_tiny_example() -> None:
    # conf 0.95 right, 0.95 wrong, 0.55 right, 0.25 wrong -> bins 14, 14, 8, 3
    ece = expected_calibration_error([True, False, True, False], [0.95, 0.95, 0.55, 0.25])
    expected = 0.5 * abs(0.5 - 0.95) + 0.25 * abs(1 - 0.55) + 0.25 * abs(0 - 0.25)
    assert ece == pytest.approx(expected)
    assert expected_calibration_error([True], [1.0]) == 0.0


def test_learning_curve_and_cross_validation() -> None:
    X, y = make_sparse(n=400, n_features=80, seed=7)
    Xtr, ytr, Xte, yte = split(X, y)
    curve = learning_curve(lambda: LinearProbe(random_state=0), Xtr, ytr,
                           sizes=(20, 100, None), test=(Xte, yte))
    assert [r["n_train"] for r in curve] == [20, 100, Xtr.shape[0]]
    assert curve[-1]["accuracy"] > 0.85 and curve[-1]["accuracy"] >= curve[0]["accuracy"] - 0.05
    cv_curve = learning_curve(LinearProbe(random_state=0), X, y, sizes=(50, 10_000), folds=3)
    assert cv_curve[0]["n_train"] == 50 and "accuracy_std" in cv_curve[0]
    cv = cross_validate_probe(LinearProbe(random_state=0), X, y, folds=3)
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    assert cv["mean"]["accuracy"] > 0.85 and cv["std"]["accuracy"] < 0.1
    assert np.sum(cv["confusion_matrix"]) == X.shape[0]


# ----------------------------------------------------------------------------- thresholds

Y = [0, 0, 1, 1, 1, 0, 1]
S = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
# t=0.7: P 1, R .25 | 0.6: .5, .25 | 0.5: .67, .5 | 0.4: .75, .75 | 0.3: .8, 1 | 0.2 .67 | 0.1


def test_choose_threshold_precision_target() -> None:
    assert choose_threshold(Y, S, target_precision=0.75) == (0.3, 0.8, 1.0)
    assert choose_threshold(Y, S, target_precision=0.9) == (0.7, 1.0, 0.25)


def test_choose_threshold_recall_target() -> None:
    assert choose_threshold(Y, S, target_recall=0.6) == (0.3, 0.8, 1.0)
    assert choose_threshold(Y, S, target_recall=0.25) == (0.7, 1.0, 0.25)
    t = choose_threshold(Y, S, target_recall=0.75, pos_label=0)  # negatives as positives
    assert t.recall >= 0.75


def test_choose_threshold_ties_and_errors() -> None:
    # Tied scores form one operating point.
    t = choose_threshold([1, 0, 1, 0], [0.9, 0.9, 0.5, 0.1], target_precision=0.5)
    assert t == (0.5, 2 / 3, 1.0)
    with pytest.raises(ConfigError, match="no threshold reaches precision 1"):
        choose_threshold([1, 0], [0.2, 0.9], target_precision=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        choose_threshold(Y, S, target_precision=0.5, target_recall=0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        choose_threshold(Y, S)
    with pytest.raises(ConfigError, match="no positive"):
        choose_threshold([0, 0], [0.1, 0.2], target_recall=0.5)


# ----------------------------------------------------------------------------- calibration


def test_fit_platt_recovers_parameters() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=20_000)
    t = rng.random(s.size) < expit(2.0 * s - 1.0)
    a, b = fit_platt(s, t)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


def _reference_platt(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Platt's fit done independently: Newton steps on the raw (unscaled) scores, with
    Platt's smoothed targets, to a gradient of ~0."""
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    tt = np.where(t, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    design = np.column_stack([s, np.ones_like(s)])
    ab = np.zeros(2)
    for _ in range(100):
        p = expit(design @ ab)
        grad = design.T @ (p - tt)
        hess = design.T @ (design * (p * (1 - p))[:, None])
        ab -= np.linalg.solve(hess, grad)
        if np.abs(grad).max() < 1e-10:
            break
    return float(ab[0]), float(ab[1])


@pytest.mark.parametrize(("spread", "offset"), [(10.0, 5.0), (0.05, -3.0)])
def test_fit_platt_is_a_logistic_fit_on_the_raw_scores(spread: float, offset: float) -> None:
    # fit_platt standardises the scores for its optimiser; the slope it returns must be on
    # the raw scale again. Scores of spread ~1 (as above) cannot tell the two apart.
    rng = np.random.default_rng(3)
    s = offset + spread * rng.normal(size=4000)
    t = rng.random(s.size) < expit(1.5 * (s - offset) / spread + 0.4)
    a, b = fit_platt(s, t)
    ref_a, ref_b = _reference_platt(s, t)
    assert a == pytest.approx(ref_a, rel=1e-4) and b == pytest.approx(ref_b, rel=1e-4, abs=1e-4)
    q = offset + spread * np.linspace(-3, 3, 61)
    np.testing.assert_allclose(expit(a * q + b), expit(ref_a * q + ref_b), atol=1e-5)


def test_calibrators_are_fitted_on_held_out_rows_only() -> None:
    # A 1-nearest-neighbour base estimator memorises its training rows (probability exactly
    # the row's label) and knows nothing about others (the labels are independent of X).
    # Calibrated on held-out rows, the probabilities stay near the base rate; a calibrator
    # that saw the training rows would trust the scores and say ~0 or ~1.
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(4)
    X = rng.normal(size=(1000, 5))
    y = rng.random(1000) < 0.5
    probe = CalibratedProbe(KNeighborsClassifier(n_neighbors=1), random_state=0).fit(X, y)
    unseen = probe.predict_proba(rng.normal(size=(300, 5)))[:, 1]
    seen = probe.predict_proba(X)[:, 1]  # even on the rows the estimator memorised
    for p in (unseen, seen):
        assert float(np.abs(p - y.mean()).max()) < 0.15, (p.min(), p.max())
    assert abs(probe.calibrators_[0]["a"]) < 1.0


def test_fit_isotonic_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=300)
    t = rng.random(300) < expit(s)
    xs, ys = fit_isotonic(s, t)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, t)
    q = np.linspace(-4, 4, 50)
    np.testing.assert_allclose(np.interp(q, xs, ys), iso.predict(q))


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_calibrated_probe(method: str, n_classes: int) -> None:
    X, y = make_sparse(n=900, n_features=80, n_classes=n_classes, seed=8)
    Xtr, ytr, Xte, yte = split(X, y)
    probe = CalibratedProbe(LinearProbe(C=100.0, random_state=0), method=method).fit(Xtr, ytr)
    proba = probe.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert len(probe.calibrators_) == (1 if n_classes == 2 else n_classes)
    m = evaluate_probe(yte, proba, probe.classes_)
    assert m["accuracy"] > 0.8
    assert m["ece"] < 0.12


def test_calibrated_boosted_uses_raw_scores() -> None:
    X, y = make_sparse(n=600, n_features=60, n_classes=3, seed=9)
    probe = CalibratedProbe(BoostedProbe(n_estimators=40, n_jobs=1)).fit(X, y)
    assert probe.score(X, y) > 0.8
    with pytest.raises(ValueError, match="at least 2 samples of each class"):
        CalibratedProbe(LinearProbe()).fit(X[:4], [0, 0, 0, 1])
