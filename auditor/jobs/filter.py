"""The filter job: split a dataset into ``kept/`` and ``dropped/`` by a pipeline of steps.

Writes, inside ``out``:

* ``kept/part-NNNNN.<ext>`` and ``dropped/part-NNNNN.<ext>``: the input's rows in its own
  format (JSONL, CSV or Parquet), every original column kept and the row order stable;
  input shard ``N`` (``shard_rows`` rows) gives part ``N`` of both. A dropped row has one
  more column, ``reason`` (JSON: the step, the rule, the value that broke it and, for a
  head, its label, probability and top contributing features).
* ``filter.json``: counts (documents, kept, dropped per step, head labels kept and dropped),
  examples and top features per step, the pipeline, provenance.
* ``report.{html,json,md}``: kept vs dropped.
* ``store/`` and ``predictions.parquet`` when a step reads head scores or SAE features
  (unless ``store`` / ``predictions`` name existing ones to reuse).

The rows are streamed: memory holds one batch of rows (``batch_rows``) plus the scores of
every document (a few numbers each) and the state of deduplication steps. Each input
shard is committed with a marker (``out/_stages``), so a rerun after a kill or a cancel
goes on from the first unfinished shard; deduplication state is rebuilt by replaying the
finished shards' decisions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.jobs._contract import (
    JobOptions,
    JobResult,
    StageMarkers,
    run_recorded,
    runtime_field,
)
from auditor.jobs._pipeline import Pipeline
from auditor.jobs.extract import ExtractOptions
from auditor.progress import Progress, ProgressCallback

__all__ = ["FilterOptions", "FilterPlan", "FilterResult", "filter_extract_options",
           "plan_filter", "run_filter"]

REPORT_FORMATS = ("html", "json", "md")
#: Dropped rows shown per step in filter.json and the report.
EXAMPLES_PER_STEP = 5


@dataclass(frozen=True)
class FilterOptions(JobOptions):
    """Settings of one filter job.

    Parameters
    ----------
    keep
        A keep expression (see :mod:`auditor.filter.expression`), run after ``steps``.
    steps
        Pipeline steps (see :mod:`auditor.filter.spec`), in order.
    heads
        Heads to score with; ``None``: the heads the steps read. Their labels are counted
        in the report even when no step reads them.
    store
        An existing feature store of this input to reuse (absolute, or relative to
        ``out``); ``None`` extracts into ``out/store`` when scores are needed.
    predictions
        Existing predictions of this input (a classify or audit run's) to reuse.
    explain
        Top contributing features kept per document and head (shown in reasons).
    shard_rows
        Input rows per output part (and per resume marker).
    batch_rows
        Rows read and decided at once (memory).
    reason_column
        The dropped rows' reason column.
    formats
        Report formats.
    extract
        How the input is read (text and id columns) and, when scores are needed, which
        model and SAEs run.
    """

    keep: str | None = None
    steps: tuple[dict[str, Any], ...] = ()
    heads: tuple[str, ...] | None = None
    store: str | None = None
    predictions: str | None = None
    explain: int = 5
    shard_rows: int = 100_000
    batch_rows: int = runtime_field(1000)
    reason_column: str = "reason"
    formats: tuple[str, ...] = REPORT_FORMATS
    extract: ExtractOptions = field(default_factory=ExtractOptions)

    def validate(self) -> None:
        from auditor.filter import Filter

        if self.keep is not None or self.steps:  # none at all is refused by the run
            Filter(list(self.steps), keep=self.keep)  # every step's config checked now
        if self.explain < 0:
            raise ConfigError("explain must be >= 0", field="explain")
        if self.shard_rows < 1:
            raise ConfigError("shard_rows must be >= 1", field="shard_rows")
        if self.batch_rows < 1:
            raise ConfigError("batch_rows must be >= 1", field="batch_rows")
        if not self.reason_column:
            raise ConfigError("reason_column must be a column name", field="reason_column")
        unknown = [f for f in self.formats if f not in REPORT_FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; "
                              f"choose from {', '.join(REPORT_FORMATS)}", field="formats")


@dataclass(frozen=True)
class FilterResult(JobResult):
    """What a filter job wrote (paths relative to ``out``) and its counts."""

    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    documents: int
    kept_documents: int
    dropped_documents: int
    dropped_by_step: dict[str, int]
    summary: str
    reports: dict[str, str]
    store: str | None = None
    predictions: str | None = None


def run_filter(
    input: str | Path,
    *,
    out: str | Path,
    options: FilterOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
) -> FilterResult:
    """Filter a dataset: every row kept or dropped with a reason, in the input's format.

    Parameters
    ----------
    input
        A JSONL (optionally gzip), CSV or Parquet file.
    out
        Output directory (resumed on a rerun with the same options).
    options
        See :class:`FilterOptions`.
    progress
        Stages ``docs`` (extraction, when scores are needed), ``classify``, ``filter``
        and ``report``.
    cancel
        Checked at every extraction batch, every filter batch and between stages.
    pipeline
        A model and SAEs already loaded; must match ``options.extract``.

    Returns
    -------
    FilterResult

    Raises
    ------
    ConfigError
        A step reads a column that neither the input nor any head or the store has.
    InputFileError, ColumnError
        The input is not JSONL/CSV/Parquet, is malformed (the shards before the bad row are
        kept), or lacks the text or id column.
    ProvenanceMismatch
        ``store`` or ``predictions`` are of another input.
    """
    plan = plan_filter(input, options)
    reader, filt, needed, heads = plan.reader, plan.filter, plan.needed, plan.heads

    def work(root: Path) -> FilterResult:
        markers = StageMarkers(root, options)
        stages = Progress(progress, job="filter")
        scorer, store, predictions = _scores(input, root, options, heads, needed, markers,
                                             stages, progress, cancel, pipeline)
        # the labels are counted in the report, the explanations quoted in reasons
        columns = list(dict.fromkeys([*needed, *(f"{h.name}.label" for h in heads)]))
        if scorer is not None:
            columns += [f"{h.name}.explain" for h in heads
                        if f"{h.name}.explain" in scorer.columns()]
            filt.check_scores(reader.columns, scorer.columns())
        else:
            filt.check_scores(reader.columns, ())
        shards = _filter_shards(reader, filt, scorer, columns, root, options, markers,
                                stages, cancel)
        summary = _summary(input, reader, filt, options, shards, store, predictions, root)
        reports = _write_reports(summary, root, options, markers, stages, cancel)
        return FilterResult(
            kept=tuple(s["kept"] for s in shards), dropped=tuple(s["dropped"] for s in shards),
            documents=summary["documents"], kept_documents=summary["kept"],
            dropped_documents=summary["dropped"],
            dropped_by_step=dict(summary["dropped_by_step"]), summary="filter.json",
            reports=reports, store=store, predictions=predictions)

    from auditor.jobs.classify import _head_inputs

    inputs: dict[str, Any] = {"data": input}
    if options.store is not None and Path(options.store).is_absolute():
        inputs["store"] = options.store
    if options.predictions is not None:
        inputs["predictions"] = options.predictions
    if heads:
        inputs.update(_head_inputs([str(h.path) for h in heads]))
    return run_recorded("filter", out=out, options=options, input=inputs,
                        result_type=FilterResult, work=work, clear=_clear_outputs)


@dataclass
class FilterPlan:
    """What a filter job will read: the input, the steps, the score columns they need, the
    heads that give them, and the extraction that fills a store for them (``None`` when
    no step reads scores, or the options name a store and predictions to reuse)."""

    reader: Any
    filter: Any
    needed: list[str]
    heads: list[Any]
    extract: ExtractOptions | None


def plan_filter(input: str | Path, options: FilterOptions) -> FilterPlan:
    """Read the input's columns, build the steps and find what they need, before any row
    is filtered (a queued filter job fans out its extraction from this).

    Raises
    ------
    ConfigError
        A step reads a column that is neither the input's nor an installed head's, or
        the input has a column named like the reason column.
    InputFileError, ColumnError
        From opening the input.
    """
    from auditor.filter import Filter
    from auditor.filter.rows import RowReader
    from auditor.filter.scores import parse_feature_column
    from auditor.io import resolve_id_column

    if options.keep is None and not options.steps:
        raise ConfigError("give a keep expression or pipeline steps", field="keep")
    # the ids every command uses (the extraction resolves them the same way)
    id_column = resolve_id_column(input, options.extract.id_column)
    reader = RowReader(input, text_column=options.extract.text_column, id_column=id_column)
    filt = Filter(list(options.steps), keep=options.keep,
                  text_column=options.extract.text_column, id_column=id_column)
    if options.reason_column in reader.columns:
        raise ConfigError(f"the input already has a column {options.reason_column!r}; "
                          f"name the reason column otherwise", field="reason_column")
    needed = filt.score_columns(reader.columns)
    heads = _heads_for(needed, options, reader.columns)
    features = [c for c in needed if parse_feature_column(c) is not None]
    extract = None
    if (heads or features) and options.store is None and \
            (options.predictions is None or features):
        extract = filter_extract_options(options, heads, features)
    return FilterPlan(reader, filt, needed, heads, extract)


def _heads_for(needed: list[str], options: FilterOptions, columns: list[str]) -> list[Any]:
    """The heads to score with: ``options.heads``, or those the needed columns name.

    Raises
    ------
    ConfigError
        A needed column is neither a feature column nor one of an installed head.
    """
    import difflib

    from auditor.filter.scores import parse_feature_column

    wanted = list(options.heads) if options.heads is not None else []
    if options.heads is None:
        for c in needed:
            if parse_feature_column(c) is None and "." in c:
                head = c.split(".", 1)[0]
                if head not in wanted:
                    wanted.append(head)
    bare = [c for c in needed if parse_feature_column(c) is None and "." not in c]
    if bare:
        close = difflib.get_close_matches(bare[0], columns, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            f"; the input has: {', '.join(columns)}"
        raise ConfigError(f"the steps read {bare[0]!r}, which is not a column of the input"
                          f"{hint}", field=bare[0])
    if not wanted:
        return []
    from auditor.heads import list_heads, load_heads

    installed = {p.name for p in list_heads()}
    missing = [h for h in wanted if h not in installed and not Path(h).is_dir()]
    if missing:
        candidates = sorted(installed) + columns
        close = difflib.get_close_matches(missing[0], candidates, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"the steps read columns of {missing[0]!r}, which is neither a "
                          f"column of the input nor an installed head (heads: "
                          f"{', '.join(sorted(installed)) or 'none'}){hint}", field="keep")
    return list(load_heads(wanted))


def filter_extract_options(options: FilterOptions, heads: list[Any],
                           features: list[str]) -> ExtractOptions:
    """The extraction a filter runs: the heads' settings, the poolings feature rules read,
    and bad rows skipped (a row the model cannot read is dropped with its reason)."""
    from auditor.filter.scores import parse_feature_column
    from auditor.jobs.classify import heads_extract_settings
    from auditor.jobs.extract import shipped_heads_settings

    settings = heads_extract_settings(heads) if heads else shipped_heads_settings()
    poolings = {*settings.get("poolings", options.extract.poolings)}
    for c in features:
        parsed = parse_feature_column(c)
        if parsed is not None:
            poolings.add(parsed[2])
    return options.extract.with_config({**settings, "poolings": sorted(poolings),
                                        "skip_bad_rows": True,
                                        "overwrite": options.overwrite})


def _resolve(root: Path, path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


def _scores(input: str | Path, root: Path, options: FilterOptions, heads: list[Any],
            needed: list[str], markers: StageMarkers, stages: Progress,
            progress: ProgressCallback | None, cancel: CancelToken | None,
            pipeline: Pipeline | None) -> tuple[Any, str | None, str | None]:
    """The scorer (``None`` when no step reads scores), and the store and predictions
    it reads (relative to ``root`` when inside it)."""
    from auditor.filter.scores import StoredScores, parse_feature_column

    features = [c for c in needed if parse_feature_column(c) is not None]
    if not heads and not features:
        return None, None, None
    from auditor.jobs._contract import relative_to

    predictions = _resolve(root, options.predictions)
    store = _resolve(root, options.store)
    if predictions is not None:
        _check_same_input(predictions, input, what="predictions")
    if predictions is None or (features and store is None):
        if store is None:
            from auditor.jobs.classify import heads_check
            from auditor.jobs.extract import run_extract

            store = root / "store"
            run_extract(input, out=store, options=filter_extract_options(options, heads,
                                                                          features),
                        progress=progress, cancel=cancel, pipeline=pipeline,
                        check=heads_check(heads))
        _check_same_input(store, input, what="store")
    if predictions is None and heads:
        predictions = root / "predictions.parquet"
        if markers.done("classify") is None or not predictions.is_file():
            from auditor.features.locate import load_annotations, sae_of
            from auditor.heads.classify import classify_store, write_predictions
            from auditor.jobs.classify import heads_provenance
            from auditor.store import read_metadata

            check_cancel(cancel, "the classify stage")
            assert store is not None
            metadata = read_metadata(store)
            sha, sae_path = sae_of(metadata)  # the SAE's dictionary, found by its sha256
            notes = load_annotations(sha, sae_path=sae_path)
            with stages.stage("classify", total=1) as stage:
                frame = classify_store(store, heads, explain=options.explain,
                                       feature_labels=notes.label,
                                       feature_examples=notes.example)
                write_predictions(frame, predictions,
                                  provenance={**metadata, "heads": heads_provenance(heads)})
                stage.advance(1, docs=frame.height)
            markers.mark("classify", {"documents": frame.height})
    scorer = StoredScores(predictions, store, features=features)
    return (scorer, relative_to(store, root) if store is not None else None,
            relative_to(predictions, root) if predictions is not None else None)


def _check_same_input(path: Path, input: str | Path, *, what: str) -> None:
    """Refuse a store or predictions made from another input (rows are matched by id)."""
    from auditor.errors import ProvenanceMismatch
    from auditor.io import input_fingerprint

    if what == "store":
        from auditor.store import read_metadata

        meta = read_metadata(path)
    else:
        meta = _predictions_provenance(path)
    recorded = (meta.get("input") or {}).get("fingerprint")
    if recorded is None:
        return  # made without a recorded input: trusted, matched by id
    actual = input_fingerprint(input)
    if recorded != actual:
        raise ProvenanceMismatch(f"the {what} was made from another input (fingerprint "
                                 f"{str(recorded)[:19]}…, this input {actual[:19]}…)",
                                 path=path, field=what)


def _predictions_provenance(path: Path) -> dict[str, Any]:
    """The provenance a predictions file carries (Parquet metadata or JSONL sidecar)."""
    import json

    from auditor._files import read_json_optional
    from auditor.errors import InputFileError

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        from auditor.store import METADATA_KEY

        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception as err:  # pyarrow raises several types for a bad file
            raise InputFileError(f"cannot read predictions: {err}", path=path) from err
        raw = meta.get(METADATA_KEY.encode())
        return json.loads(raw) if raw else {}
    return read_json_optional(path.with_name(path.name + ".provenance.json")) or {}


def _stateful(filt: Any) -> bool:
    from auditor.filter import CustomStep, Dedup

    return any(isinstance(s, Dedup | CustomStep) for s in filt.steps)


def _filter_shards(reader: Any, filt: Any, scorer: Any, columns: list[str], root: Path,
                   options: FilterOptions, markers: StageMarkers, stages: Progress,
                   cancel: CancelToken | None) -> list[dict[str, Any]]:
    """Filter the input shard by shard; each shard's parts and counts are committed with
    a marker. Returns every shard's marker record, in order."""
    from auditor.filter.rows import FORMATS, PartWriter
    from auditor.io import count_documents

    ext = FORMATS[reader.format]
    original = [c for c in reader.columns if c in set(c for s in filt.steps
                                                       for c in s.columns())]
    done: list[dict[str, Any]] = []
    while (record := markers.done(f"shard-{len(done):05d}")) is not None and \
            all((root / record[k]).is_file() for k in ("kept", "dropped")):
        done.append(record)
    skip = done[-1]["next_row"] if done else 0
    total = count_documents(reader.path)

    def batches(start: int) -> Any:
        for batch in reader.batches(columns=original, batch_rows=options.batch_rows,
                                    skip=start):
            check_cancel(cancel, "the filter stage")
            frame = batch.frame
            unscored: dict[int, str] = {}
            if scorer is not None and columns:
                texts = [t if isinstance(t, str) else "" for t in frame[reader.text_column]]
                scores, unscored = scorer.score(batch.ids, texts, columns)
                frame = frame.hstack(scores.select([c for c in columns
                                                    if c not in frame.columns]))
            yield batch, frame, unscored

    with stages.stage("filter", total=total) as stage:
        if done and _stateful(filt):
            # replay the finished shards so deduplication remembers what they kept
            for batch, frame, unscored in batches(0):
                if batch.rows[0] >= skip:
                    break
                n = sum(1 for r in batch.rows if r < skip)
                filt.decide(frame[:n], batch.ids[:n], batch.rows[:n],
                            unscored={i: w for i, w in unscored.items() if i < n})
        stage.advance(sum(s["documents"] for s in done))
        shard = len(done)
        writers: tuple[Any, Any] | None = None
        acc: dict[str, Any] = {}

        def open_shard() -> tuple[Any, Any]:
            name = f"part-{shard:05d}{ext}"
            return (PartWriter(root / "kept" / name, reader, reason_column=None),
                    PartWriter(root / "dropped" / name, reader,
                               reason_column=options.reason_column))

        def commit(next_row: int) -> None:
            nonlocal writers, acc, shard
            assert writers is not None
            kept, dropped = (w.commit() for w in writers)
            record = {"kept": kept.relative_to(root).as_posix(),
                      "dropped": dropped.relative_to(root).as_posix(),
                      "next_row": next_row, **acc}
            markers.mark(f"shard-{shard:05d}", record)
            done.append(record)
            shard += 1
            writers, acc = None, {}

        try:
            for batch, frame, unscored in batches(skip):
                if writers is None:
                    writers, acc = open_shard(), _empty_counts()
                decision = filt.decide(frame, batch.ids, batch.rows, unscored=unscored)
                writers[0].write(batch, decision.kept)
                writers[1].write(batch, decision.dropped, decision.reasons)
                _count(acc, frame, batch, decision, columns, reader.text_column)
                stage.advance(len(batch), kept=len(decision.kept),
                              dropped=len(decision.dropped))
                if acc["documents"] >= options.shard_rows:
                    commit(batch.rows[-1] + 1)
            if writers is not None:
                commit(acc["last_row"] + 1)
        finally:
            if writers is not None:
                for w in writers:
                    w.abort()
        if not done:  # an input without rows still gives its (empty) parts
            writers, acc = open_shard(), _empty_counts()
            commit(0)
    return done


def _empty_counts() -> dict[str, Any]:
    return {"documents": 0, "kept_documents": 0, "dropped_by_step": {}, "labels": {},
            "examples": {}, "features": {}, "last_row": -1}


def _count(acc: dict[str, Any], frame: Any, batch: Any, decision: Any, columns: list[str],
           text_column: str) -> None:
    """Add a batch's counts, examples and reason features to a shard's record."""
    acc["documents"] += len(batch)
    acc["kept_documents"] += len(decision.kept)
    acc["last_row"] = batch.rows[-1]
    for c in columns:
        if not c.endswith(".label"):
            continue
        head = c[: -len(".label")]
        values = frame[c].to_list()
        per = acc["labels"].setdefault(head, {})
        for side, positions in (("kept", decision.kept), ("dropped", decision.dropped)):
            for i in positions:
                label = "(none)" if values[i] is None else str(values[i])
                per.setdefault(label, {"kept": 0, "dropped": 0})[side] += 1
    texts = frame[text_column].to_list() if text_column in frame.columns else []
    for i, reason in zip(decision.dropped, decision.reasons, strict=True):
        step = reason["step"]
        acc["dropped_by_step"][step] = acc["dropped_by_step"].get(step, 0) + 1
        examples = acc["examples"].setdefault(step, [])
        if len(examples) < EXAMPLES_PER_STEP:
            text = texts[i] if i < len(texts) and isinstance(texts[i], str) else ""
            examples.append({"id": batch.ids[i], "row": batch.rows[i],
                             "text": text[:240], "reason": reason})
        feats = acc["features"].setdefault(step, {})
        for f in _reason_features(reason):
            key = str(f.get("feature"))
            entry = feats.setdefault(key, {"feature": f.get("feature"),
                                           "label": f.get("label"), "count": 0})
            entry["count"] += 1


def _reason_features(reason: dict[str, Any]) -> list[dict[str, Any]]:
    feats = list(reason.get("features") or [])
    for h in reason.get("heads") or []:
        feats += list(h.get("features") or [])
    return [f for f in feats if isinstance(f, dict) and f.get("feature") is not None]


def _summary(input: str | Path, reader: Any, filt: Any, options: FilterOptions,
             shards: list[dict[str, Any]], store: str | None, predictions: str | None,
             root: Path) -> dict[str, Any]:
    """``filter.json``: totals over the shards, the pipeline and provenance."""
    from auditor import __version__
    from auditor._files import write_json
    from auditor.filter import pipeline_config
    from auditor.io import input_fingerprint

    by_step: Counter[str] = Counter()
    labels: dict[str, dict[str, dict[str, int]]] = {}
    examples: dict[str, list[Any]] = {}
    features: dict[str, dict[str, dict[str, Any]]] = {}
    for s in shards:
        by_step.update(s["dropped_by_step"])
        for head, per in s["labels"].items():
            for label, counts in per.items():
                into = labels.setdefault(head, {}).setdefault(label, {"kept": 0, "dropped": 0})
                into["kept"] += counts["kept"]
                into["dropped"] += counts["dropped"]
        for step, items in s["examples"].items():
            room = EXAMPLES_PER_STEP - len(examples.setdefault(step, []))
            examples[step] += items[:max(room, 0)]
        for step, feats in s["features"].items():
            into_f = features.setdefault(step, {})
            for key, f in feats.items():
                into_f.setdefault(key, {**f, "count": 0})["count"] += f["count"]
    order = [s.title for s in filt.steps]
    documents = sum(s["documents"] for s in shards)
    kept = sum(s["kept_documents"] for s in shards)
    provenance: dict[str, Any] = {"auditor_version": __version__,
                                  "input": {"path": str(input), "format": reader.format,
                                            "fingerprint": input_fingerprint(input)}}
    if store is not None:
        from auditor.store import read_metadata

        meta = read_metadata(_resolve(root, store) or store)
        provenance.update({k: meta.get(k) for k in ("model", "saes", "pooling", "layer")
                           if k in meta})
    summary = {
        "documents": documents, "kept": kept, "dropped": documents - kept,
        "kept_share": kept / documents if documents else None,
        "dropped_by_step": {k: by_step[k] for k in
                            sorted(by_step, key=lambda k: (order.index(k) if k in order
                                                           else -1, k))},
        "labels": labels,
        "examples": examples,
        "top_features": {step: sorted(f.values(), key=lambda x: -x["count"])[:10]
                         for step, f in features.items()},
        "pipeline": pipeline_config(filt.steps),
        "outputs": {"kept": [s["kept"] for s in shards],
                    "dropped": [s["dropped"] for s in shards],
                    "format": reader.format, "reason_column": options.reason_column},
        "store": store, "predictions": predictions,
        "provenance": provenance,
    }
    if documents != kept + sum(by_step.values()):  # every row kept or dropped, once
        raise AssertionError(f"filter counts do not add up: {documents} rows, {kept} kept, "
                             f"{sum(by_step.values())} dropped")
    write_json(root / "filter.json", summary)
    return summary


def _write_reports(summary: dict[str, Any], root: Path, options: FilterOptions,
                   markers: StageMarkers, stages: Progress,
                   cancel: CancelToken | None) -> dict[str, str]:
    from auditor.filter.report import write_filter_report

    check_cancel(cancel, "the report stage")
    with stages.stage("report", total=1) as stage:
        written = write_filter_report(summary, root, formats=options.formats)
        stage.advance(1)
    reports = {fmt: Path(p).name for fmt, p in written.items()}
    markers.mark("report", {"reports": reports})
    return reports


def _clear_outputs(root: Path) -> None:
    """Before an overwrite: the record, markers, parts, summary and reports go; a store
    in ``out`` is replaced by its extraction (``overwrite``)."""
    import shutil

    for name in ("_job.json", "filter.json", "predictions.parquet", "report.html",
                 "report.json", "report.md"):
        (root / name).unlink(missing_ok=True)
    for name in ("_stages", "kept", "dropped"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)
