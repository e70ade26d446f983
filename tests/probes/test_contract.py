"""Every probe passes scikit-learn's estimator checks (minus the ones that cannot apply)."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import pytest
from sklearn import config_context
from sklearn.utils.estimator_checks import estimator_checks_generator

from auditor.probes import (
    BoostedProbe,
    CalibratedProbe,
    LinearProbe,
    MultiLabelProbe,
    ProbeInputError,
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

#: Checks that cannot apply to a 0/1-indicator multilabel classifier, with the reason and
#: the exception the check raises today. The tags (``single_output=False``,
#: ``multi_class=False``) make scikit-learn pass most checks a one-column binary ``Y``;
#: these still use a 1-D, non-0/1 or string target, or expect single-label output shapes.
#: The xfail marks are strict and name the exception (``raises=``): a check that starts to
#: pass, or fails in another way, fails the test instead of being absorbed.
_MULTILABEL_FAILS: dict[str, tuple[str, type[BaseException]]] = {
    "check_classifiers_train": (_SHAPES, AssertionError),
    # the shape assertion, reported as "does not fail gracefully on sparse data"
    "check_estimator_sparse_array": (_SHAPES, AssertionError),
    "check_estimator_sparse_matrix": (_SHAPES, AssertionError),
    "check_decision_proba_consistency": ("it fits a 1-D y (MultiLabelProbe needs 2-D Y)",
                                         ProbeInputError),
    "check_classifiers_classes": ("it fits 1-D string labels ('one', 'two'); label names "
                                  "go in MultiLabelProbe(labels=...)", ProbeInputError),
    "check_estimators_dtypes": (_ONE_TWO, ProbeInputError),
    "check_classifier_data_not_an_array": (_ONE_TWO, ProbeInputError),
    # our refusal of y = 1/2 does not name the one feature, as the check wants
    "check_fit2d_1feature": (_ONE_TWO, AssertionError),
}


def _expected_failed(estimator: Any) -> dict[str, tuple[str, type[BaseException]]]:
    """Checks that cannot apply, per estimator: reason and the exception raised today.

    Only MultiLabelProbe's (see :data:`_MULTILABEL_FAILS`). RuleProbe's binary-only
    restriction is declared through its tags (``classifier_tags.multi_class=False``, so
    scikit-learn runs ``check_classifier_not_supporting_multiclass`` instead of the
    multiclass checks) and its few-condition rule through ``poor_score=True``;
    CalibratedProbe forwards its base estimator's tags. Add ``{"check_name": (reason,
    exception type)}`` entries here if a check must be expected to fail.
    """
    if isinstance(estimator, MultiLabelProbe):
        return dict(_MULTILABEL_FAILS)
    return {}


def _check_name(check: Any) -> str:
    check = getattr(check, "__wrapped__", check)
    return str(check.func.__name__ if isinstance(check, partial) else check.__name__)


def _check_id(value: Any) -> str:
    """scikit-learn's ids: the estimator's repr without spaces, the check's name (+ args)."""
    if hasattr(value, "get_params"):
        with config_context(print_changed_only=True):
            return re.sub(r"\s", "", str(value))
    if isinstance(value, partial) and value.keywords:
        args = ",".join(f"{k}={v}" for k, v in value.keywords.items())
        return f"{value.func.__name__}({args})"
    return _check_name(value)


def _contract_params() -> list[Any]:
    """scikit-learn's checks for every estimator, the expected failures marked
    ``xfail(strict=True, raises=<type>)`` (``parametrize_with_checks`` cannot set raises)."""
    params: list[Any] = []
    for estimator in ESTIMATORS:
        expected = _expected_failed(estimator)
        seen = set()
        for est, check in estimator_checks_generator(estimator, legacy=True):
            name = _check_name(check)
            if name in expected:
                reason, raises = expected[name]
                seen.add(name)
                mark = pytest.mark.xfail(reason=reason, raises=raises, strict=True)
                params.append(pytest.param(est, check, marks=mark))
            else:
                params.append(pytest.param(est, check))
        stale = sorted(set(expected) - seen)
        assert not stale, f"expected failures scikit-learn no longer runs: {stale}"
    return params


@pytest.mark.parametrize(("estimator", "check"), _contract_params(), ids=_check_id)
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
