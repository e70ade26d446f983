"""Explanations: which SAE features made a decision, and whether that story is faithful.

- :func:`feature_contributions` normalises every probe kind's per-feature contributions
  (linear coefficient × value, LightGBM TreeSHAP, binary or multiclass, calibrated or not)
  into one :class:`Contributions` shape.
- :func:`raw_contributions` explains a probe on raw activations through the SAE decoder,
  reporting how much of the score the features cover.
- :meth:`Contributions.evidence` splits a decision's contributions into *present* evidence
  (features that fired) and *absent* evidence (features whose not firing contributed).
- :func:`faithfulness` tests each kind by undoing it (zero the present features, make the
  absent ones fire at a typical value) against random same-kind features of similar
  density, with bootstrap intervals, flip rates and the paired difference.
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
