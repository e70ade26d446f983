"""Starting a Celery worker of auditor's app: what ``auditor worker`` runs.

It is the plain ``celery -A workers.celery_app worker -Q QUEUES --concurrency N`` with
auditor's defaults: one process (a GPU takes one model; several processes on one GPU only
fight over its memory), the prefork pool (the time limits need it, and a process killed
under a task is noticed and its task put back), and the model loaded lazily in the pool
process after the fork, never in the parent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from auditor.errors import ConfigError
from auditor.settings import ENV

__all__ = ["QUEUE_NAMES", "run_worker", "worker_command"]

QUEUE_NAMES = ("extract", "cpu")


def worker_command(queues: Sequence[str] = QUEUE_NAMES, *, concurrency: int = 1,
                   name: str | None = None, loglevel: str = "INFO",
                   extra: Sequence[str] = ()) -> list[str]:
    """The ``celery … worker`` command line (argv) for these queues.

    Examples
    --------
    >>> worker_command(["extract"], name="gpu0")[2:]
    ['celery', '-A', 'workers.celery_app', 'worker', '-Q', 'extract', '--concurrency', '1', \
'--pool', 'prefork', '--loglevel', 'INFO', '-n', 'gpu0@%h']
    """
    unknown = [q for q in queues if q not in QUEUE_NAMES]
    if unknown or not queues:
        raise ConfigError(f"unknown queue(s) {', '.join(unknown) or '(none)'}; queues: "
                          f"{', '.join(QUEUE_NAMES)}", field="queues")
    if concurrency < 1:
        raise ConfigError("concurrency must be >= 1", field="concurrency")
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", ",".join(queues), "--concurrency", str(concurrency), "--pool", "prefork",
            "--loglevel", loglevel]
    if name:
        argv += ["-n", name if "@" in name else f"{name}@%h"]
    return [*argv, *extra]


def run_worker(queues: Sequence[str] = QUEUE_NAMES, *, concurrency: int = 1,
               device: str | None = None, name: str | None = None, loglevel: str = "INFO",
               extra: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> None:
    """Replace this process with a Celery worker (same pid: signals reach the worker).

    ``device`` (``cuda:0``) is handed to the worker's settings as ``AUDITOR_DEVICE``: the
    extract tasks run the model there.
    """
    argv = worker_command(queues, concurrency=concurrency, name=name, loglevel=loglevel,
                          extra=extra)
    env = dict(os.environ if environ is None else environ)
    if device is not None:
        env[ENV["device"]] = device
    os.execve(argv[0], argv, env)
