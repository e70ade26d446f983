"""The audit job: extract → label with every head → report, in one resumable run.

Writes ``<out>/store`` (features, resumable), ``<out>/predictions.parquet`` (labels,
calibrated probabilities and top contributing features per document and head) and
``<out>/report.{html,json,md}`` (the Markdown file's charts in ``<out>/charts``). Feature
labels and example contexts come from the SAE's feature dictionary when one is installed
beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.extract import ExtractConfig

__all__ = ["AuditResult", "dictionary_annotations", "run_audit"]


@dataclass
class AuditResult:
    """Where an audit wrote its outputs, and its headline counts."""

    store: Path
    predictions: Path | None
    reports: dict[str, Path]
    documents: int
    heads: list[str]


def dictionary_annotations(
    sae_path: str | Path | None, *, examples: int = 3
) -> tuple[dict[int, str] | None, dict[int, list[str]] | None]:
    """Feature labels and example contexts from the dictionary beside an SAE, if any."""
    if sae_path is None:
        return None, None
    from auditor.errors import AuditorError
    from auditor.features import default_dictionary_dir, feature_labels, load_contexts

    # provenance records the weights file; `features build` defaults to the SAE directory
    path = Path(sae_path)
    candidates = [default_dictionary_dir(path)]
    if path.is_file():
        candidates.append(default_dictionary_dir(path.parent))
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        return None, None
    try:
        labels = feature_labels(root)
        ctx = load_contexts(root)
    except AuditorError:
        return None, None
    top = ctx.filter(ctx["rank"] < examples)
    shown: dict[int, list[str]] = {}
    for feature, text in zip(top["feature"].to_list(), top["text"].to_list(), strict=True):
        shown.setdefault(int(feature), []).append(str(text))
    return labels, shown


def run_audit(
    input_path: str | Path, *, out: str | Path, heads: Sequence[str] | None = None,
    model: str | Path | None = None, saes: Sequence[str] = (), explain: int = 5,
    previous: str | Path | None = None, text_column: str = "text",
    id_column: str | None = None, skip_bad_rows: bool = False, device: str | None = None,
    dtype: str | None = None, formats: Sequence[str] = ("html", "json", "md"),
    overwrite: bool = False, progress: bool = False,
    on_progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> AuditResult:
    """Audit a dataset: features, every head's labels with explanations, and a report.

    Parameters
    ----------
    input_path
        JSONL, Parquet, CSV or text files.
    out
        Output directory (the store inside it is resumed on a rerun).
    heads
        Head names or directories (default: every installed head; none installed gives a
        report without predictions).
    model, saes
        Default: the embedded model and the shipped SAE.
    explain
        Top contributing features kept per document and head.
    previous
        A previous ``report.json`` of the same pipeline, for drift.
    overwrite
        Start the store afresh instead of resuming it: needed when it was written with
        other settings (model, SAE, window, auditor version), which a resume refuses.

    Returns
    -------
    AuditResult
    """
    from auditor.heads import list_heads, load_heads
    from auditor.heads.classify import classify_store, write_predictions
    from auditor.jobs.classify import heads_check, heads_extract_config
    from auditor.jobs.extract import run_extract
    from auditor.report import build_report, write_report
    from auditor.store import read_metadata

    root = Path(out)
    loaded = load_heads(heads) if heads is not None or list_heads() else []
    config = heads_extract_config(loaded) if loaded else ExtractConfig(
        poolings=("max", "mean"), max_length=128, max_windows=2)
    store = root / "store"
    run_extract(input_path, out=store, model=model, saes=saes, config=config,
                text_column=text_column, id_column=id_column, skip_bad_rows=skip_bad_rows,
                device=device, dtype=dtype, overwrite=overwrite, progress=progress,
                on_progress=on_progress, check=heads_check(loaded))
    metadata = read_metadata(store)
    sae_info = list((metadata.get("saes") or {}).values())
    labels, examples = dictionary_annotations(sae_info[0].get("path") if len(sae_info) == 1
                                              else None)
    predictions = None
    if loaded:
        frame = classify_store(store, loaded, explain=explain, feature_labels=labels)
        provenance = dict(metadata)
        provenance["heads"] = {h.name: {"path": str(h.path), "classes": h.config.classes,
                                        "representation": h.config.representation}
                               for h in loaded}
        predictions = write_predictions(frame, root / "predictions.parquet",
                                        provenance=provenance)
    # the written file, not the frame: the report then names its source
    report = build_report(store, predictions=predictions, texts=input_path, previous=previous,
                          feature_labels=labels, feature_examples=examples,
                          text_column=text_column, id_column=id_column,
                          title=f"Audit of {Path(input_path).name}")
    reports = write_report(report, root, formats=tuple(formats))
    return AuditResult(store=store, predictions=predictions, reports=reports,
                       documents=int(report.get("corpus", {}).get("documents", 0) or 0),
                       heads=[h.name for h in loaded])
