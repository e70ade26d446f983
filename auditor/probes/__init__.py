"""Probes: scikit-learn classifiers on sparse SAE features, and their evaluation.

Every probe is a ``BaseEstimator`` + ``ClassifierMixin`` taking CSR ``[n_docs, d_sae]``
features (as returned by :func:`auditor.store.read_features`) without densifying them:

- :class:`LinearProbe`: sparse logistic regression; per-feature weights and contributions.
- :class:`BoostedProbe`: LightGBM on document-frequency-selected columns; SHAP contributions.
- :class:`RuleProbe`: a few-feature OR-rule ("unsafe if f123 > 0.80 or f456 > 1.20").
- :class:`CalibratedProbe`: held-out Platt or isotonic calibration of any of them.
- :class:`MultiLabelProbe`: one binary probe per column of a 0/1 label matrix.

Fitted probes are saved without pickle by :func:`save_probe` / :func:`load_probe`;
:func:`check_provenance` refuses features extracted by another model / SAE / layer /
pooling. Bad data or settings raise :class:`ProbeInputError`, an
:class:`~auditor.errors.ConfigError` that is also a ``ValueError`` (what scikit-learn
expects). LightGBM is imported only when a :class:`BoostedProbe` is fitted or loaded.
"""

from auditor.probes._base import ProbeInputError
from auditor.probes.boosted import BoostedProbe, split_contributions
from auditor.probes.calibration import CalibratedProbe
from auditor.probes.linear import LinearProbe
from auditor.probes.metrics import (
    cross_validate_probe,
    evaluate_probe,
    expected_calibration_error,
    learning_curve,
)
from auditor.probes.multilabel import MultiLabelProbe
from auditor.probes.persist import check_provenance, load_card, load_probe, save_probe
from auditor.probes.rules import RuleCondition, RuleProbe
from auditor.probes.thresholds import ThresholdChoice, choose_threshold

__all__ = [
    "BoostedProbe",
    "CalibratedProbe",
    "LinearProbe",
    "MultiLabelProbe",
    "ProbeInputError",
    "RuleCondition",
    "RuleProbe",
    "ThresholdChoice",
    "check_provenance",
    "choose_threshold",
    "cross_validate_probe",
    "evaluate_probe",
    "expected_calibration_error",
    "learning_curve",
    "load_card",
    "load_probe",
    "save_probe",
    "split_contributions",
]
