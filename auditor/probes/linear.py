"""Sparse logistic-regression probe on SAE features."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MaxAbsScaler, StandardScaler
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from auditor.probes._base import (
    ProbeInputError,
    binarize_positive,
    binary_proba,
    classes_of,
    signed_log1p,
    to_float,
    validated_fit_data,
    validated_input,
)

__all__ = ["LinearProbe"]

_L1_RATIO = {"l2": 0.0, "l1": 1.0}


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic regression on (optionally transformed and scaled) sparse SAE features.

    The pipeline is ``x → transform(x) → transform(x) / scale → LogisticRegression``.
    Every step keeps CSR input CSR: the transforms map 0 to 0 and the scalings only
    divide (no centring), so the feature matrix is never densified.

    Parameters
    ----------
    penalty : {'l1', 'l2', 'elasticnet'}, default 'l2'
        Regularisation. 'l1' gives sparse weights (a short list of features to explain).
    C : float, default 1.0
        Inverse regularisation strength, ``> 0``.
    l1_ratio : float, default 0.5
        L1 share of the elastic-net penalty, in ``[0, 1]``; used only with 'elasticnet'.
    scaling : {'maxabs', 'standard', 'none'}, default 'maxabs'
        Per-feature scale the (transformed) features are divided by: the maximum absolute
        value (``MaxAbsScaler``), the standard deviation (``StandardScaler(with_mean=False)``)
        or nothing.
    center : bool, default False
        Subtract each (transformed) feature's training mean before scaling. Only for dense
        input (raw activations, where a large shared offset slows the solver); sparse
        input stays uncentred so that it stays sparse.
    feature_transform : {'none', 'log1p', 'binarize'}, default 'none'
        Applied before scaling: ``sign(x) * log1p(|x|)``, or ``1.0 if x > 0`` ("fired").
        (Not named ``transform``: an estimator attribute of that name makes scikit-learn
        treat it as a transformer.)
    class_weight : 'balanced', dict or None, default 'balanced'
        Class weights, as in :class:`sklearn.linear_model.LogisticRegression`.
    max_iter : int, default 1000
        Maximum solver iterations.
    tol : float, default 1e-4
        Solver stopping tolerance.
    random_state : int, RandomState or None, default None
        Seeds the SAGA solver's sample order.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features seen in fit.
    scale_ : ndarray of shape (n_features,)
        Divisor of each transformed feature (1.0 for unseen / constant-zero features).
    coef_ : ndarray of shape (1 or n_classes, n_features)
        Coefficients on the *scaled* features (row 0 is the positive class when binary).
    intercept_ : ndarray of shape (1 or n_classes,)
        Intercepts.
    offset_ : ndarray of shape (n_features,)
        Subtracted before scaling (the training mean with ``center=True``, else zeros).
    feature_weights_ : ndarray of shape (1 or n_classes, n_features)
        ``coef_ / scale_``: the weight of each *transformed* feature in the original
        feature space (for ``feature_transform='none'`` the weight of the raw SAE activation).
    feature_intercept_ : ndarray of shape (1 or n_classes,)
        The intercept in that space: ``decision = transform(X) @ feature_weights_.T +
        feature_intercept_``.
    n_iter_ : int
        Solver iterations run.

    Notes
    -----
    The solver is liblinear for binary 'l1' (measured on 5,000 × 10,240 sparse features
    with 60 nnz/row: 0.03 s vs 8.3 s for SAGA; its intercept is lightly penalised, hence
    ``intercept_scaling=10``) and SAGA otherwise (binary 'l2': 0.19 s vs 0.39 s for
    liblinear); multiclass is multinomial.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.csr_matrix(np.array([[0, 2.0], [0, 3.0], [1.0, 0], [2.0, 0]]))
    >>> probe = LinearProbe().fit(X, [0, 0, 1, 1])
    >>> probe.predict(X).tolist()
    [0, 0, 1, 1]
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "penalty": [StrOptions({"l1", "l2", "elasticnet"})],
        "C": [Interval(Real, 0, None, closed="neither")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "scaling": [StrOptions({"maxabs", "standard", "none"})],
        "center": ["boolean"],
        "feature_transform": [StrOptions({"none", "log1p", "binarize"})],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        penalty: str = "l2",
        *,
        C: float = 1.0,
        l1_ratio: float = 0.5,
        scaling: str = "maxabs",
        center: bool = False,
        feature_transform: str = "none",
        class_weight: str | dict[Any, float] | None = "balanced",
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: Any = None,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.scaling = scaling
        self.center = center
        self.feature_transform = feature_transform
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit the scaling and the logistic regression.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Features; CSR is used as is.
        y : array-like of shape (n_samples,)
            Class labels (two or more classes).

        Returns
        -------
        LinearProbe
            ``self``, fitted.
        """
        X, y = validated_fit_data(self, X, y)
        classes, _ = classes_of(y, estimator="LinearProbe")
        Z = self._transformed(X)
        if self.center and sp.issparse(Z):
            raise ProbeInputError("center=True needs dense input (centring would densify a "
                             "sparse matrix)")
        self.offset_ = (np.asarray(Z.mean(axis=0), dtype=np.float64).ravel() if self.center
                        else np.zeros(X.shape[1]))
        if self.center:
            Z = np.asarray(Z, dtype=np.float64) - self.offset_[None, :]
        if self.scaling == "maxabs":
            scale = MaxAbsScaler().fit(Z).scale_
        elif self.scaling == "standard":
            scale = StandardScaler(with_mean=False).fit(Z).scale_
        else:
            scale = np.ones(X.shape[1])
        scale = np.asarray(scale, dtype=np.float64)
        scale[~np.isfinite(scale) | (scale == 0)] = 1.0
        self.scale_ = scale
        l1_ratio = _L1_RATIO.get(self.penalty, self.l1_ratio)
        # Measured on 5,000 x 10,240 (60 nnz/row, binary): l1 saga 8.3 s vs liblinear 0.03 s;
        # l2 saga 0.19 s vs liblinear 0.39 s.
        binary_l1 = self.penalty == "l1" and len(classes) == 2
        lr = LogisticRegression(
            C=self.C,
            l1_ratio=float(l1_ratio),
            solver="liblinear" if binary_l1 else "saga",
            intercept_scaling=10.0 if binary_l1 else 1.0,
            class_weight=self.class_weight,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        lr.fit(self._scaled(Z), y)
        self.classes_ = lr.classes_
        self.coef_ = np.asarray(lr.coef_, dtype=np.float64)
        self.intercept_ = np.asarray(lr.intercept_, dtype=np.float64)
        self.n_iter_ = int(np.max(lr.n_iter_))
        self._set_feature_weights()
        return self

    def _set_feature_weights(self) -> None:
        self.feature_weights_ = self.coef_ / self.scale_[None, :]
        self.feature_intercept_ = self.intercept_ - self.feature_weights_ @ self.offset_

    def _transformed(self, X: Any) -> Any:
        if self.feature_transform == "log1p":
            return signed_log1p(X)
        if self.feature_transform == "binarize":
            return binarize_positive(X)
        return to_float(X)

    def _scaled(self, Z: Any) -> Any:
        inv = 1.0 / self.scale_
        if sp.issparse(Z):
            Z = sp.csr_matrix(Z, dtype=np.float64, copy=True)
            Z.data *= inv[Z.indices]
            return Z
        return np.asarray(Z, dtype=np.float64) * inv[None, :]

    def _design(self, X: Any) -> Any:
        """Validated, transformed and scaled input (what the coefficients multiply)."""
        X = validated_input(self, X)
        Z = self._transformed(X)
        if self.center:
            if sp.issparse(Z):
                raise ProbeInputError("this probe was fitted with center=True and needs dense "
                                 "input")
            Z = np.asarray(Z, dtype=np.float64) - self.offset_[None, :]
        return self._scaled(Z)

    # ------------------------------------------------------------------ prediction

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw logits.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
            Logit of the positive class (binary) or per-class logits (multiclass).
        """
        Z = self._design(X)
        scores = np.asarray(Z @ self.coef_.T) + self.intercept_[None, :]
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return binary_proba(p)
        return np.asarray(softmax(scores, axis=1))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return np.asarray(self.classes_[idx])

    def contributions(
        self, X: Any, *, with_bias: bool = False
    ) -> Any:
        """Per-feature additive contributions to the logits.

        ``contrib[i, j] = scaled(transform(X))[i, j] * coef_[k, j]``; summing a row and
        adding ``intercept_[k]`` gives :meth:`decision_function`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        with_bias : bool, default False
            Also return the bias term.

        Returns
        -------
        scipy.sparse.csr_matrix or list of csr_matrix
            ``[n_samples, n_features]`` contributions to the positive-class logit (binary)
            or one matrix per class in ``classes_`` order (multiclass).
        bias : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Only with ``with_bias``: the intercept(s), one row per sample.
        """
        Z = sp.csr_matrix(self._design(X))
        mats = [sp.csr_matrix(Z.multiply(self.coef_[k][None, :])) for k in
                range(self.coef_.shape[0])]
        out: Any = mats[0] if len(mats) == 1 else mats
        if not with_bias:
            return out
        bias = np.tile(self.intercept_, (Z.shape[0], 1))
        return out, (bias[:, 0] if bias.shape[1] == 1 else bias)

    # ------------------------------------------------------------------ persistence

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self)
        meta = {"n_iter": self.n_iter_}
        arrays = {"scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_,
                  "offset": self.offset_}
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        self.offset_ = np.asarray(arrays["offset"], dtype=np.float64) if "offset" in arrays \
            else np.zeros_like(self.scale_)
        self.n_iter_ = int(meta["n_iter"])
        self._set_feature_weights()
