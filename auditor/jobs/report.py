"""The report job: a corpus report of a feature store, in stages that a rerun resumes.

:func:`run_report` builds the report of :func:`auditor.report.build_report` in stages and
writes the chosen formats (``report.html``, ``report.json``, ``report.md`` and the Markdown
file's ``charts/``) into ``out``, under the job contract (:mod:`auditor.jobs._contract`):
``out/_job.json`` records the options and the fingerprint of every input (the store, the
predictions, the texts, the previous report, the feature labels), a rerun with the same
options and input returns the recorded :class:`ReportResult`, other options are refused
unless ``overwrite``.

Stages, each reported to ``progress`` and preceded by a check of ``cancel``:

``statistics``
    the store and the predictions (provenance, corpus, feature density, heads, flagged
    documents);
``texts``
    the input texts (empty / overlong counts, near duplicates, snippets), when given;
    ``cancel`` is also checked every few hundred texts and between the LSH bands;
``drift``
    against a previous report, when given;
``render``
    the files.

Each finished stage leaves a marker in ``out/_stages/report-<stage>.json`` that holds the
report built so far, so a rerun after a kill or a cancel starts at the first unfinished
stage (and rendering resumes from the built report).

This module imports no heavy library at import time: faces import it cheaply.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError, InputFileError
from auditor.jobs._contract import (
    JobOptions,
    JobResult,
    StageMarkers,
    read_job,
    relative_to,
    run_recorded,
)
from auditor.progress import Progress, ProgressCallback

__all__ = [
    "REPORT_FORMATS",
    "ReportOptions",
    "ReportResult",
    "clear_report",
    "report_inputs",
    "run_report",
    "write_report_stages",
]

#: The formats a report is written in (the keys of :data:`auditor.report.FORMATS`, kept
#: here so that validating options imports no heavy library).
REPORT_FORMATS: tuple[str, ...] = ("html", "json", "md")

#: Prefix of the report's stage markers (``_stages/report-statistics.json``, …), so that a
#: job running the report stages inside its own output (the audit) keeps them apart.
MARKER_PREFIX = "report-"


@dataclass(frozen=True)
class ReportOptions(JobOptions):
    """Options of :func:`run_report`.

    Parameters
    ----------
    predictions
        Output of the classify job (Parquet or JSONL, one row per document), or None.
    texts
        The input texts the store was extracted from (empty / overlong counts, near
        duplicates, snippets), or None.
    previous
        A previous ``report.json`` of the same pipeline, for drift, or None.
    labels
        Feature labels: a JSON file (see :func:`auditor.report.load_feature_labels`), or a
        feature dictionary directory (or a directory of dictionaries) that must be of the
        store's SAE; None finds the SAE's dictionary by its sha256 (see
        :func:`auditor.features.locate.find_dictionary`).
    formats
        Formats to write, among :data:`REPORT_FORMATS` (lower-cased, repeats dropped).
    title
        Report title (default: from the input file name).
    sae
        SAE key in the store (default: the only one).
    pooling
        Pooling used for feature statistics (default: ``max`` when stored).
    text_column, id_column
        Columns of ``texts`` (use those given to extraction; no id column: row number).
    max_chars
        Texts longer than this count as overlong.
    flags
        Head → labels whose documents are flagged; None: the default rules
        (:data:`auditor.report.DEFAULT_FLAGS`, those present). Needs ``predictions``.
    max_flagged
        Flagged documents listed (all are counted).
    top_features
        Features listed per head and label.
    dup_threshold
        Estimated Jaccard similarity at or above which two texts are near duplicates.
    near_duplicates
        Look for near duplicates among ``texts``.
    allow_partial
        Report on an incomplete store's done shards instead of refusing it (the report's
        corpus section then counts only what is there).
    """

    predictions: str | None = None
    texts: str | None = None
    previous: str | None = None
    labels: str | None = None
    formats: tuple[str, ...] = REPORT_FORMATS
    title: str | None = None
    sae: str | None = None
    pooling: str | None = None
    text_column: str = "text"
    id_column: str | None = None
    max_chars: int = 1_000_000
    flags: dict[str, list[str]] | None = None
    max_flagged: int = 50
    top_features: int = 10
    dup_threshold: float = 0.8
    near_duplicates: bool = True
    allow_partial: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field of a value out of range.

        Examples
        --------
        >>> ReportOptions(formats=("HTML", "json", "html")).formats
        ('html', 'json')
        >>> ReportOptions(formats=("pdf",))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        auditor.errors.ConfigError: field 'formats': unknown report format(s) pdf; ...
        """
        formats = tuple(dict.fromkeys(f.strip().lower() for f in self.formats if f.strip()))
        unknown = [f for f in formats if f not in REPORT_FORMATS]
        if unknown or not formats:
            raise ConfigError(f"unknown report format(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(REPORT_FORMATS)}", field="formats")
        object.__setattr__(self, "formats", formats)
        for name in ("predictions", "texts", "previous", "labels", "sae", "pooling",
                     "id_column"):
            if getattr(self, name) == "":
                raise ConfigError("must not be empty (None for none)", field=name)
        if not self.text_column:
            raise ConfigError("must not be empty", field="text_column")
        if self.flags is not None:
            for head, labels in self.flags.items():
                if not head.strip() or not labels or not all(lab.strip() for lab in labels):
                    raise ConfigError(f"a flag rule needs a head and non-empty labels, got "
                                      f"{head!r}: {labels!r}", field="flags")
            if self.flags and self.predictions is None:
                raise ConfigError("flag rules need predictions", field="flags")
        if self.max_chars < 1:
            raise ConfigError(f"must be >= 1, got {self.max_chars}", field="max_chars")
        for name in ("max_flagged", "top_features"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, name)}", field=name)
        if not 0.0 < self.dup_threshold <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.dup_threshold}",
                              field="dup_threshold")


@dataclass(frozen=True)
class ReportResult(JobResult):
    """What :func:`run_report` wrote and the report's headline numbers.

    Parameters
    ----------
    written
        Format → file, relative to ``out`` (``charts`` → the Markdown file's chart
        directory, when written).
    title
        The report's title.
    documents, tokens
        Documents in the store and their tokens.
    flagged
        Flagged documents (None without predictions).
    near_duplicates
        Documents that near-duplicate an earlier one (None without texts or the search).
    feature_drift
        Jensen–Shannon divergence (bits) of feature firing against the previous report
        (None without one, or when the reports used different SAEs).
    dictionary
        Where the feature labels came from (``path``, ``origin``), or the ``note`` on
        building a dictionary when none was found; None when labels were given otherwise.
    outside_domain
        Documents outside every head's domain (None unless the predictions have domain
        columns, ``H.in_domain``).
    """

    written: dict[str, str]
    title: str
    documents: int
    tokens: int
    flagged: int | None = None
    near_duplicates: int | None = None
    feature_drift: float | None = None
    dictionary: dict[str, Any] | None = None
    outside_domain: int | None = None


def report_inputs(store: str | Path, options: ReportOptions) -> dict[str, str | None]:
    """Everything the report reads (fingerprinted into ``_job.json``)."""
    return {"store": str(store), "predictions": options.predictions, "texts": options.texts,
            "previous": options.previous, "labels": options.labels}


def _check_inputs(store: str | Path, out: str | Path, options: ReportOptions) -> None:
    """Fail before anything is written: ``out`` is no file, the store's manifest reads, the
    side files exist."""
    from auditor.store import read_metadata

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError("the output path exists and is not a directory", path=out,
                          field="out")
    read_metadata(store)
    for name, what in (("predictions", "predictions"), ("texts", "texts"),
                       ("previous", "previous report"), ("labels", "feature-label")):
        path = getattr(options, name)
        if path is not None and not Path(path).exists():
            raise InputFileError(f"no such {what} file", path=path, field=name)
    if options.labels is not None and Path(options.labels).is_dir():
        from auditor.features.locate import find_dictionary, sae_of

        sha, sae_path = sae_of(read_metadata(store), sae=options.sae)
        if sha is not None:  # a dictionary of another SAE is refused before anything runs
            find_dictionary(sha, labels_dir=options.labels, sae_path=sae_path)


def clear_report(out: str | Path) -> None:
    """Remove what a report run left in ``out`` (its files, charts and stage markers);
    anything else there stays."""
    root = Path(out)
    for name in ("report.html", "report.json", "report.md"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "charts", ignore_errors=True)
    stages = root / "_stages"
    if stages.is_dir():
        for marker in stages.glob(f"{MARKER_PREFIX}*.json"):
            marker.unlink()


class _Stages:
    """The report's stage markers; a marker counts only for the same input fingerprint."""

    def __init__(self, markers: StageMarkers, input_key: str | None) -> None:
        self.markers = markers
        self.input_key = input_key

    def done(self, name: str) -> dict[str, Any] | None:
        record = self.markers.done(MARKER_PREFIX + name)
        if record is None or record.get("input") != self.input_key:
            return None
        return record

    def mark(self, name: str, **record: Any) -> None:
        self.markers.mark(MARKER_PREFIX + name, {"input": self.input_key, **record})


def _result(report: Mapping[str, Any], written: Mapping[str, str],
            dictionary: dict[str, Any] | None = None) -> ReportResult:
    corpus = report.get("corpus") or {}
    flagged = report.get("flagged")
    near = report.get("near_duplicates")
    drift = report.get("drift") or {}
    features = drift.get("features") or {}
    value = features.get("value")
    return ReportResult(
        written=dict(written),
        title=str(report.get("title") or ""),
        documents=int(corpus.get("documents") or 0),
        tokens=int((corpus.get("tokens") or {}).get("total") or 0),
        flagged=None if not flagged else int(flagged["total"]),
        near_duplicates=None if not near else int(near["near_duplicates"]),
        feature_drift=None if value is None else float(value),
        dictionary=dictionary,
        outside_domain=None if not report.get("domain")
        else int(report["domain"]["outside_every"]),
    )


def write_report_stages(
    store: str | Path,
    out: str | Path,
    options: ReportOptions,
    *,
    feature_labels: Mapping[int, str] | None = None,
    feature_examples: Mapping[int, Sequence[str]] | None = None,
    markers: StageMarkers | None = None,
    input_key: str | None = None,
    progress: Progress | ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReportResult:
    """The report's stages, resuming from their markers, writing into ``out``.

    The work of :func:`run_report`, for a job that runs the report inside its own output
    and ``_job.json`` (the audit): it passes its own ``markers`` (the report's are named
    ``report-<stage>``) and its own :class:`~auditor.progress.Progress`.

    Parameters
    ----------
    store
        The feature store.
    out
        Directory the report files go into (created).
    options
        What to build; its paths are read as given.
    feature_labels, feature_examples
        Feature labels and example contexts, used when ``options.labels`` is None (the
        audit passes those of the SAE's dictionary); when neither is given, the labels come
        from the store's SAE's dictionary found by its sha256.
    markers
        Stage markers (default: ``StageMarkers(out, options)``).
    input_key
        The input fingerprint a marker must have been written with to count (the
        caller's ``_job.json`` one); markers of another input are redone.
    progress
        A :class:`~auditor.progress.Progress` or a bare callback; one stage per step.
    cancel
        Checked before each stage and inside the texts stage.

    Returns
    -------
    ReportResult

    Raises
    ------
    JobCancelled
        ``cancel`` was set; finished stages keep their markers.
    AuditorError
        From the store, the predictions, the texts, the previous report or the labels
        (see :func:`auditor.report.build_report`).
    """
    from auditor.report import (
        add_drift,
        add_texts,
        build_statistics,
        load_feature_labels,
        store_doc_ids,
        write_report,
    )

    root = Path(out)
    stages = _Stages(markers or StageMarkers(root, options), input_key)
    tracker = progress if isinstance(progress, Progress) else Progress(progress, job="report")
    labels: Mapping[int, str] | None = feature_labels
    examples: Mapping[int, Sequence[str]] | None = feature_examples
    dictionary: dict[str, Any] | None = None
    if options.labels is not None and not Path(options.labels).is_dir():
        labels, examples = load_feature_labels(options.labels)
    elif options.labels is not None or (labels is None and examples is None):
        notes = _dictionary_labels(store, options)
        dictionary = notes.info()
        labels = notes.labels or None
        examples = {f: [x] for f, x in notes.examples.items()} or None

    def resumed(name: str) -> dict[str, Any] | None:
        record = stages.done(name)
        if record is None:
            check_cancel(cancel, f"report stage {name}")
            return None
        with tracker.stage(name, total=1):  # one final event: the stage is done
            pass
        report: dict[str, Any] = record["report"]
        return report

    report = resumed("statistics")
    if report is None:
        with tracker.stage("statistics") as stage:
            report = build_statistics(
                store, predictions=options.predictions, feature_labels=labels,
                feature_examples=examples, sae=options.sae, pooling=options.pooling,
                title=options.title, flags=options.flags, max_flagged=options.max_flagged,
                top_features=options.top_features, stage=stage,
                allow_partial=options.allow_partial)
        stages.mark("statistics", report=report)

    if options.texts is not None:
        done = resumed("texts")
        if done is None:
            with tracker.stage("texts") as stage:
                ids = store_doc_ids(store, allow_partial=options.allow_partial)
                report = add_texts(
                    report, options.texts, store_ids=ids,
                    text_column=options.text_column, id_column=options.id_column,
                    max_chars=options.max_chars, near_duplicates=options.near_duplicates,
                    duplicate_threshold=options.dup_threshold, stage=stage, cancel=cancel)
            stages.mark("texts", report=report)
        else:
            report = done

    if options.previous is not None:
        done = resumed("drift")
        if done is None:
            with tracker.stage("drift", total=1) as stage:
                report = add_drift(report, options.previous, feature_labels=labels)
                stage.advance(1)
            stages.mark("drift", report=report)
        else:
            report = done

    rendered = stages.done("render")
    if rendered is not None and all((root / p).exists() for p in rendered["written"].values()):
        with tracker.stage("render", total=1):
            pass
        return _result(report, rendered["written"], dictionary)
    check_cancel(cancel, "report stage render")
    with tracker.stage("render") as stage:
        paths = write_report(report, root, formats=options.formats, stage=stage)
    written = {k: relative_to(v, root) for k, v in paths.items()}
    stages.mark("render", written=written)
    return _result(report, written, dictionary)


def _dictionary_labels(store: str | Path, options: ReportOptions) -> Any:
    """The :class:`~auditor.features.locate.Annotations` of the store's SAE (the one
    ``options.sae`` names, else the only one), from ``options.labels`` as a dictionary
    directory or found by the SAE's sha256."""
    from auditor.features.locate import load_annotations, sae_of
    from auditor.store import read_metadata

    sha, sae_path = sae_of(read_metadata(store), sae=options.sae)
    return load_annotations(sha, labels_dir=options.labels, sae_path=sae_path)


def run_report(
    store: str | Path,
    *,
    out: str | Path,
    options: ReportOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ReportResult:
    """Write a corpus report of the feature store ``store`` into ``out``.

    Parameters
    ----------
    store
        Feature store directory written by extraction.
    out
        Output directory: the report files, ``_job.json`` and ``_stages/``.
    options
        See :class:`ReportOptions`.
    progress
        Receives a :class:`~auditor.progress.ProgressEvent` stream, one stage per step
        (``statistics``, ``texts``, ``drift``, ``render``; those that apply).
    cancel
        Checked between stages, every few hundred texts and between the near-duplicate
        LSH bands; a rerun resumes at the first unfinished stage.

    Returns
    -------
    ReportResult

    Raises
    ------
    ConfigError
        ``out`` is a file.
    StoreError
        ``store`` is not a feature store.
    InputFileError
        An input named in ``options`` is missing (nothing is written then).
    JobConflict
        ``out`` holds a run with other options or another input and not ``overwrite``.
    JobCancelled
        ``cancel`` was set.
    AuditorError
        From the inputs (see :func:`auditor.report.build_report`).
    """
    _check_inputs(store, out, options)

    def work(root: Path) -> ReportResult:
        key = (read_job(root) or {}).get("input_fingerprint")
        return write_report_stages(store, root, options, input_key=key,
                                   progress=progress, cancel=cancel)

    return run_recorded("report", out=out, options=options, input=report_inputs(store, options),
                        result_type=ReportResult, work=work, clear=clear_report)
