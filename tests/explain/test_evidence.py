"""Present and absent evidence, and a faithfulness test whose truth is known.

The tiny head: label ``flag`` exactly when feature 0 fired and feature 1 did not, on
hand-built sparse features. A flagged document's decision rests on one present feature
(0) and one absent one (1): zeroing 0 or firing 1 must undo it, random features of the
same kind must not.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.explain import faithfulness, feature_contributions
from auditor.explain.faithfulness import bootstrap_mean, data_typical_values
from auditor.heads import Head, HeadConfig, HeadInputs
from auditor.probes import BoostedProbe, LinearProbe

N_FEATURES = 40


def _data(n: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """f0 and f1 fire independently in half the documents; 38 noise features of varied
    densities; label ``flag`` = f0 fired and f1 did not."""
    rng = np.random.default_rng(seed)
    dens = np.concatenate([[0.5, 0.5], rng.uniform(0.05, 0.6, N_FEATURES - 2)])
    fired = rng.random((n, N_FEATURES)) < dens[None, :]
    X = np.where(fired, rng.uniform(0.5, 3.0, (n, N_FEATURES)), 0.0)
    y = np.where(fired[:, 0] & ~fired[:, 1], "flag", "ok")
    return sp.csr_matrix(X), y


def _head(probe, X: sp.csr_matrix, y: np.ndarray) -> Head:
    probe.fit(X, y)
    config = HeadConfig(name="tiny", classes=list(probe.classes_), positive_class="flag",
                        threshold=0.5)
    return Head(config, probe, card={})


def _inputs(X: sp.csr_matrix) -> HeadInputs:
    return HeadInputs(doc_ids=[f"d{i}" for i in range(X.shape[0])], X=X, activations=X,
                      metadata={})


def _boosted() -> BoostedProbe:
    return BoostedProbe(n_estimators=60, min_df=1, early_stopping_rounds=None,
                        min_child_samples=5, n_jobs=1, random_state=0)


@pytest.mark.parametrize("kind", ["boosted", "linear-log1p", "linear"])
def test_present_and_absent_split_sums_to_the_score(kind: str) -> None:
    X, y = _data(400, 0)
    probe = {"boosted": _boosted, "linear-log1p": lambda: LinearProbe(
        feature_transform="log1p", random_state=0),
        "linear": lambda: LinearProbe(random_state=0)}[kind]()
    probe.fit(X, y)
    c = feature_contributions(probe, X)
    score = np.asarray(probe.decision_function(X), dtype=np.float64)
    for i in range(0, 400, 37):
        ev = c.evidence(i, k=N_FEATURES, activations=X)
        assert all(f.present and f.activation > 0 for f in ev.present)
        assert all(not f.present and f.activation == 0 for f in ev.absent)
        # the two kinds partition the nonzero contributions: with the bias, the score
        total = sum(f.contribution for f in [*ev.present, *ev.absent]) + c.bias[i, 0]
        assert total == pytest.approx(score[i], rel=1e-6, abs=1e-6)
        mags = [abs(f.contribution) for f in ev.absent]
        assert mags == sorted(mags, reverse=True)
        if kind != "boosted":
            # a linear probe on uncentred sparse features: a zero feature contributes 0
            assert ev.absent == []
        top2 = c.evidence(i, k=2, activations=X)
        assert top2.present == ev.present[:2] and top2.absent == ev.absent[:2]
    # TreeSHAP gives the unfired f1 a part in flagged decisions
    flagged = np.flatnonzero(y == "flag")
    if kind == "boosted":
        assert any(f.feature == 1 for i in flagged[:10]
                   for f in c.evidence(i, k=3, activations=X).absent)
    with pytest.raises(ConfigError, match="activations"):
        c.top(0, kind="absent")
    with pytest.raises(ConfigError, match="kind"):
        c.top(0, kind="missing", activations=X)


def test_faithfulness_finds_the_present_and_the_absent_feature() -> None:
    X, y = _data(800, 1)
    head = _head(_boosted(), X, y)
    Xt, yt = _data(240, 2)
    assert (head.predict(_inputs(Xt)) == yt).mean() > 0.95
    flagged = np.flatnonzero(yt == "flag")
    sub = _inputs(sp.csr_matrix(Xt[flagged[:40]]))
    # without a dictionary the typical value comes from the explained documents, where
    # the absent f1 never fires: it cannot be tested, and says so (not replaced)
    alone = faithfulness(head, sub, k=1, n_random=4, n_boot=200)
    assert alone["typical_value"].startswith("median nonzero pooled")
    assert alone["absent"]["documents"] == 0 and alone["absent"]["untestable"] == 40
    assert alone["absent"]["skipped_features"] == 40
    # typical values as a dictionary gives them (here: medians over the training data)
    typical = data_typical_values(X)
    r = faithfulness(head, sub, k=1, n_random=8, n_boot=500, typical=typical)
    assert r["documents"] == 40 and r["typical_value"].startswith("dictionary")
    pres, absn = r["present"], r["absent"]
    assert pres["documents"] == 40 and absn["documents"] == 40 and absn["untestable"] == 0
    # named: f0 zeroed / f1 set firing; each undoes the decision
    assert pres["drop"]["low"] > 0.5 and pres["flip_rate"] > 0.9
    assert absn["drop"]["low"] > 0.5 and absn["flip_rate"] > 0.9
    # controls: other features of the same kind do (almost) nothing
    for part in (pres, absn):
        assert abs(part["control_drop"]["mean"]) < 0.05 and part["control_flip_rate"] < 0.05
        d = part["difference"]
        assert d["low"] > 0.5 and d["low"] <= d["mean"] <= d["high"]
        assert d["mean"] == pytest.approx(part["drop"]["mean"] - part["control_drop"]["mean"])
    assert "ratio" not in r
    # seeded: the same numbers again
    again = faithfulness(head, sub, k=1, n_random=8, n_boot=500, typical=typical)
    assert again["present"]["control_drop"] == pres["control_drop"]
    assert again["absent"]["difference"] == absn["difference"]
    # every document, both labels: the named evidence still beats the controls
    mixed = faithfulness(head, _inputs(Xt), k=1, n_random=4, n_boot=300, typical=typical)
    for kind in ("present", "absent"):
        assert mixed[kind]["difference"]["low"] > 0.1, kind
    with pytest.raises(ConfigError, match="typical"):
        faithfulness(head, sub, typical=np.ones(3))


def test_faithfulness_of_a_linear_head_has_no_absent_evidence() -> None:
    X, y = _data(800, 3)
    head = _head(LinearProbe(feature_transform="binarize", C=10.0, random_state=0), X, y)
    flagged = np.flatnonzero(y == "flag")[:30]
    r = faithfulness(head, _inputs(sp.csr_matrix(X[flagged])), k=1, n_random=5, n_boot=300)
    assert r["present"]["drop"]["low"] > 0.2
    assert abs(r["present"]["control_drop"]["mean"]) < 0.1
    # what f1's silence does lives in the intercept: nothing is named, nothing tested
    assert r["absent"]["documents"] == 0 and r["absent"]["drop"]["mean"] is None
    assert r["absent"]["flip_rate"] is None


def test_bootstrap_and_typical_values() -> None:
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    b = bootstrap_mean(x, random_state=3)
    assert b["low"] < b["mean"] < b["high"] and b["high"] - b["low"] < 0.3
    assert b == bootstrap_mean(x, random_state=3)
    assert 0.9 < b["mean"] < 1.1
    A = sp.csr_matrix(np.array([[0.0, 2.0, 0.0], [1.0, 4.0, 0.0], [3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(data_typical_values(A), [2.0, 3.0, np.nan])


def test_typical_values_from_a_dictionary_beside_the_sae(tmp_path) -> None:
    """The explain job's typical firing values: the dictionary's p50 where it has one."""
    import polars as pl

    from auditor.features.files import FORMAT, VERSION, write_dictionary_files
    from auditor.features.locate import Annotations, Located
    from auditor.jobs.explain import _dictionary_typical

    sae = tmp_path / "sae"
    sae.mkdir()
    assert _dictionary_typical(Annotations(), 4) is None  # no dictionary: the data's medians
    features = pl.DataFrame({"feature": [0, 2, 9], "p50": [1.5, None, 3.0]})
    write_dictionary_files(sae / "dictionary", features, pl.DataFrame({"feature": [0]}),
                           {"format": FORMAT, "version": VERSION})
    found = Annotations(located=Located(sae / "dictionary", "beside the SAE", "a" * 64))
    np.testing.assert_allclose(_dictionary_typical(found, 4), [1.5, np.nan, np.nan, np.nan])
