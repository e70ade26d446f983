"""Jobs: one function per verb, the only place that composes the layers below.

Every verb is ``run_<verb>(input, *, out, options, progress=None, cancel=None)`` returning
a result; options and results round-trip through JSON (see :mod:`auditor.jobs._contract`).
The CLI, the Celery workers and the HTTP API only parse, call these, and print.
"""

from auditor.jobs._contract import (
    JobOptions,
    JobResult,
    fingerprint,
    read_job,
    text_input,
    text_or_dataset,
)
from auditor.jobs._pipeline import Pipeline, PipelineSpec, load_pipeline, resolve_defaults
from auditor.jobs.audit import AuditOptions, AuditResult, run_audit
from auditor.jobs.classify import ClassifyOptions, ClassifyResult, run_classify
from auditor.jobs.dictionary import (
    DictionaryBuildOptions,
    DictionaryBuildResult,
    run_dictionary_build,
)
from auditor.jobs.explain import ExplainOptions, ExplainResult, run_explain
from auditor.jobs.extract import ExtractOptions, ExtractResult, run_extract
from auditor.jobs.heads import (
    HeadsBuildOptions,
    HeadsBuildResult,
    HeadsEvalOptions,
    HeadsEvalResult,
    run_heads_build,
    run_heads_eval,
)
from auditor.jobs.probe import (
    ProbeCompareOptions,
    ProbeCompareResult,
    ProbeCurveOptions,
    ProbeCurveResult,
    ProbeEvalOptions,
    ProbeEvalResult,
    ProbePredictOptions,
    ProbePredictResult,
    ProbeTrainOptions,
    ProbeTrainResult,
    run_probe_compare,
    run_probe_curve,
    run_probe_eval,
    run_probe_predict,
    run_probe_train,
)
from auditor.jobs.report import ReportOptions, ReportResult, run_report
from auditor.jobs.sae import (
    SAECollectOptions,
    SAECollectResult,
    SAEEvalOptions,
    SAEEvalResult,
    SAETrainOptions,
    SAETrainResult,
    run_sae_collect,
    run_sae_eval,
    run_sae_train,
)
from auditor.jobs.warmup import WarmupOptions, WarmupResult, run_warmup

__all__ = [
    "AuditOptions",
    "AuditResult",
    "ClassifyOptions",
    "ClassifyResult",
    "DictionaryBuildOptions",
    "DictionaryBuildResult",
    "ExplainOptions",
    "ExplainResult",
    "ExtractOptions",
    "ExtractResult",
    "HeadsBuildOptions",
    "HeadsBuildResult",
    "HeadsEvalOptions",
    "HeadsEvalResult",
    "JobOptions",
    "JobResult",
    "Pipeline",
    "PipelineSpec",
    "ProbeCompareOptions",
    "ProbeCompareResult",
    "ProbeCurveOptions",
    "ProbeCurveResult",
    "ProbeEvalOptions",
    "ProbeEvalResult",
    "ProbePredictOptions",
    "ProbePredictResult",
    "ProbeTrainOptions",
    "ProbeTrainResult",
    "ReportOptions",
    "ReportResult",
    "SAECollectOptions",
    "SAECollectResult",
    "SAEEvalOptions",
    "SAEEvalResult",
    "SAETrainOptions",
    "SAETrainResult",
    "WarmupOptions",
    "WarmupResult",
    "fingerprint",
    "load_pipeline",
    "read_job",
    "resolve_defaults",
    "run_audit",
    "run_classify",
    "run_dictionary_build",
    "run_explain",
    "run_extract",
    "run_heads_build",
    "run_heads_eval",
    "run_probe_compare",
    "run_probe_curve",
    "run_probe_eval",
    "run_probe_predict",
    "run_probe_train",
    "run_report",
    "run_sae_collect",
    "run_sae_eval",
    "run_sae_train",
    "run_warmup",
    "text_input",
    "text_or_dataset",
]
