"""A feature dictionary's files: their names, the manifest, verified reads, atomic writes.

The lowest layer of :mod:`auditor.features`: it knows where a dictionary lives and how its
files are read and written, and nothing about building one or about labels (so
:mod:`auditor.features.labels` and :mod:`auditor.features.dictionary` both build on it
without importing each other). See :mod:`auditor.features.dictionary` for the layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from auditor._files import atomic_write_bytes, read_json, sha256_file, write_json
from auditor.errors import ConfigError, CorruptShard, InputFileError, StoreError
from auditor.features.stats import CONTEXT_SCHEMA

__all__ = [
    "CONTEXTS_FILE",
    "DICTIONARY_DIRNAME",
    "FEATURES_FILE",
    "FORMAT",
    "LABELS_JSON",
    "LABELS_TSV",
    "MANIFEST",
    "VERSION",
    "default_dictionary_dir",
    "load_contexts",
    "load_feature_table",
    "load_manifest",
    "read_table",
    "verify_files",
    "write_dictionary_files",
]

FORMAT = "auditor-feature-dictionary"
VERSION = 1
MANIFEST = "dictionary.json"
FEATURES_FILE = "features.parquet"
CONTEXTS_FILE = "contexts.parquet"
#: Name of the dictionary directory created inside an SAE directory.
DICTIONARY_DIRNAME = "dictionary"
#: Override file names looked for in a dictionary directory.
LABELS_TSV = "labels.tsv"
LABELS_JSON = "labels.json"


def default_dictionary_dir(sae_path: str | Path) -> Path:
    """Where a dictionary lives by default: beside the SAE's weights.

    Parameters
    ----------
    sae_path : str or Path
        The SAE directory or weights file.

    Returns
    -------
    Path
        ``<sae dir>/dictionary`` for a directory, ``<parent>/<file name>.dictionary`` for a
        single weights file (so several SAE files in one folder do not collide).
    """
    src = Path(sae_path).expanduser()
    if src.is_file():
        return src.parent / f"{src.name}.{DICTIONARY_DIRNAME}"
    return src / DICTIONARY_DIRNAME


def load_manifest(dictionary_dir: str | Path) -> dict[str, Any]:
    """Read and check a dictionary's manifest.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.

    Returns
    -------
    dict
        The manifest (see :mod:`auditor.features.dictionary`).

    Raises
    ------
    StoreError
        No dictionary there, or an unreadable / foreign manifest.
    """
    root = Path(dictionary_dir)
    path = root / MANIFEST
    if not path.is_file():
        hint = "" if root.exists() else " (no such directory)"
        raise StoreError(f"no feature dictionary here{hint}; build one over a corpus first "
                         "(`features build`) or name another dictionary", path=root,
                         field="dictionary")
    try:
        manifest = read_json(path, what="dictionary manifest")
    except InputFileError as exc:
        raise StoreError(f"unreadable dictionary manifest: {exc.message}", path=path) from exc
    if manifest.get("format") != FORMAT:
        raise StoreError(f"not a feature dictionary manifest (format != {FORMAT!r})", path=path)
    if manifest.get("version") != VERSION:
        raise StoreError(f"dictionary version {manifest.get('version')!r} is not supported "
                         f"(expected {VERSION})", path=path)
    return manifest


def verify_files(root: str | Path, manifest: Mapping[str, Any]) -> None:
    """Check the dictionary's files against the sha256 its manifest records.

    Raises
    ------
    StoreError
        A file is missing.
    CorruptShard
        A file does not match (an interrupted or edited write).
    """
    root = Path(root)
    for name, expected in (manifest.get("files") or {}).items():
        path = root / name
        if not path.is_file():
            raise StoreError(f"{name} is missing from the dictionary", path=root, field=name)
        if sha256_file(path) != expected:
            raise CorruptShard(f"{name} does not match the manifest (interrupted or edited "
                               "write?); rebuild the dictionary", path=path, field=name)


def read_table(root: str | Path, name: str) -> pl.DataFrame:
    """One of the dictionary's Parquet tables.

    Raises
    ------
    StoreError
        The file is missing.
    CorruptShard
        The file cannot be read.
    """
    path = Path(root) / name
    if not path.is_file():
        raise StoreError(f"{name} is missing from the dictionary", path=root, field=name)
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CorruptShard(f"unreadable {name}: {exc}", path=path) from exc


def load_feature_table(dictionary_dir: str | Path, *, verify: bool = True) -> pl.DataFrame:
    """The per-feature table as stored (no ``label`` column; see
    :func:`auditor.features.load_dictionary` for the labelled one).

    Raises
    ------
    StoreError, CorruptShard
        No dictionary, missing or corrupt files.
    """
    root = Path(dictionary_dir)
    manifest = load_manifest(root)
    if verify:
        verify_files(root, manifest)
    return read_table(root, FEATURES_FILE)


def load_contexts(dictionary_dir: str | Path, *, feature: int | None = None) -> pl.DataFrame:
    """Load a dictionary's top contexts.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.
    feature : int, optional
        Only this feature's contexts.

    Returns
    -------
    polars.DataFrame
        ``feature``, ``rank``, ``activation``, ``doc_id``, ``position``, ``token_id``,
        ``token``, ``text``, ``source``; sorted by feature then rank.

    Raises
    ------
    StoreError
        No dictionary or no contexts file.
    ConfigError
        ``feature`` out of range.
    """
    root = Path(dictionary_dir)
    manifest = load_manifest(root)
    n = int(manifest["provenance"]["sae"]["d_sae"])
    lf = pl.scan_parquet(root / CONTEXTS_FILE) if (root / CONTEXTS_FILE).is_file() else None
    if lf is None:
        raise StoreError(f"{CONTEXTS_FILE} is missing from the dictionary", path=root)
    if feature is not None:
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < n:
            raise ConfigError(f"feature {feature!r} is out of range (0 … {n - 1})",
                              field="feature")
        lf = lf.filter(pl.col("feature") == feature)
    try:
        frame = lf.collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CorruptShard(f"unreadable {CONTEXTS_FILE}: {exc}", path=root) from exc
    if frame.height == 0:
        return pl.DataFrame(schema=CONTEXT_SCHEMA)
    return frame.sort("feature", "rank")


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def write_dictionary_files(root: str | Path, features: pl.DataFrame, contexts: pl.DataFrame,
                           manifest: Mapping[str, Any]) -> None:
    """Write the two tables, then the manifest naming their sha256; each file atomically.

    A reader sees the old dictionary or the new one; a write interrupted between files
    leaves tables that do not match the manifest, which :func:`verify_files` detects.

    Raises
    ------
    ConfigError
        The directory cannot be created.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the dictionary directory: {exc}", path=root,
                          field="out") from exc
    atomic_write_bytes(root / FEATURES_FILE, _parquet_bytes(features))
    atomic_write_bytes(root / CONTEXTS_FILE, _parquet_bytes(contexts))
    write_json(root / MANIFEST,
               {**manifest, "files": {name: sha256_file(root / name)
                                      for name in (FEATURES_FILE, CONTEXTS_FILE)}},
               sort_keys=True)
