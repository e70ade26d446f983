"""Tests of auditor.probes, and the synthetic sparse data they share."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["make_sparse", "split"]


def make_sparse(
    n: int = 600,
    n_features: int = 300,
    *,
    n_classes: int = 2,
    nnz: int = 12,
    n_signal: int = 4,
    fire: float = 0.6,
    seed: int = 0,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """SAE-like data: non-negative float32 CSR noise plus per-class "signal" features.

    Class ``k`` fires each of its ``n_signal`` features (columns ``k*n_signal…``) with
    probability ``fire`` and value in [0.5, 2); every row also has ~``nnz`` noise entries.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    noise = sp.random(n, n_features, density=nnz / n_features, format="csr",
                      random_state=seed, dtype=np.float32)
    rows, cols, vals = [], [], []
    for k in range(n_classes):
        idx = np.flatnonzero(y == k)
        for j in range(n_signal):
            hit = idx[rng.random(idx.size) < fire]
            rows.append(hit)
            cols.append(np.full(hit.size, k * n_signal + j))
            vals.append(rng.uniform(0.5, 2.0, hit.size))
    signal = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n_features), dtype=np.float32,
    )
    X = sp.csr_matrix(noise + signal, dtype=np.float32)
    return X, y


def split(X: sp.csr_matrix, y: np.ndarray, frac: float = 0.7) -> tuple[
    sp.csr_matrix, np.ndarray, sp.csr_matrix, np.ndarray
]:
    """First ``frac`` of the rows for training, the rest for testing."""
    m = int(frac * X.shape[0])
    return X[:m], y[:m], X[m:], y[m:]
