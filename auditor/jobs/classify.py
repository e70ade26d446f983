"""The classify job: extract what the heads need from a dataset, then label every row."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from auditor.errors import ConfigError
from auditor.extract import ExtractConfig

__all__ = ["heads_extract_config", "run_classify"]


def heads_extract_config(heads: Sequence[Any]) -> ExtractConfig:
    """One extraction config that every head accepts.

    Raises
    ------
    ConfigError
        Two heads were trained on features extracted with different guarded settings.
    """
    from auditor.heads.head import GUARDED_EXTRACT

    settings: dict[str, Any] = {}
    for head in heads:
        for key in GUARDED_EXTRACT:
            if key in head.config.extract:
                value = head.config.extract[key]
                if key in settings and settings[key] != value:
                    raise ConfigError(f"heads disagree on extraction setting {key} "
                                      f"({settings[key]!r} vs {value!r}); classify them "
                                      f"separately", field=key)
                settings[key] = value
    poolings = {h.config.pooling if h.config.representation == "sae" else "mean"
                for h in heads}
    raw = any(h.config.representation == "raw" for h in heads)
    return ExtractConfig.from_dict({**settings, "poolings": sorted(poolings),
                                    "raw_mean": raw})


def heads_check(heads: Sequence[Any]) -> Callable[[Mapping[str, Any]], None]:
    """A provenance check for :func:`run_extract`: every head must accept the features.

    Run before extraction, it refuses another model or SAE at once instead of after a
    whole extraction; :meth:`Head.check` raises ``ProvenanceMismatch`` naming the keys.
    """
    def check(provenance: Mapping[str, Any]) -> None:
        for head in heads:
            head.check(provenance)

    return check


def run_classify(
    input_path: str | Path, *, heads: Sequence[str] | None = None, explain: int = 0,
    store: str | Path | None = None, model: str | Path | None = None,
    saes: Sequence[str] = (), text_column: str = "text", id_column: str | None = None,
    skip_bad_rows: bool = False, device: str | None = None, dtype: str | None = None,
    progress: bool = False, on_progress: Callable[[Mapping[str, Any]], None] | None = None,
    feature_labels: Mapping[int, str] | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Label a dataset with heads (default: every installed head).

    Parameters
    ----------
    input_path
        JSONL, Parquet, CSV or text files (see :func:`auditor.io.read_documents`).
    heads
        Head names (installed under ``models/heads``) or head directories.
    explain
        Top contributing features per document and head (0: none).
    store
        Keep the extracted features here (resumable); a temporary store otherwise.
    model, saes
        As for :func:`auditor.jobs.run_extract` (default: the embedded model and SAE).

    Returns
    -------
    predictions, provenance
        One row per input row (see :func:`auditor.heads.classify_store`) and what made
        them: the store provenance plus each head's name, path and representation.
    """
    from auditor.heads import load_heads
    from auditor.heads.classify import classify_store
    from auditor.jobs.extract import run_extract
    from auditor.store import read_metadata

    loaded = load_heads(heads)
    if not loaded:
        raise ConfigError("no heads are installed (models/heads is empty); train one with "
                          "'auditor probe train'", field="heads")
    config = heads_extract_config(loaded)
    with tempfile.TemporaryDirectory(prefix="auditor-classify-") as tmp:
        where = Path(store) if store is not None else Path(tmp) / "store"
        run_extract(input_path, out=where, model=model, saes=saes, config=config,
                    text_column=text_column, id_column=id_column,
                    skip_bad_rows=skip_bad_rows, device=device, dtype=dtype,
                    progress=progress, on_progress=on_progress, check=heads_check(loaded))
        frame = classify_store(where, loaded, explain=explain, feature_labels=feature_labels)
        provenance = read_metadata(where)
    provenance["heads"] = {h.name: {"path": str(h.path), "classes": h.config.classes,
                                    "representation": h.config.representation,
                                    "threshold": h.config.threshold,
                                    **({"task": "multilabel",
                                        "thresholds": h.config.thresholds}
                                       if h.config.multilabel else {})} for h in loaded}
    return frame, provenance
