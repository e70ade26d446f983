"""Token → document pooling of sparse SAE codes.

Pure numpy, no torch: extraction hands over, per batch, which document each token belongs
to and the token's sparse code (``indices``/``values`` of equal shape ``[n_tokens, width]``,
value 0 meaning "padding, not active"). :class:`DocumentPooler` reduces those to one sparse
row per document, across batches and across the windows of a long document.

Every pooling is defined over the *pooled* tokens of a document — specials and excluded
outlier tokens never reach the pooler:

``max``    largest activation of the feature over the tokens
``mean``   sum over tokens divided by the number of pooled tokens (inactive tokens count 0)
``sum``    sum over tokens
``count``  number of tokens where the feature fired (value > 0)
``last``   activation on the document's last pooled token (0 if it did not fire there)

All poolings share one index set per document: the features that fired on at least one
pooled token, sorted ascending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from auditor.errors import ConfigError

__all__ = ["POOLINGS", "DocumentPooler", "PooledDocument", "Pooling", "validate_poolings"]

Pooling = Literal["max", "mean", "sum", "count", "last"]
POOLINGS: tuple[str, ...] = ("max", "mean", "sum", "count", "last")


def validate_poolings(poolings: Sequence[str]) -> tuple[str, ...]:
    """Return ``poolings`` de-duplicated in order, or raise :class:`ConfigError`.

    Raises
    ------
    ConfigError
        If the list is empty or names an unknown pooling.
    """
    out: list[str] = []
    for p in poolings:
        if p not in POOLINGS:
            raise ConfigError(f"unknown pooling {p!r}; choose from {', '.join(POOLINGS)}",
                              field="poolings")
        if p not in out:
            out.append(p)
    if not out:
        raise ConfigError("at least one pooling is required", field="poolings")
    return tuple(out)


@dataclass(frozen=True)
class PooledDocument:
    """One document's pooled sparse code.

    Attributes
    ----------
    indices
        Features that fired on at least one pooled token, ascending (uint32).
    values
        One float32 array per pooling, aligned with ``indices``.
    n_pooled
        Number of tokens that were pooled.
    """

    indices: npt.NDArray[np.uint32]
    values: dict[str, npt.NDArray[np.float32]]
    n_pooled: int


@dataclass
class _Partial:
    keys: npt.NDArray[np.int64]
    sums: npt.NDArray[np.float64]
    maxs: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64]


class DocumentPooler:
    """Accumulate sparse token codes into per-document pooled rows.

    Parameters
    ----------
    d_sae
        Width of the SAE (features are ``0 <= index < d_sae``).
    poolings
        Which poolings to compute, a subset of :data:`POOLINGS`.

    Examples
    --------
    >>> import numpy as np
    >>> p = DocumentPooler(8, poolings=("max", "mean", "count"))
    >>> p.add(np.array([0, 0, 1]), np.array([0, 1, 0]),
    ...       np.array([[3, 5], [3, 0], [7, 0]]), np.array([[1.0, 2.0], [4.0, 0.0], [1.5, 0.0]]))
    >>> doc = p.pop(0)
    >>> doc.indices.tolist(), doc.values["max"].tolist(), doc.values["mean"].tolist()
    ([3, 5], [4.0, 2.0], [2.5, 1.0])
    """

    def __init__(self, d_sae: int, *, poolings: Sequence[str]) -> None:
        self.d_sae = int(d_sae)
        self.poolings = validate_poolings(poolings)
        self._partials: list[_Partial] = []
        self._n_pooled: dict[int, int] = {}
        # doc -> (order of its last pooled token, that token's indices, values)
        self._last: dict[int, tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}

    def add(
        self,
        doc_index: npt.ArrayLike,
        order: npt.ArrayLike,
        indices: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> None:
        """Add a batch of pooled tokens.

        Parameters
        ----------
        doc_index
            ``[n_tokens]`` document of each token (any non-negative integers).
        order
            ``[n_tokens]`` position of each token within its document, across windows;
            used only by ``last``.
        indices, values
            ``[n_tokens, width]`` sparse codes; ``values == 0`` marks padding.
        """
        docs = np.asarray(doc_index, dtype=np.int64)
        idx = np.asarray(indices, dtype=np.int64)
        val = np.asarray(values, dtype=np.float32)
        if idx.shape != val.shape or idx.ndim != 2 or idx.shape[0] != docs.shape[0]:
            raise ValueError(
                f"shape mismatch: doc_index {docs.shape}, indices {idx.shape}, values {val.shape}"
            )
        if docs.size == 0:
            return
        for d, n in zip(*np.unique(docs, return_counts=True), strict=True):
            self._n_pooled[int(d)] = self._n_pooled.get(int(d), 0) + int(n)
        if "last" in self.poolings:
            self._track_last(docs, np.asarray(order, dtype=np.int64), idx, val)

        active = val > 0
        rows, cols = np.nonzero(active)
        keys = docs[rows] * self.d_sae + idx[rows, cols]
        self._partials.append(_reduce(keys, val[rows, cols].astype(np.float64),
                                      val[rows, cols], np.ones(len(keys), dtype=np.int64)))

    def _track_last(
        self,
        docs: npt.NDArray[np.int64],
        order: npt.NDArray[np.int64],
        idx: npt.NDArray[np.int64],
        val: npt.NDArray[np.float32],
    ) -> None:
        # Sort by (doc, order); the last row of each doc group is its latest token here.
        perm = np.lexsort((order, docs))
        sdocs = docs[perm]
        ends = np.flatnonzero(np.r_[sdocs[1:] != sdocs[:-1], True])
        for e in ends:
            row = perm[e]
            d = int(docs[row])
            prev = self._last.get(d)
            if prev is None or order[row] > prev[0]:
                self._last[d] = (int(order[row]), idx[row].copy(), val[row].copy())

    def documents(self) -> list[int]:
        """Documents that have received at least one token, ascending."""
        return sorted(self._n_pooled)

    def pop_all(self, docs: Sequence[int]) -> dict[int, PooledDocument]:
        """Finish ``docs`` and forget them; documents never seen come back empty.

        Returns
        -------
        dict
            ``doc -> PooledDocument`` for every requested document.
        """
        self._compact()
        wanted = np.asarray(sorted(set(docs)), dtype=np.int64)
        out: dict[int, PooledDocument] = {}
        if self._partials:
            part = self._partials[0]
            doc_of = part.keys // self.d_sae
            take = np.isin(doc_of, wanted)
            keep = _Partial(part.keys[~take], part.sums[~take], part.maxs[~take],
                            part.counts[~take])
            self._partials = [keep] if keep.keys.size else []
            keys, sums, maxs, counts = (part.keys[take], part.sums[take], part.maxs[take],
                                        part.counts[take])
            docs_sel = keys // self.d_sae
            bounds = np.searchsorted(docs_sel, wanted, side="left"), np.searchsorted(
                docs_sel, wanted, side="right")
        else:
            keys = np.zeros(0, dtype=np.int64)
            sums, maxs, counts = np.zeros(0), np.zeros(0, np.float32), np.zeros(0, np.int64)
            bounds = (np.zeros(len(wanted), dtype=np.int64),) * 2
        for i, d in enumerate(wanted.tolist()):
            n_pooled = self._n_pooled.pop(d, 0)
            last = self._last.pop(d, None)
            lo, hi = int(bounds[0][i]), int(bounds[1][i])
            if hi == lo:
                empty = np.zeros(0, dtype=np.float32)
                out[d] = PooledDocument(np.zeros(0, dtype=np.uint32),
                                        {p: empty.copy() for p in self.poolings}, n_pooled)
                continue
            feats = (keys[lo:hi] - d * self.d_sae).astype(np.uint32)
            vals: dict[str, npt.NDArray[np.float32]] = {}
            for p in self.poolings:
                if p == "max":
                    vals[p] = maxs[lo:hi].astype(np.float32)
                elif p == "sum":
                    vals[p] = sums[lo:hi].astype(np.float32)
                elif p == "mean":
                    vals[p] = (sums[lo:hi] / max(n_pooled, 1)).astype(np.float32)
                elif p == "count":
                    vals[p] = counts[lo:hi].astype(np.float32)
                else:  # last
                    vals[p] = _last_values(feats, last)
            out[d] = PooledDocument(feats, vals, n_pooled)
        return out

    def pop(self, doc: int) -> PooledDocument:
        """Finish one document; see :meth:`pop_all`."""
        return self.pop_all([doc])[doc]

    def _compact(self) -> None:
        if len(self._partials) <= 1:
            return
        keys = np.concatenate([p.keys for p in self._partials])
        sums = np.concatenate([p.sums for p in self._partials])
        maxs = np.concatenate([p.maxs for p in self._partials])
        counts = np.concatenate([p.counts for p in self._partials])
        self._partials = [_reduce(keys, sums, maxs, counts)]


def _reduce(
    keys: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float64],
    maxs: npt.NDArray[np.float32],
    counts: npt.NDArray[np.int64],
) -> _Partial:
    """Combine entries with equal keys (sum, max, count); result sorted by key."""
    if keys.size == 0:
        return _Partial(keys, sums, maxs, counts)
    perm = np.argsort(keys, kind="stable")
    k = keys[perm]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return _Partial(
        k[starts],
        np.add.reduceat(sums[perm], starts),
        np.maximum.reduceat(maxs[perm], starts),
        np.add.reduceat(counts[perm], starts),
    )


def _last_values(
    feats: npt.NDArray[np.uint32],
    last: tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float32]] | None,
) -> npt.NDArray[np.float32]:
    out = np.zeros(len(feats), dtype=np.float32)
    if last is None:
        return out
    _, idx, val = last
    active = val > 0
    pos = np.searchsorted(feats, idx[active].astype(np.uint32))
    out[pos] = val[active]
    return out
