"""``auditor worker``: a Celery worker of auditor's queues (``extract``, ``cpu``)."""

from __future__ import annotations

import click

__all__ = ["worker"]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--queues", default="extract,cpu", show_default=True,
              help="Comma-separated queues: extract (model + SAEs, GPU), cpu (heads, reports).")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Worker processes (one per GPU: each loads the model once).")
@click.option("--device", default=None,
              help="Where the extract tasks run the model (cuda:0, cpu; default: auto).")
@click.option("--name", default=None, help="Worker name (default: celery@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str, concurrency: int, device: str | None, name: str | None,
           loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Start a worker; it is the plain ``celery -A workers.celery_app worker -Q QUEUES
    --concurrency N`` (extra arguments go to celery). Broker and settings come from the
    AUDITOR_* environment (see .env.example)."""
    from auditor import queue

    queue.run_worker([q.strip() for q in queues.split(",") if q.strip()],
                     concurrency=concurrency, device=device, name=name, loglevel=loglevel,
                     extra=celery_args)
