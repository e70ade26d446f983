"""Probability calibration of a probe on a held-out split, with pickle-free calibrators."""

from __future__ import annotations

from numbers import Real
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from auditor.probes._base import (
    ProbeInputError,
    binary_proba,
    classes_of,
    validated_fit_data,
    validated_input,
)

__all__ = ["CalibratedProbe", "fit_isotonic", "fit_platt"]


def fit_platt(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Fit Platt scaling ``p = sigmoid(a * score + b)`` by maximum likelihood.

    Uses Platt's smoothed targets (``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``) so the fit
    is finite on separable data.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Decision scores.
    targets : ndarray of shape (n_samples,)
        1 for the positive class, 0 otherwise.

    Returns
    -------
    a, b : float
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets).astype(bool).ravel()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    tt = np.where(t, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = float(np.std(s)) or 1.0
    z = s / scale

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        f = ab[0] * z + ab[1]
        nll = -(tt * log_expit(f) + (1 - tt) * log_expit(-f)).sum()
        g = expit(f) - tt
        return float(nll), np.array([float(g @ z), float(g.sum())])

    prior = np.log((n_neg + 1.0) / (n_pos + 1.0))
    res = minimize(loss, np.array([1.0, -prior]), jac=True, method="L-BFGS-B")
    a, b = res.x
    return float(a / scale), float(b)


def fit_isotonic(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit an increasing isotonic map score → probability; return its knots.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
    targets : ndarray of shape (n_samples,)
        1 for the positive class, 0 otherwise.

    Returns
    -------
    x_thresholds, y_thresholds : ndarray
        ``IsotonicRegression``'s ``X_thresholds_`` / ``y_thresholds_``; the map is
        ``np.interp(score, x_thresholds, y_thresholds)`` (clipped at the ends).
    """
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64))
    return (np.asarray(iso.X_thresholds_, dtype=np.float64),
            np.asarray(iso.y_thresholds_, dtype=np.float64))


class CalibratedProbe(ClassifierMixin, BaseEstimator):
    """A probe whose probabilities are recalibrated on a held-out split.

    The base estimator is cloned and fitted on ``1 - holdout_fraction`` of the data
    (stratified); one calibrator per output (binary: the positive class; multiclass: each
    class one-vs-rest, then renormalised) maps its decision scores to probabilities on the
    rest. Calibrators are plain arrays (Platt ``a, b`` or isotonic knots), so the fitted
    probe can be saved without pickle (see :func:`auditor.probes.save_probe`).

    Parameters
    ----------
    estimator : classifier
        Unfitted probe with ``decision_function`` or ``predict_proba``.
    method : {'sigmoid', 'isotonic'}, default 'sigmoid'
        Platt scaling or isotonic regression. Isotonic needs more held-out data (≳ 1,000).
    holdout_fraction : float, default 0.2
        Share of the data used for calibration only.
    random_state : int, RandomState or None, default 0
        Seeds the split.

    Attributes
    ----------
    estimator_ : classifier
        The base estimator fitted on the training part.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    calibrators_ : list of dict
        Per output: ``{'a': float, 'b': float}`` (sigmoid) or ``{'x': ndarray,
        'y': ndarray}`` (isotonic).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "estimator": [HasMethods(["fit"])],
        "method": [StrOptions({"sigmoid", "isotonic"})],
        "holdout_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator: Any,
        *,
        method: str = "sigmoid",
        holdout_fraction: float = 0.2,
        random_state: Any = 0,
    ) -> None:
        self.estimator = estimator
        self.method = method
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        base = get_tags(self.estimator)
        tags.input_tags.sparse = base.input_tags.sparse
        tags.classifier_tags.multi_class = base.classifier_tags.multi_class
        tags.classifier_tags.poor_score = base.classifier_tags.poor_score
        return tags

    def _scores(self, X: Any) -> np.ndarray:
        """Base scores, one column per calibrated output."""
        est = self.estimator_
        if hasattr(est, "decision_function"):
            s = np.asarray(est.decision_function(X), dtype=np.float64)
            return s.reshape(-1, 1) if s.ndim == 1 else s
        p = np.asarray(est.predict_proba(X), dtype=np.float64)
        return p[:, 1:] if p.shape[1] == 2 else p

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any) -> CalibratedProbe:
        """Fit the base estimator on a split and the calibrators on the rest.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        CalibratedProbe
            ``self``, fitted.

        Raises
        ------
        ProbeInputError
            Fewer than 2 classes, or a class with fewer than 2 samples (no stratified split).
        """
        X, y = validated_fit_data(self, X, y)
        classes, y_idx = classes_of(y, estimator="CalibratedProbe")
        counts = np.bincount(y_idx)
        if counts.min() < 2:
            raise ProbeInputError(
                f"CalibratedProbe needs at least 2 samples of each class for its held-out "
                f"split; class {classes[int(np.argmin(counts))]!r} has {counts.min()}"
            )
        n = len(y)
        n_cal = min(max(int(np.ceil(self.holdout_fraction * n)), len(classes)), n - len(classes))
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        tr, ca = train_test_split(np.arange(n), test_size=n_cal, stratify=y_idx,
                                  random_state=seed)
        tr.sort()
        ca.sort()
        base = clone(self.estimator)
        if "random_state" in base.get_params() and base.get_params()["random_state"] is None:
            base.set_params(random_state=int(seed))  # reproducible given our random_state
        self.estimator_ = base.fit(X[tr], y[tr])
        if not np.array_equal(self.estimator_.classes_, classes):
            raise ProbeInputError("the base estimator's classes_ differ from y's classes")
        self.classes_ = classes
        scores = self._scores(X[ca])
        targets = (
            (y_idx[ca] == 1)[:, None] if scores.shape[1] == 1
            else y_idx[ca][:, None] == np.arange(len(classes))[None, :]
        )
        self.calibrators_: list[dict[str, Any]] = []
        for k in range(scores.shape[1]):
            if self.method == "sigmoid":
                a, b = fit_platt(scores[:, k], targets[:, k])
                self.calibrators_.append({"a": a, "b": b})
            else:
                xs, ys = fit_isotonic(scores[:, k], targets[:, k])
                self.calibrators_.append({"x": xs, "y": ys})
        return self

    def _calibrate(self, scores: np.ndarray) -> np.ndarray:
        out = np.empty_like(scores)
        for k, cal in enumerate(self.calibrators_):
            if "a" in cal:
                out[:, k] = expit(cal["a"] * scores[:, k] + cal["b"])
            else:
                out[:, k] = np.interp(scores[:, k], cal["x"], cal["y"])
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = validated_input(self, X)
        p = self._calibrate(self._scores(X))
        if p.shape[1] == 1:
            return binary_proba(p[:, 0])
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        return np.divide(p, total, out=uniform, where=total > 0)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])

    # ------------------------------------------------------------------ persistence

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self)
        arrays: dict[str, np.ndarray] = {}
        for k, cal in enumerate(self.calibrators_):
            if "a" in cal:
                arrays[f"cal.{k}.ab"] = np.array([cal["a"], cal["b"]], dtype=np.float64)
            else:
                arrays[f"cal.{k}.x"] = cal["x"]
                arrays[f"cal.{k}.y"] = cal["y"]
        return {"n_calibrators": len(self.calibrators_)}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        cals: list[dict[str, Any]] = []
        for k in range(int(meta["n_calibrators"])):
            if f"cal.{k}.ab" in arrays:
                ab = arrays[f"cal.{k}.ab"]
                cals.append({"a": float(ab[0]), "b": float(ab[1])})
            else:
                cals.append({"x": np.asarray(arrays[f"cal.{k}.x"], dtype=np.float64),
                             "y": np.asarray(arrays[f"cal.{k}.y"], dtype=np.float64)})
        self.calibrators_ = cals
        self.estimator_ = meta["estimator"]
