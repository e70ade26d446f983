"""The Parquet feature store: SAE features per document, written in resumable shards.

A store is a directory::

    store.json                 manifest: format, version, provenance, schema (+ summary)
    features-00000.parquet     one row per document
    features-00001.parquet
    tokens-00000.parquet       optional per-token features
    _done/00000.json           done-marker of features-00000.parquet
    _done/tokens-00000.json    done-marker of tokens-00000.parquet

Feature shard columns: ``doc_id`` (String), ``row`` (UInt64, the input row), ``n_tokens``
(UInt32, tokens pooled after exclusions), then for every hooked SAE with key ``K``:
``K.indices`` (List(UInt32), strictly ascending), one ``K.<pool>`` (List(Float32), aligned
with ``K.indices``) per pooling in the provenance, and ``K.n_excluded`` (UInt32); then any
passthrough columns. Token shard columns: ``doc_id``, ``position`` (UInt32), ``token_id``
(UInt32), ``K.indices`` and ``K.values`` per SAE.

Every shard is written to a temporary file in the store directory, ``os.replace``-d into
place, and only then gets its done-marker (also written atomically). Readers only read
shards that have a marker, so a crash never exposes a partial shard, and a rerun resumes by
skipping the shards :meth:`FeatureStoreWriter.is_done` reports. The provenance (model, SAEs,
pooling, input fingerprint, …) is stored in the manifest and in each Parquet file's
key-value metadata under the key ``"auditor"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from auditor._files import apply_umask, file_lock, fsync_dir, sha256_bytes, sha256_file, write_json
from auditor.errors import (
    ConfigError,
    CorruptShard,
    IncompleteStore,
    ProvenanceMismatch,
    ShardMissing,
    StoreError,
)

__all__ = [
    "DONE_DIR",
    "FORMAT",
    "MANIFEST",
    "METADATA_KEY",
    "POOLINGS",
    "RAW_PREFIX",
    "VERSION",
    "VOLATILE_KEYS",
    "FeatureMatrix",
    "FeatureStoreWriter",
    "feature_schema",
    "read_features",
    "read_metadata",
    "read_raw_means",
    "scan_features",
    "shard_name",
    "store_state",
    "token_schema",
    "verify_store",
]

FORMAT = "auditor-feature-store"
VERSION = 1
MANIFEST = "store.json"
#: Serialises manifest updates of processes filling one store (see ``rank``).
LOCK_FILE = ".store.lock"
DONE_DIR = "_done"
#: Key of the provenance JSON in each Parquet file's key-value metadata.
METADATA_KEY = "auditor"
#: The poolings the extractor knows; each becomes one ``K.<pool>`` column.
POOLINGS: tuple[str, ...] = ("max", "mean", "sum", "count", "last")
#: Provenance keys (at any depth) ignored when checking that a store can be resumed.
VOLATILE_KEYS: frozenset[str] = frozenset({"created_at", "updated_at", "progress", "timings"})

Kind = Literal["features", "tokens"]
_KINDS: tuple[str, ...] = ("features", "tokens")
_RESERVED_SUFFIXES = frozenset({"indices", "n_excluded", "values"})


# --------------------------------------------------------------------------- schema


#: Column prefix of per-document mean raw activations (``raw_mean.layer9.resid_post``).
RAW_PREFIX = "raw_mean."


def shard_name(shard: int, *, kind: Kind = "features") -> str:
    """Return the file name of shard number ``shard``, e.g. ``'features-00003.parquet'``.

    Parameters
    ----------
    shard : int
        Shard number, ``>= 0``.
    kind : {'features', 'tokens'}, default 'features'
        Which shard family.

    Returns
    -------
    str
        The file name inside the store directory.
    """
    return f"{kind}-{shard:05d}.parquet"


def _sae_keys(provenance: Mapping[str, Any]) -> list[str]:
    saes = provenance.get("saes") or {}
    if not isinstance(saes, Mapping):
        raise ConfigError("provenance['saes'] must be a mapping of SAE key -> info", field="saes")
    return [str(k) for k in saes]


def _poolings(provenance: Mapping[str, Any]) -> list[str]:
    pools = provenance.get("pooling") or []
    if isinstance(pools, str) or not all(isinstance(p, str) and p for p in pools):
        raise ConfigError("provenance['pooling'] must be a list of names", field="pooling")
    bad = [p for p in pools if p in _RESERVED_SUFFIXES or "." in p]
    if bad:
        raise ConfigError(f"invalid pooling names: {', '.join(bad)}", field="pooling")
    return list(pools)


def feature_schema(provenance: Mapping[str, Any]) -> dict[str, pl.DataType]:
    """Return the fixed columns of a feature shard for a provenance, in order.

    Parameters
    ----------
    provenance : mapping
        Uses ``provenance['saes']`` (its keys) and ``provenance['pooling']``.

    Returns
    -------
    dict of str to polars.DataType
        ``doc_id``, ``row``, ``n_tokens``, then ``K.indices``, ``K.<pool>``…,
        ``K.n_excluded`` per SAE. Passthrough columns are not included.

    Raises
    ------
    ConfigError
        ``saes`` or ``pooling`` is malformed.
    """
    cols: dict[str, pl.DataType] = {
        "doc_id": pl.String(),
        "row": pl.UInt64(),
        "n_tokens": pl.UInt32(),
    }
    pools = _poolings(provenance)
    for key in _sae_keys(provenance):
        cols[f"{key}.indices"] = pl.List(pl.UInt32)
        for pool in pools:
            cols[f"{key}.{pool}"] = pl.List(pl.Float32)
        cols[f"{key}.n_excluded"] = pl.UInt32()
    for hook in provenance.get("raw_mean") or []:
        cols[f"{RAW_PREFIX}{hook}"] = pl.List(pl.Float32)
    return cols


def token_schema(provenance: Mapping[str, Any]) -> dict[str, pl.DataType]:
    """Return the columns of a per-token shard for a provenance, in order.

    Parameters
    ----------
    provenance : mapping
        Uses the keys of ``provenance['saes']``.

    Returns
    -------
    dict of str to polars.DataType
        ``doc_id``, ``position``, ``token_id``, then ``K.indices`` and ``K.values`` per SAE.

    Raises
    ------
    ConfigError
        ``saes`` is malformed.
    """
    cols: dict[str, pl.DataType] = {
        "doc_id": pl.String(),
        "position": pl.UInt32(),
        "token_id": pl.UInt32(),
    }
    for key in _sae_keys(provenance):
        cols[f"{key}.indices"] = pl.List(pl.UInt32)
        cols[f"{key}.values"] = pl.List(pl.Float32)
    return cols


def _schema_for(provenance: Mapping[str, Any], kind: str) -> dict[str, pl.DataType]:
    return feature_schema(provenance) if kind == "features" else token_schema(provenance)


# --------------------------------------------------------------------------- small helpers


def _jsonable(value: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    try:
        out = json.loads(json.dumps(dict(value), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be JSON-serialisable: {e}", field=what) from e
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in VOLATILE_KEYS:
                continue
            out.update(_flatten(v, f"{prefix}{k}."))
        if not out and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: value}


#: Keys naming where an artefact was found, and the sibling key of its content hash: the
#: same SAE, model or input given by another path (relative, a copy) is the same artefact.
_PATH_KEYS: dict[str, tuple[str, ...]] = {
    "path": ("sha256", "fingerprint"),
    "id": ("weights_sha256",),
    "tokenizer": ("weights_sha256",),
}


def _provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two provenances (volatile keys ignored, and
    paths whose artefact has the same content hash on both sides)."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    differ = {k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING)}
    return sorted(k for k in differ if not _same_content(k, a, b))


def _same_content(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    prefix, _, leaf = key.rpartition(".")
    for hash_leaf in _PATH_KEYS.get(leaf, ()):
        hash_key = f"{prefix}.{hash_leaf}" if prefix else hash_leaf
        if a.get(hash_key) is not None and a.get(hash_key) == b.get(hash_key):
            return True
    return False


_MISSING = object()


def _tmp_path(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    apply_umask(tmp)  # readable by whom the umask says, not only the writer
    return Path(tmp)


def _atomic_write_json(target: Path, payload: Mapping[str, Any]) -> None:
    write_json(target, payload, sort_keys=True)


def _list_parts(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(offsets, values)`` of a List series; a null list counts as empty."""
    import pyarrow.compute as pc

    arr = series.rechunk().to_arrow()
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    return offsets, values


def _strictly_ascending(offsets: np.ndarray, values: np.ndarray) -> bool:
    if values.size < 2:
        return True
    ok = np.diff(values.astype(np.int64)) > 0
    inner = offsets[1:-1]
    inner = inner[(inner >= 1) & (inner <= values.size - 1)]
    ok[inner - 1] = True  # differences across a row boundary do not count
    return bool(ok.all())


def _marker_name(shard: int, kind: str) -> str:
    return f"{shard:05d}.json" if kind == "features" else f"tokens-{shard:05d}.json"


_MARKER_RE = {
    "features": re.compile(r"^(\d{5,})\.json$"),
    "tokens": re.compile(r"^tokens-(\d{5,})\.json$"),
}


def _read_marker(path: Path) -> dict[str, Any] | None:
    """A done-marker's content, or None when it is missing or unreadable (= not done)."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    name = marker.get("shard")
    if not isinstance(name, str) or not name or Path(name).name != name:
        return None
    return marker


def _markers(directory: Path, kind: str) -> dict[int, dict[str, Any]]:
    done = directory / DONE_DIR
    if not done.is_dir():
        return {}
    out: dict[int, dict[str, Any]] = {}
    for entry in done.iterdir():
        m = _MARKER_RE[kind].match(entry.name)
        if m is None:
            continue
        marker = _read_marker(entry)
        if marker is not None:
            out[int(m.group(1))] = marker
    return dict(sorted(out.items()))


def _documents_key(doc_ids: Sequence[str], rows: Sequence[int]) -> dict[str, Any]:
    """Which documents a shard holds: its first and last input row and a hash of its ids."""
    return {"first_row": int(rows[0]) if len(rows) else None,
            "last_row": int(rows[-1]) if len(rows) else None,
            "ids_sha256": sha256_bytes("\n".join(map(str, doc_ids)))}


#: Shards whose bytes were checked against their markers in this process, by (path, size,
#: mtime): a reader hashes each shard once, not on every scan.
_VERIFIED: set[tuple[str, int, int]] = set()


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _verify_shard(path: Path, marker: Mapping[str, Any]) -> None:
    """Check a done shard's size and sha256 against its marker (once per process).

    Raises
    ------
    ShardMissing
        The file is not on disk.
    CorruptShard
        Its size or checksum differs from what the marker recorded when it was written.
    """
    try:
        key = _file_key(path)
    except OSError as e:
        raise ShardMissing("shard file is not on disk", path=path) from e
    if key in _VERIFIED:
        return
    if marker.get("bytes") not in (None, key[1]):
        raise CorruptShard(f"has {key[1]:,} bytes, its done-marker says "
                           f"{marker.get('bytes'):,}; re-extract the store", path=path)
    digest = marker.get("sha256")
    if digest is not None and sha256_file(path) != digest:
        raise CorruptShard("its bytes changed after it was written (sha256 differs from its "
                           "done-marker); re-extract the store", path=path)
    _VERIFIED.add(key)


def verify_store(path: str | Path) -> dict[str, Any]:
    """Check every done shard of a store against its marker (size and sha256), afresh.

    Returns
    -------
    dict
        ``{"path", "shards", "documents", "ok", "problems": [{"shard", "kind", "error"}]}``.

    Raises
    ------
    StoreError
        ``path`` is not a feature store.
    """
    src = Path(path)
    _read_manifest(src)
    problems: list[dict[str, Any]] = []
    shards = documents = 0
    for kind in _KINDS:
        for number, marker in _markers(src, kind).items():
            shards += 1
            file = src / marker["shard"]
            try:
                _VERIFIED.discard(_file_key(file))
            except OSError:
                pass
            try:
                _verify_shard(file, marker)
            except StoreError as e:
                problems.append({"shard": number, "kind": kind, "file": marker["shard"],
                                 "error": e.message})
                continue
            if kind == "features":
                documents += int(marker.get("rows") or 0)
    return {"path": str(src), "shards": shards, "documents": documents,
            "ok": not problems, "problems": problems}


def _state(directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    markers = _markers(directory, "features")
    expected = manifest.get("expected_shards")
    if isinstance(expected, int):
        complete = set(range(expected)) <= set(markers)
    else:
        # finalized by an auditor before expected_shards was recorded: those finalized a
        # store only after reading their whole input
        complete = "summary" in manifest and "ranks" not in manifest
        expected = len(markers) if complete else None
    return {"complete": complete, "shards": len(markers), "expected_shards": expected,
            "documents": int(sum(int(m.get("rows") or 0) for m in markers.values()))}


def store_state(path: str | Path) -> dict[str, Any]:
    """Whether a store is complete, and how much of it is there.

    A store is complete when a run read its whole input and every shard that input makes
    is done; a killed or cancelled extraction (or one rank of several, before the others
    finish) leaves it incomplete, and readers refuse it unless asked for what is there.

    Returns
    -------
    dict
        ``complete``, ``shards`` (done), ``expected_shards`` (``None`` while unknown) and
        ``documents`` (in done shards).

    Raises
    ------
    StoreError
        ``path`` is not a feature store.
    """
    src = Path(path)
    return _state(src, _read_manifest(src))


def _refuse_partial(directory: Path, manifest: Mapping[str, Any]) -> None:
    state = _state(directory, manifest)
    if state["complete"]:
        return
    of = (f"{state['shards']:,} of {state['expected_shards']:,} shards"
          if state["expected_shards"] is not None else f"{state['shards']:,} shards")
    raise IncompleteStore(
        f"incomplete store: {of} ({state['documents']:,} documents) written; its "
        f"extraction did not finish (rerun it to resume), or read what is there with "
        f"allow_partial", path=directory)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise StoreError(f"not a feature store: no {MANIFEST}", path=directory)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read the manifest: {e}", path=path) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"not an {FORMAT} manifest", path=path)
    if manifest.get("version") != VERSION:
        raise StoreError(
            f"unsupported store version {manifest.get('version')!r} (this auditor reads "
            f"version {VERSION})",
            path=path,
        )
    if not isinstance(manifest.get("provenance"), dict):
        raise StoreError("the manifest has no provenance", path=path)
    return manifest


def _is_store_file(name: str) -> bool:
    return (
        name == MANIFEST
        or re.match(r"^(features|tokens)-\d{5,}\.parquet$", name) is not None
        or re.match(
            rf"^\.({re.escape(MANIFEST)}|(features|tokens)-\d{{5,}}\.parquet)\..*\.tmp$", name
        )
        is not None
    )


# --------------------------------------------------------------------------- writer


class FeatureStoreWriter:
    """Create (or resume) a feature store directory and write its shards atomically.

    Parameters
    ----------
    directory : str or Path
        The store directory; created if missing.
    provenance : mapping
        JSON-serialisable description of how the features were made (model, SAEs,
        pooling, input fingerprint, …). ``provenance['saes']`` and
        ``provenance['pooling']`` define the shard schema.
    overwrite : bool, default False
        Replace an existing store: the new one is built beside it (in ``.NAME.overwrite``)
        and takes its place only when :meth:`finalize` runs, so the old store stays whole
        and readable until the new input has been read to the end; a run that fails or is
        killed first leaves the old store as it was.

    Attributes
    ----------
    directory : Path
        The store directory.
    provenance : dict
        The provenance, as stored (JSON round-tripped).
    resumed : bool
        True when an existing store with the same provenance was opened for resuming.

    Raises
    ------
    ProvenanceMismatch
        ``directory`` holds a store whose provenance differs (ignoring
        :data:`VOLATILE_KEYS`); the message names the differing keys.
    StoreError
        ``directory`` is a file, or holds shards but no valid manifest (without
        ``overwrite``), or its manifest is of an unknown format or version.
    ConfigError
        ``provenance`` is not JSON-serialisable, or its ``saes``/``pooling`` are malformed.
    """

    def __init__(
        self, directory: str | Path, *, provenance: Mapping[str, Any], overwrite: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.provenance = _jsonable(provenance, what="provenance")
        self._schemas = {kind: _schema_for(self.provenance, kind) for kind in _KINDS}
        self.resumed = False
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError("exists and is not a directory", path=self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        _recover_swap(self.directory)
        self._replaces: Path | None = None
        if overwrite and _holds_store(self.directory):
            # build the new store beside the old one; finalize() swaps them
            self._replaces = self.directory
            self.directory = _beside(self.directory, "overwrite")
            if self.directory.exists():
                shutil.rmtree(self.directory)  # an earlier replacement that never finished
            self.directory.mkdir()
            apply_umask(self.directory, directory=True)
            overwrite = False
        # ranks of one job open the store at once: one of them creates the manifest
        with _manifest_lock(self.directory):
            self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        if overwrite:
            self._clear()
        elif (self.directory / MANIFEST).exists():
            old = _read_manifest(self.directory)
            diff = _provenance_diff(old["provenance"], self.provenance)
            if diff:
                raise ProvenanceMismatch(
                    "the store was written with a different provenance; differing keys: "
                    f"{', '.join(diff)} (use a new directory, or set overwrite to replace it)",
                    path=self.directory,
                    field=diff[0],
                )
            self.resumed = True
            return
        elif (
            any(_is_store_file(p.name) for p in self.directory.iterdir())
            or (self.directory / DONE_DIR).exists()
        ):
            raise StoreError(
                f"holds feature shards but no {MANIFEST}; refusing to mix (set overwrite to "
                "replace them)",
                path=self.directory,
            )
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "provenance": self.provenance,
            "schema": {
                kind: {name: str(dtype) for name, dtype in schema.items()}
                for kind, schema in self._schemas.items()
            },
        }
        _atomic_write_json(self.directory / MANIFEST, manifest)

    def __repr__(self) -> str:
        return f"FeatureStoreWriter({str(self.directory)!r}, resumed={self.resumed})"

    # ----- state

    def is_done(self, shard: int, *, kind: Kind = "features") -> bool:
        """Return whether ``shard`` has a done-marker and its file is on disk.

        Parameters
        ----------
        shard : int
            Shard number.
        kind : {'features', 'tokens'}, default 'features'
            Which shard family.

        Returns
        -------
        bool
            True when the shard need not be written again.
        """
        _check_kind(kind)
        marker = _read_marker(self.directory / DONE_DIR / _marker_name(shard, kind))
        if marker is None:
            return False
        try:
            _verify_shard(self.directory / marker["shard"], marker)
        except StoreError:
            return False  # missing or changed since it was written: compute it again
        return True

    def check_documents(self, shard: int, doc_ids: Sequence[str], rows: Sequence[int]) -> None:
        """Refuse to resume past a done shard that holds other documents than the input
        gives at its place (another input order, id column or row filter).

        Raises
        ------
        ProvenanceMismatch
            The shard's recorded rows or document ids differ from ``doc_ids`` / ``rows``.
        """
        marker = _read_marker(self.directory / DONE_DIR / _marker_name(shard, "features"))
        recorded = (marker or {}).get("documents")
        if recorded is None:
            return  # a store written before shards recorded their documents
        given = _documents_key(doc_ids, rows)
        if recorded != given:
            raise ProvenanceMismatch(
                f"shard {shard} holds rows {recorded.get('first_row')}–"
                f"{recorded.get('last_row')} with other document ids than the input gives at "
                f"its place (rows {given['first_row']}–{given['last_row']}); the input or "
                f"how it is read changed: use a new store, or set overwrite to replace it",
                path=self.directory, field="documents")

    def done_shards(self, *, kind: Kind = "features") -> set[int]:
        """Return the numbers of the shards :meth:`is_done` reports as done.

        Parameters
        ----------
        kind : {'features', 'tokens'}, default 'features'
            Which shard family.

        Returns
        -------
        set of int
            Done shard numbers.
        """
        _check_kind(kind)
        return {n for n in _markers(self.directory, kind) if self.is_done(n, kind=kind)}

    # ----- writing

    def write_shard(self, shard: int, table: pl.DataFrame, *, kind: Kind = "features") -> Path:
        """Write one shard atomically, then its done-marker.

        The table's schema columns are cast to the store dtypes (e.g. ``List(Int64)`` →
        ``List(UInt32)``) and put first; other columns (passthrough) follow unchanged.
        Rewriting a done shard replaces it.

        Parameters
        ----------
        shard : int
            Shard number, ``>= 0``.
        table : polars.DataFrame
            One row per document (``kind='features'``) or per token (``kind='tokens'``).
        kind : {'features', 'tokens'}, default 'features'
            Which shard family.

        Returns
        -------
        Path
            The written Parquet file.

        Raises
        ------
        CorruptShard
            The table lacks a schema column, a value cannot be cast, a schema column holds
            nulls, doc ids repeat (features), list columns of one SAE are not aligned, or
            indices are not strictly ascending.
        ConfigError
            ``shard`` or ``kind`` is invalid.
        """
        import pyarrow.parquet as pq

        _check_kind(kind)
        if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
            raise ConfigError(f"shard must be an int >= 0, got {shard!r}", field="shard")
        if not isinstance(table, pl.DataFrame):
            raise ConfigError(
                f"table must be a polars DataFrame, got {type(table).__name__}", field="table"
            )
        name = shard_name(shard, kind=kind)
        target = self.directory / name
        table = self._conform(table, kind=kind, target=target)

        arrow = table.to_arrow()
        meta = dict(arrow.schema.metadata or {})
        meta[METADATA_KEY.encode()] = json.dumps(self.provenance, sort_keys=True).encode()
        arrow = arrow.replace_schema_metadata(meta)

        marker_dir = self.directory / DONE_DIR
        marker_dir.mkdir(exist_ok=True)
        marker_path = marker_dir / _marker_name(shard, kind)
        marker_path.unlink(missing_ok=True)  # a rewrite is "not done" until it completes

        tmp = _tmp_path(target)
        try:
            pq.write_table(arrow, tmp, compression="zstd")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            digest = sha256_file(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.directory)
        record: dict[str, Any] = {"rows": table.height, "shard": name, "kind": kind,
                                  "sha256": digest, "bytes": size}
        if kind == "features":
            record["documents"] = _documents_key(table["doc_id"].to_list(),
                                                 table["row"].to_list())
        _atomic_write_json(marker_path, record)
        _VERIFIED.add(_file_key(target))
        return target

    def _conform(self, table: pl.DataFrame, *, kind: str, target: Path) -> pl.DataFrame:
        schema = self._schemas[kind]
        missing = [c for c in schema if c not in table.columns]
        if missing:
            raise CorruptShard(
                f"the {kind} table lacks columns: {', '.join(missing)}; it has: "
                f"{', '.join(table.columns)}",
                path=target,
                field=missing[0],
            )
        try:
            table = table.with_columns(
                pl.col(c).cast(dtype, strict=True) for c, dtype in schema.items()
            )
        except pl.exceptions.PolarsError as e:
            raise CorruptShard(f"cannot cast to the store schema: {e}", path=target) from e
        table = table.select([*schema, *(c for c in table.columns if c not in schema)])
        for col in schema:
            if table[col].null_count():
                raise CorruptShard(
                    f"column holds {table[col].null_count()} null(s)", path=target, field=col
                )
        if kind == "features" and table["doc_id"].n_unique() != table.height:
            dupes = table["doc_id"].filter(table["doc_id"].is_duplicated()).unique().head(5)
            raise CorruptShard(
                f"duplicate doc ids in one shard: {', '.join(dupes.to_list())}",
                path=target,
                field="doc_id",
            )
        for key in _sae_keys(self.provenance):
            idx = f"{key}.indices"
            offsets, values = _list_parts(table[idx])
            if not _strictly_ascending(offsets, values):
                raise CorruptShard("indices are not strictly ascending", path=target, field=idx)
            aligned = [
                c for c in schema if c.startswith(f"{key}.") and isinstance(schema[c], pl.List)
            ]
            for col in aligned:
                if col != idx and not np.array_equal(_list_parts(table[col])[0], offsets):
                    raise CorruptShard(f"list lengths differ from {idx!r}", path=target, field=col)
        return table

    def finalize(self, *, summary: Mapping[str, Any], rank: int = 0,
                 world_size: int = 1, n_shards: int | None = None) -> None:
        """Record a run summary in the manifest (atomically).

        ``manifest['summary']`` receives ``summary`` as given (with ``world_size > 1``,
        ``manifest['ranks'][rank]`` does, under a lock, since ranks finish concurrently);
        ``manifest['shards']`` receives the number of done feature and token shards and
        the feature row count.

        Parameters
        ----------
        summary : mapping
            JSON-serialisable counts, timings, etc.
        rank, world_size
            Which of the processes filling this store finished.
        n_shards
            How many shards the whole input makes (known once a run has read it to the
            end): the store is complete when all of them are done (see
            :func:`store_state`).

        Raises
        ------
        ConfigError
            ``summary`` is not JSON-serialisable.
        StoreError
            The manifest is missing or invalid.
        """
        payload = _jsonable(summary, what="summary")
        with _manifest_lock(self.directory):
            manifest = _read_manifest(self.directory)
            feats = self.done_shards(kind="features")
            markers = _markers(self.directory, "features")
            if world_size > 1:
                manifest.setdefault("ranks", {})[str(rank)] = {**payload,
                                                               "world_size": world_size}
            else:
                manifest["summary"] = payload
            if n_shards is not None:
                manifest["expected_shards"] = int(n_shards)
            manifest["shards"] = {
                "features": len(feats),
                "tokens": len(self.done_shards(kind="tokens")),
                "rows": int(sum(int(markers[n].get("rows", 0)) for n in feats)),
            }
            _atomic_write_json(self.directory / MANIFEST, manifest)
        if self._replaces is not None:
            self._swap()

    def _swap(self) -> None:
        """Put the store built beside the old one in its place (two renames)."""
        old, new = self._replaces, self.directory
        assert old is not None
        for entry in old.iterdir():  # what is not the store's (a job record) stays
            if not _is_store_entry(entry.name) and not (new / entry.name).exists():
                os.replace(entry, new / entry.name)
        trash = _beside(old, "replaced")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(old, trash)
        os.replace(new, old)  # a crash between the renames is undone by _recover_swap
        fsync_dir(old.parent)
        shutil.rmtree(trash, ignore_errors=True)
        self.directory, self._replaces = old, None

    def _clear(self) -> None:
        for entry in self.directory.iterdir():
            if entry.is_file() and _is_store_file(entry.name):
                entry.unlink()
        done = self.directory / DONE_DIR
        if done.is_dir():
            shutil.rmtree(done)


def _beside(directory: Path, what: str) -> Path:
    return directory.with_name(f".{directory.name}.{what}")


def _is_store_entry(name: str) -> bool:
    return _is_store_file(name) or name in (DONE_DIR, LOCK_FILE)


def _holds_store(directory: Path) -> bool:
    return any(_is_store_entry(p.name) for p in directory.iterdir())


def _recover_swap(directory: Path) -> None:
    """Finish a swap a crash interrupted between its two renames: the finished new store
    is in ``.NAME.overwrite`` and the old one in ``.NAME.replaced``, ``NAME`` is empty."""
    new, old = _beside(directory, "overwrite"), _beside(directory, "replaced")
    if not old.is_dir() or _holds_store(directory):
        return
    try:
        finished = (new / MANIFEST).is_file() and _state(new, _read_manifest(new))["complete"]
    except StoreError:
        finished = False
    keep, drop = (new, old) if finished else (old, new)
    for entry in directory.iterdir():  # a job record written since
        if not (keep / entry.name).exists():
            os.replace(entry, keep / entry.name)
    shutil.rmtree(directory)
    os.replace(keep, directory)
    shutil.rmtree(drop, ignore_errors=True)


@contextlib.contextmanager
def _manifest_lock(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the manifest between processes."""
    with file_lock(directory / LOCK_FILE):
        yield


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ConfigError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}", field="kind")


# --------------------------------------------------------------------------- reading


@dataclass
class FeatureMatrix:
    """Pooled SAE features of a store as a sparse matrix.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix
        ``[n_docs, d_sae]`` float32 feature values of one SAE and one pooling.
    doc_ids : list of str
        Document ids, aligned with the rows of ``X``.
    metadata : dict
        The store's provenance.
    extra : polars.DataFrame or None
        Requested non-feature columns (``row``, ``n_tokens``, passthrough…), aligned with
        the rows of ``X``; None when no column was requested.
    """

    X: sp.csr_matrix
    doc_ids: list[str]
    metadata: dict[str, Any]
    extra: pl.DataFrame | None


def _parquet_footer(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except FileNotFoundError as e:
        raise ShardMissing("shard file is not on disk", path=path) from e
    except (OSError, pa.ArrowException) as e:
        raise CorruptShard(f"unreadable Parquet file: {e}", path=path) from e


def _check_shard(path: Path, *, expected_rows: int | None) -> tuple[Any, dict[str, Any] | None]:
    """Read a shard's footer; return its arrow schema and its provenance metadata."""
    footer = _parquet_footer(path)
    try:
        schema = footer.schema.to_arrow_schema()
    except Exception as e:  # pyarrow raises several types for a bad schema
        raise CorruptShard(f"unreadable Parquet schema: {e}", path=path) from e
    if "doc_id" not in schema.names:
        raise CorruptShard(
            f"not a feature shard: no 'doc_id' column (columns: {', '.join(schema.names)})",
            path=path,
            field="doc_id",
        )
    if expected_rows is not None and footer.num_rows != expected_rows:
        raise CorruptShard(
            f"has {footer.num_rows} rows, its done-marker says {expected_rows}", path=path
        )
    raw = (schema.metadata or {}).get(METADATA_KEY.encode())
    provenance = None
    if raw is not None:
        try:
            provenance = json.loads(raw)
        except ValueError as e:
            raise CorruptShard(f"unreadable {METADATA_KEY!r} metadata: {e}", path=path) from e
    return schema.remove_metadata(), provenance


def _done_files(directory: Path, kind: str) -> list[tuple[Path, int | None]]:
    """The done shards' files and row counts, each checked against its marker (once per
    process; see :func:`_verify_shard`)."""
    files = []
    for marker in _markers(directory, kind).values():
        rows = marker.get("rows")
        file = directory / marker["shard"]
        _verify_shard(file, marker)
        files.append((file, rows if isinstance(rows, int) else None))
    return files


def scan_features(path: str | Path, *, kind: Kind = "features",
                  allow_partial: bool = False) -> pl.LazyFrame:
    """Lazily scan the done shards of a feature store (or one Parquet file).

    Only shards with a done-marker are read; leftover temporary files and shards without a
    marker are ignored. Each shard's footer is checked eagerly (readable, has ``doc_id``,
    row count matches its marker, same provenance and schema as the store).

    Parameters
    ----------
    path : str or Path
        A store directory or a single ``.parquet`` shard.
    kind : {'features', 'tokens'}, default 'features'
        Which shard family to scan (store directories only).
    allow_partial : bool, default False
        Read the done shards of an incomplete store (see :func:`store_state`) instead of
        refusing it.

    Returns
    -------
    polars.LazyFrame
        All done shards, in shard order. A store with no done shard gives an empty frame
        with the store's fixed schema.

    Raises
    ------
    ShardMissing
        A done-marker names a shard that is not on disk.
    CorruptShard
        A shard is unreadable, has no ``doc_id`` column, has a row count different from its
        marker, lacks a store column or types it differently from the other shards.
        (Passthrough columns may differ between shards; they are combined with
        ``how='diagonal_relaxed'``.)
    ProvenanceMismatch
        A shard's provenance differs from the manifest's.
    IncompleteStore
        The store's extraction did not finish and ``allow_partial`` is false.
    StoreError
        ``path`` is neither a store directory nor a Parquet file.

    Examples
    --------
    >>> import tempfile
    >>> import polars as pl
    >>> from auditor.store import FeatureStoreWriter, scan_features
    >>> store = tempfile.mkdtemp() + "/store"
    >>> w = FeatureStoreWriter(store, provenance={"saes": {"l0": {"d_sae": 8}}, "pooling": ["max"]})
    >>> _ = w.write_shard(0, pl.DataFrame({
    ...     "doc_id": ["a", "b"], "row": [0, 1], "n_tokens": [3, 4],
    ...     "l0.indices": [[1, 5], [2]], "l0.max": [[0.5, 2.0], [1.0]], "l0.n_excluded": [0, 0],
    ... }))
    >>> w.finalize(summary={}, n_shards=1)  # the run read its whole input
    >>> lf = scan_features(store).filter(pl.col("n_tokens") > 3)
    >>> lf.select("doc_id").collect()["doc_id"].to_list()
    ['b']
    """
    _check_kind(kind)
    src = Path(path)
    if src.is_file():
        _check_shard(src, expected_rows=None)
        return pl.scan_parquet(src)
    if not src.is_dir():
        raise StoreError("no such feature store or Parquet file", path=src)
    manifest = _read_manifest(src)
    if not allow_partial:
        _refuse_partial(src, manifest)
    provenance = manifest["provenance"]
    files = _done_files(src, kind)
    if not files:
        return pl.DataFrame(schema=_schema_for(provenance, kind)).lazy()
    fixed = list(_schema_for(provenance, kind))
    first: tuple[Any, Path] | None = None
    uniform = True
    for file, rows in files:
        schema, shard_prov = _check_shard(file, expected_rows=rows)
        if shard_prov is not None:
            diff = _provenance_diff(provenance, shard_prov)
            if diff:
                raise ProvenanceMismatch(
                    f"shard provenance differs from the store's in: {', '.join(diff)}",
                    path=file,
                    field=diff[0],
                )
        missing = [c for c in fixed if c not in schema.names]
        if missing:
            raise CorruptShard(
                f"not a {kind} shard of this store: lacks {', '.join(missing)}",
                path=file,
                field=missing[0],
            )
        if first is None:
            first = (schema, file)
            continue
        ref, ref_file = first
        for col in fixed:
            if not schema.field(col).type.equals(ref.field(col).type):
                raise CorruptShard(
                    f"column type {schema.field(col).type} differs from "
                    f"{ref.field(col).type} in {ref_file.name}",
                    path=file,
                    field=col,
                )
        uniform = uniform and schema.equals(ref)
    if uniform:
        return pl.scan_parquet([str(f) for f, _ in files])
    # Passthrough columns may differ between shards (e.g. all-null in one): relax them.
    return pl.concat([pl.scan_parquet(f) for f, _ in files], how="diagonal_relaxed")


def read_raw_means(path: str | Path, *, hook: str | None = None,
                   allow_partial: bool = False) -> tuple[np.ndarray, list[str]]:
    """Each document's mean raw residual activation at a hook (stored with ``raw_mean``).

    Parameters
    ----------
    path
        A feature store directory (or one shard).
    hook
        Hook name such as ``'layer9.resid_post'``; may be omitted when the store has one.

    Returns
    -------
    X, doc_ids
        ``float32 [n_docs, d_model]`` and the document ids, in store order.

    Raises
    ------
    ConfigError
        The store has no raw means, or not for ``hook`` (the message lists those it has).
    """
    src = Path(path)
    lf = scan_features(src, allow_partial=allow_partial)
    hooks = [c[len(RAW_PREFIX):] for c in lf.collect_schema().names()
             if c.startswith(RAW_PREFIX)]
    if hook is None and len(hooks) == 1:
        hook = hooks[0]
    if hook not in hooks:
        raise ConfigError(f"no raw means for hook {hook!r} in the store; it has: "
                          f"{', '.join(hooks) or 'none (extract with raw_mean=True)'}",
                          path=src, field="hook")
    df = _collect(lf.select("doc_id", f"{RAW_PREFIX}{hook}"), src)
    offsets, values = _list_parts(df[f"{RAW_PREFIX}{hook}"])
    widths = np.diff(offsets)
    if df.height and not (widths == widths[0]).all():
        raise CorruptShard("raw means of unequal width", path=src, field=f"{RAW_PREFIX}{hook}")
    d_model = int(widths[0]) if df.height else 0
    X = values.astype(np.float32, copy=False).reshape(df.height, d_model)
    return X, df["doc_id"].to_list()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Return the provenance of a feature store or of one shard file.

    Parameters
    ----------
    path : str or Path
        A store directory (reads the manifest) or a ``.parquet`` shard (reads its
        ``"auditor"`` key-value metadata).

    Returns
    -------
    dict
        The provenance.

    Raises
    ------
    StoreError
        ``path`` does not exist or its manifest is invalid.
    CorruptShard
        The Parquet file is unreadable or has no ``"auditor"`` metadata.
    """
    src = Path(path)
    if src.is_dir():
        return dict(_read_manifest(src)["provenance"])
    if not src.exists():
        raise StoreError("no such feature store or Parquet file", path=src)
    _, provenance = _check_shard(src, expected_rows=None)
    if provenance is None:
        raise CorruptShard(f"no {METADATA_KEY!r} key-value metadata", path=src)
    return provenance


def _collect(lf: pl.LazyFrame, src: Path) -> pl.DataFrame:
    try:
        return lf.collect()
    except pl.exceptions.PolarsError as e:
        # Name the culprit shard when the directory holds several.
        if src.is_dir():
            for file, _ in _done_files(src, "features"):
                try:
                    pl.read_parquet(file)
                except pl.exceptions.PolarsError as inner:
                    raise CorruptShard(f"cannot read shard data: {inner}", path=file) from e
        raise CorruptShard(f"cannot read shard data: {e}", path=src) from e


def _check_unique_ids(ids: pl.Series, src: Path) -> None:
    """Refuse a store whose shards hold one document id twice (a row of a classify or a
    training set would then stand for two documents)."""
    if ids.n_unique() != len(ids):
        dupes = ids.filter(ids.is_duplicated()).unique(maintain_order=True).head(5).to_list()
        raise CorruptShard(f"document ids occur more than once across shards: "
                           f"{', '.join(map(str, dupes))}", path=src, field="doc_id")


def read_features(
    path: str | Path,
    *,
    sae: str | None = None,
    pooling: str = "max",
    columns: Sequence[str] | None = None,
    d_sae: int | None = None,
    allow_partial: bool = False,
) -> FeatureMatrix:
    """Read one SAE's pooled features of a store as a CSR matrix.

    The matrix is built directly from the list columns' offsets and values; no dense
    matrix is ever materialised.

    Parameters
    ----------
    path : str or Path
        A store directory or a single ``.parquet`` shard.
    sae : str or None, default None
        SAE key (e.g. ``'layer9'``). None selects the only SAE in the store.
    pooling : str, default 'max'
        Pooling column to read, one of those stored (see ``provenance['pooling']``).
    columns : sequence of str or None, default None
        Non-feature columns returned in :attr:`FeatureMatrix.extra`. None returns every
        column that is not ``doc_id`` or an SAE column (``row``, ``n_tokens``,
        passthrough); an empty sequence returns ``extra=None``.
    d_sae : int or None, default None
        Number of SAE features (matrix width). None reads
        ``provenance['saes'][sae]['d_sae']``.
    allow_partial : bool, default False
        Read an incomplete store's done shards instead of refusing it.

    Returns
    -------
    FeatureMatrix
        ``X`` (float32 CSR), ``doc_ids``, ``metadata`` (provenance) and ``extra``.

    Raises
    ------
    ConfigError
        ``sae`` is None and the store has several SAEs (or none), ``sae`` or ``pooling`` is
        not stored, a requested column does not exist, ``d_sae`` is unknown, or a stored
        index does not fit a given ``d_sae``.
    ShardMissing, CorruptShard, ProvenanceMismatch, StoreError
        See :func:`scan_features`.

    Examples
    --------
    >>> import tempfile
    >>> import polars as pl
    >>> from auditor.store import FeatureStoreWriter, read_features
    >>> store = tempfile.mkdtemp() + "/store"
    >>> prov = {"saes": {"layer9": {"d_sae": 4}}, "pooling": ["max", "mean"]}
    >>> w = FeatureStoreWriter(store, provenance=prov)
    >>> _ = w.write_shard(0, pl.DataFrame({
    ...     "doc_id": ["a", "b"], "row": [0, 1], "n_tokens": [3, 5],
    ...     "layer9.indices": [[0, 2], [3]],
    ...     "layer9.max": [[1.0, 0.5], [2.0]], "layer9.mean": [[0.5, 0.25], [1.0]],
    ...     "layer9.n_excluded": [0, 1], "label": ["x", "y"],
    ... }))
    >>> w.finalize(summary={}, n_shards=1)
    >>> fm = read_features(store, pooling="max")
    >>> fm.X.toarray()
    array([[1. , 0. , 0.5, 0. ],
           [0. , 0. , 0. , 2. ]], dtype=float32)
    >>> fm.doc_ids
    ['a', 'b']
    >>> fm.extra.columns
    ['row', 'n_tokens', 'label']
    """
    src = Path(path)
    lf = scan_features(src, allow_partial=allow_partial)
    names = lf.collect_schema().names()
    schema = lf.collect_schema()
    keys = sorted({c.rsplit(".", 1)[0] for c in names if c.endswith(".indices") and "." in c})
    if sae is None:
        if len(keys) != 1:
            raise ConfigError(
                f"the store holds {len(keys)} SAEs ({', '.join(keys) or 'none'}); set sae",
                path=src,
                field="sae",
            )
        sae = keys[0]
    elif sae not in keys:
        raise ConfigError(
            f"SAE {sae!r} not in the store; available: {', '.join(keys) or 'none'}",
            path=src,
            field="sae",
        )
    idx_col = f"{sae}.indices"
    pools = [
        c[len(sae) + 1 :]
        for c in names
        if c.startswith(f"{sae}.")
        and "." not in c[len(sae) + 1 :]
        and c != idx_col
        and isinstance(schema[c], pl.List)
    ]
    if pooling not in pools:
        raise ConfigError(
            f"pooling {pooling!r} not stored for {sae!r}; available: {', '.join(pools) or 'none'}",
            path=src,
            field="pooling",
        )
    val_col = f"{sae}.{pooling}"

    metadata = read_metadata(src)
    given = d_sae is not None
    if d_sae is None:
        try:
            d_sae = int(metadata["saes"][sae]["d_sae"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"d_sae of {sae!r} is not in the provenance; set d_sae", path=src, field="d_sae"
            ) from e
    if d_sae < 1:
        raise ConfigError(f"d_sae must be >= 1, got {d_sae}", field="d_sae")

    sae_cols = {c for c in names for k in keys if c.startswith(f"{k}.")}
    sae_cols |= {c for c in names if c.startswith(RAW_PREFIX)}  # heavy; see read_raw_means
    if columns is None:
        extra_cols = [c for c in names if c != "doc_id" and c not in sae_cols]
    else:
        extra_cols = list(dict.fromkeys(columns))
        unknown = [c for c in extra_cols if c not in names]
        if unknown:
            raise ConfigError(
                f"columns not in the store: {', '.join(unknown)}; available: {', '.join(names)}",
                path=src,
                field=unknown[0],
            )

    df = _collect(lf.select(list(dict.fromkeys(["doc_id", idx_col, val_col, *extra_cols]))), src)
    _check_unique_ids(df["doc_id"], src)
    offsets, indices = _list_parts(df[idx_col])
    val_offsets, values = _list_parts(df[val_col])
    if not np.array_equal(offsets, val_offsets):
        raise CorruptShard(f"{val_col!r} is not aligned with {idx_col!r}", path=src, field=val_col)
    if indices.size and int(indices.max()) >= d_sae:
        cls = ConfigError if given else CorruptShard
        raise cls(
            f"feature index {int(indices.max())} does not fit d_sae={d_sae}",
            path=src,
            field=idx_col,
        )
    index_dtype = np.int32 if max(d_sae, int(offsets[-1])) < np.iinfo(np.int32).max else np.int64
    X = sp.csr_matrix(
        (
            values.astype(np.float32, copy=False),
            indices.astype(index_dtype, copy=False),
            offsets.astype(index_dtype, copy=False),
        ),
        shape=(df.height, d_sae),
    )
    return FeatureMatrix(
        X=X,
        doc_ids=df["doc_id"].to_list(),
        metadata=metadata,
        extra=df.select(extra_cols) if extra_cols else None,
    )
