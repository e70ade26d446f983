"""Every probe passes scikit-learn's estimator checks (minus the ones that cannot apply)."""

from __future__ import annotations

from typing import Any

from sklearn.utils.estimator_checks import parametrize_with_checks

from auditor.probes import (
    BoostedProbe,
    CalibratedProbe,
    LinearProbe,
    MultiLabelProbe,
    RuleProbe,
)

# Non-default LinearProbe options are covered too (liblinear for binary l1, SAGA for
# elastic-net/log1p, the standard scaling with enough iterations: SAGA converges slowly on
# the checks' dense, uncentred data). Not here: feature_transform="binarize", which turns
# the checks' all-positive dense data into constant columns that SAGA cannot converge on.
# MultiLabelProbe wraps seeded binary probes: scikit-learn's set_random_state only sets a
# top-level random_state.
ESTIMATORS = [
    LinearProbe(),
    LinearProbe(penalty="l1"),
    LinearProbe(penalty="elasticnet", feature_transform="log1p"),
    LinearProbe(scaling="standard", max_iter=10_000),
    BoostedProbe(n_estimators=20, n_jobs=1),
    RuleProbe(),
    CalibratedProbe(LinearProbe()),
    MultiLabelProbe(LinearProbe(random_state=0)),
    MultiLabelProbe(RuleProbe()),
    MultiLabelProbe(BoostedProbe(n_estimators=10, n_jobs=1)),
]

_SHAPES = ("it expects single-output shapes for a one-column y: predict of shape "
           "(n_samples,) and predict_proba of shape (n_samples, 2) summing to 1. "
           "MultiLabelProbe returns (n_samples, n_labels) for both, the multilabel formats "
           "that check_classifier_multioutput and check_classifiers_multilabel_output_* "
           "require")
_ONE_TWO = "it fits y = 1/2 values, which is not a 0/1 indicator matrix"

#: Checks that cannot apply to a 0/1-indicator multilabel classifier, with the reason. The
#: tags (``single_output=False``, ``multi_class=False``) make scikit-learn pass most checks
#: a one-column binary ``Y``; these still use a 1-D, non-0/1 or string target, or expect
#: single-label output shapes.
_MULTILABEL_FAILS = {
    "check_classifiers_train": _SHAPES,
    "check_estimator_sparse_array": _SHAPES,
    "check_estimator_sparse_matrix": _SHAPES,
    "check_decision_proba_consistency": "it fits a 1-D y (MultiLabelProbe needs 2-D Y)",
    "check_classifiers_classes": "it fits 1-D string labels ('one', 'two'); label names "
                                 "go in MultiLabelProbe(labels=...)",
    "check_estimators_dtypes": _ONE_TWO,
    "check_classifier_data_not_an_array": _ONE_TWO,
    "check_fit2d_1feature": _ONE_TWO,
}


def _expected_failed(estimator: Any) -> dict[str, str]:
    """Checks that cannot apply, per estimator, with the reason.

    Only MultiLabelProbe's (see :data:`_MULTILABEL_FAILS`). RuleProbe's binary-only
    restriction is declared through its tags (``classifier_tags.multi_class=False``, so
    scikit-learn runs ``check_classifier_not_supporting_multiclass`` instead of the
    multiclass checks) and its few-condition rule through ``poor_score=True``;
    CalibratedProbe forwards its base estimator's tags. Add ``{"check_name": "reason"}``
    entries here if a check must be skipped.
    """
    if isinstance(estimator, MultiLabelProbe):
        return dict(_MULTILABEL_FAILS)
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
def test_sklearn_contract(estimator: Any, check: Any) -> None:
    check(estimator)


def test_probe_errors_are_config_errors_and_value_errors() -> None:
    """Bad input raises the auditor tree's ConfigError (exit code 2, HTTP 400), which is
    also the ValueError scikit-learn's checks and meta-estimators expect."""
    import numpy as np
    import pytest

    from auditor.errors import ConfigError, error_from_dict, exit_code_for, http_status_for
    from auditor.probes import ProbeInputError

    X = np.ones((4, 2))
    with pytest.raises(ProbeInputError, match="at least 2 classes") as err:
        LinearProbe().fit(X, [1, 1, 1, 1])
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)
    assert exit_code_for(err.value) == 2 and http_status_for(err.value) == 400
    assert type(error_from_dict(err.value.to_dict())) is ProbeInputError
    with pytest.raises(ProbeInputError, match="binary"):
        RuleProbe().fit(X, [0, 1, 2, 0])
    with pytest.raises(ProbeInputError, match="2-D indicator"):
        MultiLabelProbe().fit(X, [0, 1, 0, 1])
