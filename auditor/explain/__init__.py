"""Explanations: which SAE features made a decision, and whether that story is faithful.

- :func:`feature_contributions` normalises every probe kind's per-feature contributions
  (linear coefficient × value, LightGBM TreeSHAP, binary or multiclass, calibrated or not)
  into one :class:`Contributions` shape.
- :func:`raw_contributions` explains a probe on raw activations through the SAE decoder,
  reporting how much of the score the features cover.
- :func:`faithfulness` zeroes a decision's top features and re-scores, against zeroing as
  many random active features.
- :func:`token_evidence` / :func:`render_evidence`: where in a document a feature fired.
"""

from auditor.explain.contributions import (
    Contributions,
    Evidence,
    FeatureContribution,
    base_probe,
    feature_contributions,
)
from auditor.explain.decompose import decoder_projection, raw_contributions
from auditor.explain.faithfulness import faithfulness
from auditor.explain.tokens import TokenHit, render_evidence, token_evidence

__all__ = [
    "Contributions",
    "Evidence",
    "FeatureContribution",
    "TokenHit",
    "base_probe",
    "decoder_projection",
    "faithfulness",
    "feature_contributions",
    "raw_contributions",
    "render_evidence",
    "token_evidence",
]
