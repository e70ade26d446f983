"""Read-only queries the faces show: what is installed, what a store holds.

They write nothing, so they take no ``out`` and keep no ``_job.json``; like every job they
return JSON values only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.jobs._contract import json_values

__all__ = ["models_list", "store_info", "store_verify"]


def models_list() -> list[dict[str, Any]]:
    """The embedded model (GGUF and converted caches) and the shipped SAEs, with sizes and
    hashes (see :func:`auditor.defaults.list_models`)."""
    from auditor.defaults import list_models

    return [json_values(r) for r in list_models()]


def store_info(path: str | Path) -> dict[str, Any]:
    """A store's path, document count, state (complete or how much is there), columns and
    provenance.

    Raises
    ------
    StoreError
        ``path`` is not a readable feature store.
    """
    from auditor.store import read_metadata, scan_features, store_state

    # info describes an unfinished store too, and says so
    lf = scan_features(path, allow_partial=True)
    n_rows = int(lf.select("doc_id").collect().height)
    return json_values({"path": str(path), "documents": n_rows,
                        "state": store_state(path) if Path(path).is_dir() else None,
                        "columns": list(lf.collect_schema().names()),
                        "provenance": read_metadata(path)})


def store_verify(path: str | Path) -> dict[str, Any]:
    """Check every done shard of a store against the size and sha256 its marker recorded
    (see :func:`auditor.store.verify_store`).

    Returns
    -------
    dict
        ``path``, ``shards``, ``documents``, ``ok`` and ``problems`` (shard, kind, file,
        error), each corrupt or missing shard named.
    """
    from auditor.store import verify_store

    return json_values(verify_store(path))
