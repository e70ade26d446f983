"""Out-of-domain scores: does a document look like a head's training data?

A :class:`DomainModel` keeps up to ``n_ref`` training documents of a head (a seeded sample,
stratified by label) as references. A document's *domain score* is the mean cosine
similarity of its features to its ``k`` nearest references, on ``log1p`` of the head's
pooled SAE features (the pooling the head reads; ``mean`` for heads on raw activations),
L2-normalised. A document is *in domain* when its score is at least the threshold: the
``quantile`` (2 %) quantile of out-of-fold scores of the training documents themselves
(each fold scored against references drawn from the other folds), so about 98 % of
documents like the training data are in domain and the test split is never looked at.

Saved beside the head (no pickle)::

    domain.safetensors   the references as CSR: data float16 [nnz], indices int32 [nnz],
                         indptr int64 [n_ref + 1] (pooled SAE features are ~20 % dense:
                         300 references fire nearly every feature between them, so a
                         dense block over the columns they use would be ~2x larger)
    domain.json          settings (k, n_ref, threshold, pooling, transform, n_features,
                         n_columns, nnz, held-out score quantiles and in-domain share)

In memory the references are a dense float16 block over the ``n_columns`` features
nonzero in any of them (scoring reads only those columns of a document).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError

__all__ = [
    "DOMAIN_FILE",
    "DOMAIN_JSON",
    "DomainModel",
    "fit_domain",
    "load_domain",
    "save_domain",
]

FORMAT = "auditor-domain"
VERSION = 1
DOMAIN_FILE = "domain.safetensors"
DOMAIN_JSON = "domain.json"
TRANSFORM = "log1p, L2-normalised"
_QUANTILES = (0.01, 0.02, 0.05, 0.1, 0.25, 0.5)


def _features(X: Any) -> sp.csr_matrix:
    """``log1p`` of non-negative pooled features, each row L2-normalised (float64 CSR)."""
    M = sp.csr_matrix(X, dtype=np.float64, copy=True)
    M.data = np.log1p(np.maximum(M.data, 0.0))
    M.eliminate_zeros()
    norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ M)


def _stratified_order(keys: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Indices ordered so that every prefix holds each key in proportion (shuffled within
    each key, then interleaved by fractional rank)."""
    keys = list(keys)
    pos = np.empty(len(keys), dtype=np.float64)
    for key in dict.fromkeys(keys):
        idx = np.flatnonzero(np.array([k == key for k in keys]))
        perm = rng.permutation(idx)
        pos[perm] = (np.arange(len(perm)) + rng.random()) / len(perm)
    tiebreak = rng.random(len(keys))
    return np.lexsort((tiebreak, pos))


class DomainModel:
    """Nearest-reference similarity to a head's training documents.

    Parameters
    ----------
    refs : ndarray of shape (n_ref, n_columns)
        float16 references (rows L2-normalised over all features), restricted to
        ``columns``.
    columns : ndarray of shape (n_columns,)
        The feature indices of ``refs``' columns (the only ones nonzero in any reference).
    settings : mapping
        ``k``, ``threshold``, ``pooling``, ``n_features`` and what the card shows (see
        :func:`fit_domain`).
    """

    def __init__(self, refs: np.ndarray, columns: np.ndarray, settings: Mapping[str, Any]
                 ) -> None:
        self.refs = np.asarray(refs, dtype=np.float16)
        self.columns = np.asarray(columns, dtype=np.int64)
        self.settings = dict(settings)

    def __repr__(self) -> str:
        s = self.settings
        return (f"DomainModel(k={s.get('k')}, n_ref={len(self.refs)}, "
                f"threshold={s.get('threshold')!r}, pooling={s.get('pooling')!r})")

    @property
    def threshold(self) -> float:
        """Scores at or above this are in domain."""
        return float(self.settings["threshold"])

    @property
    def pooling(self) -> str:
        """The SAE pooling the model reads."""
        return str(self.settings["pooling"])

    def score(self, X: Any) -> np.ndarray:
        """Domain scores of documents.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_docs, n_features)
            Pooled SAE features (the model's :attr:`pooling`), untransformed.

        Returns
        -------
        ndarray of shape (n_docs,)
            Mean cosine similarity to the ``k`` nearest references (0 for a document
            without any active feature).

        Raises
        ------
        ConfigError
            ``X`` has another number of features than the model was fitted on.
        """
        n_features = int(self.settings["n_features"])
        if X.shape[1] != n_features:
            raise ConfigError(f"the domain model was fitted on {n_features} features, the "
                              f"documents have {X.shape[1]}", field="domain")
        return _knn_score(_features(X), self.refs, self.columns, int(self.settings["k"]))

    def in_domain(self, scores: np.ndarray) -> np.ndarray:
        """Whether each score is at or above the threshold."""
        return np.asarray(scores, dtype=np.float64) >= self.threshold

    def summary(self) -> dict[str, Any]:
        """What a head's card records of the model (its settings, JSON-able)."""
        return dict(self.settings)


def _knn_score(F: sp.csr_matrix, refs: np.ndarray, columns: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest cosine similarities of ``F``'s rows to ``refs``."""
    if F.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    if len(refs) == 0:
        return np.zeros(F.shape[0], dtype=np.float64)
    sims = np.asarray(F[:, columns] @ refs.astype(np.float64).T)
    kk = min(k, sims.shape[1])
    top = np.partition(sims, sims.shape[1] - kk, axis=1)[:, sims.shape[1] - kk:]
    return np.asarray(top.mean(axis=1), dtype=np.float64)


def _references(F: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows as float16 dense references over their nonzero columns."""
    R = F[rows]
    columns = np.unique(R.indices).astype(np.int64)
    dense = R[:, columns].toarray().astype(np.float16)
    keep = (dense != 0).any(axis=0)  # values that underflow float16 are dropped
    return dense[:, keep], columns[keep]


def fit_domain(
    X: Any, labels: Sequence[Any], *, pooling: str, k: int = 5, n_ref: int = 300,
    quantile: float = 0.02, folds: int = 5, random_state: int = 0,
) -> DomainModel:
    """Fit a domain model on a head's training documents.

    Parameters
    ----------
    X : sparse matrix of shape (n_docs, n_features)
        The training documents' pooled SAE features (untransformed).
    labels
        Each document's label (a label set is keyed by its sorted labels), to stratify
        the reference sample by.
    pooling
        The pooling of ``X`` (recorded: documents are scored on the same pooling).
    k
        Nearest references averaged.
    n_ref
        At most this many references.
    quantile
        The threshold is this quantile of the out-of-fold training scores.
    folds
        Folds of the out-of-fold scores.
    random_state
        Seed of the samples and folds.

    Returns
    -------
    DomainModel

    Raises
    ------
    ConfigError
        Fewer than ``folds`` (>= 2) documents, or a setting out of range.
    """
    if k < 1 or n_ref < 1 or not 0.0 < quantile < 1.0 or folds < 2:
        raise ConfigError(f"domain settings out of range: k={k}, n_ref={n_ref}, "
                          f"quantile={quantile}, folds={folds}", field="domain")
    n = X.shape[0]
    if n < folds or len(labels) != n:
        raise ConfigError(f"a domain model needs at least {folds} labelled documents "
                          f"(got {n} rows, {len(labels)} labels)", field="domain")
    keys = ["|".join(sorted(map(str, v))) if isinstance(v, list | tuple | np.ndarray)
            else str(v) for v in labels]
    rng = np.random.default_rng(random_state)
    F = _features(X)
    order = _stratified_order(keys, rng)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % folds
    held = np.empty(n, dtype=np.float64)
    for f in range(folds):
        rest = order[fold_of[order] != f][:n_ref]  # still stratified: a sub-order
        refs, cols = _references(F, rest)
        test = np.flatnonzero(fold_of == f)
        held[test] = _knn_score(F[test], refs, cols, k)
    threshold = float(np.quantile(held, quantile))
    refs, cols = _references(F, order[:n_ref])
    settings = {
        "format": FORMAT, "version": VERSION, "k": int(k), "n_ref": len(refs),
        "n_ref_max": int(n_ref), "threshold": threshold, "quantile": float(quantile),
        "pooling": pooling, "transform": TRANSFORM, "n_features": int(X.shape[1]),
        "n_columns": len(cols), "nnz": int(np.count_nonzero(refs)),
        "folds": int(folds), "random_state": int(random_state),
        "method": (f"mean cosine similarity to the {k} nearest of {len(refs)} training "
                   f"documents (seeded, stratified by label); threshold: the "
                   f"{quantile:g} quantile of {folds}-fold out-of-fold training scores"),
        "heldout": {"documents": int(n),
                    "in_domain_share": float(np.mean(held >= threshold)),
                    "quantiles": {f"{q:g}": float(np.quantile(held, q)) for q in _QUANTILES}},
    }
    return DomainModel(refs, cols, settings)


def save_domain(model: DomainModel, directory: str | Path) -> None:
    """Write ``domain.safetensors`` and ``domain.json`` into ``directory``."""
    from safetensors.numpy import save_file

    d = Path(directory)
    R = sp.csr_matrix(model.refs.astype(np.float32))  # float16 values: exact
    R.sort_indices()
    save_file({"data": np.ascontiguousarray(R.data, dtype=np.float16),
               "indices": np.ascontiguousarray(model.columns[R.indices], dtype=np.int32),
               "indptr": np.ascontiguousarray(R.indptr, dtype=np.int64)},
              str(d / DOMAIN_FILE))
    (d / DOMAIN_JSON).write_text(json.dumps(model.settings, indent=2, allow_nan=False))


_REQUIRED = ("k", "n_ref", "threshold", "pooling", "n_features", "n_columns", "nnz")


def load_domain(directory: str | Path) -> DomainModel | None:
    """Load the domain model saved in a head directory (None when it has none).

    Raises
    ------
    ConfigError
        Only one of the two files is there, either is unreadable, or they disagree
        (the message names the file).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    d = Path(directory)
    weights, config = d / DOMAIN_FILE, d / DOMAIN_JSON
    if not weights.exists() and not config.exists():
        return None
    for path in (weights, config):
        if not path.exists():
            raise ConfigError(f"the head's domain model is incomplete: {path.name} is "
                              f"missing", path=path)
    try:
        settings = json.loads(config.read_text())
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable domain settings: {e}", path=config) from e
    if settings.get("format") != FORMAT or settings.get("version") != VERSION:
        raise ConfigError(f"not an {FORMAT} version {VERSION} file", path=config,
                          field="format")
    missing = [key for key in _REQUIRED if key not in settings]
    if missing:
        raise ConfigError(f"domain settings lack {', '.join(missing)}", path=config,
                          field=missing[0])
    try:
        arrays = load_file(str(weights))
        data, indices, indptr = arrays["data"], arrays["indices"], arrays["indptr"]
    except (SafetensorError, KeyError, OSError, ValueError) as e:
        raise ConfigError(f"unreadable domain model: {e!r}", path=weights) from e
    n_ref, n_cols, n_feat, nnz = (int(settings[x]) for x in
                                  ("n_ref", "n_columns", "n_features", "nnz"))
    ok = (data.dtype == np.float16 and data.shape == (nnz,) and indices.shape == (nnz,)
          and indptr.shape == (n_ref + 1,) and (indptr[0] == 0 if n_ref + 1 else True)
          and int(indptr[-1]) == nnz and bool(np.all(np.diff(indptr) >= 0))
          and (nnz == 0 or (0 <= indices.min() and indices.max() < n_feat)))
    columns = np.unique(indices).astype(np.int64) if ok else np.zeros(0, dtype=np.int64)
    if not ok or len(columns) != n_cols:
        raise ConfigError(f"domain model arrays (data {data.dtype} {list(data.shape)}, "
                          f"indices {list(indices.shape)}, indptr {list(indptr.shape)}) do not "
                          f"match {config.name} (n_ref {n_ref}, nnz {nnz}, n_columns {n_cols}, "
                          f"n_features {n_feat})", path=weights)
    R = sp.csr_matrix((data.astype(np.float32), np.searchsorted(columns, indices), indptr),
                      shape=(n_ref, n_cols))
    return DomainModel(R.toarray().astype(np.float16), columns, settings)
