"""``auditor schedule``: scheduled corpus reports (add, list, remove, run-now), and
``auditor beat``, the one Celery beat that runs them on their timetable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli._progress import progress_bars

__all__ = ["beat", "schedule"]

_FILE = click.option("--schedules", "schedules_file", default=None, metavar="FILE",
                     help="The schedules file (default: AUDITOR_SCHEDULES, else "
                          "~/.cache/auditor/schedules.json).")


@click.group()
def schedule() -> None:
    """Scheduled corpus reports: add, list, remove, run-now.

    Each run audits what landed in a directory since the last run, with drift against it
    (run by `auditor beat` and the workers)."""


@schedule.command("add")
@click.argument("name")
@click.option("--every", required=True,
              help='Interval (30s, 10m, 2h, 1d) or a cron line in UTC ("0 2 * * *").')
@click.option("--watch", required=True, metavar="DIR_OR_GLOB",
              help="A directory (its data files, recursively) or a glob.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Snapshots, reports and index.html go here.")
@click.option("--head", "heads", multiple=True,
              help="Head name or directory; repeat (default: every installed head).")
@click.option("--model", default=None, help="Model directory (default: the embedded one).")
@click.option("--sae", "saes", multiple=True, help="SAE (default: the shipped one).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the input has it, else the "
                   "row number; '#row': the row number).")
@click.option("--explain", type=int, default=5, show_default=True,
              help="Top contributing SAE features kept per document and head.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and count) unusable rows.")
@click.option("--alert-drift", type=float, default=None,
              help="Alert when a head's label shares move by this total variation (0-1).")
@click.option("--alert-flagged", type=float, default=None,
              help="Alert when this share of a snapshot's documents is flagged (0-1).")
@click.option("--label-shift", "label_shift_threshold", type=float, default=0.1,
              show_default=True, help="Label-share changes listed in the summary.")
@click.option("--top-features", type=int, default=5, show_default=True,
              help="Features with the largest firing-rate change listed in the summary.")
@click.option("--webhook", default=None, metavar="URL",
              help="POST the JSON summary of an alerting run here.")
@click.option("--replace", is_flag=True, help="Replace a schedule of the same name.")
@_FILE
def add(name: str, every: str, watch: str, out: Path, heads: tuple[str, ...],
        model: str | None, saes: tuple[str, ...], text_column: str, id_column: str | None,
        explain: int, skip_bad_rows: bool, alert_drift: float | None,
        alert_flagged: float | None, label_shift_threshold: float, top_features: int,
        webhook: str | None, replace: bool, schedules_file: str | None) -> None:
    """Add schedule NAME: audit the new files under --watch every --every into --out."""
    from auditor.jobs import schedule as jobs
    from auditor.schedule import ScheduleSpec

    spec = ScheduleSpec(name=name, every=every, watch=watch, out=str(out),
                        heads=heads or None, model=model, saes=saes, text_column=text_column,
                        id_column=id_column, explain=explain, skip_bad_rows=skip_bad_rows,
                        alert_drift=alert_drift, alert_flagged=alert_flagged,
                        label_shift_threshold=label_shift_threshold,
                        top_features=top_features, webhook=webhook)
    entry = jobs.schedule_add(spec, schedules=schedules_file, replace=replace)
    click.echo(f"added schedule {entry.name} (every {entry.spec['every']}) to {entry.file}")
    click.echo(f"  watch  {entry.spec['watch']}  ({entry.watched_files} data file(s) now)")
    click.echo(f"  out    {entry.spec['out']}")
    if not entry.watched_files:
        click.echo("  note: the watch matches no data file yet; runs do nothing until one "
                   "lands there", err=True)
    click.echo("  runs when `auditor beat` and a worker on the extract queue are up, or "
               f"now with `auditor schedule run-now {entry.name}`")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_FILE
def list_(as_json: bool, schedules_file: str | None) -> None:
    """List the schedules."""
    from auditor.jobs import schedule as jobs

    entries = jobs.schedule_list(schedules=schedules_file)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo("no schedules")
        return
    rows = [("NAME", "EVERY", "WATCH", "FILES", "SNAPSHOTS", "LAST", "OUT")]
    for e in entries:
        last = (e.last_snapshot or "–") + (" (alert)" if e.last_alert else "")
        rows.append((e.name, e.spec["every"], e.spec["watch"], str(e.watched_files),
                     str(e.snapshots), last, e.spec["out"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  "
                   + r[-1])


@schedule.command("remove")
@click.argument("name")
@_FILE
def remove(name: str, schedules_file: str | None) -> None:
    """Remove schedule NAME (its snapshots and reports stay)."""
    from auditor.jobs import schedule as jobs

    spec = jobs.schedule_remove(name, schedules=schedules_file)
    click.echo(f"removed schedule {spec.name}; its reports stay in {spec.out}")


@schedule.command("run-now")
@click.argument("name")
@click.option("--queue", "queued", is_flag=True,
              help="Send the run to the workers instead of running it here (the schedule "
                   "must be in the schedules file the workers read).")
@click.option("--device", default=None,
              help="Device for a run here (workers use their own: auditor worker --device).")
@click.option("--progress/--no-progress", default=None)
@_FILE
def run_now(name: str, queued: bool, device: str | None, progress: bool | None,
            schedules_file: str | None) -> None:
    """Run schedule NAME once now: audit its new files into a snapshot."""
    if queued:
        if device is not None:
            raise click.UsageError("--device applies to a run here; a queued run uses the "
                                   "worker's device (auditor worker --device)")
        from auditor.queue import beat as beats

        task = beats.send_schedule_run(name, schedules=schedules_file)
        click.echo(f"sent a run of schedule {name} to the workers (task {task})")
        return
    from auditor.jobs import schedule as jobs

    result = jobs.run_schedule(name, options=jobs.ScheduleRunOptions(
        schedules=schedules_file, device=device), progress=progress_bars(progress))
    click.echo(result.message)
    out = Path(result.out)
    if result.report:
        click.echo(f"  report  {out / result.report}")
    if result.index:
        click.echo(f"  index   {out / result.index}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--schedule-state", "state", default=None, metavar="PATH",
              help="Beat's state file: when each schedule last ran "
                   "(default: ./celerybeat-schedule).")
@click.option("--max-interval", type=int, default=5, show_default=True,
              help="Most seconds between two looks at the schedules file.")
@click.option("--loglevel", default="INFO", show_default=True)
@_FILE
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(state: str | None, max_interval: int, loglevel: str, schedules_file: str | None,
         celery_args: tuple[str, ...]) -> None:
    """Start Celery beat: sends each schedule's run to the workers on its timetable.

    Run exactly ONE beat per deployment (two send every run twice). It re-reads the
    schedules file when it changes. Extra arguments go to celery beat."""
    from auditor.queue import beat as beats

    beats.run_beat(state=state, max_interval=max_interval, loglevel=loglevel,
                   schedules=schedules_file, extra=celery_args)
