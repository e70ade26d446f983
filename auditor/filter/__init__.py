"""Dataset filtering: drop rows by head scores, labels, SAE features, length, duplicates or
your own rule, and keep the reason for every drop.

A filter is an ordered list of small steps (datatrove style): each reads the rows the
steps before it kept and drops some, with a reason. :class:`Filter` runs them over
documents in Python; ``auditor filter`` (:func:`auditor.jobs.filter.run_filter`) over a
dataset file, writing ``kept/`` and ``dropped/`` in the input's format.

>>> from auditor.filter import Filter
>>> f = Filter(keep="len(text) > 3")
>>> list(f.run(["hello", "hey"]))
['hello']
>>> f.dropped[0][1]["rule"]
'len(text) > 3'
"""

from auditor.filter.core import INPUT_STEP, SCORES_STEP, Decision, Filter, FilterStats
from auditor.filter.expression import KeepExpression, feature_column, parse_keep
from auditor.filter.scores import ModelScorer, Scorer, StoredScores
from auditor.filter.spec import build_steps, load_pipeline_file, pipeline_config
from auditor.filter.steps import (
    STEP_TYPES,
    Batch,
    CustomStep,
    Dedup,
    FeatureRule,
    HeadThreshold,
    Keep,
    LabelSet,
    Length,
    Reason,
    Step,
)

__all__ = [
    "INPUT_STEP",
    "SCORES_STEP",
    "STEP_TYPES",
    "Batch",
    "CustomStep",
    "Decision",
    "Dedup",
    "FeatureRule",
    "Filter",
    "FilterStats",
    "HeadThreshold",
    "Keep",
    "KeepExpression",
    "LabelSet",
    "Length",
    "ModelScorer",
    "Reason",
    "Scorer",
    "Step",
    "StoredScores",
    "build_steps",
    "feature_column",
    "load_pipeline_file",
    "parse_keep",
    "pipeline_config",
]
