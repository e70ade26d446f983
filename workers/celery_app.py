"""The Celery application.

Queues: ``extract`` (GPU machines: model forward + SAE encode) and ``cpu`` (probes,
reports). The broker and result backend come from ``AUDITOR_BROKER_URL`` /
``AUDITOR_RESULT_BACKEND`` (default: the local Redis, database 0).

Run a worker with ``celery -A workers.celery_app worker -Q extract,cpu``.
"""

from __future__ import annotations

import os

from celery import Celery

__all__ = ["app"]

_BROKER = os.environ.get("AUDITOR_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery(
    "auditor",
    broker=_BROKER,
    backend=os.environ.get("AUDITOR_RESULT_BACKEND", _BROKER),
)
app.conf.update(
    task_routes={"auditor.extract": {"queue": "extract"}},
    task_default_queue="cpu",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],  # never pickle: job arguments are plain JSON
    task_track_started=True,
    worker_prefetch_multiplier=1,  # extraction jobs are long; don't hoard them
    task_acks_late=True,
)
