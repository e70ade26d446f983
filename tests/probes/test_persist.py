"""Saving and loading probes without pickle; the provenance guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.errors import ConfigError, ProvenanceMismatch
from auditor.probes import (
    BoostedProbe,
    CalibratedProbe,
    LinearProbe,
    RuleProbe,
    check_provenance,
    load_card,
    load_probe,
    save_probe,
)
from tests.probes import make_sparse

CARD = {"name": "toy", "metrics": {"accuracy": 0.9}}


def _probes() -> list[tuple[str, Any, int, bool]]:
    """(id, unfitted probe, n_classes, string labels)."""
    boosted = BoostedProbe(n_estimators=30, min_df=2, n_jobs=1)
    return [
        ("linear-bin", LinearProbe(feature_transform="log1p", random_state=0), 2, True),
        ("linear-multi", LinearProbe(penalty="l1", scaling="standard", random_state=0), 3,
         False),
        ("linear-dict-weights", LinearProbe(class_weight={0: 1.0, 1: 3.0}, random_state=0), 2,
         False),
        ("boosted-bin", boosted, 2, False),
        ("boosted-multi", boosted, 3, True),
        ("rules", RuleProbe(max_features=3, min_precision=0.5), 2, True),
        ("cal-sigmoid-bin", CalibratedProbe(LinearProbe(random_state=0)), 2, False),
        ("cal-isotonic-multi", CalibratedProbe(LinearProbe(random_state=0), method="isotonic"),
         3, True),
        ("cal-boosted-multi", CalibratedProbe(boosted, method="isotonic"), 3, False),
        ("cal-rules", CalibratedProbe(RuleProbe()), 2, False),
    ]


@pytest.mark.parametrize(("probe", "n_classes", "strings"),
                         [p[1:] for p in _probes()], ids=[p[0] for p in _probes()])
def test_round_trip_gives_identical_probabilities(
    tmp_path: Path, probe: Any, n_classes: int, strings: bool
) -> None:
    X, y = make_sparse(n=400, n_features=60, n_classes=n_classes, seed=n_classes)
    if strings:
        y = np.array(["cat", "dog", "eel"])[y]
    probe.fit(X, y)
    out = save_probe(probe, tmp_path / "probe", card=CARD)
    assert (out / "card.json").exists() and load_card(out) == CARD
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pickle"))
    loaded = load_probe(out)
    assert type(loaded) is type(probe)
    params = {k: v for k, v in probe.get_params(deep=False).items() if k != "estimator"}
    assert {k: v for k, v in loaded.get_params(deep=False).items() if k != "estimator"} == params
    np.testing.assert_array_equal(loaded.classes_, probe.classes_)
    assert loaded.classes_.dtype == probe.classes_.dtype
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    if hasattr(probe, "contributions"):
        a, b = probe.contributions(X[:5]), loaded.contributions(X[:5])
        for m1, m2 in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b],
                          strict=True):
            assert (m1 != m2).nnz == 0
    if isinstance(probe, RuleProbe):
        assert loaded.describe() == probe.describe()


def test_saved_layout_and_no_overwrite(tmp_path: Path) -> None:
    X, y = make_sparse(n=200, n_features=30)
    probe = BoostedProbe(n_estimators=10, n_jobs=1).fit(X, y)
    out = save_probe(probe, tmp_path / "p", card=CARD)
    assert {p.name for p in out.iterdir()} == {"probe.json", "arrays.safetensors",
                                                "booster.txt", "card.json"}
    config = json.loads((out / "probe.json").read_text())
    assert config["format"] == "auditor-probe" and config["version"] == 1
    assert config["kind"] == "boosted" and config["params"]["n_estimators"] == 10
    with pytest.raises(ConfigError, match="not empty"):
        save_probe(probe, out, card=CARD)
    save_probe(probe, out, card={"v": 2}, overwrite=True)
    assert load_card(out) == {"v": 2}


def test_unfitted_and_unserialisable(tmp_path: Path) -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_probe(LinearProbe(), tmp_path / "a", card={})
    X, y = make_sparse(n=100, n_features=20)
    probe = LinearProbe(random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(ConfigError, match="without pickle"):
        save_probe(probe, tmp_path / "b", card={})
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="JSON"):
        save_probe(LinearProbe().fit(X, y), tmp_path / "c", card={"x": object()})


@pytest.mark.parametrize(("key", "value", "match"), [
    ("format", "something-else", "not an 'auditor-probe'"),
    ("version", 99, "unsupported probe format version 99"),
    ("kind", "neural", "unknown probe kind 'neural'"),
])
def test_load_refuses_unknown_files(tmp_path: Path, key: str, value: Any, match: str) -> None:
    X, y = make_sparse(n=100, n_features=20)
    out = save_probe(RuleProbe().fit(X, y), tmp_path / "p", card={})
    config = json.loads((out / "probe.json").read_text())
    config[key] = value
    (out / "probe.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=match):
        load_probe(out)


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no probe\.json"):
        load_probe(tmp_path)


# ----------------------------------------------------------------------------- provenance

PROV: dict[str, Any] = {
    "model": {"id": "tiny/llama", "weights_sha256": "aa", "dtype": "float32"},
    "saes": {"layer2": {"sha256": "s1", "layer": 2, "hook_point": "resid_post", "d_sae": 96,
                        "path": "/x"}},
    "pooling": ["max", "mean"],
    "input": {"fingerprint": "123"},
}


def _with(**changes: Any) -> dict[str, Any]:
    prov = json.loads(json.dumps(PROV))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        d = prov
        for p in parents:
            d = d[p]
        d[last] = value
    return prov


def test_provenance_same_or_irrelevant_differences_pass() -> None:
    check_provenance(PROV, PROV)
    # Other keys (dtype, input, SAE path, extra poolings) are not compared.
    check_provenance(PROV, _with(model__dtype="bf16", input={}, saes__layer2__path="/y"))
    check_provenance({**PROV, "pooling": "max"}, PROV)
    # The same weights under another local path (a cache in another home) are the same model.
    check_provenance(PROV, _with(model__id="/home/other/.cache/auditor/models/x"))


@pytest.mark.parametrize(("changes", "keys"), [
    ({"model__id": "other", "model__weights_sha256": None}, ["model.id",
                                                             "model.weights_sha256"]),
    ({"model__weights_sha256": "bb"}, ["model.weights_sha256"]),
    ({"saes__layer2__sha256": "s2", "saes__layer2__layer": 3},
     ["saes.layer2.sha256", "saes.layer2.layer"]),
    ({"saes__layer2__hook_point": "resid_pre"}, ["saes.layer2.hook_point"]),
    ({"pooling": ["mean"]}, ["pooling"]),
    ({"saes": {"layer5": {}}}, ["saes.layer2"]),
])
def test_provenance_mismatch_names_keys(changes: dict[str, Any], keys: list[str]) -> None:
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(PROV, _with(**changes))
    assert err.value.field == ", ".join(keys)
    for k in keys:
        assert k in str(err.value)


def test_an_sae_under_another_name_is_named_with_the_fix() -> None:
    renamed = _with(saes={"mine": PROV["saes"]["layer2"]})
    with pytest.raises(ProvenanceMismatch, match=r"under the name 'mine': extract with "
                                                 r"--sae layer2=PATH"):
        check_provenance(PROV, renamed)
    other = _with(saes={"other": {**PROV["saes"]["layer2"], "sha256": "zz"}})
    with pytest.raises(ProvenanceMismatch, match=r"no SAE named 'layer2' \(it has: other\)"):
        check_provenance(PROV, other)


def test_store_features_to_saved_probe_end_to_end(tmp_path: Path) -> None:
    """Features read from a real feature store → probe → save → guarded reload."""
    import polars as pl

    from auditor.store import FeatureStoreWriter, read_features

    X, y = make_sparse(n=300, n_features=96, seed=11)
    X.sort_indices()
    lists = [(X.indices[a:b].tolist(), X.data[a:b].tolist())
             for a, b in zip(X.indptr[:-1], X.indptr[1:], strict=True)]
    prov = _with(saes={"layer2": {**PROV["saes"]["layer2"], "d_sae": 96}}, pooling=["max"])
    writer = FeatureStoreWriter(tmp_path / "store", provenance=prov)
    writer.write_shard(0, pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(300)], "row": list(range(300)),
        "n_tokens": [5] * 300,
        "layer2.indices": pl.Series([i for i, _ in lists], dtype=pl.List(pl.UInt32)),
        "layer2.max": pl.Series([v for _, v in lists], dtype=pl.List(pl.Float32)),
        "layer2.n_excluded": [0] * 300, "label": y.tolist(),
    }))
    writer.finalize(summary={}, n_shards=1)
    fm = read_features(tmp_path / "store", pooling="max")
    assert fm.extra is not None
    labels = fm.extra["label"].to_numpy()
    probe = LinearProbe(random_state=0).fit(fm.X, labels)
    assert probe.score(fm.X, labels) > 0.9
    out = save_probe(probe, tmp_path / "probe", card={"provenance": fm.metadata})
    check_provenance(load_card(out)["provenance"], fm.metadata)
    other = _with(saes={"layer2": {**PROV["saes"]["layer2"], "sha256": "zz"}})
    with pytest.raises(ProvenanceMismatch, match=r"saes\.layer2\.sha256"):
        check_provenance(load_card(out)["provenance"], other)
    np.testing.assert_array_equal(load_probe(out).predict_proba(fm.X), probe.predict_proba(fm.X))
