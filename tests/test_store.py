"""Tests of auditor.store: shard writing, resume, provenance, reading back as CSR."""

from __future__ import annotations

import copy
import doctest
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

import auditor.store
from auditor.errors import (
    ConfigError,
    CorruptShard,
    IncompleteStore,
    ProvenanceMismatch,
    ShardMissing,
    StoreError,
)
from auditor.store import (
    DONE_DIR,
    MANIFEST,
    FeatureMatrix,
    FeatureStoreWriter,
    read_features,
    read_metadata,
    scan_features,
    shard_name,
    store_state,
    verify_store,
)

D_SAE = 64


def make_provenance(**changes: Any) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "auditor_version": "0.1.0",
        "created_at": "2024-01-01T00:00:00Z",
        "model": {"id": "tiny-gpt", "weights_sha256": "ab" * 32, "tokenizer": "tiny-gpt"},
        "saes": {
            "layer9": {
                "path": "/sae/l9",
                "sha256": "cd" * 32,
                "format": "saelens",
                "d_sae": D_SAE,
                "layer": 9,
                "hook_point": "resid_post",
                "activation": "topk",
                "k": 8,
            }
        },
        "pooling": ["max", "mean"],
        "exclude": {"massive_activation": 100.0},
        "max_length": 512,
        "input": {"path": "data.jsonl", "fingerprint": "sha256:" + "00" * 32},
    }
    prov.update(changes)
    return prov


def two_sae_provenance() -> dict[str, Any]:
    prov = make_provenance()
    prov["saes"]["layer3"] = dict(prov["saes"]["layer9"], layer=3, d_sae=32)
    return prov


def random_shard(
    rng: np.random.Generator,
    start: int,
    n: int,
    *,
    keys: dict[str, int] | None = None,
    pools: tuple[str, ...] = ("max", "mean"),
) -> tuple[pl.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """A random feature table and, per (sae, pool), its dense reference matrix."""
    keys = keys or {"layer9": D_SAE}
    cols: dict[str, Any] = {
        "doc_id": [f"doc-{start + i}" for i in range(n)],
        "row": list(range(start, start + n)),
        "n_tokens": rng.integers(1, 100, n).tolist(),
    }
    dense: dict[tuple[str, str], np.ndarray] = {}
    for key, d in keys.items():
        idx_lists, pooled = [], {p: [] for p in pools}
        for p in pools:
            dense[(key, p)] = np.zeros((n, d), dtype=np.float32)
        for i in range(n):
            k = int(rng.integers(0, 9))  # includes empty rows
            idx = np.sort(rng.choice(d, size=k, replace=False))
            idx_lists.append(idx.tolist())
            for p in pools:
                vals = rng.random(k, dtype=np.float32) + 0.1
                pooled[p].append(vals.tolist())
                dense[(key, p)][i, idx] = vals
        cols[f"{key}.indices"] = idx_lists
        for p in pools:
            cols[f"{key}.{p}"] = pooled[p]
        cols[f"{key}.n_excluded"] = rng.integers(0, 3, n).tolist()
    cols["label"] = rng.integers(0, 2, n).tolist()
    cols["source"] = [f"s{i % 3}" for i in range(n)]
    return pl.DataFrame(cols), dense


def write_store(
    directory: Path, *, sizes: tuple[int, ...] = (7, 5, 9), seed: int = 0
) -> tuple[FeatureStoreWriter, dict[tuple[str, str], np.ndarray], pl.DataFrame]:
    rng = np.random.default_rng(seed)
    writer = FeatureStoreWriter(directory, provenance=make_provenance())
    dense_parts: dict[tuple[str, str], list[np.ndarray]] = {}
    tables = []
    start = 0
    for shard, n in enumerate(sizes):
        table, dense = random_shard(rng, start, n)
        writer.write_shard(shard, table)
        tables.append(table)
        for k, v in dense.items():
            dense_parts.setdefault(k, []).append(v)
        start += n
    writer.finalize(summary={}, n_shards=len(sizes))  # as a run that read all its input
    ref = {k: np.vstack(v) for k, v in dense_parts.items()}
    return writer, ref, pl.concat(tables)


# --------------------------------------------------------------------------- round trip


def test_round_trip_csr_matches_dense_reference(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, ref, tables = write_store(store)
    for pool in ("max", "mean"):
        fm = read_features(store, pooling=pool)
        assert isinstance(fm, FeatureMatrix)
        assert sp.issparse(fm.X) and fm.X.format == "csr"
        assert fm.X.dtype == np.float32 and fm.X.shape == (21, D_SAE)
        np.testing.assert_array_equal(fm.X.toarray(), ref[("layer9", pool)])
        assert fm.X.has_sorted_indices
        assert fm.doc_ids == tables["doc_id"].to_list()
        assert fm.metadata == make_provenance()
    fm = read_features(store)
    assert fm.extra is not None
    assert fm.extra.columns == ["row", "n_tokens", "label", "source"]
    assert fm.extra["label"].to_list() == tables["label"].to_list()
    assert fm.extra["row"].dtype == pl.UInt64


def test_single_parquet_file_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, ref, _ = write_store(store, sizes=(6,))
    fm = read_features(store / shard_name(0), pooling="mean")
    np.testing.assert_array_equal(fm.X.toarray(), ref[("layer9", "mean")])
    assert fm.metadata == make_provenance()


def test_schema_dtypes_and_cast(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(4,))
    schema = scan_features(store).collect_schema()
    assert schema["doc_id"] == pl.String
    assert schema["row"] == pl.UInt64
    assert schema["n_tokens"] == pl.UInt32
    assert schema["layer9.indices"] == pl.List(pl.UInt32)
    assert schema["layer9.max"] == pl.List(pl.Float32)
    assert schema["layer9.mean"] == pl.List(pl.Float32)
    assert schema["layer9.n_excluded"] == pl.UInt32
    assert schema.names()[:7] == [
        "doc_id",
        "row",
        "n_tokens",
        "layer9.indices",
        "layer9.max",
        "layer9.mean",
        "layer9.n_excluded",
    ]
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["format"] == "auditor-feature-store" and manifest["version"] == 1
    assert manifest["schema"]["features"]["layer9.indices"] == "List(UInt32)"
    assert manifest["schema"]["tokens"]["layer9.values"] == "List(Float32)"


def test_provenance_in_manifest_and_parquet_metadata(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3, 3))
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["provenance"] == make_provenance()
    for shard in (0, 1):
        meta = pq.read_schema(store / shard_name(shard)).metadata
        assert json.loads(meta[b"auditor"]) == make_provenance()
    assert read_metadata(store) == make_provenance()
    assert read_metadata(store / shard_name(1)) == make_provenance()


def test_done_markers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3, 4))
    marker = json.loads((store / DONE_DIR / "00001.json").read_text())
    assert marker["rows"] == 4 and marker["shard"] == "features-00001.parquet"
    import hashlib

    digest = hashlib.sha256((store / "features-00001.parquet").read_bytes()).hexdigest()
    assert marker["sha256"] == digest
    assert writer.done_shards() == {0, 1}


def test_finalize_writes_summary(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3, 4))
    writer.finalize(summary={"documents": 7, "seconds": 1.5})
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["summary"] == {"documents": 7, "seconds": 1.5}
    assert manifest["shards"] == {"features": 2, "tokens": 0, "rows": 7}
    assert manifest["provenance"] == make_provenance()
    with pytest.raises(ConfigError):
        writer.finalize(summary={"bad": object()})


# --------------------------------------------------------------------------- resume/overwrite


def test_resume_same_provenance(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3, 4))
    # A volatile key (created_at) may differ on resume.
    writer = FeatureStoreWriter(store, provenance=make_provenance(created_at="later"))
    assert writer.resumed
    assert writer.is_done(0) and writer.is_done(1) and not writer.is_done(2)
    assert writer.done_shards() == {0, 1}
    rng = np.random.default_rng(5)
    table, _ = random_shard(rng, 7, 2)
    writer.write_shard(2, table)
    assert writer.done_shards() == {0, 1, 2}
    assert read_features(store).X.shape == (9, D_SAE)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"max_length": 256}, "max_length"),
        (  # another model: other weights (a path alone is no difference, see below)
            {"model": {"id": "other", "weights_sha256": "12" * 32, "tokenizer": "tiny-gpt"}},
            "model.id",
        ),
        ({"pooling": ["max"]}, "pooling"),
    ],
)
def test_different_provenance_raises(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    with pytest.raises(ProvenanceMismatch) as info:
        FeatureStoreWriter(store, provenance=make_provenance(**change))
    assert key in str(info.value)
    assert str(store) in str(info.value)


def test_resume_with_an_sae_added_is_refused_naming_it(tmp_path: Path) -> None:
    # Keys present on one side only are differences too (an added SAE changes the schema).
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer3\.") as info:
        FeatureStoreWriter(store, provenance=two_sae_provenance())
    assert "saes.layer9" not in str(info.value)
    assert info.value.field is not None and info.value.field.startswith("saes.layer3.")


def test_resume_with_an_sae_removed_is_refused_naming_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer = FeatureStoreWriter(store, provenance=two_sae_provenance())
    rng = np.random.default_rng(1)
    table, _ = random_shard(rng, 0, 3, keys={"layer9": D_SAE, "layer3": 32})
    writer.write_shard(0, table)
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer3\.") as info:
        FeatureStoreWriter(store, provenance=make_provenance())
    assert "saes.layer9" not in str(info.value)
    # Likewise a top-level key that only the new run has.
    with pytest.raises(ProvenanceMismatch, match="raw_mean"):
        FeatureStoreWriter(store, provenance=dict(two_sae_provenance(), raw_mean=["x"]))


def test_different_sae_layer_named(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    prov = make_provenance()
    prov["saes"]["layer9"]["layer"] = 10
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer9\.layer"):
        FeatureStoreWriter(store, provenance=prov)


def test_overwrite_builds_beside_and_swaps_at_the_end(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, _, old_table = write_store(store, sizes=(3, 4))
    (store / "notes.md").write_text("user file")
    prov = make_provenance(max_length=128)
    writer = FeatureStoreWriter(store, provenance=prov, overwrite=True)
    assert not writer.resumed
    assert writer.done_shards() == set()
    writer.write_shard(0, random_shard(np.random.default_rng(9), 0, 2)[0])
    # until the new run finishes, the old store is whole and is what readers see
    assert read_metadata(store)["max_length"] == 512
    assert read_features(store).doc_ids == old_table["doc_id"].to_list()
    writer.finalize(summary={}, n_shards=1)
    assert read_metadata(store) == prov and read_features(store).X.shape == (2, D_SAE)
    assert not (store / shard_name(1)).exists()  # the old shards are gone with it
    assert (store / "notes.md").read_text() == "user file"  # only store files are replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # nothing left beside


def test_an_overwrite_that_never_finishes_leaves_the_old_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, _, old_table = write_store(store, sizes=(3,))
    writer = FeatureStoreWriter(store, provenance=make_provenance(max_length=128),
                                overwrite=True)
    writer.write_shard(0, random_shard(np.random.default_rng(9), 0, 2)[0])
    del writer  # killed, or a bad row: no finalize
    assert read_features(store).doc_ids == old_table["doc_id"].to_list()
    assert verify_store(store)["ok"]
    # the next overwrite starts its new store afresh
    again = FeatureStoreWriter(store, provenance=make_provenance(max_length=128),
                               overwrite=True)
    assert again.done_shards() == set()


@pytest.mark.parametrize("finished", [True, False])
def test_a_swap_cut_between_its_renames_is_completed(tmp_path: Path, finished: bool) -> None:
    """The crash window of a swap: the old store moved aside, the new one not yet in
    place. The next writer puts the finished new store in place, or the old one back."""
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    writer = FeatureStoreWriter(store, provenance=make_provenance(max_length=128),
                                overwrite=True)
    writer.write_shard(0, random_shard(np.random.default_rng(9), 0, 2)[0])
    if finished:
        writer.finalize(summary={}, n_shards=1)
        os.replace(store, tmp_path / ".store.overwrite")  # back to before the 2nd rename
        write_store(tmp_path / ".store.replaced", sizes=(3,))  # the old store, aside
    else:
        os.replace(store, tmp_path / ".store.replaced")  # the 1st rename of a swap
    store.mkdir()
    (store / "_job.json").write_text("{}")  # a job record written since
    want = make_provenance(max_length=128 if finished else 512)
    FeatureStoreWriter(store, provenance=want)  # resumes what was recovered
    assert read_metadata(store) == want and (store / "_job.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_refuses_foreign_shards_without_manifest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    (store / MANIFEST).unlink()
    with pytest.raises(StoreError, match=r"no store\.json"):
        FeatureStoreWriter(store, provenance=make_provenance())
    FeatureStoreWriter(store, provenance=make_provenance(), overwrite=True)


def test_unserialisable_provenance(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FeatureStoreWriter(tmp_path / "s", provenance={"x": object()})


# --------------------------------------------------------------------------- partial/corrupt


def test_partial_tmp_and_unmarked_shard_not_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, ref, _ = write_store(store, sizes=(3, 4))
    # Leftovers of a crash: a temp file and a complete-looking shard with no marker.
    (store / ".features-00002.parquet.abc123.tmp").write_bytes(b"half a parquet file")
    rng = np.random.default_rng(9)
    table, _ = random_shard(rng, 100, 5)
    table.write_parquet(store / shard_name(2))
    assert not writer.is_done(2)
    assert writer.done_shards() == {0, 1}
    fm = read_features(store)
    assert fm.X.shape == (7, D_SAE)
    np.testing.assert_array_equal(fm.X.toarray(), ref[("layer9", "max")])
    assert scan_features(store).collect().height == 7
    # The shard is rewritten on resume, overwriting the leftover.
    writer.write_shard(2, table)
    assert writer.is_done(2)
    assert read_features(store).X.shape == (12, D_SAE)


def test_marker_without_shard_raises_shard_missing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3, 4))
    (store / shard_name(1)).unlink()
    assert not writer.is_done(1)  # the writer would redo it
    with pytest.raises(ShardMissing) as info:
        scan_features(store)
    assert shard_name(1) in str(info.value)
    with pytest.raises(ShardMissing):
        read_features(store)


def test_garbage_shard_raises_corrupt_shard(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3, 4))
    (store / shard_name(0)).write_bytes(b"\x00garbage bytes" * 50)
    with pytest.raises(CorruptShard) as info:
        read_features(store)
    assert shard_name(0) in str(info.value)
    assert info.value.path == str(store / shard_name(0))


def test_truncated_shard_raises_corrupt_shard(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3, 4))
    path = store / shard_name(1)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptShard, match=shard_name(1)):
        scan_features(store)


def test_shard_without_doc_id_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    with pytest.raises(CorruptShard, match="doc_id"):
        scan_features(path)
    plain = tmp_path / "plain.parquet"
    pl.DataFrame({"doc_id": ["a"]}).write_parquet(plain)
    assert scan_features(plain).collect().height == 1
    with pytest.raises(CorruptShard, match="auditor"):
        read_metadata(plain)


def test_foreign_shard_with_other_provenance(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_store(a, sizes=(3,))
    rng = np.random.default_rng(1)
    other = FeatureStoreWriter(b, provenance=make_provenance(max_length=64))
    other.write_shard(0, random_shard(rng, 0, 3)[0])
    (a / shard_name(0)).write_bytes((b / shard_name(0)).read_bytes())
    # the file alone no longer matches the checksum its marker recorded
    with pytest.raises(CorruptShard, match="done-marker"):
        scan_features(a)
    # with its marker too, the shard's own provenance gives it away
    marker = next((b / DONE_DIR).iterdir()).name
    (a / DONE_DIR / marker).write_bytes((b / DONE_DIR / marker).read_bytes())
    with pytest.raises(ProvenanceMismatch, match="max_length"):
        scan_features(a)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        scan_features(tmp_path)
    with pytest.raises(StoreError):
        scan_features(tmp_path / "missing")
    with pytest.raises(StoreError):
        read_metadata(tmp_path / "missing")


# --------------------------------------------------------------------------- write validation


def test_write_shard_validates_table(tmp_path: Path) -> None:
    writer = FeatureStoreWriter(tmp_path / "s", provenance=make_provenance())
    rng = np.random.default_rng(2)
    table, _ = random_shard(rng, 0, 4)
    with pytest.raises(CorruptShard, match=r"layer9\.mean"):
        writer.write_shard(0, table.drop("layer9.mean"))
    bad = table.with_columns(pl.Series("layer9.indices", [[3, 1], [], [], []]))
    with pytest.raises(CorruptShard, match="ascending"):
        writer.write_shard(0, bad)
    for indices in ([[1, 3, 3], [], [], []], [[], [], [], [7, 7]]):  # a duplicate in a row
        bad = table.with_columns(  # aligned values, so the duplicate is the only fault
            pl.Series("layer9.indices", indices),
            *(pl.Series(f"layer9.{p}", [[1.0] * len(r) for r in indices]) for p in ("max", "mean")))
        with pytest.raises(CorruptShard, match="ascending"):
            writer.write_shard(0, bad)
    bad = table.with_columns(pl.Series("layer9.max", [[1.0]] * 4))
    with pytest.raises(CorruptShard, match="list lengths"):
        writer.write_shard(0, bad)
    bad = table.with_columns(pl.Series("doc_id", ["a", "a", "b", "c"]))
    with pytest.raises(CorruptShard, match="duplicate"):
        writer.write_shard(0, bad)
    bad = table.with_columns(pl.Series("layer9.n_excluded", [-1, 0, 0, 0]))
    with pytest.raises(CorruptShard, match="cast"):
        writer.write_shard(0, bad)
    with pytest.raises(ConfigError):
        writer.write_shard(-1, table)
    with pytest.raises(ConfigError):
        writer.write_shard(0, table, kind="logits")  # type: ignore[arg-type]
    assert writer.done_shards() == set()
    assert not (tmp_path / "s" / shard_name(0)).exists()


# --------------------------------------------------------------------------- scanning/selection


def test_indices_may_repeat_or_descend_across_rows(tmp_path: Path) -> None:
    # Ascending order is per document: a row may start below or at the previous row's end.
    writer = FeatureStoreWriter(tmp_path / "s", provenance=make_provenance())
    indices = [[5, 9], [9], [1, 2, 3], [], [0]]
    table = pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(5)], "row": list(range(5)),
        "n_tokens": [3] * 5, "layer9.indices": indices,
        "layer9.max": [[1.0] * len(r) for r in indices],
        "layer9.mean": [[0.5] * len(r) for r in indices],
        "layer9.n_excluded": [0] * 5,
    })
    writer.write_shard(0, table)
    writer.finalize(summary={}, n_shards=1)
    assert read_features(tmp_path / "s").X.nnz == 7


def test_scan_features_lazy_filter(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, _, tables = write_store(store)
    lf = scan_features(store)
    assert isinstance(lf, pl.LazyFrame)
    got = lf.filter(pl.col("row") >= 10).select("doc_id", "label").collect()
    want = tables.filter(pl.col("row") >= 10).select("doc_id", "label")
    assert got.to_dicts() == want.to_dicts()


def test_read_with_sae_and_pooling_selection(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer = FeatureStoreWriter(store, provenance=two_sae_provenance())
    rng = np.random.default_rng(3)
    table, ref = random_shard(rng, 0, 10, keys={"layer9": D_SAE, "layer3": 32})
    writer.write_shard(0, table)
    writer.finalize(summary={}, n_shards=1)
    with pytest.raises(ConfigError) as info:
        read_features(store)
    assert "layer3" in str(info.value) and "layer9" in str(info.value)
    with pytest.raises(ConfigError, match="available: layer3, layer9"):
        read_features(store, sae="layer99")
    with pytest.raises(ConfigError) as info:
        read_features(store, sae="layer3", pooling="sum")
    assert "max" in str(info.value) and "mean" in str(info.value)
    fm = read_features(store, sae="layer3", pooling="mean", columns=["label"])
    assert fm.X.shape == (10, 32)
    np.testing.assert_array_equal(fm.X.toarray(), ref[("layer3", "mean")])
    assert fm.extra is not None and fm.extra.columns == ["label"]
    fm = read_features(store, sae="layer9", columns=[])
    np.testing.assert_array_equal(fm.X.toarray(), ref[("layer9", "max")])
    assert fm.extra is None
    with pytest.raises(ConfigError, match="nope"):
        read_features(store, sae="layer9", columns=["nope"])


def test_d_sae_override_and_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, ref, _ = write_store(store, sizes=(5,))
    fm = read_features(store, d_sae=100)
    assert fm.X.shape == (5, 100)
    np.testing.assert_array_equal(fm.X.toarray()[:, :D_SAE], ref[("layer9", "max")])
    too_small = int(read_features(store).X.indices.max())
    with pytest.raises(ConfigError, match="d_sae"):
        read_features(store, d_sae=too_small)


def test_d_sae_missing_from_provenance(tmp_path: Path) -> None:
    prov = make_provenance()
    del prov["saes"]["layer9"]["d_sae"]
    writer = FeatureStoreWriter(tmp_path / "s", provenance=prov)
    writer.write_shard(0, random_shard(np.random.default_rng(0), 0, 3)[0])
    writer.finalize(summary={}, n_shards=1)
    with pytest.raises(ConfigError, match="d_sae"):
        read_features(tmp_path / "s")
    assert read_features(tmp_path / "s", d_sae=D_SAE).X.shape == (3, D_SAE)


# --------------------------------------------------------------------------- token shards


def test_token_shards(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(2,))
    tokens = pl.DataFrame(
        {
            "doc_id": ["doc-0", "doc-0", "doc-1"],
            "position": [0, 1, 0],
            "token_id": [101, 7, 55],
            "layer9.indices": [[1, 4], [], [63]],
            "layer9.values": [[0.5, 1.5], [], [2.0]],
            "layer9.pooled": [True, False, True],
        }
    )
    path = writer.write_shard(0, tokens, kind="tokens")
    assert path.name == "tokens-00000.parquet"
    assert (store / DONE_DIR / "tokens-00000.json").exists()
    assert writer.done_shards(kind="tokens") == {0}
    assert writer.is_done(0, kind="tokens")
    got = scan_features(store, kind="tokens").collect()
    assert got.schema["position"] == pl.UInt32 and got.schema["token_id"] == pl.UInt32
    assert got.schema["layer9.indices"] == pl.List(pl.UInt32)
    assert got.schema["layer9.values"] == pl.List(pl.Float32)
    assert got["layer9.indices"].to_list() == [[1, 4], [], [63]]
    assert got["layer9.pooled"].to_list() == [True, False, True]
    # Token shards are not feature shards.
    assert scan_features(store).collect().height == 2
    assert json.loads(pq.read_schema(path).metadata[b"auditor"]) == make_provenance()
    with pytest.raises(CorruptShard, match="position"):
        writer.write_shard(1, tokens.drop("position"), kind="tokens")


def test_rewrite_done_shard_replaces_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3,))
    rng = np.random.default_rng(11)
    table, ref = random_shard(rng, 50, 6)
    writer.write_shard(0, table)
    fm = read_features(store)
    np.testing.assert_array_equal(fm.X.toarray(), ref[("layer9", "max")])
    assert json.loads((store / DONE_DIR / "00000.json").read_text())["rows"] == 6


def test_manifest_written_atomically_no_tmp_left(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(2, 2))
    writer.finalize(summary={"n": 4})
    leftovers = [p.name for p in store.rglob("*.tmp")]
    assert leftovers == []


def test_provenance_is_copied(tmp_path: Path) -> None:
    prov = make_provenance()
    snapshot = copy.deepcopy(prov)
    writer = FeatureStoreWriter(tmp_path / "s", provenance=prov)
    prov["max_length"] = 1
    assert writer.provenance == snapshot


def test_doctests() -> None:
    result = doctest.testmod(auditor.store)
    assert result.attempted > 0 and result.failed == 0


def test_is_done_false_when_shard_file_changed_size(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3, 4))
    path = store / shard_name(1)
    path.write_bytes(path.read_bytes() + b"extra")
    assert not writer.is_done(1)
    assert writer.done_shards() == {0}


def test_failed_rewrite_leaves_shard_not_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    writer, _, _ = write_store(store, sizes=(3,))
    table, _ = random_shard(np.random.default_rng(4), 10, 2)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        writer.write_shard(0, table)
    assert not writer.is_done(0)  # the old marker is gone: the shard must be redone
    assert list(store.glob("*.tmp")) == []
    with pytest.raises(IncompleteStore, match="0 of 1 shards"):
        scan_features(store)
    assert scan_features(store, allow_partial=True).collect().height == 0


def test_passthrough_types_may_differ_between_shards(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer = FeatureStoreWriter(store, provenance=make_provenance())
    rng = np.random.default_rng(6)
    t0, _ = random_shard(rng, 0, 3)
    t1, _ = random_shard(rng, 3, 2)
    writer.write_shard(0, t0.with_columns(pl.lit(None).alias("score")))
    writer.write_shard(1, t1.with_columns(pl.Series("score", [0.5, 1.5])))
    writer.finalize(summary={}, n_shards=2)
    got = scan_features(store).collect()
    assert got["score"].to_list() == [None, None, None, 0.5, 1.5]
    fm = read_features(store, columns=["score"])
    assert fm.extra is not None and fm.extra["score"].to_list()[3:] == [0.5, 1.5]


def test_store_column_type_mismatch_between_shards(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3, 3))
    # Replace shard 1 by a file with the same provenance but a wrong column type.
    path = store / shard_name(1)
    table = pq.read_table(path)
    bad = pl.from_arrow(table).with_columns(pl.col("n_tokens").cast(pl.Int64))
    assert isinstance(bad, pl.DataFrame)
    arrow = bad.to_arrow().replace_schema_metadata(table.schema.metadata)
    pq.write_table(arrow, path)
    marker = store / DONE_DIR / "00001.json"
    marker.write_text(json.dumps({"rows": 3, "shard": shard_name(1)}))
    with pytest.raises(CorruptShard, match="n_tokens") as info:
        scan_features(store)
    assert shard_name(1) in str(info.value)


def test_row_count_must_match_marker(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, sizes=(3,))
    marker = store / DONE_DIR / "00000.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(data, rows=99)))
    with pytest.raises(CorruptShard, match="99"):
        scan_features(store)


def test_write_accepts_fixed_size_array_columns(tmp_path: Path) -> None:
    # Series built from equal-length numpy rows become Array columns; they are cast to List.
    writer = FeatureStoreWriter(tmp_path / "s", provenance=make_provenance())
    idx = [np.array([1, 5], dtype=np.uint32), np.array([0, 63], dtype=np.uint32)]
    val = [np.array([0.5, 1.0], dtype=np.float32), np.array([2.0, 3.0], dtype=np.float32)]
    table = pl.DataFrame(
        [
            pl.Series("doc_id", ["a", "b"]),
            pl.Series("row", [0, 1]),
            pl.Series("n_tokens", [2, 2]),
            pl.Series("layer9.indices", idx),
            pl.Series("layer9.max", val),
            pl.Series("layer9.mean", val),
            pl.Series("layer9.n_excluded", [0, 0]),
        ]
    )
    assert isinstance(table.schema["layer9.indices"], pl.Array)
    writer.write_shard(0, table)
    writer.finalize(summary={}, n_shards=1)
    dense = read_features(tmp_path / "s").X.toarray()
    assert dense[0, 1] == 0.5 and dense[0, 5] == 1.0 and dense[1, 63] == 3.0
    assert dense.sum() == pytest.approx(6.5)


# --------------------------------------------------------------------------- integrity


def _flip_a_byte(path: Path) -> None:
    """Change one byte in the middle of a file, keeping its size; move its mtime on, as a
    later write would (readers check a shard once per size and mtime)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_shard_with_flipped_bytes_is_refused_by_name(tmp_path: Path) -> None:
    store = tmp_path / "s"
    write_store(store)
    assert verify_store(store)["ok"]
    _flip_a_byte(store / shard_name(1))
    with pytest.raises(CorruptShard, match="sha256 differs") as info:
        read_features(store)
    assert info.value.path == str(store / shard_name(1))
    report = verify_store(store)
    assert not report["ok"] and report["shards"] == 3
    assert [(p["shard"], p["file"]) for p in report["problems"]] == [(1, shard_name(1))]
    # a resume computes the corrupt shard again instead of keeping it
    writer = FeatureStoreWriter(store, provenance=make_provenance())
    assert writer.done_shards() == {0, 2}


@pytest.mark.parametrize("change", ["grown", "truncated"])
def test_a_shard_of_another_size_is_refused_by_its_marker(tmp_path: Path, change: str) -> None:
    # The size is checked against the done-marker before any hashing or parsing.
    store = tmp_path / "s"
    write_store(store)
    path = store / shard_name(1)
    data = path.read_bytes()
    path.write_bytes(data + b"extra" if change == "grown" else data[:-7])
    size = path.stat().st_size
    with pytest.raises(CorruptShard, match=f"has {size:,} bytes, its done-marker says "
                                           f"{len(data):,}") as info:
        read_features(store)
    assert info.value.path == str(path)


def test_store_verify_command_names_the_bad_shard(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main

    store = tmp_path / "s"
    write_store(store, sizes=(3, 4))
    assert main(["store", "verify", str(store)]) == 0
    assert "2 shards, 7 documents, ok" in capsys.readouterr().out
    (store / shard_name(0)).unlink()
    assert main(["store", "verify", str(store), "--json"]) == 6
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["file"] == shard_name(0)
    assert "not on disk" in report["problems"][0]["error"]


def test_duplicate_document_ids_across_shards_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    writer = FeatureStoreWriter(tmp_path / "s", provenance=make_provenance())
    writer.write_shard(0, random_shard(rng, 0, 4)[0])
    writer.write_shard(1, random_shard(rng, 2, 4)[0])  # doc-2, doc-3 again
    writer.finalize(summary={}, n_shards=2)
    with pytest.raises(CorruptShard, match="doc-2, doc-3") as info:
        read_features(tmp_path / "s")
    assert info.value.field == "doc_id"


def test_a_resume_past_shards_of_other_documents_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    writer = FeatureStoreWriter(tmp_path / "s", provenance=make_provenance())
    table = random_shard(rng, 0, 4)[0]
    writer.write_shard(0, table)
    writer.check_documents(0, table["doc_id"].to_list(), table["row"].to_list())
    with pytest.raises(ProvenanceMismatch, match="shard 0 holds rows 0–3") as info:
        writer.check_documents(0, ["doc-1", "doc-0", "doc-2", "doc-3"], [0, 1, 2, 3])
    assert info.value.field == "documents"
    with pytest.raises(ProvenanceMismatch, match="rows 5–8"):
        writer.check_documents(0, table["doc_id"].to_list(), [5, 6, 7, 8])


def test_an_unfinished_store_is_refused_unless_partial_reads_are_asked(tmp_path: Path) -> None:
    store = tmp_path / "s"
    rng = np.random.default_rng(6)
    writer = FeatureStoreWriter(store, provenance=make_provenance())
    writer.write_shard(0, random_shard(rng, 0, 4)[0])  # killed before it read its input
    with pytest.raises(IncompleteStore, match=r"1 shards \(4 documents\) written"):
        read_features(store)
    assert store_state(store) == {"complete": False, "shards": 1, "expected_shards": None,
                                  "documents": 4}
    assert read_features(store, allow_partial=True).X.shape == (4, D_SAE)
    writer.write_shard(2, random_shard(rng, 8, 3)[0])
    writer.finalize(summary={}, n_shards=3)  # read it all, but shard 1 is missing
    with pytest.raises(IncompleteStore, match="2 of 3 shards"):
        scan_features(store)
    writer.write_shard(1, random_shard(rng, 4, 4)[0])
    assert store_state(store)["complete"] and read_features(store).X.shape == (11, D_SAE)
    # a store finalized by an auditor from before expected_shards counts as complete
    manifest = json.loads((store / MANIFEST).read_text())
    del manifest["expected_shards"]
    (store / MANIFEST).write_text(json.dumps(manifest))
    assert store_state(store)["complete"]


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int) -> None:
    """A store shared by a team is as readable as the writer's umask says (mkstemp alone
    would make every shard 0600)."""
    old = os.umask(umask)
    try:
        write_store(tmp_path / "s", sizes=(2,))
    finally:
        os.umask(old)
    for path in [tmp_path / "s" / shard_name(0), tmp_path / "s" / MANIFEST,
                 *(tmp_path / "s" / DONE_DIR).iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_the_same_artefacts_by_other_paths_resume_the_store(tmp_path: Path) -> None:
    """Provenance compares content hashes, not paths: the same SAE, model and input named
    by a relative path or a copy resume the store; other content is still refused."""
    store = tmp_path / "s"
    write_store(store, sizes=(2,))
    moved = make_provenance(
        model={"id": "./models/tiny-gpt-copy", "weights_sha256": "ab" * 32,
               "tokenizer": "./models/tiny-gpt-copy"},
        input={"path": "../elsewhere/data.jsonl", "fingerprint": "sha256:" + "00" * 32})
    moved["saes"]["layer9"]["path"] = "sae-copy"
    assert FeatureStoreWriter(store, provenance=moved).resumed
    other = copy.deepcopy(moved)
    other["saes"]["layer9"]["sha256"] = "ef" * 32
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer9\.path, saes\.layer9\.sha256"):
        FeatureStoreWriter(store, provenance=other)
    renamed = copy.deepcopy(moved)
    renamed["model"]["weights_sha256"] = "99" * 32
    with pytest.raises(ProvenanceMismatch, match=r"model\.id, model\.tokenizer"):
        FeatureStoreWriter(store, provenance=renamed)
