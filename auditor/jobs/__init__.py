"""Jobs: one resumable function per job; the only place that composes the layers below.

The CLI, the Celery workers and the HTTP API all call these.
"""

from auditor.jobs.extract import resolve_defaults, run_extract

__all__ = ["resolve_defaults", "run_extract"]
