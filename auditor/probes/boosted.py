"""Gradient-boosted-trees probe (LightGBM) on sparse SAE features."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from auditor.probes._base import (
    ProbeInputError,
    binary_proba,
    classes_of,
    document_frequency,
    sample_weights,
    select_columns,
    validated_fit_data,
    validated_input,
)

__all__ = ["BoostedProbe", "split_contributions"]


def split_contributions(
    raw: Any, *, n_outputs: int, columns: np.ndarray, n_features: int
) -> tuple[list[sp.csr_matrix], np.ndarray]:
    """Normalise LightGBM ``pred_contrib`` output into per-output CSR blocks and a bias.

    LightGBM returns, for ``pred_contrib=True``: on dense input an ndarray
    ``[n, n_outputs * (n_used + 1)]``; on sparse input a sparse matrix ``[n, n_used + 1]``
    when ``n_outputs == 1`` and a list of ``n_outputs`` such matrices otherwise. The last
    column of each block is the bias (expected raw score).

    Parameters
    ----------
    raw : ndarray, sparse matrix or list of sparse matrices
        The ``pred_contrib`` output.
    n_outputs : int
        1 for binary, ``n_classes`` for multiclass.
    columns : ndarray of shape (n_used,)
        Original column of each feature the booster was trained on.
    n_features : int
        Width of the original feature space.

    Returns
    -------
    contributions : list of scipy.sparse.csr_matrix
        One ``[n_samples, n_features]`` CSR per output, in the original feature space.
    bias : ndarray of shape (n_samples, n_outputs)
        The bias column of each output.
    """
    columns = np.asarray(columns, dtype=np.int64)
    width = columns.size + 1
    if isinstance(raw, list):
        blocks = [sp.csr_matrix(m) for m in raw]
    elif sp.issparse(raw):
        full = sp.csr_matrix(raw)
        blocks = [sp.csr_matrix(full[:, k * width:(k + 1) * width]) for k in range(n_outputs)]
    else:
        arr = np.asarray(raw, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], -1)
        blocks = [sp.csr_matrix(arr[:, k * width:(k + 1) * width]) for k in range(n_outputs)]
    if len(blocks) != n_outputs or any(b.shape[1] != width for b in blocks):
        raise ProbeInputError(
            f"unexpected pred_contrib shape: {len(blocks)} block(s) of "
            f"{[b.shape for b in blocks]} for {n_outputs} output(s) of width {width}"
        )
    mats: list[sp.csr_matrix] = []
    bias = np.empty((blocks[0].shape[0], n_outputs), dtype=np.float64)
    for k, block in enumerate(blocks):
        bias[:, k] = block[:, width - 1].toarray().ravel()
        used = sp.csr_matrix(block[:, : width - 1])
        used.sort_indices()
        mats.append(
            sp.csr_matrix(
                (used.data.astype(np.float64), columns[used.indices], used.indptr.copy()),
                shape=(block.shape[0], n_features),
            )
        )
    return mats, bias


class BoostedProbe(ClassifierMixin, BaseEstimator):
    """LightGBM classifier on sparse SAE features, with document-frequency pre-selection.

    Columns with fewer than ``min_df`` non-zeros are dropped (optionally keeping only the
    ``max_features`` most frequent), then LightGBM is trained on the CSR columns left, with
    early stopping on a stratified validation split carved from the training data.

    Prefer it over :class:`~auditor.probes.LinearProbe` when the label depends on
    *interactions* or *non-monotone* feature values (e.g. "A and B both fire", "A fires
    weakly but not strongly"): on a synthetic XOR-of-two-features task (2,000 × 2,000
    sparse, binary) it reached 1.00 test accuracy vs 0.50 for LinearProbe (0.71 for
    RuleProbe). On additive signals the linear probe is about as accurate, much faster and
    easier to explain; start there. Measured on 5,000 × 10,240 sparse features with 61
    nnz/row (80/20 split): binary, LinearProbe 0.16 s / 0.81 accuracy vs BoostedProbe
    1.1 s / 0.83; 4 classes, 0.31 s / 0.76 vs 4.4 s / 0.77 (``n_jobs=1``).

    Parameters
    ----------
    n_estimators : int, default 500
        Maximum boosting rounds.
    learning_rate : float, default 0.05
        Shrinkage.
    num_leaves : int, default 31
        Maximum leaves per tree.
    min_df : int, default 5
        Keep only feature columns with at least this many non-zero entries in training.
    max_features : int or None, default None
        Then keep only the ``max_features`` columns with the highest document frequency.
    early_stopping_rounds : int or None, default 30
        Stop when the validation log-loss has not improved for this many rounds; None
        trains ``n_estimators`` rounds on all the data.
    validation_fraction : float, default 0.15
        Share of the training data held out (stratified) for early stopping.
    class_weight : 'balanced', dict or None, default 'balanced'
        Class weights, applied as sample weights.
    min_child_samples : int, default 20
        Minimum samples per leaf (LightGBM ``min_data_in_leaf``).
    random_state : int, RandomState or None, default 0
        Seeds the validation split and LightGBM.
    n_jobs : int, default 2
        LightGBM threads. Use 1 when the cores are shared: with both of 2 cores busy
        elsewhere, 2 threads were 18× slower than 1 (OpenMP threads wait on each other).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    selected_features_ : ndarray of shape (n_used,)
        Original columns the booster was trained on, ascending.
    booster_ : lightgbm.Booster
        The booster, truncated to its best iteration.
    best_iteration_ : int
        Number of boosting rounds kept.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "num_leaves": [Interval(Integral, 2, None, closed="left")],
        "min_df": [Interval(Integral, 1, None, closed="left")],
        "max_features": [Interval(Integral, 1, None, closed="left"), None],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "min_child_samples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_estimators: int = 500,
        *,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_df: int = 5,
        max_features: int | None = None,
        early_stopping_rounds: int | None = 30,
        validation_fraction: float = 0.15,
        class_weight: str | dict[Any, float] | None = "balanced",
        min_child_samples: int = 20,
        random_state: Any = 0,
        n_jobs: int = 2,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_df = min_df
        self.max_features = max_features
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _lgb_params(self, n_classes: int, seed: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": "binary" if n_classes == 2 else "multiclass",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "force_col_wise": True,
            "deterministic": True,
            "verbose": -1,
            "seed": seed,
            "num_threads": self.n_jobs,
        }
        if n_classes > 2:
            params["num_class"] = n_classes
        return params

    def _select(self, X: Any) -> np.ndarray:
        df = document_frequency(X)
        keep = np.flatnonzero(df >= self.min_df)
        if self.max_features is not None and keep.size > self.max_features:
            top = np.argsort(-df[keep], kind="stable")[: self.max_features]
            keep = np.sort(keep[top])
        if keep.size == 0:  # nothing frequent enough: keep the most frequent column
            keep = np.array([int(np.argmax(df))])
        return keep.astype(np.int64)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> BoostedProbe:
        """Select columns and train the booster.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Features; CSR is used as is.
        y : array-like of shape (n_samples,)
            Class labels (two or more classes).

        Returns
        -------
        BoostedProbe
            ``self``, fitted.
        """
        import lightgbm as lgb

        X, y = validated_fit_data(self, X, y)
        classes, y_idx = classes_of(y, estimator="BoostedProbe")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.classes_ = classes
        self.selected_features_ = self._select(X)
        Xs = select_columns(X, self.selected_features_)
        w = sample_weights(y, self.class_weight)
        params = self._lgb_params(len(classes), seed)
        counts = np.bincount(y_idx)
        n_val = math.ceil(self.validation_fraction * len(y))
        rounds = self.early_stopping_rounds
        can_split = (
            rounds is not None
            and counts.min() >= 2
            and len(classes) <= n_val <= len(y) - len(classes)
        )
        if can_split and rounds is not None:
            tr, va = train_test_split(
                np.arange(len(y)), test_size=n_val, stratify=y_idx, random_state=seed
            )
            tr.sort()
            va.sort()
            dtrain = lgb.Dataset(Xs[tr], label=y_idx[tr], weight=w[tr], params={"verbose": -1})
            dval = lgb.Dataset(Xs[va], label=y_idx[va], weight=w[va], reference=dtrain)
            booster = lgb.train(
                params,
                dtrain,
                num_boost_round=self.n_estimators,
                valid_sets=[dval],
                callbacks=[lgb.early_stopping(rounds, verbose=False)],
            )
            best = booster.best_iteration or booster.current_iteration()
        else:
            dtrain = lgb.Dataset(Xs, label=y_idx, weight=w, params={"verbose": -1})
            booster = lgb.train(params, dtrain, num_boost_round=self.n_estimators)
            best = booster.current_iteration()
        self.best_iteration_ = int(best)
        self.n_iter_ = self.best_iteration_
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        return self

    def _used(self, X: Any) -> Any:
        X = validated_input(self, X)
        return select_columns(X, self.selected_features_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores (log-odds of the positive class, or per-class raw scores).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        Xs = self._used(X)
        raw = self.booster_.predict(Xs, raw_score=True)
        return np.asarray(raw, dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        Xs = self._used(X)
        p = np.asarray(self.booster_.predict(Xs), dtype=np.float64)
        if p.ndim == 1:
            return binary_proba(p)
        return p

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        raw = self.decision_function(X)
        idx = (raw > 0).astype(int) if raw.ndim == 1 else np.argmax(raw, axis=1)
        return np.asarray(self.classes_[idx])

    def contributions(self, X: Any, *, with_bias: bool = False) -> Any:
        """Per-feature SHAP contributions to the raw score (LightGBM ``pred_contrib``).

        Summing a row and adding the bias gives :meth:`decision_function`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        with_bias : bool, default False
            Also return the bias (expected raw score).

        Returns
        -------
        scipy.sparse.csr_matrix or list of csr_matrix
            ``[n_samples, n_features]`` contributions (original columns) to the positive
            class's raw score (binary) or one matrix per class (multiclass).
        bias : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Only with ``with_bias``.
        """
        Xs = self._used(X)
        raw = self.booster_.predict(Xs, pred_contrib=True)
        n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        mats, bias = split_contributions(
            raw, n_outputs=n_outputs, columns=self.selected_features_,
            n_features=self.n_features_in_,
        )
        out: Any = mats[0] if n_outputs == 1 else mats
        if not with_bias:
            return out
        return out, (bias[:, 0] if n_outputs == 1 else bias)

    # ------------------------------------------------------------------ persistence

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self)
        # The booster itself is written by persist.save_probe with booster_.save_model.
        meta = {"best_iteration": self.best_iteration_}
        return meta, {"selected_features": self.selected_features_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        import lightgbm as lgb

        self.selected_features_ = np.asarray(arrays["selected_features"], dtype=np.int64)
        self.best_iteration_ = int(meta["best_iteration"])
        self.n_iter_ = self.best_iteration_
        self.booster_ = lgb.Booster(model_file=str(meta["booster_file"]))
