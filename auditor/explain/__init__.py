"""Explanations: which SAE features made a decision, and whether that story is faithful.

- :func:`feature_contributions` normalises every probe kind's per-feature contributions
  (linear coefficient × value, LightGBM TreeSHAP, binary or multiclass, calibrated or not)
  into one :class:`Contributions` shape.
- :func:`raw_contributions` explains a probe on raw activations through the SAE decoder,
  reporting how much of the score the features cover.
- :func:`faithfulness` zeroes a decision's top features and re-scores, against zeroing as
  many random active features.
"""

from auditor.explain.contributions import (
    Contributions,
    FeatureContribution,
    base_probe,
    feature_contributions,
)
from auditor.explain.decompose import decoder_projection, raw_contributions

__all__ = [
    "Contributions",
    "FeatureContribution",
    "base_probe",
    "decoder_projection",
    "feature_contributions",
    "raw_contributions",
]
