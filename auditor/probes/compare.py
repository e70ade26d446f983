"""SAE-feature probes against plain baselines, on the same documents and the same folds.

Three representations, each scored by out-of-fold predictions of one stratified K-fold split:

``sae``     :class:`~auditor.probes.LinearProbe` on pooled SAE features (log1p, MaxAbs)
``raw``     logistic regression on the mean raw residual activation of the same layer
            (needs a store extracted with ``raw_mean=True``)
``tfidf``   logistic regression on TF-IDF word uni- and bigrams of the raw text

If a baseline wins, the table says so; nothing is tuned down.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import ConfigError
from auditor.probes.metrics import evaluate_probe

__all__ = ["compare_representations", "format_comparison"]


def compare_representations(
    store: str | Path,
    *,
    labels: Mapping[str, Any],
    texts: Mapping[str, str] | None = None,
    sae: str | None = None,
    pooling: str = "max",
    hook: str | None = None,
    folds: int = 5,
    random_state: int = 0,
) -> dict[str, dict[str, Any]]:
    """Cross-validate the SAE probe and the baselines on the store's labelled documents.

    Parameters
    ----------
    store
        Feature store directory.
    labels
        ``doc_id -> label``; documents without a label are left out.
    texts
        ``doc_id -> text`` for the TF-IDF baseline (skipped when ``None``).
    sae, pooling
        Which SAE columns and pooling to use (see :func:`auditor.store.read_features`).
    hook
        Hook of the raw means (default: the store's only one); the raw baseline is skipped
        when the store has none.
    folds, random_state
        The shared stratified K-fold split.

    Returns
    -------
    dict
        ``representation -> metrics`` (see :func:`~auditor.probes.evaluate_probe`).

    Raises
    ------
    ConfigError
        Fewer than two classes, or a class with fewer documents than folds.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from auditor.probes.linear import LinearProbe
    from auditor.store import read_features, read_metadata, read_raw_means

    fm = read_features(store, sae=sae, pooling=pooling, columns=[])
    rows = [i for i, d in enumerate(fm.doc_ids) if d in labels]
    ids = [fm.doc_ids[i] for i in rows]
    y = np.array([str(labels[d]) for d in ids])
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < folds:
        raise ConfigError(f"need >= 2 classes with >= {folds} documents each; got "
                          f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}",
                          field="labels")
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)

    def score(model: Any, X: Any) -> dict[str, Any]:
        proba = cross_val_predict(model, X, y, cv=cv, method="predict_proba")
        return dict(evaluate_probe(y, proba, classes))

    results: dict[str, dict[str, Any]] = {
        "sae": score(LinearProbe(feature_transform="log1p", max_iter=2000), fm.X[rows]),
    }
    if read_metadata(store).get("raw_mean"):
        X_raw, raw_ids = read_raw_means(store, hook=hook)
        pos = {d: i for i, d in enumerate(raw_ids)}
        results["raw"] = score(make_pipeline(StandardScaler(),
                                             LogisticRegression(C=0.1, max_iter=2000,
                                                                class_weight="balanced")),
                               X_raw[[pos[d] for d in ids]])
    if texts is not None:
        corpus = [texts[d] for d in ids]
        results["tfidf"] = score(make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced")), corpus)
    return results


def format_comparison(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of the comparison, best macro-F1 marked, winner named."""
    metrics = ("accuracy", "macro_f1", "auroc", "pr_auc", "ece")
    best = max(results, key=lambda r: results[r]["macro_f1"])
    lines = ["| representation | " + " | ".join(metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for name, m in results.items():
        cells = [("–" if m.get(k) is None else f"{m[k]:.3f}") for k in metrics]
        lines.append(f"| {name}{' (best)' if name == best else ''} | " + " | ".join(cells) + " |")
    if best != "sae":
        lines.append(f"\nThe {best} baseline beats the SAE-feature probe on macro-F1.")
    return "\n".join(lines)
