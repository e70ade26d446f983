"""One contribution shape for every probe kind: LR / LightGBM, binary / multiclass, calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.errors import ConfigError
from auditor.explain import feature_contributions
from auditor.probes import BoostedProbe, CalibratedProbe, LinearProbe, RuleProbe
from tests.probes import make_sparse


def _probes():
    return {
        "linear": lambda: LinearProbe(random_state=0),
        "linear-log1p": lambda: LinearProbe(feature_transform="log1p", random_state=0),
        "boosted": lambda: BoostedProbe(n_estimators=20, n_jobs=1, random_state=0),
        "calibrated-linear": lambda: CalibratedProbe(LinearProbe(random_state=0)),
        "calibrated-boosted": lambda: CalibratedProbe(BoostedProbe(n_estimators=20, n_jobs=1,
                                                                   random_state=0)),
    }


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", list(_probes()))
def test_contributions_sum_to_the_base_score(kind: str, n_classes: int) -> None:
    X, y = make_sparse(n=300, n_features=60, n_classes=n_classes, seed=n_classes)
    probe = _probes()[kind]().fit(X, y)
    c = feature_contributions(probe, X)
    base = probe.estimator_ if kind.startswith("calibrated") else probe
    score = np.asarray(base.decision_function(X)).reshape(X.shape[0], -1)
    assert len(c.values) == (1 if n_classes == 2 else n_classes)
    assert c.outputs == ([base.classes_[1]] if n_classes == 2 else list(base.classes_))
    assert all(v.shape == X.shape and v.format == "csr" for v in c.values)
    np.testing.assert_allclose(c.score(), score, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c.coverage(), 1.0)
    # the top features of a row are its largest |contributions|, in order
    k = c.output_index(base.classes_[-1])
    row = c.values[k][0].toarray().ravel()
    top = c.top(0, output=k, k=3, activations=X)
    assert [t.feature for t in top] == list(np.argsort(-np.abs(row), kind="stable")[:len(top)])
    assert all(t.activation == pytest.approx(X[0, t.feature]) for t in top)
    pos = c.top(0, output=k, k=50, sign="positive")
    neg = c.top(0, output=k, k=50, sign="negative")
    assert all(t.contribution > 0 for t in pos) and all(t.contribution < 0 for t in neg)


def test_linear_contribution_is_coefficient_times_scaled_value() -> None:
    X, y = make_sparse(n=200, n_features=40, seed=5)
    probe = LinearProbe(random_state=0).fit(X, y)
    c = feature_contributions(probe, X)
    dense = X.toarray() / probe.scale_[None, :] * probe.coef_[0][None, :]
    np.testing.assert_allclose(c.values[0].toarray(), dense, rtol=1e-6, atol=1e-9)


def test_binary_negative_class_maps_to_positive_output_and_errors() -> None:
    X, y = make_sparse(n=200, n_features=40, seed=6)
    c = feature_contributions(LinearProbe(random_state=0).fit(X, y), X)
    assert c.output_index(0) == c.output_index(1) == 0
    with pytest.raises(ConfigError, match="sign"):
        c.top(0, sign="sideways")
    rule = RuleProbe().fit(X, y)
    with pytest.raises(ConfigError, match="rule"):
        feature_contributions(rule, X)
