"""The Celery beat scheduler of scheduled corpus reports.

:class:`SchedulesFileScheduler` builds one beat entry per schedule in the schedules file
(``AUDITOR_SCHEDULES``, see :class:`auditor.settings.QueueSettings`): task
``auditor.schedule_run`` with the schedule's name, on the ``extract`` queue, every
``every`` (an interval, or a cron line in UTC). It looks at the file's modification time
on every tick (at most ``--max-interval`` seconds apart) and rebuilds its entries when the
file changed, so ``auditor schedule add/remove`` take effect without restarting beat.
An unreadable or invalid file is logged and the entries in force are kept.

**Run exactly one beat per deployment.** Beat has no leader election: every beat process
sends every due run. A second beat makes the queue do each run twice (the schedule's lock
and its seen-files ledger keep a file from being audited twice, but the work of looking
is done twice and a run can be reported ``busy``).

Start it with ``auditor beat`` (or ``celery -A workers.celery_app beat -S
workers.beat:SchedulesFileScheduler``). Its state file (``--schedule``) keeps when each
schedule last ran, so a restart does not run everything at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab, schedule

from auditor.errors import AuditorError
from auditor.queue import QUEUES, TASKS
from auditor.schedule.spec import ScheduleSpec, parse_every, read_schedules
from auditor.settings import QueueSettings

__all__ = ["ENTRY_PREFIX", "SchedulesFileScheduler", "beat_entries"]

#: Beat entry names are ``auditor-schedule:<name>``.
ENTRY_PREFIX = "auditor-schedule:"
logger = logging.getLogger(__name__)


def beat_entries(schedules: dict[str, ScheduleSpec]) -> dict[str, dict[str, Any]]:
    """Beat entries (``beat_schedule`` form) of ``schedules``."""
    entries = {}
    for name, spec in schedules.items():
        every = parse_every(spec.every)
        if isinstance(every, tuple):
            period: Any = crontab(minute=every[0], hour=every[1], day_of_month=every[2],
                                  month_of_year=every[3], day_of_week=every[4])
        else:
            period = schedule(timedelta(seconds=every))
        entries[f"{ENTRY_PREFIX}{name}"] = {
            "task": TASKS["schedule"], "schedule": period, "args": (name,),
            "options": {"queue": QUEUES[TASKS["schedule"]]}}
    return entries


class SchedulesFileScheduler(PersistentScheduler):
    """Beat entries from the schedules file, re-read when it changes (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.schedules_path = Path(QueueSettings.from_env().schedules_file())
        self._stamp: tuple[int, int] | None = None
        super().__init__(*args, **kwargs)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.schedules_path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> None:
        stamp = self._file_stamp()
        try:
            schedules = read_schedules(self.schedules_path)
        except AuditorError as e:
            logger.error("beat: cannot read the schedules file %s (keeping %d entries): %s",
                         self.schedules_path, len(self.schedule), e)
            self._stamp = stamp
            return
        entries = {**dict(self.app.conf.beat_schedule or {}), **beat_entries(schedules)}
        self.merge_inplace(entries)
        self._stamp = stamp
        self._heap = None  # rebuilt from the new entries on the next tick
        self.sync()
        logger.info("beat: %d schedule(s) from %s: %s", len(schedules), self.schedules_path,
                    ", ".join(sorted(schedules)) or "none")

    def setup_schedule(self) -> None:
        super().setup_schedule()
        self._load()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._file_stamp() != self._stamp:
            self._load()
        return float(super().tick(*args, **kwargs))

    @property
    def info(self) -> str:
        return f"    . schedules -> {self.schedules_path}\n{super().info}"
