"""Starting Celery beat for scheduled reports (what ``auditor beat`` runs), and sending a
scheduled run to the workers by hand (``auditor schedule run-now --queue``).

Beat is ``celery -A workers.celery_app beat -S workers.beat:SchedulesFileScheduler``: it
reads the schedules file (``AUDITOR_SCHEDULES``), re-reads it when it changes, and sends
``auditor.schedule_run`` (on the ``extract`` queue) when a schedule is due. **Run exactly
one beat per deployment**: two beats send every run twice (the second finds the
schedule's lock held, or no new files, so nothing is audited twice, but the queue does the
work of looking twice). Its state (last run of each schedule) is kept in ``--schedule``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from auditor.errors import ConfigError
from auditor.settings import ENV, QueueSettings

__all__ = ["SCHEDULER", "beat_command", "run_beat", "send_schedule_run"]

#: The beat scheduler class that reads the schedules file.
SCHEDULER = "workers.beat:SchedulesFileScheduler"


def beat_command(*, state: str | None = None, max_interval: int = 5,
                 loglevel: str = "INFO", extra: Sequence[str] = ()) -> list[str]:
    """The ``celery … beat`` command line (argv).

    Parameters
    ----------
    state
        Beat's state file (when each schedule last ran); default: celery's
        ``celerybeat-schedule`` in the working directory.
    max_interval
        Most seconds between two looks at the schedules file (and the timetable).

    Examples
    --------
    >>> beat_command(state="/tmp/beat-state")[2:]
    ['celery', '-A', 'workers.celery_app', 'beat', '-S', 'workers.beat:SchedulesFileScheduler', \
'--max-interval', '5', '--loglevel', 'INFO', '--schedule', '/tmp/beat-state']
    """
    if max_interval < 1:
        raise ConfigError("max_interval must be >= 1 (whole seconds)", field="max_interval")
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat",
            "-S", SCHEDULER, "--max-interval", str(int(max_interval)),
            "--loglevel", loglevel]
    if state:
        argv += ["--schedule", state]
    return [*argv, *extra]


def run_beat(*, state: str | None = None, max_interval: int = 5, loglevel: str = "INFO",
             schedules: str | None = None, extra: Sequence[str] = (),
             environ: Mapping[str, str] | None = None) -> None:
    """Replace this process with Celery beat (same pid: signals reach it).

    ``schedules`` (a schedules file) is handed to beat as ``AUDITOR_SCHEDULES``.
    """
    argv = beat_command(state=state, max_interval=max_interval, loglevel=loglevel,
                        extra=extra)
    env = dict(os.environ if environ is None else environ)
    if schedules is not None:
        env[ENV["schedules"]] = schedules
    os.execve(argv[0], argv, env)


def send_schedule_run(name: str, *, schedules: str | None = None,
                      settings: QueueSettings | None = None) -> str:
    """Send one run of schedule ``name`` to the workers now; return the Celery task id.

    The workers read the schedule by name from their schedules file, so it is looked up
    here first, in ``schedules`` (default: ``AUDITOR_SCHEDULES``, the file beat and the
    workers share): a name that is not there is refused before anything is sent, instead
    of failing later on a worker.

    Raises
    ------
    ConfigError
        No schedule ``name`` in the schedules file (the message names close matches).
    """
    from auditor.queue.core import QUEUES, TASKS, _celery, _reaching
    from auditor.schedule.spec import get_schedule

    settings = settings if settings is not None else QueueSettings.from_env()
    get_schedule(schedules or settings.schedules_file(), name)
    with _reaching(settings):
        sent = _celery(settings).send_task(TASKS["schedule"], args=(name,),
                                           queue=QUEUES[TASKS["schedule"]])
    return str(sent.id)
