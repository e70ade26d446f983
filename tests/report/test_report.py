"""Corpus reports: all three formats on a tiny real store, statistics against hand-computed
values, near-duplicate detection, error paths and the ``report`` command."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from auditor.cli.report import report as report_command
from auditor.errors import ColumnError, ConfigError, InputError, InputFileError, StoreError
from auditor.io import ROW_NUMBERS
from auditor.report import (
    NearDuplicateFinder,
    build_report,
    chart_titles,
    chi_square_homogeneity,
    compare_reports,
    feature_density_shift,
    jensen_shannon_divergence,
    label_shift,
    load_feature_labels,
    load_report,
    normalize_text,
    read_predictions,
    render_html,
    render_markdown,
    report_charts,
    total_variation,
    write_report,
)
from auditor.store import FeatureStoreWriter, read_features

LONG = ("Scientists measured the temperature of the lake every hour for a week and wrote the "
        "numbers into a notebook that the children later used for a school project about "
        "seasons and weather in the northern mountains")
TEXTS: list[tuple[str, str]] = [
    ("n1", "The quick brown fox jumps over the lazy dog near the river bank today."),
    ("n2", "Rain is expected tomorrow morning, with clearing skies by noon and wind."),
    ("n3", "THE QUICK BROWN FOX jumps over the lazy dog... near the river bank, today!"),
    ("n4", "   "),                                 # empty: rejected, counted
    ("n5", "x" * 500),                             # overlong for max_chars=400
    ("n6", LONG),
    ("n7", LONG.replace("mountains", "hills")),    # near duplicate of n6 (J = 30/32)
    ("n8", "Children played football in the park until it got dark outside again."),
    ("n9", "Write a function that returns the sum of two integers in python code."),
    ("n10", "The committee approved the budget after a long debate about the roads."),
]
MAX_CHARS = 400


# --------------------------------------------------------------------------- fixtures


def write_texts(path: Path, texts: list[tuple[str, str]] = TEXTS) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in texts:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return path


def synthetic_predictions(doc_ids: list[str], *, seed: int = 0) -> pl.DataFrame:
    """Three heads (safety with explanations, topic, quality) for the given documents."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    topics = ["news", "science", "code"]
    for i, d in enumerate(doc_ids):
        p_unsafe = float(np.round(rng.uniform(0.02, 0.98), 4))
        p_spam = 0.9 if i % 4 == 1 else 0.1
        t = rng.dirichlet(np.ones(3))
        rows.append({
            "id": d,
            "safety.label": "unsafe" if p_unsafe >= 0.5 else "safe",
            "safety.p.safe": 1.0 - p_unsafe,
            "safety.p.unsafe": p_unsafe,
            "safety.explain": [
                {"feature": 3, "contribution": 0.8, "activation": 1.5, "label": None},
                {"feature": 7, "contribution": -0.3, "activation": 0.4, "label": "weather"},
                # absent evidence: its larger |contribution| must not put it first
                {"feature": 11, "contribution": -0.9, "activation": 0.0, "label": "calm",
                 "present": False},
            ],
            "topic.label": topics[int(np.argmax(t))],
            **{f"topic.p.{c}": float(t[j]) for j, c in enumerate(topics)},
            "quality.label": "spam" if p_spam > 0.5 else "ok",
            "quality.p.ok": 1.0 - p_spam,
            "quality.p.spam": p_spam,
        })
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def real(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real feature store of TEXTS (tiny random Llama + random SAE), with predictions."""
    from auditor.errors import RowError
    from auditor.extract import ExtractConfig, extract_features
    from auditor.io import input_fingerprint, read_documents
    from auditor.lm import load_model
    from auditor.testing import make_random_sae

    base = tmp_path_factory.mktemp("report")
    texts = write_texts(base / "texts.jsonl")
    lm = load_model(tiny_llama_dir, device="cpu")
    bad: list[RowError] = []
    docs = read_documents(texts, id_column="id", max_chars=MAX_CHARS, skip_bad_rows=True,
                          errors=bad)
    extract_features(docs, lm=lm, saes={"layer1": make_random_sae(layer=1)}, out=base / "store",
                     config=ExtractConfig(poolings=("max", "mean"), max_length=16, shard_size=3,
                                          exclude_outliers=False),
                     input_info={"path": str(texts), "fingerprint": input_fingerprint(texts)},
                     bad_rows=bad)
    ids = read_features(base / "store").doc_ids
    preds = synthetic_predictions(ids)
    preds.write_parquet(base / "preds.parquet")
    with open(base / "preds.jsonl", "w") as f:
        for row in preds.iter_rows(named=True):
            f.write(json.dumps(row) + "\n")
    return {"base": base, "store": base / "store", "texts": texts, "ids": ids, "preds": preds,
            "parquet": base / "preds.parquet", "jsonl": base / "preds.jsonl"}


def make_store(path: Path, rows: list[dict[int, float]], *, ids: list[str] | None = None,
               n_tokens: list[int] | None = None, d_sae: int = 4, sha: str = "sae-hash",
               max_length: int = 8, model: dict[str, Any] | None = None) -> Path:
    """A hand-made store: one dict ``feature -> max activation`` per document."""
    provenance = {
        "auditor_version": "0.1.0",
        "model": model or {"id": "hand-model", "weights_sha256": "model-hash"},
        "saes": {"l0": {"d_sae": d_sae, "sha256": sha, "layer": 0, "hook_point": "resid_post"}},
        "pooling": ["max"],
        "max_length": max_length,
        "input": {"path": "hand.jsonl", "fingerprint": "sha256:hand"},
    }
    ids = ids or [f"doc{i}" for i in range(len(rows))]
    writer = FeatureStoreWriter(path, provenance=provenance)
    writer.write_shard(0, pl.DataFrame({
        "doc_id": ids,
        "row": list(range(len(rows))),
        "n_tokens": n_tokens or [5] * len(rows),
        "l0.indices": [sorted(r) for r in rows],
        "l0.max": [[r[k] for k in sorted(r)] for r in rows],
        "l0.n_excluded": [0] * len(rows),
    }))
    writer.finalize(summary={}, n_shards=1)
    return path


def hand_predictions(labels: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({
        "id": list(labels),
        "safety.label": list(labels.values()),
        "safety.p.unsafe": [0.9 if v == "unsafe" else 0.2 for v in labels.values()],
        "safety.p.safe": [0.1 if v == "unsafe" else 0.8 for v in labels.values()],
    })


# Store A: a, b unsafe; c, d safe. Firing counts per feature: [2, 2, 2, 1].
ROWS_A = [{0: 2.0, 1: 1.0}, {0: 4.0}, {1: 1.0, 2: 3.0}, {2: 1.0, 3: 0.5}]
IDS_A = ["a", "b", "c", "d"]
LABELS_A = {"a": "unsafe", "b": "unsafe", "c": "safe", "d": "safe"}
# Store B: firing counts [0, 2, 2, 3]; one unsafe, three safe.
ROWS_B = [{1: 1.0, 3: 1.0}, {1: 2.0, 2: 1.0}, {2: 1.0, 3: 1.0}, {3: 2.0}]
IDS_B = ["e", "f", "g", "h"]
LABELS_B = {"e": "unsafe", "f": "safe", "g": "safe", "h": "safe"}


# --------------------------------------------------------------------------- all formats


def _prov_values(report: dict[str, Any]) -> list[str]:
    prov = report["provenance"]
    return [prov["model"]["id"], prov["model"]["weights_sha256"], prov["sae"]["key"],
            str(prov["sae"]["layer"]), prov["pooling"], prov["auditor_version"],
            prov["input"]["fingerprint"]]


def test_report_all_formats_on_a_real_store(real: dict[str, Any], tmp_path: Path) -> None:
    labels = {3: "fox <b>&</b> dogs", 7: "weather | rain"}
    examples = {3: ["the quick brown fox", "a lazy dog"]}
    report = build_report(real["store"], predictions=real["parquet"], texts=real["texts"],
                          id_column="id", max_chars=MAX_CHARS, feature_labels=labels,
                          feature_examples=examples, generated_at="2030-01-01T00:00:00+00:00")
    fm = read_features(real["store"], columns=["n_tokens"])
    assert fm.extra is not None
    n_docs = len(TEXTS) - 2  # the empty and the overlong rows were skipped at extraction
    assert report["corpus"]["documents"] == n_docs == len(fm.doc_ids)
    assert report["corpus"]["tokens"]["total"] == int(fm.extra["n_tokens"].sum())
    assert sum(report["corpus"]["tokens"]["histogram"]["counts"]) == n_docs
    assert report["corpus"]["active_features"]["mean"] == pytest.approx(
        float(np.diff(fm.X.indptr).mean()))

    prov = report["provenance"]
    meta = fm.metadata
    assert prov["model"]["weights_sha256"] == meta["model"]["weights_sha256"]
    assert prov["sae"]["key"] == "layer1" and prov["sae"]["layer"] == 1
    assert prov["pooling"] == "max" and prov["poolings_stored"] == ["max", "mean"]
    assert prov["input"]["fingerprint"] == meta["input"]["fingerprint"]
    assert prov["auditor_version"] == meta["auditor_version"]
    assert prov["libraries"] == meta["libraries"] and prov["libraries"]["torch"]

    # quality: the empty and the overlong rows, counted from the texts and the store summary
    assert report["quality"]["empty_texts"] == 1 and report["quality"]["overlong_texts"] == 1
    assert report["quality"]["bad_rows_at_extraction"] == 2
    assert report["texts"]["matched_store"] == n_docs
    assert report["texts"]["fingerprint_matches_store"] is True

    # near duplicates: n1 ~ n3 (same normalised text), n6 ~ n7 (one word changed)
    groups = {tuple(g["doc_ids"]): g for g in report["near_duplicates"]["top_groups"]}
    assert set(groups) == {("n1", "n3"), ("n6", "n7")}
    assert groups[("n1", "n3")]["exact"] and not groups[("n6", "n7")]["exact"]
    assert report["near_duplicates"]["exact_duplicates"] == 1
    assert report["near_duplicates"]["near_duplicates"] == 2
    assert groups[("n6", "n7")]["snippet"].startswith("Scientists measured")

    # heads: label distribution and score histograms
    preds = real["preds"]
    assert set(report["heads"]) == {"safety", "topic", "quality"}
    for head, info in report["heads"].items():
        expected = preds[f"{head}.label"].value_counts()
        assert info["label_counts"] == dict(zip(expected[f"{head}.label"].to_list(),
                                                expected["count"].to_list(), strict=True))
        for cls, hist in info["scores"].items():
            assert sum(hist["counts"]) == n_docs
            assert hist["mean"] == pytest.approx(preds[f"{head}.p.{cls}"].mean())
        assert set(info["top_features"]) == set(info["label_counts"])
    # flagged: safety=unsafe and quality=spam, highest probability first, with explanations
    flagged = report["flagged"]
    assert flagged["rules"] == {"safety": ["unsafe"], "quality": ["spam"]}
    n_flag = int((preds["safety.label"] == "unsafe").sum() + (preds["quality.label"] == "spam")
                 .sum())
    assert flagged["total"] == n_flag > 0
    probs = [d["probability"] for d in flagged["documents"]]
    assert probs == sorted(probs, reverse=True)
    unsafe = [d for d in flagged["documents"] if d["head"] == "safety"]
    assert unsafe and unsafe[0]["explanation"][0] == {
        "feature": 3, "contribution": 0.8, "activation": 1.5, "label": "fox <b>&</b> dogs",
        "present": True}  # no "present" in the file: fired
    assert unsafe[0]["explanation"][1]["label"] == "weather"  # the file's own label wins
    # what fired first, then what did not fire, named as such
    assert [(e["feature"], e["present"]) for e in unsafe[0]["explanation"]] == \
        [(3, True), (7, True), (11, False)]
    assert all(d["snippet"] for d in flagged["documents"])

    # feature density is consistent with the matrix
    dens = report["feature_density"]
    fired = np.bincount(fm.X.indices, minlength=fm.X.shape[1])
    assert dens["fired_features"] == np.flatnonzero(fired).tolist()
    assert dens["dead_features"] == int((fired == 0).sum())

    # the three formats
    written = write_report(report, tmp_path / "out")
    assert set(written) == {"html", "json", "md", "charts"}
    assert json.loads(written["json"].read_text()) == report
    html = written["html"].read_text()
    md = written["md"].read_text()
    assert "<b>did not fire:</b>" in html and "<b>fired:</b>" in html
    assert "— did not fire: -0.90 f11 · calm" in md
    charts = report_charts(report)
    assert [c.name for c in charts] == list(chart_titles(report))
    assert len(charts) == 2 + 2 * 3  # tokens, active features; labels and scores per head
    assert html.count("<svg") == len(charts)
    for value in _prov_values(report):
        assert value in html and value in md.replace("\\_", "_")
    libs = f"torch {prov['libraries']['torch']}, transformers "
    assert libs in html and libs in md
    assert "<script" not in html.lower()
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?!#)[^"'\s>]+""", html)
    assert external == []
    assert not re.search(r"https?://(?!www\.w3\.org/)", html)
    assert "fox &lt;b&gt;&amp;&lt;/b&gt; dogs" in html and "<b>&</b>" not in html
    assert "# " + report["title"] in md.replace("\\_", "_")
    for name in chart_titles(report):
        assert f"](charts/{name}.svg)" in md
        assert (tmp_path / "out" / "charts" / f"{name}.svg").read_text().count("<svg") == 1
    # rewriting with fewer charts removes the stale chart files
    write_report(build_report(real["store"]), tmp_path / "out", formats=("md",))
    assert sorted(p.name for p in (tmp_path / "out" / "charts").iterdir()) == [
        "active-features.svg", "tokens.svg"]
    # charts have unique ids on the page
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_jsonl_predictions_and_a_subset_of_formats(real: dict[str, Any], tmp_path: Path) -> None:
    a = build_report(real["store"], predictions=real["jsonl"], generated_at="t")
    b = build_report(real["store"], predictions=real["parquet"], generated_at="t")
    a["sources"] = b["sources"] = None
    assert a == b
    written = write_report(a, tmp_path, formats=("json",))
    assert set(written) == {"json"} and not (tmp_path / "report.html").exists()
    assert load_report(written["json"]) == a


def test_report_without_side_inputs(real: dict[str, Any]) -> None:
    report = build_report(real["store"], pooling="mean")
    assert report["heads"] is None and report["flagged"] is None and report["drift"] is None
    assert report["texts"] is None and report["near_duplicates"] is None
    assert report["provenance"]["pooling"] == "mean"
    html = render_html(report)
    assert html.count("<svg") == 2 and "Give the report the input texts" in html
    assert render_markdown(report).startswith("# Corpus report: texts.jsonl")


# --------------------------------------------------------------------------- hand-computed


def test_top_features_hand_computed(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", ROWS_A, ids=IDS_A)
    report = build_report(store, predictions=hand_predictions(LABELS_A), top_features=5,
                          feature_labels=lambda f: {2: "two | <i>2</i>"}.get(f))
    top = report["heads"]["safety"]["top_features"]
    # unsafe (a, b): f0 mean 3 vs 0; f1 0.5 vs 0.5 (no difference: not listed)
    assert [t["feature"] for t in top["unsafe"]] == [0]
    f0 = top["unsafe"][0]
    assert f0["mean_in"] == 3.0 and f0["mean_out"] == 0.0 and f0["mean_diff"] == 3.0
    assert f0["fire_in"] == 1.0 and f0["fire_out"] == 0.0
    assert f0["fire_ratio"] == pytest.approx((3 / 4) / (1 / 4))
    assert [d["doc_id"] for d in f0["top_docs"]] == ["b", "a"]  # by activation
    # safe (c, d): f2 mean 2 vs 0, f3 0.25 vs 0
    assert [t["feature"] for t in top["safe"]] == [2, 3]
    assert top["safe"][0]["label"] == "two | <i>2</i>" and top["safe"][1]["label"] is None
    assert top["safe"][1]["mean_diff"] == pytest.approx(0.25)
    assert top["safe"][1]["fire_ratio"] == pytest.approx((2 / 4) / (1 / 4))
    assert report["feature_density"]["fired_counts"] == [2, 2, 2, 1]
    assert report["flagged"]["total"] == 2
    assert [d["doc_id"] for d in report["flagged"]["documents"]] == ["a", "b"]
    html, md = render_html(report), render_markdown(report)
    assert "two | &lt;i&gt;2&lt;/i&gt;" in html and "<i>2</i>" not in html
    assert "two \\| &lt;i&gt;2&lt;/i&gt;" in md


def test_provenance_names_the_gguf_a_converted_model_came_from(tmp_path: Path) -> None:
    origin = {"name": "m-q4.gguf", "sha256": "ab" * 32, "size": 10}
    converted = make_store(tmp_path / "c", ROWS_A, ids=IDS_A, model={
        "id": "/cache/models/abab", "weights_sha256": "model-hash", "converted_from": origin})
    report = build_report(converted)
    assert report["provenance"]["model"]["converted_from"] == origin
    row = "| Model | m-q4.gguf (GGUF sha256 abababababab…), converted at /cache/models/abab |"
    assert row in render_markdown(report)
    assert "m-q4.gguf (GGUF sha256 abababababab…)" in render_html(report)
    plain = build_report(make_store(tmp_path / "p", ROWS_A, ids=IDS_A))
    assert plain["provenance"]["model"]["converted_from"] is None
    assert "| Model | hand-model |" in render_markdown(plain)


def test_drift_statistics_hand_computed() -> None:
    r = chi_square_homogeneity({"a": 30, "b": 70}, {"a": 50, "b": 50})
    # E = 40/60 in both rows: 2 * (100/40 + 100/60)
    assert r["statistic"] == pytest.approx(2 * (100 / 40 + 100 / 60))
    assert r["dof"] == 1
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(r["statistic"] / 2)))
    assert total_variation([0.3, 0.7], [0.5, 0.5]) == pytest.approx(0.2)
    assert jensen_shannon_divergence([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)
    assert jensen_shannon_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon_divergence([3, 1], [6, 2]) == pytest.approx(0.0)
    assert jensen_shannon_divergence([1, 1, 0], [0, 1, 1], base=math.e) == pytest.approx(
        0.5 * math.log(2))
    with pytest.raises(ValueError):
        jensen_shannon_divergence([0, 0], [1, 1])

    # a class unused in both reports is left out; one only in the current report is kept
    three = chi_square_homogeneity({"x": 10, "y": 20, "z": 0, "w": 0},
                                   {"x": 20, "y": 10, "w": 5})
    from scipy.stats import chi2_contingency

    ref = chi2_contingency(np.array([[10, 20, 0], [20, 10, 5]]), correction=False)
    assert three["statistic"] == pytest.approx(ref.statistic) and three["dof"] == 2
    assert three["p_value"] == pytest.approx(ref.pvalue)
    assert chi_square_homogeneity({"x": 3}, {"x": 5}) == {"statistic": None, "dof": None,
                                                         "p_value": None}
    shift = label_shift({"unsafe": 2, "safe": 2}, {"unsafe": 1, "safe": 3, "new": 0})
    assert shift["classes"] == ["unsafe", "safe", "new"]
    assert shift["share_change"] == {"unsafe": -0.25, "safe": 0.25, "new": 0.0}
    assert shift["total_variation"] == pytest.approx(0.25)

    prev = {"d_sae": 4, "documents": 4, "fired_features": [0, 1, 2, 3],
            "fired_counts": [2, 2, 2, 1]}
    cur = {"d_sae": 4, "documents": 4, "fired_features": [1, 2, 3], "fired_counts": [2, 2, 3]}
    out = feature_density_shift(prev, cur, top=5, label_of=lambda f: f"feat{f}")
    # p = [2,2,2,1]/7, q = [0,2,2,3]/7, m = [1,2,2,2]/7:
    # KL(p||m) = 2/7·log2 2 + 1/7·log2 ½ = 1/7; KL(q||m) = 3/7·log2 1.5
    assert out["statistic"] == "jensen_shannon_divergence_bits"
    assert out["value"] == pytest.approx(0.5 * (1 / 7 + 3 / 7 * math.log2(1.5)))
    assert [(t["feature"], t["change"]) for t in out["top_shifted"]] == [(0, -0.5), (3, 0.5)]
    assert out["top_shifted"][0]["label"] == "feat0"
    assert out["mean_fire_rate"] == {"previous": pytest.approx(7 / 16),
                                     "current": pytest.approx(7 / 16)}


def test_drift_between_two_stores(tmp_path: Path) -> None:
    a = make_store(tmp_path / "a", ROWS_A, ids=IDS_A)
    b = make_store(tmp_path / "b", ROWS_B, ids=IDS_B, n_tokens=[9, 9, 9, 9])
    previous = build_report(a, predictions=hand_predictions(LABELS_A))
    write_report(previous, tmp_path / "prev", formats=("json",))
    report = build_report(b, predictions=hand_predictions(LABELS_B),
                          previous=tmp_path / "prev" / "report.json")
    drift = report["drift"]
    assert drift["notes"] == []
    assert drift["previous"]["source"] == str(tmp_path / "prev" / "report.json")
    assert drift["corpus"]["mean_tokens"] == {"previous": 5.0, "current": 9.0, "change": 4.0}
    safety = drift["labels"]["safety"]
    # table [[2, 2], [1, 3]]: E = [[1.5, 2.5], [1.5, 2.5]]
    chi = 2 * (0.5**2 / 1.5) + 2 * (0.5**2 / 2.5)
    assert safety["chi_square"]["statistic"] == pytest.approx(chi)
    assert safety["chi_square"]["p_value"] == pytest.approx(math.erfc(math.sqrt(chi / 2)))
    assert safety["total_variation"] == pytest.approx(0.25)
    assert drift["features"]["value"] == pytest.approx(0.5 * (1 / 7 + 3 / 7 * math.log2(1.5)))
    assert [t["feature"] for t in drift["features"]["top_shifted"]] == [0, 3]
    names = list(chart_titles(report))
    assert names[-2:] == ["drift-labels-safety", "drift-features"]
    html = render_html(report)
    assert html.count("<svg") == len(names) == 6
    assert "jensen_shannon_divergence_bits" in html and "0.1968" in html
    md = render_markdown(report)
    assert "Total variation distance **0.2500**" in md and "0.1968" in md

    # another SAE: label drift still computed, feature drift skipped with a note
    c = make_store(tmp_path / "c", ROWS_B, ids=IDS_B, sha="other-sae")
    other = build_report(c, predictions=hand_predictions(LABELS_B), previous=previous)
    assert other["drift"]["features"] is None
    assert any("different SAEs" in n for n in other["drift"]["notes"])
    assert any("sae differs" in n for n in other["drift"]["notes"])
    assert other["drift"]["labels"]["safety"]["total_variation"] == pytest.approx(0.25)
    # no predictions now: a note per head that disappeared
    bare = compare_reports(previous, build_report(b))
    assert bare["labels"] == {} and any("'safety'" in n for n in bare["notes"])


# --------------------------------------------------------------------------- near duplicates


def test_near_duplicate_finder() -> None:
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab, 120)) for _ in range(40)]
    finder = NearDuplicateFinder(threshold=0.8)
    for i, text in enumerate(base):
        finder.add(f"o{i}", text)
    for i in range(5):  # one word replaced: Jaccard of 5-shingles ≈ 0.92
        words = base[i].split()
        words[60] = "changed"
        finder.add(f"near{i}", " ".join(words))
    finder.add("exact0", base[7].upper() + " !!!")
    for i in range(300):
        finder.add(f"x{i}", " ".join(rng.choice(vocab, 120)))
    # half the words replaced: far below the threshold
    words = base[9].split()
    finder.add("half", " ".join(words[:60] + [f"z{i}" for i in range(60)]))
    finder.add("blank", "... !!! ...")
    groups = {tuple(g.doc_ids): g for g in finder.groups()}
    expected = {(f"o{i}", f"near{i}") for i in range(5)} | {("o7", "exact0")}
    assert set(groups) == expected
    assert groups[("o7", "exact0")].exact and groups[("o7", "exact0")].min_similarity == 1.0
    assert all(0.8 <= groups[(f"o{i}", f"near{i}")].min_similarity < 1.0 for i in range(5))
    s = finder.summary()
    assert s["exact_duplicates"] == 1 and s["near_duplicates"] == 6 and s["no_words"] == 1
    assert s["documents"] == len(finder) == 40 + 5 + 1 + 300 + 2
    assert "MinHash" in str(s["method"])

    # groups are transitive and deterministic
    f2 = NearDuplicateFinder()
    f2.add_many([("a", "one two three four five six"), ("b", "One, two; three four five six"),
                 ("c", "one two three four five six")])
    assert [g.doc_ids for g in f2.groups()] == [["a", "b", "c"]]
    assert normalize_text("Ünïcode ＦＵＬＬ-width_x") == ["ünïcode", "full", "width", "x"]
    for bad in ({"threshold": 0}, {"threshold": 1.5}, {"num_perm": 100, "bands": 32},
                {"shingle_size": 0}):
        with pytest.raises(ConfigError):
            NearDuplicateFinder(**bad)


# --------------------------------------------------------------------------- error paths


def test_prediction_errors(real: dict[str, Any], tmp_path: Path) -> None:
    preds: pl.DataFrame = real["preds"]
    store = real["store"]
    stray = pl.concat([preds, preds.head(2).with_columns(pl.lit("ghost").alias("id"))
                       .with_columns(pl.Series("id", ["ghost1", "ghost2"]))])
    path = tmp_path / "stray.parquet"
    stray.write_parquet(path)
    with pytest.raises(InputError) as err:
        build_report(store, predictions=path)
    assert str(path) in str(err.value) and f"2 of {stray.height}" in str(err.value)
    assert "'ghost1'" in str(err.value) and err.value.field == "id"

    cases: list[tuple[pl.DataFrame, type[Exception], str]] = [
        (preds.drop("id"), ColumnError, "'id'"),
        (preds.drop("safety.label"), ColumnError, "safety.label"),
        (preds.drop("topic.p.news", "topic.p.science", "topic.p.code"), ColumnError, "topic.p"),
        (preds.select("id"), ColumnError, "no prediction heads"),
        (preds.with_columns(pl.lit(1.5).alias("quality.p.ok")), InputError, "outside [0, 1]"),
        (preds.with_columns(pl.lit("x").alias("quality.p.ok")), ColumnError, "not numeric"),
        (pl.concat([preds, preds.head(1)]), InputError, "repeated ids"),
        (preds.head(0), InputError, "no rows"),
    ]
    for frame, exc, text in cases:
        with pytest.raises(exc, match=re.escape(text)):
            read_predictions(frame, store_ids=real["ids"])
    # an only partly predicted store is fine: heads count the predicted documents
    part = build_report(store, predictions=preds.head(3))
    assert part["heads"]["safety"]["documents"] == 3

    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputFileError):
        build_report(store, predictions=garbage)
    with pytest.raises(InputFileError, match="no such predictions file"):
        build_report(store, predictions=tmp_path / "missing.jsonl")
    weird = tmp_path / "preds.csv"
    weird.write_text("id\n")
    with pytest.raises(InputFileError, match=r"parquet or \.jsonl"):
        build_report(store, predictions=weird)
    # default rules only name labels the predictions have: the shipped heads' classes
    shipped = preds.rename({"safety.p.unsafe": "safety.p.insult", "safety.p.safe":
                            "safety.p.benign"}).with_columns(
        pl.col("safety.label").replace({"unsafe": "insult", "safe": "benign"}))
    rules = build_report(store, predictions=shipped)["flagged"]["rules"]
    assert rules == {"safety": ["insult"], "quality": ["spam"]}
    no_spam = preds.with_columns(pl.lit("ok").alias("quality.label")).drop("quality.p.spam")
    assert build_report(store, predictions=no_spam)["flagged"]["rules"] == {
        "safety": ["unsafe"]}
    with pytest.raises(ConfigError, match="unknown heads: toxicity"):
        build_report(store, predictions=preds, flags={"toxicity": ["toxic"]})
    with pytest.raises(ConfigError, match="need predictions"):
        build_report(store, flags={"safety": ["unsafe"]})


def test_other_input_errors(real: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        build_report(tmp_path / "no-store")
    # texts whose ids do not match (row numbers instead of the id column): each side's
    # ids, and the fix
    with pytest.raises(InputError, match=r"none of the 8 texts is a document of the feature "
                                         r"store: the texts are keyed by row numbers \(e\.g\. "
                                         r"'0'\).*set id_column") as err:
        build_report(real["store"], texts=real["texts"], id_column=ROW_NUMBERS,
                     max_chars=MAX_CHARS)
    assert err.value.field == "row number"
    # by default the texts are keyed as the extraction keyed them: their id column
    build_report(real["store"], texts=real["texts"], max_chars=MAX_CHARS)
    not_report = tmp_path / "x.json"
    not_report.write_text('{"hello": 1}')
    with pytest.raises(InputFileError, match="not an auditor-report"):
        build_report(real["store"], previous=not_report)
    not_report.write_text("{")
    with pytest.raises(InputFileError, match="cannot read"):
        load_report(not_report)
    with pytest.raises(InputFileError, match="no such report"):
        load_report(tmp_path / "missing.json")
    report = build_report(real["store"])
    with pytest.raises(ConfigError, match="pdf"):
        write_report(report, tmp_path / "o", formats=("html", "pdf"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        write_report(report, tmp_path / "file")
    with pytest.raises(ConfigError):
        build_report(real["store"], top_features=-1)


def test_feature_label_files(tmp_path: Path) -> None:
    cases: list[tuple[Any, dict[int, list[str]]]] = [
        ({"3": "fox", "7": "rain"}, {}),
        ([{"feature": 3, "label": "fox", "examples": ["a fox"]}, {"feature": 7, "label": "rain"}],
         {3: ["a fox"]}),
        ({"features": {"3": {"label": "fox", "contexts": [{"text": "a fox"}, "the fox"]},
                       "7": "rain"}}, {3: ["a fox", "the fox"]}),
        ({"labels": [{"feature": 3, "label": "fox", "contexts": ["a fox"]},
                     {"feature": 7, "label": "rain", "examples": [{"text": "wet"}]}]},
         {3: ["a fox"], 7: ["wet"]}),
    ]
    for i, (data, expected_examples) in enumerate(cases):
        path = tmp_path / f"labels{i}.json"
        path.write_text(json.dumps(data))
        labels, examples = load_feature_labels(path)
        assert labels == {3: "fox", 7: "rain"}
        assert examples == expected_examples, i
    bad = tmp_path / "bad.json"
    for text in ("[1, 2]", '{"x": "label"}', '"just a string"', "{"):
        bad.write_text(text)
        with pytest.raises(InputFileError):
            load_feature_labels(bad)


# --------------------------------------------------------------------------- CLI


def test_cli_report(real: dict[str, Any], tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"3": "fox", "7": "rain"}))
    runner = CliRunner()
    first = runner.invoke(report_command, [
        str(real["store"]), "--predictions", str(real["parquet"]), "--texts", str(real["texts"]),
        "--id-column", "id", "--max-chars", str(MAX_CHARS), "--labels", str(labels),
        "--out", str(tmp_path / "r1"), "--flag", "topic=code", "--flag", "safety=unsafe",
        "--title", "Weekly audit"])
    assert first.exit_code == 0, first.output
    assert "wrote" in first.output and "report.html" in first.output
    data = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert data["title"] == "Weekly audit"
    assert data["flagged"]["rules"] == {"topic": ["code"], "safety": ["unsafe"]}
    assert "Weekly audit" in (tmp_path / "r1" / "report.md").read_text()

    second = runner.invoke(report_command, [
        str(real["store"]), "--predictions", str(real["jsonl"]), "--previous",
        str(tmp_path / "r1" / "report.json"), "--out", str(tmp_path / "r2"),
        "--format", "html,json", "--json", "--no-near-duplicates"])
    assert second.exit_code == 0, second.output
    paths = json.loads(second.output)
    assert set(paths) == {"html", "json"} and not (tmp_path / "r2" / "report.md").exists()
    assert not (tmp_path / "r2" / "charts").exists()
    drift = json.loads((tmp_path / "r2" / "report.json").read_text())["drift"]
    assert drift["features"]["value"] == 0.0  # same store
    assert all(v["total_variation"] == 0.0 for v in drift["labels"].values())
    assert Path(paths["html"]).read_text().count("<svg") == 2 + 6 + 3 + 0  # no shifted feature

    bad_format = runner.invoke(report_command, [str(real["store"]), "--out",
                                                str(tmp_path / "r3"), "--format", "html,pdf"])
    assert bad_format.exit_code == 2 and "pdf" in bad_format.output
    bad_flag = runner.invoke(report_command, [str(real["store"]), "--out", str(tmp_path / "r3"),
                                              "--flag", "safety"])
    assert bad_flag.exit_code == 2 and "HEAD=LABEL" in bad_flag.output
    wrong = runner.invoke(report_command, [str(real["store"]), "--predictions",
                                           str(tmp_path / "nope.parquet"), "--out",
                                           str(tmp_path / "r4")])
    assert isinstance(wrong.exception, InputFileError)
    assert not (tmp_path / "r4").exists()


def test_an_unfinished_store_is_reported_only_when_asked(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from auditor.cli import main

    store = make_store(tmp_path / "s", [{0: 1.0}, {1: 2.0}, {0: 0.5, 3: 1.5}])
    manifest = json.loads((store / "store.json").read_text())
    manifest["expected_shards"] = 2  # the input makes two shards; one is done
    (store / "store.json").write_text(json.dumps(manifest))
    args = ["report", str(store), "--out", str(tmp_path / "r"), "--format", "json"]
    assert main(args) == 6
    assert "incomplete store: 1 of 2 shards (3 documents)" in capsys.readouterr().err
    assert main([*args, "--partial"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["corpus"]["documents"] == 3
