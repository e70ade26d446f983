"""Jobs: one resumable function per job; the only place that composes the layers below.

The CLI, the Celery workers and the HTTP API all call these.
"""

from auditor.jobs.audit import AuditResult, run_audit
from auditor.jobs.classify import heads_extract_config, run_classify
from auditor.jobs.explain import run_explain
from auditor.jobs.extract import resolve_defaults, run_extract

__all__ = [
    "AuditResult",
    "heads_extract_config",
    "resolve_defaults",
    "run_audit",
    "run_classify",
    "run_explain",
    "run_extract",
]
