"""Shared helpers of the probes: input checks, class weights, sparse column selection.

Nothing here densifies a feature matrix: SAE feature matrices are ``[n_docs, d_sae]`` CSR
with ``d_sae`` up to millions of columns and a few dozen non-zeros per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from auditor.errors import ProbeInputError

__all__ = [
    "ProbeInputError",
    "binarize_positive",
    "binary_proba",
    "check_binary",
    "classes_of",
    "document_frequency",
    "sample_weights",
    "select_columns",
    "signed_log1p",
    "to_float",
    "validated_fit_data",
    "validated_input",
]

#: Feature dtypes the probes accept as is (anything else is converted to float64).
_FLOAT_DTYPES = [np.float64, np.float32]


def validated_fit_data(estimator: Any, X: Any, y: Any) -> tuple[Any, np.ndarray]:
    """``X, y`` checked for ``fit``: CSR kept sparse, float features, classification ``y``.

    Records ``n_features_in_`` on ``estimator`` (sklearn's ``validate_data``) and raises
    sklearn's own errors for a continuous or otherwise unusable ``y``.
    """
    X, y = validate_data(estimator, X, y, accept_sparse="csr", dtype=_FLOAT_DTYPES)
    check_classification_targets(y)
    return X, y


def classes_of(y: np.ndarray, *, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted classes of ``y`` and each sample's class index; :class:`ProbeInputError` (a
    ValueError) for one class."""
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ProbeInputError(
            f"{estimator} needs samples of at least 2 classes; y has only one class "
            f"({classes[0]!r})"
        )
    return classes, y_idx


def validated_input(estimator: Any, X: Any) -> Any:
    """``X`` checked for prediction against a fitted ``estimator`` (same feature count)."""
    check_is_fitted(estimator)
    return validate_data(estimator, X, accept_sparse="csr", dtype=_FLOAT_DTYPES, reset=False)


def binary_proba(p: np.ndarray) -> np.ndarray:
    """``[1 - p, p]`` columns from the positive-class probability ``p`` of shape (n,)."""
    return np.column_stack([1.0 - p, p])

def to_float(X: Any) -> Any:
    """Return ``X`` as float64 (CSR stays CSR, dense stays dense), copying only if needed."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.dtype != np.float64:
            X = X.astype(np.float64)
        return X
    return np.asarray(X, dtype=np.float64)


def signed_log1p(X: Any) -> Any:
    """``sign(x) * log1p(|x|)`` element-wise; keeps zeros (and so sparsity) as zeros."""
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float64, copy=True)
        out.data = np.sign(out.data) * np.log1p(np.abs(out.data))
        return out
    X = np.asarray(X, dtype=np.float64)
    return np.sign(X) * np.log1p(np.abs(X))


def binarize_positive(X: Any) -> Any:
    """1.0 where ``x > 0`` ("the feature fired"), else 0.0; sparse stays sparse."""
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float64, copy=True)
        out.data = (out.data > 0).astype(np.float64)
        out.eliminate_zeros()
        return out
    return (np.asarray(X) > 0).astype(np.float64)


def document_frequency(X: Any) -> np.ndarray:
    """Number of non-zero entries per column, as an int64 array of length ``n_features``."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        nz = X.indices[X.data != 0]
        return np.bincount(nz, minlength=X.shape[1]).astype(np.int64)
    return np.count_nonzero(np.asarray(X), axis=0).astype(np.int64)


def select_columns(X: Any, columns: np.ndarray) -> Any:
    """Keep the given (ascending) columns of ``X``; CSR in, CSR out, without densifying.

    Scipy's fancy column indexing is avoided: a position map of length ``n_features``
    renumbers the stored indices in one pass over the non-zeros.
    """
    columns = np.asarray(columns, dtype=np.int64)
    if not sp.issparse(X):
        return np.asarray(X)[:, columns]
    X = sp.csr_matrix(X)
    pos = np.full(X.shape[1], -1, dtype=np.int64)
    pos[columns] = np.arange(columns.size)
    new = pos[X.indices]
    keep = new >= 0
    # Kept entries before each row's start. (np.add.reduceat over indptr[:-1] failed on
    # trailing empty rows, whose start equals nnz, and misread other empty rows.)
    kept_before = np.zeros(X.nnz + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    indptr = kept_before[X.indptr]
    return sp.csr_matrix(
        (X.data[keep], new[keep].astype(np.int32), indptr), shape=(X.shape[0], columns.size)
    )


def sample_weights(y: np.ndarray, class_weight: Any) -> np.ndarray:
    """Per-sample weights from a ``class_weight`` ('balanced', dict or None)."""
    if class_weight is None:
        return np.ones(len(y), dtype=np.float64)
    return np.asarray(compute_sample_weight(class_weight, y), dtype=np.float64)


def check_binary(classes: np.ndarray, *, estimator: str) -> None:
    """Raise :class:`ProbeInputError` (a ValueError) when ``classes`` does not hold
    exactly two labels."""
    if len(classes) != 2:
        raise ProbeInputError(
            f"Only binary classification is supported. {estimator} is binary only: y has "
            f"{len(classes)} classes "
            f"({', '.join(map(str, classes[:5]))}{'…' if len(classes) > 5 else ''}); "
            "use LinearProbe or BoostedProbe for multiclass tasks"
        )
