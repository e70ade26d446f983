"""Pooling against a dense numpy reference."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import auditor.pooling
from auditor.errors import ConfigError
from auditor.pooling import POOLINGS, DocumentPooler, validate_poolings


def _random_codes(rng: np.random.Generator, n_tokens: int, d_sae: int, width: int):
    idx = np.stack([rng.choice(d_sae, size=width, replace=False) for _ in range(n_tokens)])
    val = rng.random((n_tokens, width)).astype(np.float32)
    val[rng.random((n_tokens, width)) < 0.3] = 0.0  # padding / inactive entries
    return idx, val


def _dense_reference(docs, order, idx, val, d_sae, n_docs):
    dense = np.zeros((len(docs), d_sae), dtype=np.float64)
    for t in range(len(docs)):
        for j in range(idx.shape[1]):
            if val[t, j] > 0:
                dense[t, idx[t, j]] = val[t, j]
    ref = {}
    for d in range(n_docs):
        rows = dense[docs == d]
        if rows.shape[0] == 0:
            ref[d] = None
            continue
        last = rows[np.argmax(order[docs == d])]
        ref[d] = {
            "max": rows.max(0), "sum": rows.sum(0), "mean": rows.mean(0),
            "count": (rows > 0).sum(0).astype(np.float64), "last": last,
            "n": rows.shape[0], "fired": (rows > 0).any(0),
        }
    return ref


@pytest.mark.parametrize("n_batches", [1, 3])
def test_pooling_matches_dense_reference(n_batches: int) -> None:
    rng = np.random.default_rng(0)
    d_sae, n_docs, n_tokens, width = 40, 6, 120, 5
    docs = rng.integers(0, n_docs - 1, size=n_tokens)  # doc n_docs-1 never gets tokens
    order = rng.permutation(n_tokens)  # positions unique within a doc, arbitrary order
    idx, val = _random_codes(rng, n_tokens, d_sae, width)
    pooler = DocumentPooler(d_sae, poolings=POOLINGS)
    # tokens of one doc arrive spread over several batches, as windows do
    for part in np.array_split(rng.permutation(n_tokens), n_batches):
        pooler.add(docs[part], order[part], idx[part], val[part])
    ref = _dense_reference(docs, order, idx, val, d_sae, n_docs)
    out = pooler.pop_all(range(n_docs))
    for d in range(n_docs):
        got = out[d]
        if ref[d] is None:
            assert got.n_pooled == 0 and got.indices.size == 0
            continue
        fired = np.flatnonzero(ref[d]["fired"])
        np.testing.assert_array_equal(got.indices, fired)
        assert got.indices.dtype == np.uint32
        assert got.n_pooled == ref[d]["n"]
        for p in POOLINGS:
            np.testing.assert_allclose(got.values[p], ref[d][p][fired], rtol=1e-6, err_msg=p)
            assert got.values[p].dtype == np.float32
    assert pooler.documents() == []


def test_pop_leaves_other_documents_intact() -> None:
    pooler = DocumentPooler(10, poolings=("max", "count"))
    pooler.add([0, 1], [0, 0], [[1, 2], [3, 4]], [[1.0, 0.5], [2.0, 0.0]])
    first = pooler.pop(0)
    assert first.indices.tolist() == [1, 2]
    pooler.add([1], [1], [[3, 9]], [[5.0, 1.0]])
    second = pooler.pop(1)
    assert second.indices.tolist() == [3, 9]
    assert second.values["max"].tolist() == [5.0, 1.0]
    assert second.values["count"].tolist() == [2.0, 1.0]
    assert second.n_pooled == 2


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        DocumentPooler(4, poolings=("max",)).add([0], [0], [[1, 2]], [[1.0]])


def test_validate_poolings() -> None:
    assert validate_poolings(["mean", "max", "mean"]) == ("mean", "max")
    with pytest.raises(ConfigError, match="unknown pooling 'median'"):
        validate_poolings(["median"])
    with pytest.raises(ConfigError, match="at least one"):
        validate_poolings([])


def test_doctest() -> None:
    assert doctest.testmod(auditor.pooling).failed == 0
