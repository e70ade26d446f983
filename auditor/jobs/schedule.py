"""Scheduled corpus reports: one run of a schedule, and the schedules file's operations.

:func:`run_schedule` is what the beat sends (task ``auditor.schedule_run``) and what
``auditor schedule run-now`` calls. Under the schedule's lock (``OUT/.schedule.lock``; a
second concurrent run of the same schedule returns at once with state ``busy``) it

1. finds the watched files whose content fingerprint is not in ``OUT/seen.json``;
   none: state ``no-new-files``, no snapshot;
2. gathers their rows into ``OUT/snapshots/<UTC time>/input.jsonl`` (see
   :mod:`auditor.schedule.files` for why one input per snapshot) and audits it with
   :func:`~auditor.jobs.audit.run_audit` (recorded and resumable in the snapshot), with
   ``previous`` = the last finished snapshot's ``report.json`` for drift;
3. builds the "what changed" summary (:mod:`auditor.schedule.changes`), decides the
   alert, posts it to the webhook when alerting, puts the summary at the top of the
   snapshot's report and writes ``summary.json`` (the snapshot is finished);
4. only then marks the files seen, and rebuilds ``OUT/index.html``.

A run that crashes or is cancelled before step 4 leaves its files unseen: the next run
audits them again, resuming the unfinished snapshot when it holds the same files (else it
is removed). A finished snapshot whose files a crash kept out of the ledger is put back in
it first, so no file is audited twice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor._files import check_writable, file_lock, read_json, write_json
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import AuditorError
from auditor.jobs._contract import JobOptions, JobResult, runtime_field
from auditor.jobs._pipeline import Pipeline, PipelineSpec
from auditor.progress import ProgressCallback
from auditor.schedule.spec import (
    ScheduleSpec,
    add_schedule,
    get_schedule,
    read_schedules,
    remove_schedule,
)

__all__ = [
    "ScheduleEntry",
    "ScheduleRunOptions",
    "ScheduleRunResult",
    "run_schedule",
    "schedule_add",
    "schedule_list",
    "schedule_remove",
    "schedules_file",
]

_LOCK = ".schedule.lock"
_FILES = "files.json"


@dataclass(frozen=True)
class ScheduleRunOptions(JobOptions):
    """Settings of one run of a schedule.

    Parameters
    ----------
    schedules
        The schedules file the schedule is read from (default: ``AUDITOR_SCHEDULES``, see
        :meth:`auditor.settings.QueueSettings.schedules_file`).
    formats
        Report formats (``json`` is always written: the next snapshot's drift reads it).
    device
        Where the model runs (a runtime field).
    """

    schedules: str | None = None
    formats: tuple[str, ...] = ("html", "json", "md")
    device: str | None = runtime_field(None)


@dataclass(frozen=True)
class ScheduleRunResult(JobResult):
    """What one run did.

    ``state`` is ``done`` (a snapshot was written), ``no-new-files`` or ``busy`` (another
    run of the schedule holds its lock); ``snapshot``, ``report`` and ``index`` are
    relative to the schedule's ``out``.
    """

    schedule: str
    state: str
    message: str
    out: str
    snapshot: str | None = None
    previous: str | None = None
    new_files: tuple[str, ...] = ()
    documents: int = 0
    alert: bool = False
    alert_reasons: tuple[str, ...] = ()
    report: str | None = None
    index: str | None = None


@dataclass(frozen=True)
class ScheduleEntry(JobResult):
    """A schedule as listed: its spec, the file it is in, how many files its watch
    matches now, and its snapshots so far."""

    name: str
    spec: dict[str, Any]
    file: str
    watched_files: int
    snapshots: int
    last_snapshot: str | None
    last_alert: bool


def schedules_file(schedules: str | None = None) -> str:
    """``schedules``, or the configured schedules file (``AUDITOR_SCHEDULES``)."""
    if schedules:
        return schedules
    from auditor.settings import QueueSettings

    return QueueSettings.from_env().schedules_file()


def _entry(spec: ScheduleSpec, file: str) -> ScheduleEntry:
    from auditor.schedule.files import watched_files
    from auditor.schedule.history import completed_snapshots

    snaps = completed_snapshots(spec.out) if Path(spec.out).is_dir() else []
    return ScheduleEntry(name=spec.name, spec=spec.to_dict(), file=file,
                         watched_files=len(watched_files(spec.watch)),
                         snapshots=len(snaps),
                         last_snapshot=snaps[-1][0] if snaps else None,
                         last_alert=bool(snaps[-1][1].get("alert")) if snaps else False)


def _absolute(value: str) -> str:
    """A path given on the command line, made absolute (the beat and workers run
    elsewhere); a glob keeps its pattern."""
    return os.path.abspath(os.path.expanduser(value))


def schedule_add(spec: ScheduleSpec, *, schedules: str | None = None,
                 replace: bool = False) -> ScheduleEntry:
    """Add a schedule (its ``watch``, ``out`` and any head, model or SAE given as an
    existing path made absolute); a watch that matches nothing yet is allowed (the entry
    says ``watched_files=0``).

    Raises
    ------
    ConfigError
        An invalid spec, or a schedule of that name exists and ``replace`` is false.
    """
    def path_or_name(value: str) -> str:
        return _absolute(value) if Path(value).expanduser().exists() else value

    record = spec.to_dict()
    record.update(watch=_absolute(spec.watch), out=_absolute(spec.out))
    if spec.heads is not None:
        record["heads"] = [path_or_name(h) for h in spec.heads]
    if spec.model is not None:
        record["model"] = path_or_name(spec.model)
    record["saes"] = [path_or_name(s) for s in spec.saes]
    spec = ScheduleSpec.from_dict(record)
    file = schedules_file(schedules)
    add_schedule(file, spec, replace=replace)
    return _entry(spec, file)


def schedule_list(*, schedules: str | None = None) -> tuple[ScheduleEntry, ...]:
    """Every schedule in the schedules file, by name."""
    file = schedules_file(schedules)
    return tuple(_entry(s, file) for _, s in sorted(read_schedules(file).items()))


def schedule_remove(name: str, *, schedules: str | None = None) -> ScheduleSpec:
    """Remove a schedule (its snapshots and reports stay on disk).

    Raises
    ------
    ConfigError
        No schedule of that name (close matches are named).
    """
    return remove_schedule(schedules_file(schedules), name)


def run_schedule(
    schedule: str | ScheduleSpec,
    *,
    out: str | Path | None = None,
    options: ScheduleRunOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
    load_pipeline: Callable[[PipelineSpec], Pipeline] | None = None,
) -> ScheduleRunResult:
    """Run a schedule once (see the module docstring).

    Parameters
    ----------
    schedule
        A schedule's name (read from the schedules file) or its spec.
    out
        Overrides the schedule's ``out``.
    options
        See :class:`ScheduleRunOptions`.
    progress
        The audit's stages (extraction ``docs``, ``classify``, ``report``).
    cancel
        Checked before the audit and by it; a cancelled run leaves its files unseen.
    pipeline
        A model and SAEs already loaded (must match the schedule's).
    load_pipeline
        Called with the audit's pipeline spec when there are new files and no
        ``pipeline`` (a worker's warm-model cache).

    Returns
    -------
    ScheduleRunResult

    Raises
    ------
    ConfigError
        An unknown schedule name.
    InputError, JobCancelled, ...
        From reading the new files or the audit; nothing is marked seen then.
    """
    options = options or ScheduleRunOptions()
    spec = (schedule if isinstance(schedule, ScheduleSpec)
            else get_schedule(schedules_file(options.schedules), schedule))
    root = check_writable(Path(out) if out is not None else Path(spec.out))
    with file_lock(root / _LOCK, blocking=False) as held:
        if not held:
            return ScheduleRunResult(schedule=spec.name, state="busy", out=str(root),
                                     message="another run of this schedule is in progress; "
                                             "this one skipped")
        return _run_locked(spec, root, options, progress, cancel, pipeline, load_pipeline)


def _run_locked(spec: ScheduleSpec, root: Path, options: ScheduleRunOptions,
                progress: ProgressCallback | None, cancel: CancelToken | None,
                pipeline: Pipeline | None,
                load_pipeline: Callable[[PipelineSpec], Pipeline] | None
                ) -> ScheduleRunResult:
    from auditor.jobs.audit import AuditOptions, audit_extract_options, run_audit
    from auditor.jobs.extract import ExtractOptions
    from auditor.report import write_report
    from auditor.report.drift import load_report
    from auditor.schedule.changes import flagged_documents, post_webhook, what_changed
    from auditor.schedule.files import (
        WatchedFile,
        mark_seen,
        new_files,
        read_seen,
        snapshot_name,
        write_snapshot_input,
    )
    from auditor.schedule.history import (
        SNAPSHOTS_DIR,
        SUMMARY_FILE,
        completed_snapshots,
        write_index,
    )

    snapshots = completed_snapshots(root)
    seen = read_seen(root)
    for name, summary in snapshots:  # a crash between summary.json and the ledger
        lost = [WatchedFile(path="", source=s["source"], fingerprint=s["fingerprint"])
                for s in summary.get("new_sources") or [] if s["fingerprint"] not in seen]
        if lost:
            mark_seen(root, lost, snapshot=name)
            seen = read_seen(root)
    files, matched = new_files(spec.watch, seen)
    if not files:
        message = (f"no new files: the {matched} watched file(s) were all audited before"
                   if matched else f"no new files: {spec.watch} matches no data file")
        return ScheduleRunResult(schedule=spec.name, state="no-new-files", message=message,
                                 out=str(root), index="index.html"
                                 if (root / "index.html").is_file() else None)

    snaps_root = root / SNAPSHOTS_DIR
    snaps_root.mkdir(parents=True, exist_ok=True)
    wanted = sorted(f.fingerprint for f in files)
    snap_dir = None
    for d in sorted(p for p in snaps_root.iterdir() if p.is_dir()):
        if (d / SUMMARY_FILE).is_file():
            continue
        # an unfinished snapshot: resumed when it holds the same files, else dropped
        try:
            held = sorted(s["fingerprint"] for s in read_json(d / _FILES)["sources"])
        except (AuditorError, KeyError, TypeError):
            held = []
        if snap_dir is None and held == wanted and (d / "input.jsonl").is_file():
            snap_dir = d
        else:
            shutil.rmtree(d)
    if snap_dir is None:
        snap_dir = snaps_root / snapshot_name(taken=[p.name for p in snaps_root.iterdir()])
        snap_dir.mkdir()
        gathered = write_snapshot_input(files, snap_dir / "input.jsonl",
                                        text_column=spec.text_column,
                                        id_column=spec.id_column,
                                        skip_bad_rows=spec.skip_bad_rows)
        write_json(snap_dir / _FILES, gathered)
    else:
        gathered = read_json(snap_dir / _FILES)
    name = snap_dir.name
    rel = f"{SNAPSHOTS_DIR}/{name}"
    sources = tuple(s["source"] for s in gathered["sources"])
    if not gathered["documents"]:  # every row skipped: nothing to audit, files are done
        shutil.rmtree(snap_dir)
        mark_seen(root, files, snapshot=None)
        return ScheduleRunResult(schedule=spec.name, state="no-new-files", out=str(root),
                                 new_files=sources,
                                 message=f"{len(files)} new file(s) without a usable row")

    previous = snapshots[-1][0] if snapshots else None
    previous_report = (snaps_root / previous / "report.json") if previous else None
    if previous_report is not None and not previous_report.is_file():
        previous_report = None
    formats = tuple(dict.fromkeys([*options.formats, "json"]))
    audit_options = AuditOptions(
        heads=spec.heads, explain=spec.explain, formats=formats,
        previous=str(previous_report) if previous_report is not None else None,
        extract=ExtractOptions(model=spec.model, saes=spec.saes, text_column="text",
                               id_column="id", device=options.device))
    check_cancel(cancel, "the schedule run")
    if pipeline is None and load_pipeline is not None:
        pipeline = load_pipeline(audit_extract_options(audit_options).pipeline_spec())
    audited = run_audit(str(snap_dir / "input.jsonl"), out=snap_dir, options=audit_options,
                        progress=progress, cancel=cancel, pipeline=pipeline)

    report = load_report(snap_dir / "report.json")
    rules = (report.get("flagged") or {}).get("rules") or {}
    predictions = snap_dir / audited.predictions if audited.predictions else None
    summary = what_changed(
        report, schedule=spec.name, snapshot=name, previous=previous,
        sources=gathered["sources"], flagged=flagged_documents(predictions, rules),
        label_shift_threshold=spec.label_shift_threshold, top_features=spec.top_features,
        alert_drift=spec.alert_drift, alert_flagged=spec.alert_flagged)
    if summary["alert"] and spec.webhook:
        summary["webhook"] = post_webhook(spec.webhook, summary)
    report["changes"] = summary
    write_report(report, snap_dir, formats=formats)
    write_json(snap_dir / SUMMARY_FILE, summary)  # the snapshot is finished
    mark_seen(root, files, snapshot=name)
    write_index(root, title=spec.name)
    alert = "; ALERT: " + "; ".join(summary["alert_reasons"]) if summary["alert"] else ""
    return ScheduleRunResult(
        schedule=spec.name, state="done", out=str(root), snapshot=rel, previous=previous,
        new_files=sources, documents=int(summary["documents"]), alert=summary["alert"],
        alert_reasons=tuple(summary["alert_reasons"]),
        report=f"{rel}/report.html" if "html" in formats else f"{rel}/report.json",
        index="index.html",
        message=f"audited {summary['documents']:,} documents from {len(sources)} new "
                f"file(s) into {rel}" + (f" (drift against {previous})" if previous else "")
                + alert)
