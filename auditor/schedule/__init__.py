"""Scheduled corpus reports: a watched directory audited on a timetable.

Each run of a schedule audits only the files not seen before (by content fingerprint),
as one dated snapshot (``OUT/snapshots/<UTC time>/``: the gathered input, the audit's
store, predictions and report, and ``summary.json``), reports drift against the previous
snapshot with a "what changed" summary at the top, raises an alert (and posts it to a
webhook) past configured thresholds, and rebuilds ``OUT/index.html``. The run itself is
the job :func:`auditor.jobs.schedule.run_schedule`; Celery beat (``auditor beat``, one per
deployment) sends it on the schedule's timetable.

Modules: :mod:`~auditor.schedule.spec` (the spec and the schedules file),
:mod:`~auditor.schedule.files` (watched files, the seen ledger, the snapshot input),
:mod:`~auditor.schedule.changes` (summary, alert, webhook),
:mod:`~auditor.schedule.history` (the index page and trend charts).
"""

from auditor.schedule.spec import (
    ScheduleSpec,
    add_schedule,
    get_schedule,
    parse_every,
    read_schedules,
    remove_schedule,
)

__all__ = [
    "ScheduleSpec",
    "add_schedule",
    "get_schedule",
    "parse_every",
    "read_schedules",
    "remove_schedule",
]
