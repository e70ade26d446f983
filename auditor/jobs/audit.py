"""The audit job: extract → label with every head → report, in one resumable run.

Writes ``<out>/store`` (features, resumable), ``<out>/predictions.parquet`` (labels,
calibrated probabilities and top contributing features per document and head) and
``<out>/report.{html,json,md}`` (the Markdown file's charts in ``<out>/charts``). Feature
labels and example contexts come from the SAE's feature dictionary when one is installed
beside it. Each stage leaves a marker (``<out>/_stages``), so a rerun after a kill or a
cancel goes on from the first unfinished stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.jobs._contract import JobOptions, JobResult, StageMarkers, run_recorded
from auditor.jobs._pipeline import Pipeline
from auditor.jobs.extract import ExtractOptions
from auditor.progress import Progress, ProgressCallback

__all__ = ["AuditOptions", "AuditResult", "audit_extract_options", "run_audit"]

REPORT_FORMATS = ("html", "json", "md")


@dataclass(frozen=True)
class AuditOptions(JobOptions):
    """Settings of one audit job.

    Parameters
    ----------
    heads
        Head names or directories; ``None`` for every installed head (none installed gives
        a report without predictions); ``()`` for none.
    explain
        Top contributing features kept per document and head.
    previous
        A previous ``report.json`` of the same pipeline, for drift.
    formats
        Report formats, a subset of ``html``, ``json``, ``md``.
    extract
        How the dataset is read and which model and SAEs run.
    """

    heads: tuple[str, ...] | None = None
    explain: int = 5
    previous: str | None = None
    formats: tuple[str, ...] = REPORT_FORMATS
    extract: ExtractOptions = field(default_factory=ExtractOptions)

    def validate(self) -> None:
        if self.explain < 0:
            raise ConfigError("explain must be >= 0", field="explain")
        unknown = [f for f in self.formats if f not in REPORT_FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; "
                              f"choose from {', '.join(REPORT_FORMATS)}", field="formats")


@dataclass(frozen=True)
class AuditResult(JobResult):
    """Where an audit wrote its outputs (relative to ``out``), its headline counts, and how
    documents are keyed (``ids``: ``column 'id'`` or ``row numbers``)."""

    store: str
    predictions: str | None
    reports: dict[str, str]
    documents: int
    heads: tuple[str, ...]
    ids: str | None = None


def run_audit(
    input: str | Path,
    *,
    out: str | Path,
    options: AuditOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
) -> AuditResult:
    """Audit a dataset: features, every head's labels with explanations, and a report.

    Parameters
    ----------
    input
        JSONL, Parquet, CSV or text files.
    out
        Output directory (its store is resumed on a rerun; finished stages are skipped).
    options
        See :class:`AuditOptions`; ``overwrite`` starts the store afresh, as needed when it
        was written with other settings (model, SAE, window, auditor version).
    progress
        The extraction's ``docs`` stage, then ``classify`` and ``report`` stages.
    cancel
        Checked at every extraction batch and between stages.
    pipeline
        A model and SAEs already loaded; must match ``options.extract``.

    Returns
    -------
    AuditResult
    """
    from auditor.heads import list_heads, load_heads
    from auditor.jobs.classify import _head_inputs, heads_check, heads_provenance

    wanted = list(options.heads) if options.heads is not None else None
    loaded = load_heads(wanted) if wanted or (wanted is None and list_heads()) else []
    extract = audit_extract_options(options, loaded)

    def work(root: Path) -> AuditResult:
        from auditor.features.locate import load_annotations, sae_of
        from auditor.heads.classify import classify_store, write_predictions
        from auditor.io import ROW_NUMBERS
        from auditor.jobs.extract import run_extract
        from auditor.report import build_report, write_report
        from auditor.store import read_metadata

        markers = StageMarkers(root, options)
        store = root / "store"
        extracted = run_extract(input, out=store, options=extract, progress=progress,
                                cancel=cancel, pipeline=pipeline, check=heads_check(loaded))
        metadata = read_metadata(store)
        # the texts are read with the ids the store was keyed by
        id_column = ((metadata.get("input") or {}).get("read") or {}).get("id_column")
        sha, sae_path = sae_of(metadata)  # the SAE's dictionary, found by its sha256
        notes = load_annotations(sha, sae_path=sae_path)
        labels = notes.labels or None
        examples = {f: [x] for f, x in notes.examples.items()} or None
        predictions = None
        stages = Progress(progress, job="audit")
        if loaded:
            predictions = root / "predictions.parquet"
            if markers.done("classify") is None or not predictions.is_file():
                check_cancel(cancel, "the classify stage")
                with stages.stage("classify", total=1) as stage:
                    frame = classify_store(store, loaded, explain=options.explain,
                                           feature_labels=labels,
                                           feature_examples=notes.example)
                    write_predictions(frame, predictions,
                                      provenance={**metadata,
                                                  "heads": heads_provenance(loaded)})
                    stage.advance(1, docs=frame.height)
                markers.mark("classify", {"documents": frame.height})
        record = markers.done("report")
        if record is None or not all((root / p).is_file()
                                     for p in record.get("reports", {}).values()):
            check_cancel(cancel, "the report stage")
            with stages.stage("report", total=1) as stage:
                # the written file, not the frame: the report then names its source
                report = build_report(store, predictions=predictions, texts=input,
                                      previous=options.previous, feature_labels=labels,
                                      feature_examples=examples,
                                      text_column=extract.text_column,
                                      id_column=ROW_NUMBERS if id_column is None
                                      else id_column,
                                      title=f"Audit of {Path(input).name}")
                written = write_report(report, root, formats=options.formats)
                stage.advance(1)
            record = {"reports": {fmt: Path(p).name for fmt, p in written.items()},
                      "documents": int(report.get("corpus", {}).get("documents", 0) or 0)}
            markers.mark("report", record)
        return AuditResult(store="store",
                           predictions="predictions.parquet" if predictions else None,
                           reports=dict(record["reports"]),
                           documents=int(record["documents"]),
                           heads=tuple(h.name for h in loaded), ids=extracted.ids)

    inputs: dict[str, Any] = {"data": input, "previous": options.previous}
    if loaded:
        inputs.update(_head_inputs([str(h.path) for h in loaded]))
    return run_recorded("audit", out=out, options=options, input=inputs,
                        result_type=AuditResult, work=work, clear=_clear_outputs)


def audit_extract_options(options: AuditOptions, heads: Sequence[Any] | None = None
                          ) -> ExtractOptions:
    """The extraction an audit runs: ``options.extract`` with the settings ``heads`` (the
    loaded heads; ``None`` loads those the options name) were trained on, or the shipped
    heads' settings when there are none (so a later classify can reuse the store). A
    queued audit fills its store with these options before the audit runs."""
    from auditor.jobs.classify import heads_extract_settings
    from auditor.jobs.extract import shipped_heads_settings

    if heads is None:
        from auditor.heads import list_heads, load_heads

        wanted = list(options.heads) if options.heads is not None else None
        heads = load_heads(wanted) if wanted or (wanted is None and list_heads()) else []
    settings = heads_extract_settings(heads) if heads else shipped_heads_settings()
    extract = options.extract.with_config(settings)
    if options.overwrite:
        extract = ExtractOptions.from_dict({**extract.to_dict(), "overwrite": True})
    return extract


def _clear_outputs(root: Path) -> None:
    """Before an overwrite: drop the record, stage markers, predictions and reports; the
    store is replaced by the extraction (``overwrite``) once the new input is read."""
    import shutil

    for name in ("_job.json", "predictions.parquet", "report.html", "report.json",
                 "report.md"):
        (root / name).unlink(missing_ok=True)
    for name in ("_stages", "charts"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
