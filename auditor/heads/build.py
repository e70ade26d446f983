"""Training heads: choose the representation on validation data, against the baselines.

For one labelled feature store, :func:`cross_validate_candidates` scores every candidate
representation (:data:`CANDIDATES`: SAE features max- or mean-pooled, log-scaled or
binarised, and mean raw activations) and the TF-IDF text baseline on the *same* stratified
folds; :func:`train_head` fits the winner (or a named candidate) on all the data, wraps it in
held-out probability calibration, picks the binary decision threshold on out-of-fold
probabilities and returns a :class:`~auditor.heads.Head` whose card records all of it.
:func:`evaluate_candidates` scores every representation on a separate test store.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import ConfigError

__all__ = [
    "CANDIDATES",
    "Candidate",
    "LabelledSplit",
    "cross_validate_candidates",
    "evaluate_candidates",
    "load_split",
    "train_head",
]


@dataclass(frozen=True)
class Candidate:
    """One way to represent documents for a linear head."""

    name: str
    representation: str
    pooling: str
    feature_transform: str
    C: float
    description: str

    def make(self, *, random_state: int = 0) -> Any:
        """An unfitted probe for this representation."""
        from auditor.probes import LinearProbe

        if self.representation == "raw":
            return LinearProbe(C=self.C, scaling="standard", center=True, max_iter=3000,
                               random_state=random_state)
        return LinearProbe(C=self.C, feature_transform=self.feature_transform, max_iter=3000,
                           random_state=random_state)


#: The representations a head may use (all read from one extraction pass).
CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("sae-max-log1p", "sae", "max", "log1p", 1.0,
              "SAE features, max-pooled, log1p, MaxAbs-scaled"),
    Candidate("sae-max-binary", "sae", "max", "binarize", 0.3,
              "SAE features, max-pooled, binarised (fired or not)"),
    Candidate("sae-mean-log1p", "sae", "mean", "log1p", 1.0,
              "SAE features, mean-pooled, log1p, MaxAbs-scaled"),
    Candidate("raw", "raw", "mean", "none", 0.05,
              "mean raw residual activations of the SAE's layer, standardised"),
)}

TFIDF = "tfidf"


@dataclass
class LabelledSplit:
    """The labelled documents of one store, in every representation."""

    doc_ids: list[str]
    y: np.ndarray
    sae: dict[str, Any]
    raw: np.ndarray | None
    texts: list[str] | None
    metadata: dict[str, Any]

    def X(self, candidate: Candidate) -> Any:
        """The matrix a candidate reads."""
        if candidate.representation == "raw":
            if self.raw is None:
                raise ConfigError("the store has no raw means (extract with raw_mean)",
                                  field="raw_mean")
            return self.raw
        return self.sae[candidate.pooling]


def load_split(
    store: str | Path, labels: Mapping[str, Any] | str, *,
    texts: Mapping[str, str] | None = None, sae: str | None = None,
) -> LabelledSplit:
    """Read a store's labelled documents in every representation it has.

    Parameters
    ----------
    store
        Feature store directory.
    labels
        ``doc_id -> label``, or the name of a passthrough column holding the label.
        Documents without a label (missing or empty) are left out.
    texts
        ``doc_id -> text`` for the TF-IDF baseline.
    sae
        SAE key (the store's only SAE when None).

    Raises
    ------
    ConfigError
        Fewer than two classes, the label column is missing, or no document is labelled.
    """
    from auditor.store import read_features, read_metadata, read_raw_means

    metadata = read_metadata(store)
    pools = [p for p in ("max", "mean") if p in (metadata.get("pooling") or [])]
    if not pools:
        raise ConfigError("the store has neither max nor mean pooling", path=Path(store),
                          field="pooling")
    column = labels if isinstance(labels, str) else None
    first = read_features(store, sae=sae, pooling=pools[0],
                          columns=[column] if column else [])
    if column is not None:
        assert first.extra is not None
        values = first.extra[column].to_list()
        label_of = dict(zip(first.doc_ids, values, strict=True))
    else:
        label_of = dict(labels)  # type: ignore[arg-type]
    rows = [i for i, d in enumerate(first.doc_ids)
            if label_of.get(d) is not None and str(label_of[d]) != ""]
    if not rows:
        raise ConfigError("no document of the store has a label", field="labels")
    ids = [first.doc_ids[i] for i in rows]
    y = np.array([str(label_of[d]) for d in ids], dtype=object)
    if len(set(y.tolist())) < 2:
        raise ConfigError(f"need at least two classes, got {sorted(set(y.tolist()))}",
                          field="labels")
    sae_X = {pools[0]: first.X[rows]}
    for p in pools[1:]:
        sae_X[p] = read_features(store, sae=sae, pooling=p, columns=[]).X[rows]
    raw = None
    if metadata.get("raw_mean"):
        from auditor.heads.head import _raw_hook

        raw_all, raw_ids = read_raw_means(store, hook=_raw_hook(metadata, sae))
        pos = {d: i for i, d in enumerate(raw_ids)}
        raw = raw_all[[pos[d] for d in ids]].astype(np.float64)
    docs_texts = None
    if texts is not None:
        missing = [d for d in ids if d not in texts]
        if missing:
            raise ConfigError(f"{len(missing)} labelled documents have no text (e.g. "
                              f"{missing[0]!r})", field="texts")
        docs_texts = [texts[d] for d in ids]
    return LabelledSplit(ids, y, sae_X, raw, docs_texts, metadata)


def _tfidf(random_state: int = 0) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
        LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced",
                           random_state=random_state))


def _available(split: LabelledSplit, names: Sequence[str]) -> list[Candidate]:
    out = []
    for n in names:
        c = CANDIDATES[n]
        if c.representation == "raw" and split.raw is None:
            continue
        if c.representation == "sae" and c.pooling not in split.sae:
            continue
        out.append(c)
    return out


def cross_validate_candidates(
    split: LabelledSplit, *, candidates: Sequence[str] = tuple(CANDIDATES),
    folds: int = 5, random_state: int = 0, baseline: bool = True,
) -> dict[str, dict[str, Any]]:
    """Out-of-fold metrics of each candidate (and TF-IDF) on one shared stratified split.

    Returns
    -------
    dict
        ``name -> metrics`` (:func:`auditor.probes.evaluate_probe` plus ``seconds``) and,
        per candidate, ``oof_proba`` (the out-of-fold probabilities, not JSON-safe:
        pop it before saving).

    Raises
    ------
    ConfigError
        A class has fewer documents than folds.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from auditor.probes import evaluate_probe

    classes, counts = np.unique(split.y.astype(str), return_counts=True)
    if counts.min() < folds:
        raise ConfigError(f"every class needs >= {folds} documents for {folds}-fold CV; got "
                          f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}",
                          field="labels")
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    y = split.y.astype(str)
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, model: Any, X: Any) -> None:
        t = time.perf_counter()
        proba = cross_val_predict(model, X, y, cv=cv, method="predict_proba")
        results[name] = {**evaluate_probe(y, proba, classes),
                         "seconds": round(time.perf_counter() - t, 2), "oof_proba": proba}

    for c in _available(split, candidates):
        run(c.name, c.make(random_state=random_state), split.X(c))
    if baseline and split.texts is not None:
        run(TFIDF, _tfidf(random_state), split.texts)
    return results


def _make(candidate: Candidate, seed: int) -> Any:
    return candidate.make(random_state=seed)


def _subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def evaluate_candidates(
    train: LabelledSplit, test: LabelledSplit, *, candidates: Sequence[str] = tuple(CANDIDATES),
    n_labels: int | None = None, seeds: Sequence[int] = (0,), baseline: bool = True,
) -> dict[str, dict[str, Any]]:
    """Fit each candidate (and TF-IDF) on the training split, score the test split.

    Parameters
    ----------
    n_labels
        Train on a stratified subsample of this many documents (all when None); with
        several ``seeds`` the metrics are means over subsamples (``<metric>_std`` added).

    Returns
    -------
    dict
        ``name -> metrics`` on the test split.
    """
    from auditor.probes import evaluate_probe

    y_tr, y_te = train.y.astype(str), test.y.astype(str)
    classes = np.unique(y_tr)
    models: list[tuple[str, Callable[[int], Any], Any, Any]] = [
        (c.name, functools.partial(_make, c), train.X(c), test.X(c))
        for c in _available(train, candidates)]
    if baseline and train.texts is not None and test.texts is not None:
        models.append((TFIDF, _tfidf, np.array(train.texts, dtype=object),
                       np.array(test.texts, dtype=object)))
    out: dict[str, dict[str, Any]] = {}
    for name, make, X_tr, X_te in models:
        runs = []
        for seed in (seeds if n_labels is not None else seeds[:1]):
            idx = _subsample(y_tr, n_labels, seed) if n_labels is not None \
                else np.arange(len(y_tr))
            model = make(seed).fit(X_tr[idx], y_tr[idx])
            proba = model.predict_proba(X_te)
            m = evaluate_probe(y_te, proba, classes)
            m["n_train"] = len(idx)
            runs.append(m)
        summary = {k: v for k, v in runs[0].items() if not isinstance(v, float)}
        for k, v in runs[0].items():
            if isinstance(v, float) or v is None:
                vals = [r[k] for r in runs if r[k] is not None]
                summary[k] = float(np.mean(vals)) if vals else None
                if len(runs) > 1 and vals:
                    summary[f"{k}_std"] = float(np.std(vals))
        out[name] = summary
    return out


def best_candidate(cv: Mapping[str, Mapping[str, Any]]) -> str:
    """The candidate (not the text baseline) with the best CV macro-F1, then AUROC."""
    names = [n for n in cv if n in CANDIDATES]
    if not names:
        raise ConfigError("no candidate representation was evaluated", field="candidates")
    return max(names, key=lambda n: (round(cv[n]["macro_f1"], 3), cv[n].get("auroc") or 0.0))


def train_head(
    name: str, split: LabelledSplit, *, candidate: str = "auto",
    positive_class: str | None = None, target_precision: float | None = None,
    target_recall: float | None = None, folds: int = 5, random_state: int = 0,
    description: str = "", cv_results: Mapping[str, Mapping[str, Any]] | None = None,
    sae_decoder: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> Any:
    """Fit a head on a labelled split.

    Parameters
    ----------
    name
        Head name.
    split
        From :func:`load_split`.
    candidate
        A key of :data:`CANDIDATES`, or ``'auto'`` to cross-validate them all (with the
        TF-IDF baseline) and keep the best (see :func:`best_candidate`).
    positive_class
        Binary heads: the flagged class (default: the minority class).
    target_precision, target_recall
        Binary heads: choose the threshold for this target on out-of-fold calibrated
        probabilities; by default the threshold maximising F1 there.
    cv_results
        Reuse results of :func:`cross_validate_candidates` on this split.
    sae_decoder
        ``(W_dec, b_dec, input_scale)`` of the SAE, needed to explain a ``raw`` head;
        loaded from the store's provenance path when None.

    Returns
    -------
    Head
        With a card: data counts, CV table (with the baseline), choice and threshold.

    Raises
    ------
    ConfigError
        Unknown candidate, too few labels, an unreachable threshold target.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from auditor.explain import base_probe, decoder_projection
    from auditor.heads.head import Head, HeadConfig
    from auditor.probes import CalibratedProbe, choose_threshold, expected_calibration_error

    if candidate != "auto" and candidate not in CANDIDATES:
        raise ConfigError(f"unknown candidate {candidate!r}; choose auto or one of "
                          f"{', '.join(CANDIDATES)}", field="candidate")
    if cv_results is None:
        cv_results = cross_validate_candidates(
            split, candidates=tuple(CANDIDATES) if candidate == "auto" else (candidate,),
            folds=folds, random_state=random_state)
    chosen = CANDIDATES[best_candidate(cv_results) if candidate == "auto" else candidate]
    y = split.y.astype(str)
    classes, counts = np.unique(y, return_counts=True)
    X = split.X(chosen)
    # Calibrate only where it helps: compare out-of-fold ECE with and without held-out
    # Platt scaling on the same folds (class weighting skews binary probabilities; a
    # multinomial LR's softmax is often already calibrated and loses 20 % of its data).
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    calibrated = CalibratedProbe(chosen.make(random_state=random_state), method="sigmoid",
                                 random_state=random_state)
    oof = {"sigmoid": cross_val_predict(calibrated, X, y, cv=cv, method="predict_proba")}
    plain = cv_results.get(chosen.name, {}).get("oof_proba")
    oof["none"] = plain if plain is not None else cross_val_predict(
        chosen.make(random_state=random_state), X, y, cv=cv, method="predict_proba")
    ece = {m: expected_calibration_error(classes[np.argmax(p, axis=1)] == y, p.max(axis=1))
           for m, p in oof.items()}
    method = "sigmoid" if ece["sigmoid"] < ece["none"] else "none"
    probe = (calibrated if method == "sigmoid"
             else chosen.make(random_state=random_state)).fit(X, y)
    threshold = rule = None
    if len(classes) == 2:
        if positive_class is None:
            positive_class = str(classes[np.argmin(counts)])
        if positive_class not in classes:
            raise ConfigError(f"positive_class {positive_class!r} is not a label "
                              f"({classes.tolist()})", field="positive_class")
        scores = oof[method][:, list(classes).index(positive_class)]
        where = f" on out-of-fold {'calibrated ' if method == 'sigmoid' else ''}probabilities"
        if target_precision is not None or target_recall is not None:
            choice = choose_threshold(y, scores, target_precision=target_precision,
                                      target_recall=target_recall, pos_label=positive_class)
            threshold = choice.threshold
            rule = (f"precision >= {target_precision}" if target_precision is not None
                    else f"recall >= {target_recall}") + where
        else:
            threshold = _max_f1_threshold(y == positive_class, scores)
            rule = "max F1" + where
    elif positive_class is not None:
        raise ConfigError("positive_class is for binary heads", field="positive_class")
    decoder = None
    if chosen.representation == "raw":
        W_dec, b_dec, scale = sae_decoder if sae_decoder is not None \
            else _decoder_of(split.metadata)
        decoder = decoder_projection(base_probe(probe).feature_weights_, W_dec, b_dec,
                                     input_scale=scale)
    extract = split.metadata.get("extract") or {}
    sae_keys = list(split.metadata.get("saes") or {})
    config = HeadConfig(
        name=name, classes=[str(c) for c in probe.classes_],
        representation=chosen.representation,
        sae=sae_keys[0] if len(sae_keys) == 1 else None,
        pooling=chosen.pooling, feature_transform=chosen.feature_transform,
        positive_class=positive_class, threshold=threshold, threshold_rule=rule,
        extract={k: extract.get(k) for k in ("max_length", "max_windows",
                                              "exclude_outliers", "outlier_factor",
                                              "outlier_threshold") if k in extract},
        description=description)
    card = {
        "head": name,
        "representation": {"candidate": chosen.name, "description": chosen.description,
                           "chosen_by": "best cross-validated macro-F1" if candidate == "auto"
                           else "given"},
        "training": {"documents": len(y),
                     "labels": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
                     "folds": folds, "random_state": random_state},
        "cross_validation": {k: {m: v for m, v in r.items() if m != "oof_proba"}
                             for k, r in cv_results.items()},
        "threshold": None if threshold is None else {"value": threshold, "rule": rule,
                                                     "positive_class": positive_class},
        "calibration": {"method": method, "chosen_by": "lower out-of-fold ECE",
                        "oof_ece": ece},
        "provenance": split.metadata,
    }
    return Head(config, probe, card=card, decoder=decoder)


def _max_f1_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
    from auditor.probes.thresholds import operating_points

    thr, prec, rec = operating_points(positive.astype(int), scores, pos_label=1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    return float(thr[int(np.argmax(f1))])


def _decoder_of(metadata: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Load the decoder of the store's SAE from the path its provenance records."""
    from auditor.sae import load_sae

    saes = metadata.get("saes") or {}
    if len(saes) != 1:
        raise ConfigError("pass sae_decoder: the store does not name exactly one SAE",
                          field="sae_decoder")
    info = next(iter(saes.values()))
    sae = load_sae(info["path"], layer=info.get("layer"), k=info.get("k"))
    if sae.sha256 != info.get("sha256"):
        raise ConfigError(f"the SAE at {info['path']} is not the one the store was "
                          f"extracted with (sha256 differs)", field="sae_decoder")
    if sae.cfg.normalize_activations == "layer_norm":
        raise ConfigError("an SAE with per-token layer-norm inputs has no linear decoder "
                          "to explain raw activations with", field="sae_decoder")
    scale = sae.cfg.input_scale if sae.cfg.normalize_activations == "constant" else 1.0
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    if sae.cfg.rescale_acts_by_decoder_norm:  # decode divides each code by its column norm
        W_dec = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    return W_dec, sae.b_dec.detach().double().cpu().numpy(), float(scale or 1.0)
