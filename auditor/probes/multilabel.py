"""Multilabel probe: one binary probe per label of a 0/1 indicator matrix."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from auditor.probes._base import ProbeInputError, validated_input
from auditor.probes.linear import LinearProbe

__all__ = ["MultiLabelProbe"]


def _show(values: np.ndarray) -> str:
    """A short, readable list of (at most 5) distinct values."""
    vals = np.unique(values)
    return f"{', '.join(map(repr, vals[:5].tolist()))}{', …' if vals.size > 5 else ''}"


def _estimators_have(attr: str) -> Callable[[Any], bool]:
    """``available_if`` check: the fitted (else the unfitted) binary probes have ``attr``."""

    def check(self: Any) -> bool:
        est = self.estimators_[0] if hasattr(self, "estimators_") else self._base_estimator()
        getattr(est, attr)  # AttributeError when absent: the method is then unavailable
        return True

    return check


class MultiLabelProbe(ClassifierMixin, BaseEstimator):
    """One binary probe per label, for documents that can carry several labels at once.

    ``Y`` is a 0/1 indicator matrix ``[n_samples, n_labels]`` (e.g. "toxic", "PII",
    "medical" flags of a document). The binary ``estimator`` is cloned and fitted once per
    column, on the same CSR features; the labels are independent (no chaining), so each
    label's probe is exactly the probe one would fit on that column alone.

    Parameters
    ----------
    estimator : classifier or None, default None
        Unfitted binary probe with ``predict_proba`` (its column 1 is taken as
        P(label present)); None means ``LinearProbe()``. Its ``decision_function`` and
        ``contributions``, when it has them, are exposed per label.
    thresholds : float, array-like of shape (n_labels,) or None, default None
        Probability thresholds of :meth:`predict`, in ``[0, 1]``: one for every label, or
        one per label (e.g. from :func:`auditor.probes.choose_threshold` on each column).
        None means 0.5.
    labels : array-like of shape (n_labels,) or None, default None
        Names of the ``Y`` columns (distinct), kept as ``labels_`` for reports and error
        messages; None names them ``0 … n_labels - 1``.

    Attributes
    ----------
    estimators_ : list of classifier
        The fitted binary probe of each label, in ``Y``'s column order.
    classes_ : ndarray of shape (n_labels,)
        ``np.arange(n_labels)``: scikit-learn's convention for multilabel classifiers
        (column ``k`` of every output is label ``k``; the names are in ``labels_``).
    labels_ : ndarray of shape (n_labels,)
        ``labels`` as an array, or ``classes_``.
    n_features_in_ : int
        Number of features seen in fit.
    thresholds_ : ndarray of shape (n_labels,)
        Decision threshold of each label: predicted present iff
        ``predict_proba(X)[:, k] >= thresholds_[k]`` (the convention of
        :func:`~auditor.probes.choose_threshold`).

    Notes
    -----
    ``Y`` must be 2-D, even for a single label (``y.reshape(-1, 1)``); a 1-D ``y`` is
    refused rather than read as a multiclass target (use the binary / multiclass probes
    directly for that). Every column needs both values: a label never (or always) present
    in training cannot be learnt.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.csr_matrix(np.array([[0, 2.0], [0, 3.0], [1.0, 0], [2.0, 0]]))
    >>> Y = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    >>> probe = MultiLabelProbe(labels=["a", "b"]).fit(X, Y)
    >>> probe.predict(X).tolist()
    [[0, 1], [0, 1], [1, 0], [1, 0]]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "thresholds": [Interval(Real, 0, 1, closed="both"), "array-like", None],
        "labels": ["array-like", None],
    }

    def __init__(
        self,
        estimator: Any = None,
        *,
        thresholds: float | Any | None = None,
        labels: Any = None,
    ) -> None:
        self.estimator = estimator
        self.thresholds = thresholds
        self.labels = labels

    def _base_estimator(self) -> Any:
        return LinearProbe() if self.estimator is None else self.estimator

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        base = get_tags(self._base_estimator())
        tags.input_tags.sparse = base.input_tags.sparse
        tags.classifier_tags.poor_score = base.classifier_tags.poor_score
        tags.classifier_tags.multi_label = True
        # Each label is binary, and Y must be 2-D (a 1-D y is refused).
        tags.classifier_tags.multi_class = False
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags

    # ------------------------------------------------------------------ fitting

    def _label_name(self, k: int) -> str:
        if self.labels is None:
            return f"column {k}"
        return f"column {k} ({np.asarray(self.labels).tolist()[k]!r})"

    def _check_indicator(self, Y: Any) -> np.ndarray:
        """``Y`` as an int64 0/1 matrix; :class:`ProbeInputError` (a ValueError) naming the
        first offending column."""
        Y = Y.toarray() if sp.issparse(Y) else np.asarray(Y)
        check_classification_targets(Y)  # continuous → "Unknown label type: continuous"
        if Y.ndim != 2:
            raise ProbeInputError(
                "Y must be a 2-D indicator matrix of shape (n_samples, n_labels), got a "
                f"1-D y with {np.unique(Y).size} classes ({_show(Y)}). Only binary "
                "classification is supported per label: for single-label classification "
                "use a binary / multiclass probe (e.g. LinearProbe) directly; for one 0/1 "
                "label pass y.reshape(-1, 1)"
            )
        numeric = Y.dtype.kind in "biuf"
        ok = np.isin(Y, (0, 1)) if numeric else np.zeros(Y.shape, dtype=bool)
        if not ok.all():
            k = int(np.flatnonzero(~ok.all(axis=0))[0])
            raise ProbeInputError(
                "Y must hold only 0/1 indicators (only binary classification is supported "
                f"per label); {self._label_name(k)} holds {_show(Y[:, k])}"
            )
        Y = Y.astype(np.int64)
        n_pos = Y.sum(axis=0)
        constant = np.flatnonzero((n_pos == 0) | (n_pos == Y.shape[0]))
        if constant.size:
            k = int(constant[0])
            raise ProbeInputError(
                f"{self._label_name(k)} of Y has only one class ({int(Y[0, k])} in all "
                f"{Y.shape[0]} samples): every label needs both positive and negative "
                "samples"
            )
        return Y

    def _resolve_labels(self, n_labels: int) -> np.ndarray:
        if self.labels is None:
            return np.arange(n_labels)
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.size != n_labels:
            raise ProbeInputError(f"labels has {labels.size} entries but Y has {n_labels} columns")
        if np.unique(labels).size != labels.size:
            raise ProbeInputError(f"labels must be distinct, got {labels.tolist()}")
        return labels

    def _resolve_thresholds(self, n_labels: int) -> np.ndarray:
        if self.thresholds is None:
            return np.full(n_labels, 0.5)
        if isinstance(self.thresholds, Real):
            return np.full(n_labels, float(self.thresholds))
        thr = np.asarray(self.thresholds, dtype=np.float64)
        if thr.ndim != 1 or thr.size != n_labels:
            raise ProbeInputError(
                f"thresholds has shape {thr.shape} but Y has {n_labels} columns (give one "
                "float, or one per label)"
            )
        if not np.all((thr >= 0) & (thr <= 1)):
            raise ProbeInputError(f"thresholds must be in [0, 1], got {thr.tolist()}")
        return thr

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, Y: Any) -> MultiLabelProbe:
        """Fit one clone of ``estimator`` per column of ``Y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Features; CSR is used as is.
        Y : {array-like, sparse matrix} of shape (n_samples, n_labels)
            0/1 indicator matrix (1: the label is present).

        Returns
        -------
        MultiLabelProbe
            ``self``, fitted.

        Raises
        ------
        ProbeInputError
            (a ``ValueError``) ``Y`` is not 2-D, holds values other than 0/1, or has a
            column without both values (the message names the column); ``thresholds``
            or ``labels`` do not match the number of columns.
        """
        X, Y = validate_data(self, X, Y, accept_sparse="csr", dtype=[np.float64, np.float32],
                             multi_output=True)
        Y = self._check_indicator(Y)
        n_labels = Y.shape[1]
        self.labels_ = self._resolve_labels(n_labels)
        self.thresholds_ = self._resolve_thresholds(n_labels)
        base = self._base_estimator()
        estimators = []
        for k in range(n_labels):
            est = clone(base).fit(X, Y[:, k])
            if not np.array_equal(est.classes_, [0, 1]):
                raise ProbeInputError(f"the probe of {self._label_name(k)} has classes "
                                 f"{est.classes_.tolist()}, expected [0, 1]")
            estimators.append(est)
        self.estimators_ = estimators
        self.classes_ = np.arange(n_labels)
        return self

    # ------------------------------------------------------------------ prediction

    def _validate(self, X: Any) -> Any:
        return validated_input(self, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability that each label is present.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels)
            Column ``k``: the positive-class column of ``estimators_[k].predict_proba``
            (rows need not sum to 1).
        """
        X = self._validate(X)
        return np.column_stack(
            [np.asarray(est.predict_proba(X), dtype=np.float64)[:, 1]
             for est in self.estimators_]
        )

    def predict(self, X: Any) -> np.ndarray:
        """Labels present per sample: ``predict_proba(X) >= thresholds_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels)
            int64 0/1 indicator matrix.
        """
        proba = self.predict_proba(X)
        return (proba >= self.thresholds_[None, :]).astype(np.int64)

    @available_if(_estimators_have("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """Each label's score (its probe's ``decision_function``: logit / raw score).

        Available when the binary probe has ``decision_function``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_labels)
        """
        X = self._validate(X)
        return np.column_stack(
            [np.asarray(est.decision_function(X), dtype=np.float64).reshape(X.shape[0])
             for est in self.estimators_]
        )

    @available_if(_estimators_have("contributions"))
    def contributions(self, X: Any, *, with_bias: bool = False) -> Any:
        """Per-feature additive contributions to each label's score.

        Available when the binary probe has ``contributions``. For each label ``k``,
        ``values[k].sum(axis=1) + bias[:, k]`` is ``decision_function(X)[:, k]``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        with_bias : bool, default False
            Also return the bias term.

        Returns
        -------
        list of scipy.sparse.csr_matrix
            One ``[n_samples, n_features]`` matrix per label (always a list, even for
            one label), in ``classes_`` order.
        bias : ndarray of shape (n_samples, n_labels)
            Only with ``with_bias``: each label's intercept / expected value.
        """
        X = self._validate(X)
        parts = [est.contributions(X, with_bias=with_bias) for est in self.estimators_]
        if not with_bias:
            return [sp.csr_matrix(m) for m in parts]
        mats = [sp.csr_matrix(m) for m, _ in parts]
        bias = np.column_stack(
            [np.asarray(b, dtype=np.float64).reshape(X.shape[0]) for _, b in parts]
        )
        return mats, bias

    # ------------------------------------------------------------------ persistence

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self)
        # The per-label probes are written by persist.save_probe under labels/<k>/.
        return {"n_labels": len(self.estimators_)}, {"thresholds": self.thresholds_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.estimators_ = list(meta["estimators"])
        self.thresholds_ = np.asarray(arrays["thresholds"], dtype=np.float64)
        self.labels_ = self._resolve_labels(len(self.estimators_))
