"""The Celery application.

Queues: ``extract`` (GPU machines: model forward + SAE encode, one process per GPU) and
``cpu`` (classify a store, reports, the CPU stages of an audit). Settings come from
:class:`auditor.settings.QueueSettings` (``AUDITOR_BROKER_URL``, ``AUDITOR_RESULT_BACKEND``,
time limits, …); nothing here reads the environment itself.

Run a worker with ``auditor worker --queues extract,cpu`` or the plain
``celery -A workers.celery_app worker -Q extract,cpu --concurrency 1`` it wraps.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from auditor.queue import QUEUES
from auditor.settings import QueueSettings

__all__ = ["app", "celery_config", "make_app"]


def celery_config(settings: QueueSettings) -> dict[str, Any]:
    """The Celery configuration of a long-running GPU job service, each setting with why."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # The GPU work (the model and SAEs) on ``extract``, the rest on ``cpu``.
        "task_routes": {name: {"queue": q} for name, q in QUEUES.items()},
        "task_default_queue": "cpu",
        # JSON only: a job's options and results are JSON records (JobOptions.to_dict);
        # pickle would let anyone who can write to Redis run code on the workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_track_started": True,
        # Acknowledge a task when it finished, not when it started: a worker that dies
        # (kill -9, OOM, a lost machine) leaves its shard task unacknowledged, and Redis
        # gives it to another worker, which resumes from the store's done-markers.
        "task_acks_late": True,
        # A worker process holds one task at a time: a shard task takes minutes to hours,
        # and a prefetched one would wait behind it while another GPU sits idle.
        "worker_prefetch_multiplier": 1,
        # A pool process killed under a task (the OOM killer, a segfault in a CUDA kernel,
        # the hard time limit) puts the task back on the queue instead of marking it failed.
        # A task that kills its worker every time would then loop forever: auditor counts
        # attempts in the job manifest (out/_job/manifest.json) and fails the shard after
        # AUDITOR_MAX_ATTEMPTS starts, naming the last error.
        "task_reject_on_worker_lost": True,
        # Failures are retried by auditor's own attempt counter (see above), not Celery's.
        "task_acks_on_failure_or_timeout": True,
        # The soft limit raises SoftTimeLimitExceeded in the task (a failed attempt; the
        # shards finished before it stay done); the hard limit kills a task stuck in a
        # kernel. Both above the longest shard task, below the visibility timeout.
        "task_soft_time_limit": settings.soft_time_limit,
        "task_time_limit": settings.time_limit,
        "broker_transport_options": {
            # Redis redelivers a task not acknowledged within this many seconds, to any
            # worker. It must be longer than the longest shard task (and the hard time
            # limit), or a task still running is started a second time (the shard claims
            # keep the second one from writing, but it waits for nothing).
            "visibility_timeout": settings.visibility_timeout,
            # How often a worker looks for tasks a dead worker left unacknowledged.
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout},
        # A worker keeps its model warm across tasks; never recycle the process for it.
        "worker_max_tasks_per_child": None,
        "broker_connection_retry_on_startup": True,
    }


def make_app(settings: QueueSettings | None = None) -> Celery:
    """A Celery app configured by ``settings`` (default: from the environment), with the
    tasks of :mod:`workers.tasks`."""
    settings = settings or QueueSettings.from_env()
    celery = Celery("auditor")
    celery.conf.update(celery_config(settings))
    celery.conf.imports = ("workers.tasks",)
    return celery


app = make_app()
