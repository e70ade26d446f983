"""Corpus reports: build the report data from a feature store, render it, detect drift.

Typical use::

    from auditor.report import build_report, write_report

    report = build_report("out/store", predictions="out/preds.parquet",
                          texts="data/corpus.jsonl", previous="out/last/report.json")
    write_report(report, "out/report", formats=("html", "json", "md"))

The report dict returned by :func:`build_report` is the JSON format; :func:`render_html`
gives one self-contained page (inline CSS and SVG charts, no script, no network) and
:func:`render_markdown` the same tables in Markdown. :func:`build_report` runs three
stages, also available one by one for a job that resumes between them:
:func:`build_statistics` (store and predictions), :func:`add_texts` (input texts, near
duplicates, snippets) and :func:`add_drift` (against a previous report). The job is
:func:`auditor.jobs.report.run_report`; the CLI is ``auditor report``.
"""

from auditor.report.build import (
    DEFAULT_FLAGS,
    FeatureExamples,
    FeatureLabels,
    Predictions,
    add_drift,
    add_texts,
    build_report,
    build_statistics,
    load_feature_labels,
    read_predictions,
    store_doc_ids,
)
from auditor.report.charts import Chart, chart_titles, report_charts
from auditor.report.dedup import DuplicateGroup, NearDuplicateFinder, normalize_text
from auditor.report.drift import (
    REPORT_FORMAT,
    REPORT_VERSION,
    chi_square_homogeneity,
    compare_reports,
    feature_density_shift,
    jensen_shannon_divergence,
    label_shift,
    load_report,
    total_variation,
)
from auditor.report.render import FORMATS, render_html, render_json, render_markdown, write_report

__all__ = [
    "DEFAULT_FLAGS",
    "FORMATS",
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "Chart",
    "DuplicateGroup",
    "FeatureExamples",
    "FeatureLabels",
    "NearDuplicateFinder",
    "Predictions",
    "add_drift",
    "add_texts",
    "build_report",
    "build_statistics",
    "chart_titles",
    "chi_square_homogeneity",
    "compare_reports",
    "feature_density_shift",
    "jensen_shannon_divergence",
    "label_shift",
    "load_feature_labels",
    "load_report",
    "normalize_text",
    "read_predictions",
    "render_html",
    "render_json",
    "render_markdown",
    "report_charts",
    "store_doc_ids",
    "total_variation",
    "write_report",
]
