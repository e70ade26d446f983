"""A few-feature OR-rule classifier: "unsafe if f123 > 0.80 or f456 > 1.20"."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.special import logit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from auditor.probes._base import (
    binary_proba,
    check_binary,
    sample_weights,
    select_columns,
    validated_fit_data,
    validated_input,
)

__all__ = ["RuleCondition", "RuleProbe"]


class RuleCondition(NamedTuple):
    """One condition of an OR-rule: ``x[feature] > threshold``.

    ``precision`` and ``recall`` are the (unweighted) training precision and recall of the
    rule made of this condition and all the ones before it.
    """

    feature: int
    threshold: float
    precision: float
    recall: float


class RuleProbe(ClassifierMixin, BaseEstimator):
    """Binary OR-rule over a handful of SAE features, chosen greedily.

    Each step adds the ``(feature, threshold)`` condition that most improves the
    class-weighted training accuracy of the rule "positive if any condition fires" (with
    ``class_weight='balanced'`` this is the balanced accuracy, i.e. Youden's J). Candidate
    thresholds of a feature are 0 ("fires at all") and the quantiles of its positive
    values. Fitting stops when no condition improves the objective or after
    ``max_features`` conditions. Conditions only fire on positive values (SAE activations
    are non-negative).

    Probabilities are the Laplace-smoothed, class-weighted rates of the positive class
    among training samples where the rule fires and where it does not; ``predict`` is
    their argmax, which for ``class_weight='balanced'`` is exactly the rule.

    Parameters
    ----------
    max_features : int, default 5
        Maximum number of conditions (each on a different feature).
    max_thresholds : int, default 16
        Candidate thresholds per feature.
    min_precision : float or None, default None
        Only accept conditions that keep the rule's training precision at least this.
    class_weight : 'balanced', dict or None, default 'balanced'
        Weights of the objective and of the probabilities.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        ``classes_[1]`` is the class the rule predicts when it fires.
    n_features_in_ : int
    rule_ : tuple of RuleCondition
        The conditions, in the order they were added.
    proba_fired_, proba_not_fired_ : float
        Probability of ``classes_[1]`` when the rule fires / does not fire.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.csr_matrix(np.array([[0, 2.0], [0, 0.5], [1.0, 0], [0, 0]]))
    >>> probe = RuleProbe().fit(X, ["unsafe", "safe", "unsafe", "safe"])
    >>> probe.describe()
    'unsafe if f0 > 0.00 or f1 > 0.50'
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "max_features": [Interval(Integral, 1, None, closed="left")],
        "max_thresholds": [Interval(Integral, 1, None, closed="left")],
        "min_precision": [Interval(Real, 0, 1, closed="both"), None],
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(
        self,
        max_features: int = 5,
        *,
        max_thresholds: int = 16,
        min_precision: float | None = None,
        class_weight: str | dict[Any, float] | None = "balanced",
    ) -> None:
        self.max_features = max_features
        self.max_thresholds = max_thresholds
        self.min_precision = min_precision
        self.class_weight = class_weight

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.poor_score = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> RuleProbe:
        """Greedily choose the rule's conditions and the fired / not-fired probabilities.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Exactly two classes; ``classes_[1]`` (the larger label) is the positive one.

        Returns
        -------
        RuleProbe
            ``self``, fitted.

        Raises
        ------
        ProbeInputError
            ``y`` does not have exactly two classes.
        """
        X, y = validated_fit_data(self, X, y)
        classes = np.unique(y)
        check_binary(classes, estimator="RuleProbe")
        self.classes_ = classes
        pos = y == classes[1]
        w = sample_weights(y, self.class_weight)
        X = sp.csr_matrix(X)
        X.sum_duplicates()
        coo = X.tocoo()
        keep = coo.data > 0
        rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float64)
        active, col_idx = np.unique(cols, return_inverse=True)
        thresholds = self._candidates(col_idx, vals, len(active))

        fired = np.zeros(len(y), dtype=bool)
        chosen: list[RuleCondition] = []
        used = np.zeros(len(active), dtype=bool)
        eps = 1e-12 * float(w.sum())
        for _ in range(self.max_features):
            if active.size == 0:
                break
            e = ~fired[rows]
            ec, ev, er = col_idx[e], vals[e], rows[e]
            ew, ep = w[er], pos[er]
            tp0, fired0 = int(np.count_nonzero(fired & pos)), int(np.count_nonzero(fired))
            best: tuple[float, int, int] | None = None
            for k in range(thresholds.shape[1]):
                m = ev > thresholds[ec, k]
                gp = np.bincount(ec[m], weights=ew[m] * ep[m], minlength=len(active))
                gn = np.bincount(ec[m], weights=ew[m] * ~ep[m], minlength=len(active))
                gain = np.asarray(gp - gn, dtype=np.float64)
                gain[used] = -np.inf
                if self.min_precision is not None:
                    np_ = np.bincount(ec[m], weights=ep[m].astype(float), minlength=len(active))
                    nn = np.bincount(ec[m], minlength=len(active)) - np_
                    denom = fired0 + np_ + nn
                    prec = np.divide(tp0 + np_, denom, out=np.zeros_like(denom), where=denom > 0)
                    gain[prec < self.min_precision] = -np.inf
                j = int(np.argmax(gain))
                if gain[j] > eps and (best is None or gain[j] > best[0]):
                    best = (float(gain[j]), j, k)
            if best is None:
                break
            _, j, k = best
            t = float(thresholds[j, k])
            hit = rows[(col_idx == j) & (vals > t)]
            fired[hit] = True
            used[j] = True
            n_fired = int(np.count_nonzero(fired))
            tp = int(np.count_nonzero(fired & pos))
            chosen.append(
                RuleCondition(
                    feature=int(active[j]),
                    threshold=t,
                    precision=tp / n_fired if n_fired else 0.0,
                    recall=tp / max(int(np.count_nonzero(pos)), 1),
                )
            )
        self.rule_ = tuple(chosen)
        wbar = float(w.mean())
        wp = w * pos
        self.proba_fired_ = float((wp[fired].sum() + wbar) / (w[fired].sum() + 2 * wbar))
        self.proba_not_fired_ = float((wp[~fired].sum() + wbar) / (w[~fired].sum() + 2 * wbar))
        return self

    def _candidates(self, col_idx: np.ndarray, vals: np.ndarray, n_active: int) -> np.ndarray:
        """``[n_active, max_thresholds]`` thresholds: 0, then quantiles of positive values."""
        m = self.max_thresholds
        out = np.zeros((n_active, m), dtype=np.float64)
        if n_active == 0 or m == 1:
            return out
        order = np.lexsort((vals, col_idx))
        sv = vals[order]
        counts = np.bincount(col_idx, minlength=n_active)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for k in range(1, m):
            idx = starts + np.floor(k / m * (counts - 1)).astype(np.int64)
            out[:, k] = sv[idx]
        return out

    def _fired(self, X: Any) -> np.ndarray:
        X = validated_input(self, X)
        fired = np.zeros(X.shape[0], dtype=bool)
        if not self.rule_:
            return fired
        feats = np.array([c.feature for c in self.rule_], dtype=np.int64)
        order = np.argsort(feats)
        sub = select_columns(X, feats[order])
        sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)  # n_samples x n_rules
        thr = np.array([self.rule_[i].threshold for i in order])
        return np.asarray((sub > thr[None, :]).any(axis=1))

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of ``classes_[1]``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.asarray(logit(self.predict_proba(X)[:, 1]))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class: the training rate of the fired / not-fired group.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        p = np.where(self._fired(X), self.proba_fired_, self.proba_not_fired_)
        return binary_proba(p)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per sample (the rule itself when ``class_weight='balanced'``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        p = self.predict_proba(X)[:, 1]
        return np.asarray(self.classes_[(p > 0.5).astype(int)])

    def describe(self, feature_names: Sequence[str] | None = None) -> str:
        """The rule in words, e.g. ``'unsafe if f123 > 0.80 or f456 > 1.20'``.

        Parameters
        ----------
        feature_names : sequence of str or None, default None
            Names indexed by feature column; None writes ``f<column>``.

        Returns
        -------
        str
        """
        check_is_fitted(self)
        label = str(self.classes_[1])
        if not self.rule_:
            return f"{label}: no rule found (probability {self.proba_not_fired_:.2f})"
        names = [
            feature_names[c.feature] if feature_names is not None else f"f{c.feature}"
            for c in self.rule_
        ]
        conds = " or ".join(
            f"{n} > {c.threshold:.2f}" for n, c in zip(names, self.rule_, strict=True)
        )
        return f"{label} if {conds}"

    # ------------------------------------------------------------------ persistence

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self)
        meta = {
            "rule": [c._asdict() for c in self.rule_],
            "proba_fired": self.proba_fired_,
            "proba_not_fired": self.proba_not_fired_,
        }
        return meta, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.rule_ = tuple(
            RuleCondition(
                feature=int(c["feature"]),
                threshold=float(c["threshold"]),
                precision=float(c["precision"]),
                recall=float(c["recall"]),
            )
            for c in meta["rule"]
        )
        self.proba_fired_ = float(meta["proba_fired"])
        self.proba_not_fired_ = float(meta["proba_not_fired"])
