"""Queued jobs on Celery + Redis, shared by every face (``auditor jobs``, the workers, the
HTTP API): submit a verb, watch its status, wait, cancel, resume, list.

A queued job keeps its manifest with its outputs (``out/_job/manifest.json``, the source
of truth: options, input fingerprint, shard tasks with state, attempts, worker, error and
output checksums); Redis holds only queue state (claims, cancel flags, the id index) and
live progress. Job paths go through :mod:`auditor.queue.storage`. Settings come from
:class:`auditor.settings.QueueSettings`.
"""

from auditor.queue.core import (
    QUEUES,
    TASKS,
    VERBS,
    Context,
    Outcome,
    cancel,
    execute,
    finish_store,
    list_jobs,
    options_class,
    resume,
    status,
    submit,
    wait,
)
from auditor.queue.storage import JobStorage, LocalStorage, storage_for
from auditor.queue.worker import run_worker, worker_command

__all__ = [
    "QUEUES",
    "TASKS",
    "VERBS",
    "Context",
    "JobStorage",
    "LocalStorage",
    "Outcome",
    "cancel",
    "execute",
    "finish_store",
    "list_jobs",
    "options_class",
    "resume",
    "run_worker",
    "status",
    "storage_for",
    "submit",
    "wait",
    "worker_command",
]
