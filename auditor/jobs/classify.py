"""The classify job: extract what the heads need from a dataset, then label every row.

Writes ``out/store`` (the features, resumable; or the store the options name) and
``out/predictions.parquet`` (or ``.jsonl``): one row per document with every head's label,
calibrated probabilities, whether the document looks like the head's training data (heads
with a domain model) and, with ``explain``, the top contributing features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.jobs._contract import (
    JobOptions,
    JobResult,
    StageMarkers,
    json_values,
    run_recorded,
    runtime_field,
)
from auditor.jobs._pipeline import Pipeline
from auditor.jobs.extract import ExtractOptions, run_extract
from auditor.progress import Progress, ProgressCallback

__all__ = ["ClassifyOptions", "ClassifyResult", "classify_extract_options", "heads_check",
           "heads_extract_settings", "heads_provenance", "run_classify"]

PREDICTION_FORMATS = (".parquet", ".jsonl")


@dataclass(frozen=True)
class ClassifyOptions(JobOptions):
    """Settings of one classify job.

    Parameters
    ----------
    heads
        Head names or directories; ``None`` for every installed head.
    explain
        Top contributing features kept per document and head (0: none).
    extract
        How the dataset is read and which model and SAEs run (its extraction settings
        are replaced by what the heads were trained on).
    store
        The feature store, relative to ``out`` (default ``store``) or an absolute path
        (a store kept elsewhere, say shared by several runs; resumed like any store).
    predictions
        File name of the predictions inside ``out`` (``.parquet`` or ``.jsonl``).
    inline_rows
        Put the predictions into the result as well when there are at most this many
        documents (a CLI or API call on a few texts prints them from there).
    labels
        The feature dictionary explanations are labelled from: a dictionary directory (or a
        directory of dictionaries) that must be of the store's SAE; None finds it by the
        SAE's sha256 (see :func:`auditor.features.locate.find_dictionary`).
    """

    heads: tuple[str, ...] | None = None
    explain: int = 0
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    store: str = "store"
    predictions: str = "predictions.parquet"
    inline_rows: int = runtime_field(100)
    labels: str | None = None

    def validate(self) -> None:
        if self.explain < 0:
            raise ConfigError("explain must be >= 0", field="explain")
        if Path(self.predictions).suffix not in PREDICTION_FORMATS or \
                Path(self.predictions).name != self.predictions:
            raise ConfigError(f"predictions must be a file name ending in "
                              f"{' or '.join(PREDICTION_FORMATS)}, got {self.predictions!r}",
                              field="predictions")


@dataclass(frozen=True)
class ClassifyResult(JobResult):
    """Where a classify job wrote its outputs, what it found, and how documents are keyed
    (``ids``: ``column 'id'`` or ``row numbers``). ``dictionary``: with ``explain``, where
    the feature labels came from (``path``, ``origin``) or, without a dictionary, the
    ``note`` saying how to build one."""

    store: str
    predictions: str
    documents: int
    heads: tuple[str, ...]
    extract: dict[str, Any]
    rows: tuple[dict[str, Any], ...] | None = None
    ids: str | None = None
    dictionary: dict[str, Any] | None = None


def heads_extract_settings(heads: Sequence[Any]) -> dict[str, Any]:
    """See :func:`auditor.heads.settings.heads_extract_settings` (imported on call: the
    jobs package stays light to import)."""
    from auditor.heads.settings import heads_extract_settings as settings

    return settings(heads)


def heads_check(heads: Sequence[Any]) -> Callable[[Mapping[str, Any]], None]:
    """A provenance check for :func:`run_extract`: every head must accept the features.

    Run before extraction, it refuses another model or SAE at once instead of after a
    whole extraction; :meth:`Head.check` raises ``ProvenanceMismatch`` naming the keys.
    """
    def check(provenance: Mapping[str, Any]) -> None:
        for head in heads:
            head.check(provenance)

    return check


def heads_provenance(heads: Sequence[Any]) -> dict[str, Any]:
    """What predictions record of the heads that made them."""
    return {h.name: {"path": str(h.path), "classes": h.config.classes,
                     "representation": h.config.representation,
                     "threshold": h.config.threshold,
                     **({"task": "multilabel", "thresholds": h.config.thresholds}
                        if h.config.multilabel else {}),
                     **({"domain_threshold": h.domain.threshold}
                        if h.domain is not None else {})} for h in heads}


def _head_inputs(names: Sequence[str] | None) -> dict[str, Any]:
    """The head directories a run reads, for the input fingerprint."""
    from auditor.heads import list_heads, resolve_head

    if names is None:
        return {f"head:{p.name}": str(p) for p in list_heads()}
    return {f"head:{n}": str(resolve_head(n)) for n in names}


def classify_extract_options(options: ClassifyOptions, heads: Sequence[Any] | None = None
                             ) -> ExtractOptions:
    """The extraction a classify job runs: ``options.extract`` with the settings the heads
    (loaded; ``None`` loads those the options name) were trained on. A queued classify
    fills its store with these options before the heads run.

    Raises
    ------
    ConfigError
        No heads are installed, or they disagree on extraction settings.
    """
    if heads is None:
        from auditor.heads import load_heads

        heads = load_heads(list(options.heads) if options.heads is not None else None)
    if not heads:
        raise ConfigError("no heads are installed; train one with a probe train job",
                          field="heads")
    return options.extract.with_config(heads_extract_settings(heads))


def run_classify(
    input: str | Path,
    *,
    out: str | Path,
    options: ClassifyOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
) -> ClassifyResult:
    """Label a dataset with heads (default: every installed head).

    Parameters
    ----------
    input
        JSONL, Parquet, CSV or text files (see :func:`auditor.io.read_documents`).
    out
        Output directory: ``store/`` and the predictions file.
    options
        See :class:`ClassifyOptions`.
    progress
        Receives the extraction's ``docs`` stage, then a ``classify`` stage (one unit
        per head).
    cancel
        Checked at every extraction batch and between heads.
    pipeline
        A model and SAEs already loaded; must match ``options.extract``.

    Returns
    -------
    ClassifyResult

    Raises
    ------
    ConfigError
        No heads installed, or heads that disagree on extraction settings.
    ProvenanceMismatch
        A head cannot read the features of the chosen model and SAE (before extraction).
    """
    from auditor.heads import load_heads

    loaded = load_heads(list(options.heads) if options.heads is not None else None)
    extract = classify_extract_options(options, loaded)

    def work(root: Path) -> ClassifyResult:
        from auditor.features.locate import load_annotations, sae_of
        from auditor.heads.classify import classify_store, write_predictions
        from auditor.store import read_metadata

        store = root / options.store
        done = run_extract(input, out=store, options=extract, progress=progress,
                           cancel=cancel, pipeline=pipeline, check=heads_check(loaded))
        markers = StageMarkers(root, options)
        target = root / options.predictions
        record = markers.done("classify")
        if record is None or not target.is_file():
            check_cancel(cancel, "the classify stage")
            metadata = read_metadata(store)
            notes = None
            if options.explain > 0:
                sha, sae_path = sae_of(metadata)
                notes = load_annotations(sha, labels_dir=options.labels, sae_path=sae_path)
            with Progress(progress, job="classify").stage("classify", total=1) as stage:
                frame = classify_store(
                    store, loaded, explain=options.explain,
                    feature_labels=notes.label if notes is not None else None,
                    feature_examples=notes.example if notes is not None else None)
                stage.advance(1, docs=frame.height)
            write_predictions(frame, target,
                              provenance={**metadata, "heads": heads_provenance(loaded)})
            record = {"documents": frame.height,
                      "dictionary": notes.info() if notes is not None else None}
            markers.mark("classify", record)
        rows = None
        if int(record["documents"]) <= options.inline_rows:
            rows = tuple(_read_rows(target))
        return ClassifyResult(store=options.store, predictions=options.predictions,
                              documents=int(record["documents"]),
                              heads=tuple(h.name for h in loaded),
                              extract=done.summary, rows=rows, ids=done.ids,
                              dictionary=record.get("dictionary"))

    return run_recorded("classify", out=out, options=options,
                        input={"data": input, **_head_inputs(options.heads),
                               **({"labels": options.labels} if options.labels else {})},
                        result_type=ClassifyResult, work=work)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The predictions file's rows as JSON values."""
    import polars as pl

    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    return [json_values(row) for row in frame.iter_rows(named=True)]

