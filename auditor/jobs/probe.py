"""The probe jobs: train a head, evaluate it, compare representations, learning curves,
apply heads to a store.

Every job reads a feature store and (except ``predict``) a labelled dataset file, given
as the ``input`` mapping ``{"features": <store>, "labels": <file>}`` (``probe eval`` adds
``"head"``, ``probe predict`` takes ``{"features": <store>, "heads": [<head>, ...]}``); both
are fingerprinted, so a rerun on changed data is refused instead of returning stale
metrics. Options and results round-trip through JSON (:mod:`auditor.jobs._contract`).

- :func:`run_probe_train` writes the head into ``out`` (``out`` *is* the head directory,
  beside its ``_job.json``): the representation is chosen by cross-validation against the
  TF-IDF baseline, each representation's metrics are kept as a stage marker, so a
  cancelled run resumes after the last representation scored.
- :func:`run_probe_eval`, :func:`run_probe_compare` and :func:`run_probe_curve` write
  ``out/metrics.json`` (``out/curve.json``) and return the metrics; compare and curve
  resume per representation too.
- :func:`run_probe_predict` writes ``out/predictions.parquet`` (or ``.jsonl``);
  :func:`predict_to_file` runs it for a predictions file anywhere.

Progress: stage ``candidates`` (one unit per representation) for train, compare and
curve, then ``fit`` for train; ``evaluate`` for eval, ``predict`` for predict. The cancel
token is checked before each representation (and each learning-curve fold).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor._files import write_json
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError, JobConflict
from auditor.jobs._contract import (
    JOB_FILE,
    JobOptions,
    JobResult,
    StageMarkers,
    json_values,
    read_job,
    run_recorded,
)
from auditor.progress import Progress, ProgressCallback

__all__ = [
    "LabelOptions",
    "ProbeCompareOptions",
    "ProbeCompareResult",
    "ProbeCurveOptions",
    "ProbeCurveResult",
    "ProbeEvalOptions",
    "ProbeEvalResult",
    "ProbePredictOptions",
    "ProbePredictResult",
    "ProbeTrainOptions",
    "ProbeTrainResult",
    "labelled_documents",
    "predict_to_file",
    "run_probe_compare",
    "run_probe_curve",
    "run_probe_eval",
    "run_probe_predict",
    "run_probe_train",
]

#: The metrics tables of multilabel heads show these columns.
_MULTILABEL_TABLE = ("micro_f1", "macro_f1", "auroc", "pr_auc", "subset_accuracy")


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class LabelOptions(JobOptions):
    """How the labelled dataset file is read (shared by the probe jobs).

    Parameters
    ----------
    label_column
        The column holding each document's label: in the labels file, or without one a
        column the store kept at extraction (``passthrough``).
    id_column
        The labels file's column of document ids (they must match the store's ids).
        None: the ``id`` column when the file has one, else row numbers, the rule
        extraction follows too (:func:`auditor.io.resolve_id_column`).
    text_column
        The text, for the TF-IDF baseline.
    multilabel_sep
        Multilabel: each label value is a list of labels, or a string of labels joined by
        this separator (e.g. ``|``); an empty value is a document without labels.
    """

    label_column: str = "label"
    id_column: str | None = None
    text_column: str = "text"
    multilabel_sep: str | None = None

    def validate(self) -> None:
        if self.multilabel_sep == "":
            raise ConfigError("multilabel_sep must be a non-empty separator",
                              field="multilabel_sep")


def _check_folds(folds: int) -> None:
    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}", field="folds")


@dataclass(frozen=True)
class ProbeTrainOptions(LabelOptions):
    """Options of :func:`run_probe_train`.

    Parameters
    ----------
    head
        Name of the head.
    representation
        ``auto`` (the best cross-validated of ``candidates``) or a candidate name
        (:data:`auditor.heads.CANDIDATES`).
    positive_class, target_precision, target_recall
        Binary heads: the flagged class and the threshold target (default: max F1).
    folds, random_state
        Cross-validation folds and seed.
    description
        One line for ``heads list``.
    candidates
        The pool ``auto`` chooses from; None: :data:`auditor.heads.DEFAULT_CANDIDATES`
        (the linear ones); ``("all",)``: every one of :data:`auditor.heads.CANDIDATES`,
        LightGBM (``sae-max-lgbm``) included.
    """

    head: str = ""
    representation: str = "auto"
    positive_class: str | None = None
    target_precision: float | None = None
    target_recall: float | None = None
    folds: int = 5
    random_state: int = 0
    description: str = ""
    candidates: tuple[str, ...] | None = None

    def validate(self) -> None:
        super().validate()
        if not self.head or any(c in self.head for c in "./\\ "):
            raise ConfigError(f"head name must be non-empty without '.', '/', spaces: "
                              f"{self.head!r}", field="head")
        _check_folds(self.folds)
        for name in ("target_precision", "target_recall"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}", field=name)


@dataclass(frozen=True)
class ProbeTrainResult(JobResult):
    """What :func:`run_probe_train` wrote.

    ``path`` is the head directory relative to ``out`` (``.``: ``out`` is the head);
    ``representation`` the chosen candidate; ``thresholds`` the decision thresholds
    (binary: ``{positive_class: t}``, multilabel: per label, multiclass: empty);
    ``metrics`` the cross-validation table's values and ``table`` its Markdown.
    """

    head: str
    path: str
    representation: str
    task: str
    classes: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, dict[str, Any]]
    table: str


@dataclass(frozen=True)
class ProbeEvalOptions(LabelOptions):
    """Options of :func:`run_probe_eval` (``multilabel_sep`` defaults to the separator the
    head was trained with, else ``|``)."""


@dataclass(frozen=True)
class ProbeEvalResult(JobResult):
    """Metrics of a head on labelled features (``metrics`` includes ``documents``);
    ``written`` is ``metrics.json``."""

    head: str
    task: str
    documents: int
    metrics: dict[str, Any]
    written: str


@dataclass(frozen=True)
class ProbeCompareOptions(LabelOptions):
    """Options of :func:`run_probe_compare`: the SAE key (the store's only one when None),
    folds, seed and the representations compared (None: the default candidates, the
    linear ones; ``("all",)``: every candidate, LightGBM included)."""

    sae: str | None = None
    folds: int = 5
    random_state: int = 0
    candidates: tuple[str, ...] | None = None

    def validate(self) -> None:
        super().validate()
        _check_folds(self.folds)


@dataclass(frozen=True)
class ProbeCompareResult(JobResult):
    """Cross-validated metrics per representation and the TF-IDF baseline (``metrics``),
    as a Markdown ``table``; ``written`` is ``metrics.json``."""

    task: str
    documents: int
    metrics: dict[str, dict[str, Any]]
    table: str
    written: str


@dataclass(frozen=True)
class ProbeCurveOptions(LabelOptions):
    """Options of :func:`run_probe_curve`: training-set ``sizes`` (None: every training
    document of a fold), folds and seed. Single-label data only."""

    sizes: tuple[int | None, ...] = (50, 200, 1000, None)
    folds: int = 5
    random_state: int = 0

    def validate(self) -> None:
        super().validate()
        if self.multilabel_sep is not None:
            raise ConfigError("learning curves are for single-label data",
                              field="multilabel_sep")
        _check_folds(self.folds)
        if not self.sizes:
            raise ConfigError("give at least one training-set size", field="sizes")
        bad = [s for s in self.sizes if s is not None and s < 1]
        if bad:
            raise ConfigError(f"training-set sizes must be positive, got {bad[0]}",
                              field="sizes")


@dataclass(frozen=True)
class ProbeCurveResult(JobResult):
    """Per representation, one row per training-set size (``n_train``, mean metrics and
    ``<metric>_std`` over folds), as a Markdown ``table`` of macro-F1; ``written`` is
    ``curve.json``."""

    curves: dict[str, list[dict[str, Any]]]
    table: str
    written: str


@dataclass(frozen=True)
class ProbePredictOptions(JobOptions):
    """Options of :func:`run_probe_predict`: top contributing features per document
    (``explain``, 0: none), the predictions file name under ``out`` (``.parquet`` or
    ``.jsonl``), whether an incomplete store's done shards may be labelled
    (``allow_partial``), and the feature dictionary explanations are labelled from
    (``labels``: a dictionary directory of the store's SAE; None: found by the SAE's sha256,
    see :func:`auditor.features.locate.find_dictionary`)."""

    explain: int = 0
    filename: str = "predictions.parquet"
    allow_partial: bool = False
    labels: str | None = None

    def validate(self) -> None:
        if self.explain < 0:
            raise ConfigError(f"explain must be >= 0, got {self.explain}", field="explain")
        if Path(self.filename).name != self.filename or \
                Path(self.filename).suffix not in (".parquet", ".jsonl"):
            raise ConfigError(f"filename must be a file name ending .parquet or .jsonl, "
                              f"got {self.filename!r}", field="filename")


@dataclass(frozen=True)
class ProbePredictResult(JobResult):
    """``predictions``: the file relative to ``out``; one row per document. ``dictionary``:
    with ``explain``, where the feature labels came from (``path``, ``origin``) or the
    ``note`` on building a dictionary."""

    predictions: str
    documents: int
    heads: list[str]
    dictionary: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- helpers


def _paths(input: Mapping[str, Any], *keys: str) -> list[Path]:
    if not isinstance(input, Mapping):
        raise ConfigError(f"input must be a mapping with {', '.join(keys)}, got "
                          f"{type(input).__name__}", field="input")
    missing = [k for k in keys if input.get(k) is None]
    if missing:
        raise ConfigError(f"input needs {', '.join(missing)}", field=f"input.{missing[0]}")
    return [Path(input[k]) for k in keys]


def labelled_documents(path: str | Path, options: LabelOptions, *,
                       keep_empty: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """``doc_id -> label`` and ``doc_id -> text`` from a dataset file with a label column.

    Documents whose label is missing are left out, and so are empty strings unless
    ``keep_empty`` (multilabel: an empty label set).
    """
    from auditor.io import read_documents

    labels: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for doc in read_documents(path, text_column=options.text_column,
                              id_column=options.id_column,
                              passthrough=[options.label_column]):
        value = doc.extra.get(options.label_column)
        if value is not None and (keep_empty or not (isinstance(value, str) and value == "")):
            labels[doc.doc_id] = value
            texts[doc.doc_id] = doc.text
    return labels, texts


def _labels_path(input: Mapping[str, Any]) -> Path | None:
    """The labels file, or None: labels from a column the store kept."""
    value = input.get("labels")
    return None if value is None else Path(value)


def _read_settings(store: Path) -> dict[str, Any]:
    """How the store's input was read (``input.read`` of its provenance)."""
    from auditor.store import read_metadata

    return dict(((read_metadata(store).get("input") or {}).get("read")) or {})


def _store_texts(store: Path) -> dict[str, str] | None:
    """The store's documents' texts from its input file, if that is still there unchanged
    (for the TF-IDF baseline when the labels come from the store); else None."""
    from auditor.errors import AuditorError
    from auditor.io import ROW_NUMBERS, input_fingerprint, read_documents
    from auditor.store import read_metadata

    source = read_metadata(store).get("input") or {}
    read = source.get("read") or {}
    path = source.get("path")
    if not path or "id_column" not in read or not Path(path).exists():
        return None
    try:
        if input_fingerprint(path) != source.get("fingerprint"):
            return None
        id_column = read["id_column"]
        return {d.doc_id: d.text for d in read_documents(
            path, text_column=read.get("text_column", "text"),
            id_column=ROW_NUMBERS if id_column is None else id_column,
            max_chars=int(read.get("max_chars", 1_000_000)), skip_bad_rows=True)}
    except AuditorError:
        return None


def _kept_column(store: Path, options: LabelOptions) -> str:
    """The store's kept column holding the labels (no labels file given)."""
    kept = list(_read_settings(store).get("passthrough") or [])
    if options.label_column not in kept:
        raise ConfigError(f"no labels file given and the store keeps no column "
                          f"{options.label_column!r} (it keeps "
                          f"{', '.join(map(repr, kept)) or 'none'}): set labels to the "
                          f"labelled dataset, or extract again keeping the label column "
                          f"(passthrough)", path=store, field="labels")
    return options.label_column


def _kept_labels(store: Path, options: LabelOptions, *, keep_empty: bool) -> dict[str, Any]:
    """``doc_id -> label`` from the store's kept label column (as
    :func:`labelled_documents` leaves missing and empty labels out)."""
    from auditor.store import scan_features

    column = _kept_column(store, options)
    frame = scan_features(store).select(["doc_id", column]).collect()
    return {d: v for d, v in zip(frame["doc_id"].to_list(), frame[column].to_list(),
                                 strict=True)
            if v is not None and (keep_empty or not (isinstance(v, str) and v == ""))}


def _check_ids_meet(store: Path, labels: Mapping[str, Any], labels_path: Path,
                    options: LabelOptions) -> None:
    """Refuse, saying how each side keys its documents and the fix, when no id of the
    labels file is a document of the store."""
    from auditor.io import ROW_NUMBERS, describe_ids, resolve_id_column
    from auditor.store import scan_features

    store_ids = scan_features(store).select("doc_id").collect()["doc_id"].to_list()
    if not labels or any(d in labels for d in store_ids):
        return
    read = _read_settings(store)
    store_column = read.get("id_column")
    store_side = describe_ids(store_column) if "id_column" in read else "ids"
    labels_column = resolve_id_column(labels_path, options.id_column)
    same = ROW_NUMBERS if store_column is None else store_column
    raise ConfigError(
        f"no document of the store has a label: the store's documents are keyed by "
        f"{store_side} (e.g. {', '.join(map(repr, store_ids[:2]))}), the labels file's rows "
        f"by {describe_ids(labels_column)} (e.g. "
        f"{', '.join(map(repr, list(labels)[:2]))}), and no id is on both sides. Read the "
        f"labels with the store's ids (set id_column to {same!r}), extract again with the "
        f"labels file's ids, or train from a label column the store kept (extract keeping "
        f"it, without a labels file)", path=labels_path, field="id_column")


def _split(input: Mapping[str, Any], options: LabelOptions, sae: str | None = None) -> Any:
    from auditor.heads import load_split

    (store,) = _paths(input, "features")
    labels_path = _labels_path(input)
    if labels_path is None:
        return load_split(store, _kept_column(store, options), texts=_store_texts(store),
                          sae=sae, multilabel_sep=options.multilabel_sep)
    multilabel = options.multilabel_sep is not None
    labels, texts = labelled_documents(labels_path, options, keep_empty=multilabel)
    _check_ids_meet(store, labels, labels_path, options)
    return load_split(store, labels, texts=texts, sae=sae,
                      multilabel_sep=options.multilabel_sep)


def _table_metrics(multilabel: bool) -> dict[str, Any]:
    """``metrics=`` of :func:`auditor.heads.card.metrics_table` for a head's task."""
    return {"metrics": _MULTILABEL_TABLE} if multilabel else {}


def _task(split: Any) -> str:
    if split.multilabel:
        return "multilabel"
    return "binary" if len(set(split.y.tolist())) == 2 else "multiclass"


def _scored(markers: StageMarkers, prefix: str, names: Sequence[str]) -> dict[str, Any]:
    """The results a cancelled run left as stage markers, by name."""
    done = {}
    for name in names:
        record = markers.done(f"{prefix}-{name}")
        if record is not None:
            done[name] = record["result"]
    return done


def _no_oof(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: json_values({m: v for m, v in r.items() if m != "oof_proba"})
            for k, r in results.items()}


def _refuse_foreign(out: str | Path, options: JobOptions) -> None:
    """Refuse a non-empty ``out`` no job wrote (a head saved by hand, say) unless
    ``options.overwrite``: without a ``_job.json`` the contract cannot tell it is ours."""
    root = Path(out)
    if options.overwrite or not root.is_dir() or read_job(root) is not None:
        return
    if any(p.name != JOB_FILE for p in root.iterdir()):
        raise JobConflict("exists, is not empty and was not written by a job; set "
                          "overwrite to replace it", path=root)


# ----------------------------------------------------------------------------- train


def _pool(candidates: Sequence[str] | None) -> tuple[str, ...]:
    """The representations cross-validated: the linear default, ``all`` of them, or those
    named (each known)."""
    from auditor.heads import CANDIDATES, DEFAULT_CANDIDATES

    if not candidates:
        return tuple(DEFAULT_CANDIDATES)
    if "all" in candidates:
        return tuple(CANDIDATES)
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ConfigError(f"unknown candidates {unknown}; choose from "
                          f"{', '.join(CANDIDATES)} or all", field="candidates")
    return tuple(dict.fromkeys(candidates))


def run_probe_train(input: Mapping[str, Any], *, out: str | Path,
                    options: ProbeTrainOptions, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> ProbeTrainResult:
    """Train a head: choose the representation by CV against TF-IDF, calibrate, save.

    With ``multilabel_sep``, a multilabel head: one probe per label, each label's
    threshold at its max out-of-fold F1, no calibration.

    Parameters
    ----------
    input
        ``{"features": <feature store>, "labels": <dataset file>}``; without ``labels``
        (or None) the labels are the store's kept column ``label_column``.
    out
        The head directory (written with :func:`auditor.heads.write_head`).

    Raises
    ------
    ConfigError
        Unknown representation, too few labels, an unreachable threshold target, a
        binary-only option for a multilabel head.
    JobConflict
        ``out`` holds another run, or files no job wrote, and ``options.overwrite`` is
        false.
    JobCancelled
        The token was set; the representations scored so far are kept.
    """
    (store,) = _paths(input, "features")
    labels_path = _labels_path(input)
    _refuse_foreign(out, options)

    def work(root: Path) -> ProbeTrainResult:
        from auditor.heads import CANDIDATES, train_head, write_head
        from auditor.heads.build import cross_validate_candidates
        from auditor.heads.card import metrics_table, render_card

        chosen = options.representation
        if chosen != "auto" and chosen not in CANDIDATES:
            raise ConfigError(f"unknown representation {chosen!r}; choose auto or one of "
                              f"{', '.join(CANDIDATES)}", field="representation")
        pool = _pool(options.candidates) if chosen == "auto" else (chosen,)
        split = _split(input, options)
        markers = StageMarkers(root, options)
        steps = Progress(progress, job="probe-train")
        with steps.stage("candidates") as stage:
            cv = cross_validate_candidates(
                split, candidates=pool, folds=options.folds,
                random_state=options.random_state, stage=stage, cancel=cancel,
                done=_scored(markers, "candidate", [*pool, "tfidf"]),
                on_result=lambda name, r: markers.mark(
                    f"candidate-{name}", {"result": _no_oof({name: r})[name]}))
        with steps.stage("fit", total=1) as stage:
            head = train_head(options.head, split, candidate=chosen,
                              positive_class=options.positive_class,
                              target_precision=options.target_precision,
                              target_recall=options.target_recall, folds=options.folds,
                              random_state=options.random_state,
                              description=options.description, cv_results=cv,
                              candidates=pool, cancel=cancel)
            check_cancel(cancel, "saving the head")
            write_head(head, root, card_markdown=render_card(head.config.to_dict(),
                                                              head.card))
            stage.advance(1)
        c = head.config
        thresholds = (dict(zip(c.classes, c.label_thresholds().tolist(), strict=True))
                      if c.multilabel else
                      {c.positive_class: c.threshold} if c.threshold is not None else {})
        metrics = _no_oof(head.card["cross_validation"])
        representation = head.card["representation"]["candidate"]
        return ProbeTrainResult(
            head=c.name, path=".", representation=representation, task=c.task,
            classes=list(c.classes), thresholds=json_values(thresholds), metrics=metrics,
            table=metrics_table(metrics, chosen=representation,
                                **_table_metrics(split.multilabel)))

    return run_recorded("probe-train", out=out, options=options,
                        input={"features": store, "labels": labels_path},
                        result_type=ProbeTrainResult, work=work)


# ----------------------------------------------------------------------------- eval


def _head_dir(ref: str | Path) -> Path:
    """A head's directory: a head's name (along the heads search path) or a directory."""
    from auditor.heads import resolve_head

    return resolve_head(ref)


def _multilabel_eval(head: Any, values: list[Any], proba: Any, sep: str) -> dict[str, Any]:
    """Multilabel metrics of a head: at 0.5 and at the head's per-label thresholds."""
    from auditor.heads import label_indicator, label_set, multilabel_metrics

    names = head.config.classes
    Y = label_indicator([label_set(v, sep) for v in values], names)
    metrics = multilabel_metrics(Y, proba, names)
    at = multilabel_metrics(Y, proba, names, thresholds=head.config.label_thresholds())
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "per_label_f1"):
        metrics[f"{key}_at_threshold"] = at[key]
    return metrics


def run_probe_eval(input: Mapping[str, Any], *, out: str | Path, options: ProbeEvalOptions,
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> ProbeEvalResult:
    """Metrics of a trained head on labelled features; writes ``out/metrics.json``.

    Parameters
    ----------
    input
        ``{"head": <name or directory>, "features": <store>, "labels": <dataset file>}``;
        without ``labels`` the labels are the store's kept column ``label_column``.

    Raises
    ------
    ConfigError
        ``multilabel_sep`` for a single-label head, or no document of the store is
        labelled.
    ProvenanceMismatch
        The store was extracted differently from the head's training features.
    """
    (ref,) = _paths(input, "head")
    (store,) = _paths(input, "features")
    labels_path = _labels_path(input)
    head_dir = _head_dir(ref)

    def work(root: Path) -> ProbeEvalResult:
        from auditor.heads import load_head
        from auditor.probes import evaluate_probe

        head = load_head(head_dir)
        multilabel = head.config.multilabel
        if options.multilabel_sep is not None and not multilabel:
            raise ConfigError(f"multilabel_sep is for multilabel heads; {head.name!r} is "
                              f"{head.config.task}", field="multilabel_sep")
        steps = Progress(progress, job="probe-eval")
        with steps.stage("evaluate", total=1) as stage:
            if labels_path is None:
                labels = _kept_labels(store, options, keep_empty=multilabel)
            else:
                labels, _ = labelled_documents(labels_path, options, keep_empty=multilabel)
                _check_ids_meet(store, labels, labels_path, options)
            check_cancel(cancel, "reading the features")
            inputs = head.read(store)
            rows = [i for i, d in enumerate(inputs.doc_ids) if d in labels]
            if not rows:
                raise ConfigError("no document of the store has a label in the labels file",
                                  field="labels")
            proba = head.predict_proba(inputs)[rows]
            if multilabel:
                sep = (options.multilabel_sep
                       or (head.card.get("training") or {}).get("multilabel_sep") or "|")
                metrics = _multilabel_eval(head, [labels[inputs.doc_ids[i]] for i in rows],
                                           proba, sep)
            else:
                y = [str(labels[inputs.doc_ids[i]]) for i in rows]
                metrics = evaluate_probe(y, proba, head.config.classes)
                predicted = head.labels(proba).astype(str)
                metrics["accuracy_at_threshold"] = float(
                    sum(p == t for p, t in zip(predicted, y, strict=True)) / len(y))
            metrics["documents"] = len(rows)
            metrics = json_values(metrics)
            write_json(root / "metrics.json", metrics)
            stage.advance(1)
        return ProbeEvalResult(head=head.name, task=head.config.task, documents=len(rows),
                               metrics=metrics, written="metrics.json")

    return run_recorded("probe-eval", out=out, options=options,
                        input={"head": head_dir, "features": store, "labels": labels_path},
                        result_type=ProbeEvalResult, work=work)


# ----------------------------------------------------------------------------- compare


def run_probe_compare(input: Mapping[str, Any], *, out: str | Path,
                      options: ProbeCompareOptions, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> ProbeCompareResult:
    """Cross-validate every SAE-feature representation against raw-activation and TF-IDF
    baselines on the same folds; writes ``out/metrics.json``.

    Parameters
    ----------
    input
        ``{"features": <feature store>, "labels": <dataset file>}``; without ``labels``
        (or None) the labels are the store's kept column ``label_column``.

    Raises
    ------
    ConfigError
        Fewer than two classes, or a class with fewer documents than folds.
    JobCancelled
        The token was set; the representations scored so far are kept for the rerun.
    """
    (store,) = _paths(input, "features")
    labels_path = _labels_path(input)

    def work(root: Path) -> ProbeCompareResult:
        from auditor.heads.build import cross_validate_candidates
        from auditor.heads.card import metrics_table

        split = _split(input, options, sae=options.sae)
        pool = _pool(options.candidates)
        markers = StageMarkers(root, options)
        with Progress(progress, job="probe-compare").stage("candidates") as stage:
            results = cross_validate_candidates(
                split, candidates=pool, folds=options.folds,
                random_state=options.random_state, stage=stage, cancel=cancel,
                done=_scored(markers, "candidate", [*pool, "tfidf"]),
                on_result=lambda name, r: markers.mark(
                    f"candidate-{name}", {"result": _no_oof({name: r})[name]}))
        metrics = _no_oof(results)
        write_json(root / "metrics.json", metrics)
        return ProbeCompareResult(task=_task(split), documents=len(split.doc_ids),
                                  metrics=metrics,
                                  table=metrics_table(metrics,
                                                      **_table_metrics(split.multilabel)),
                                  written="metrics.json")

    return run_recorded("probe-compare", out=out, options=options,
                        input={"features": store, "labels": labels_path},
                        result_type=ProbeCompareResult, work=work)


# ----------------------------------------------------------------------------- curve


def _curve_table(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    if not curves:
        return "(no results)"
    ns = [row["n_train"] for row in next(iter(curves.values()))]
    lines = ["| representation | " + " | ".join(f"{n:,} labels" for n in ns) + " |",
             "|---" * (len(ns) + 1) + "|"]
    for name, rows in curves.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{r['macro_f1']:.3f} ± {r['macro_f1_std']:.3f}" for r in rows) + " |")
    return "\n".join(lines)


def run_probe_curve(input: Mapping[str, Any], *, out: str | Path, options: ProbeCurveOptions,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> ProbeCurveResult:
    """Learning curve: metrics of every representation and TF-IDF by number of labels
    (stratified subsamples of each training fold, scored on the held-out fold); writes
    ``out/curve.json``.

    Parameters
    ----------
    input
        ``{"features": <feature store>, "labels": <dataset file>}``; without ``labels``
        (or None) the labels are the store's kept column ``label_column``.

    Raises
    ------
    ConfigError
        A size smaller than the number of classes.
    JobCancelled
        The token was set (checked before each fold); finished representations are kept.
    """
    (store,) = _paths(input, "features")
    labels_path = _labels_path(input)

    def work(root: Path) -> ProbeCurveResult:
        import functools

        import numpy as np

        from auditor.heads import DEFAULT_CANDIDATES
        from auditor.heads.build import TFIDF, available_candidates, tfidf_baseline
        from auditor.probes import learning_curve

        split = _split(input, options)
        y = split.y.astype(str)
        models: list[tuple[str, Any, Any]] = [
            (c.name, functools.partial(c.make, random_state=0), split.X(c))
            for c in available_candidates(split, list(DEFAULT_CANDIDATES))]
        if split.texts is not None:
            models.append((TFIDF, tfidf_baseline, np.array(split.texts, dtype=object)))
        markers = StageMarkers(root, options)
        curves: dict[str, list[dict[str, Any]]] = {}
        with Progress(progress, job="probe-curve").stage("candidates",
                                                         total=len(models)) as stage:
            for name, make, X in models:
                record = markers.done(f"curve-{name}")
                if record is None:
                    rows = json_values(learning_curve(make, X, y, sizes=list(options.sizes),
                                                folds=options.folds,
                                                random_state=options.random_state,
                                                cancel=cancel))
                    markers.mark(f"curve-{name}", {"rows": rows})
                else:
                    rows = record["rows"]
                curves[name] = rows
                stage.advance(1)
        write_json(root / "curve.json", curves)
        return ProbeCurveResult(curves=curves, table=_curve_table(curves), written="curve.json")

    return run_recorded("probe-curve", out=out, options=options,
                        input={"features": store, "labels": labels_path},
                        result_type=ProbeCurveResult, work=work)


# ----------------------------------------------------------------------------- predict


def run_probe_predict(input: Mapping[str, Any], *, out: str | Path,
                      options: ProbePredictOptions, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> ProbePredictResult:
    """Apply heads to an existing feature store; writes ``out/<options.filename>``.

    Parameters
    ----------
    input
        ``{"features": <feature store>, "heads": [<head name or directory>, ...]}``.

    Raises
    ------
    ConfigError
        No heads, or a head that is not installed.
    ProvenanceMismatch
        A head cannot read the store's features.
    """
    (store,) = _paths(input, "features")
    refs = input.get("heads") or []
    if isinstance(refs, str | Path) or not refs:
        raise ConfigError("input needs a list of heads", field="input.heads")
    dirs = [_head_dir(r) for r in refs]

    def work(root: Path) -> ProbePredictResult:
        from auditor.features.locate import load_annotations, sae_of
        from auditor.heads import load_head
        from auditor.heads.classify import classify_store, write_predictions
        from auditor.jobs.classify import heads_provenance
        from auditor.store import read_metadata

        with Progress(progress, job="probe-predict").stage("predict", total=1) as stage:
            heads = [load_head(d) for d in dirs]
            metadata = read_metadata(store)
            notes = None
            if options.explain > 0:
                sha, sae_path = sae_of(metadata)
                notes = load_annotations(sha, labels_dir=options.labels, sae_path=sae_path)
            check_cancel(cancel, "classifying the store")
            frame = classify_store(
                store, heads, explain=options.explain, allow_partial=options.allow_partial,
                feature_labels=notes.label if notes is not None else None,
                feature_examples=notes.example if notes is not None else None)
            provenance = {**metadata, "heads": heads_provenance(heads)}
            check_cancel(cancel, "writing the predictions")
            write_predictions(frame, root / options.filename, provenance=provenance)
            stage.advance(1)
        return ProbePredictResult(predictions=options.filename, documents=frame.height,
                                  heads=[h.name for h in heads],
                                  dictionary=notes.info() if notes is not None else None)

    return run_recorded("probe-predict", out=out, options=options,
                        input={"features": store,
                               **{f"head {i}": d for i, d in enumerate(dirs)},
                               **({"labels": options.labels} if options.labels else {})},
                        result_type=ProbePredictResult, work=work)


def predict_to_file(input: Mapping[str, Any], path: str | Path, *,
                    options: ProbePredictOptions, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> ProbePredictResult:
    """:func:`run_probe_predict` for a predictions file at ``path`` (``.parquet`` or
    ``.jsonl``): the job runs in a temporary directory beside it and its file (and a
    JSONL file's ``.provenance.json``) is moved to ``path``; nothing is recorded.

    Returns
    -------
    ProbePredictResult
        ``predictions`` is ``path`` as given.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    options = ProbePredictOptions.from_dict({**options.to_dict(),
                                             "filename": "predictions" + target.suffix})
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        result = run_probe_predict(input, out=tmp, options=options, progress=progress,
                                   cancel=cancel)
        written = Path(tmp) / result.predictions
        side = written.with_name(written.name + ".provenance.json")
        if side.exists():
            shutil.move(side, target.with_name(target.name + ".provenance.json"))
        written.replace(target)
    return ProbePredictResult(predictions=str(path), documents=result.documents,
                              heads=result.heads, dictionary=result.dictionary)
