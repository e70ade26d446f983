"""Training heads: choose the representation on validation data, against the baselines.

For one labelled feature store, :func:`cross_validate_candidates` scores every candidate
representation (:data:`CANDIDATES`: SAE features max- or mean-pooled, log-scaled or
binarised, and mean raw activations) and the TF-IDF text baseline on the *same* stratified
folds; :func:`train_head` fits the winner (or a named candidate) on all the data, wraps it in
held-out probability calibration, picks the binary decision threshold on out-of-fold
probabilities and returns a :class:`~auditor.heads.Head` whose card records all of it.
:func:`evaluate_candidates` scores every representation on a separate test store.

Multilabel splits (:func:`load_split` with ``multilabel_sep``: each document carries any
subset of the labels) go through the same functions: the folds are shuffled
:class:`~sklearn.model_selection.KFold` ones, each candidate is wrapped in a
:class:`~auditor.probes.MultiLabelProbe` (one binary probe per label), the TF-IDF baseline
is one-vs-rest, the metrics are those of :func:`multilabel_metrics`, each label's threshold
maximises its F1 on out-of-fold probabilities, and the probabilities are not calibrated.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.heads.candidates import (
    CANDIDATES,
    DEFAULT_CANDIDATES,
    TFIDF,
    Candidate,
    LabelledSplit,
    available_candidates,
    tfidf_baseline,
)
from auditor.progress import Stage

__all__ = [
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
    "TFIDF",
    "Candidate",
    "LabelledSplit",
    "available_candidates",
    "cross_validate_candidates",
    "evaluate_candidates",
    "label_indicator",
    "label_set",
    "load_split",
    "multilabel_metrics",
    "tfidf_baseline",
    "train_head",
]


def label_set(value: Any, sep: str) -> list[str]:
    """One document's labels from a list-valued or separated-string label value.

    Parameters
    ----------
    value
        A list (or tuple / array) of labels, or a string of labels joined by ``sep``;
        any other value is one label.
    sep
        Separator of string values.

    Returns
    -------
    list of str
        The distinct labels, stripped of surrounding whitespace, empty ones dropped, in
        their first order.

    Examples
    --------
    >>> label_set("sport| night", "|"), label_set(["a", "b", "a"], "|"), label_set("", "|")
    (['sport', 'night'], ['a', 'b'], [])
    """
    if isinstance(value, str):
        parts = value.split(sep)
    elif isinstance(value, list | tuple | np.ndarray) or hasattr(value, "to_list"):
        items = value.to_list() if hasattr(value, "to_list") else list(value)
        parts = [str(v) for v in items if v is not None]
    else:
        parts = [str(value)]
    return list(dict.fromkeys(t.strip() for t in parts if t.strip()))


def label_indicator(sets: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """The 0/1 indicator matrix of label sets.

    Parameters
    ----------
    sets
        Each document's labels (e.g. from :func:`label_set`).
    names
        The labels, in column order.

    Returns
    -------
    ndarray of shape (n_docs, len(names))
        int64; ``[i, k]`` is 1 iff document ``i`` has label ``names[k]``.

    Raises
    ------
    ConfigError
        A document has a label not in ``names``.
    """
    column = {n: k for k, n in enumerate(names)}
    unknown = sorted({lab for s in sets for lab in s if lab not in column})
    if unknown:
        raise ConfigError(f"labels {unknown} are not among the head's labels "
                          f"{list(names)}", field="labels")
    Y = np.zeros((len(sets), len(names)), dtype=np.int64)
    for i, s in enumerate(sets):
        Y[i, [column[lab] for lab in s]] = 1
    return Y


def load_split(
    store: str | Path, labels: Mapping[str, Any] | str, *,
    texts: Mapping[str, str] | None = None, sae: str | None = None,
    multilabel_sep: str | None = None,
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
    multilabel_sep
        Read a multilabel split: each label value is a list of labels or a string of
        labels joined by this separator (see :func:`label_set`). Only missing values
        leave a document out; an empty list or string is a document without any label
        (an all-zero row of ``Y``).

    Raises
    ------
    ConfigError
        Fewer than two classes (labels), the label column is missing, no document is
        labelled, or an empty ``multilabel_sep``.
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
    if multilabel_sep == "":
        raise ConfigError("multilabel_sep must be a non-empty separator",
                          field="multilabel_sep")
    rows = [i for i, d in enumerate(first.doc_ids)
            if label_of.get(d) is not None
            and (multilabel_sep is not None or str(label_of[d]) != "")]
    if not rows:
        raise ConfigError("no document of the store has a label", field="labels")
    ids = [first.doc_ids[i] for i in rows]
    Y = names = None
    if multilabel_sep is not None:
        sets = [label_set(label_of[d], multilabel_sep) for d in ids]
        names = sorted({lab for s in sets for lab in s})
        if len(names) < 2:
            raise ConfigError(f"need at least two labels for a multilabel split, got "
                              f"{names} (train a binary head for one label)", field="labels")
        Y = label_indicator(sets, names)
        y = np.empty(len(sets), dtype=object)
        for i, s in enumerate(sets):
            y[i] = s
    else:
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
    return LabelledSplit(ids, y, sae_X, raw, docs_texts, metadata, Y=Y, label_names=names,
                         label_sep=multilabel_sep)


def _multilabel_probe(candidate: Candidate, labels: Sequence[str], seed: int,
                      thresholds: Sequence[float] | None = None) -> Any:
    """An unfitted one-probe-per-label head probe for this representation."""
    from auditor.probes import MultiLabelProbe

    return MultiLabelProbe(candidate.make(random_state=seed), labels=list(labels),
                           thresholds=None if thresholds is None else list(thresholds))


def multilabel_metrics(Y_true: Any, proba: Any, labels: Sequence[str], *,
                       thresholds: float | Sequence[float] = 0.5) -> dict[str, Any]:
    """Metrics of multilabel probabilities.

    Parameters
    ----------
    Y_true : array-like of shape (n_docs, n_labels)
        0/1 indicator matrix.
    proba : array-like of shape (n_docs, n_labels)
        Probability that each label is present, columns in ``labels`` order.
    labels
        Label names.
    thresholds
        Present iff ``p >= threshold``: one for all labels or one per label.

    Returns
    -------
    dict
        ``n``; ``micro_f1`` and ``macro_f1`` (over labels); ``auroc`` and ``pr_auc``
        (means of the per-label values that are defined); ``subset_accuracy`` (share of
        documents whose whole label set is right); ``per_label_f1``,
        ``per_label_auroc`` (None when a label has one value) and ``support`` (documents
        with the label), as ``label -> value``; ``labels``.

    Raises
    ------
    ConfigError
        Shapes disagree.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    Y = np.asarray(Y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    names = [str(n) for n in labels]
    if Y.ndim != 2 or p.shape != Y.shape or Y.shape[1] != len(names) or not len(Y):
        raise ConfigError(f"Y_true {list(Y.shape)} and proba {list(p.shape)} must both be "
                          f"[n_docs > 0, {len(names)} labels]")
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(names),))
    pred = (p >= thr[None, :]).astype(np.int64)
    both = [0 < Y[:, k].sum() < len(Y) for k in range(len(names))]
    auroc = {n: float(roc_auc_score(Y[:, k], p[:, k])) if both[k] else None
             for k, n in enumerate(names)}
    aps = [float(average_precision_score(Y[:, k], p[:, k]))
           for k in range(len(names)) if both[k]]
    aucs = [v for v in auroc.values() if v is not None]
    per_f1 = f1_score(Y, pred, average=None, zero_division=0)
    return {
        "n": len(Y),
        "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
        "auroc": float(np.mean(aucs)) if aucs else None,
        "pr_auc": float(np.mean(aps)) if aps else None,
        "subset_accuracy": float(np.mean((pred == Y).all(axis=1))),
        "per_label_f1": {n: float(f) for n, f in zip(names, per_f1, strict=True)},
        "per_label_auroc": auroc,
        "support": {n: int(c) for n, c in zip(names, Y.sum(axis=0), strict=True)},
        "labels": names,
    }


def _check_label_values(Y: np.ndarray, names: Sequence[str], folds: int) -> None:
    """Every label both present and absent, often enough for ``folds``-fold CV."""
    n = len(Y)
    for name, k in zip(names, Y.sum(axis=0).tolist(), strict=True):
        if k in (0, n):
            raise ConfigError(f"label {name!r} has only one value: "
                              f"{'present in' if k else 'absent from'} all {n} documents; "
                              f"every label of a multilabel head must be both present and "
                              f"absent", field="labels")
    few = {name: [k, n - k] for name, k in zip(names, Y.sum(axis=0).tolist(), strict=True)
           if min(k, n - k) < folds}
    if few:
        raise ConfigError(f"every label needs >= {folds} documents with and >= {folds} "
                          f"without it for {folds}-fold CV; got [with, without] {few}",
                          field="labels")


def _multilabel_folds(Y: np.ndarray, names: Sequence[str], folds: int,
                      random_state: int) -> Any:
    """Shuffled KFold whose every training part has each label present and absent."""
    from sklearn.model_selection import KFold

    _check_label_values(Y, names, folds)
    cv = KFold(folds, shuffle=True, random_state=random_state)
    for i, (train, _) in enumerate(cv.split(Y)):
        k = Y[train].sum(axis=0)
        bad = np.flatnonzero((k == 0) | (k == len(train)))
        if bad.size:
            raise ConfigError(f"label {names[int(bad[0])]!r} has only one value in the "
                              f"training part of fold {i + 1} of {folds}; use fewer folds "
                              f"or more labelled documents", field="labels")
    return cv


def cross_validate_candidates(
    split: LabelledSplit, *, candidates: Sequence[str] = DEFAULT_CANDIDATES,
    folds: int = 5, random_state: int = 0, baseline: bool = True,
    stage: Stage | None = None, cancel: CancelToken | None = None,
    done: Mapping[str, Mapping[str, Any]] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Out-of-fold metrics of each candidate (and TF-IDF) on one shared stratified split.

    Multilabel splits: shuffled KFold (same ``random_state``), each candidate as a
    :class:`~auditor.probes.MultiLabelProbe`, one-vs-rest TF-IDF, and the metrics of
    :func:`multilabel_metrics` at threshold 0.5.

    Parameters
    ----------
    stage
        Advanced by one per representation scored (its total is set to their number).
    cancel
        Checked before each representation; raises :class:`~auditor.errors.JobCancelled`.
    done
        Metrics of representations already scored with these settings (from
        ``on_result`` of an earlier, cancelled run): kept as they are, not recomputed.
    on_result
        Called with each representation's name and metrics as soon as it is scored.

    Returns
    -------
    dict
        ``name -> metrics`` (:func:`auditor.probes.evaluate_probe` plus ``seconds``) and,
        per candidate scored in this call, ``oof_proba`` (the out-of-fold probabilities,
        not JSON-safe: pop it before saving).

    Raises
    ------
    ConfigError
        A class has fewer documents than folds (multilabel: a label has only one value,
        or is present or absent in fewer documents than folds, or has one value in a
        fold's training part).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from auditor.probes import evaluate_probe

    target: np.ndarray
    score: Callable[[np.ndarray], dict[str, Any]]
    models: list[tuple[str, Callable[[], Any], Any]]
    if split.multilabel:
        assert split.Y is not None and split.label_names is not None
        target, names = split.Y, split.label_names
        cv: Any = _multilabel_folds(target, names, folds, random_state)
        models = [(c.name, functools.partial(_multilabel_probe, c, names, random_state),
                   split.X(c)) for c in available_candidates(split, candidates)]
        text_model: Callable[[], Any] = functools.partial(tfidf_baseline, random_state,
                                                          multilabel=True)
        score = functools.partial(multilabel_metrics, target, labels=names)
    else:
        classes, counts = np.unique(split.y.astype(str), return_counts=True)
        if counts.min() < folds:
            raise ConfigError(f"every class needs >= {folds} documents for {folds}-fold CV; "
                              f"got {dict(zip(classes.tolist(), counts.tolist(), strict=True))}",
                              field="labels")
        cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
        target = split.y.astype(str)
        models = [(c.name, functools.partial(_make, c, random_state), split.X(c))
                  for c in available_candidates(split, candidates)]
        text_model = functools.partial(tfidf_baseline, random_state)

        def score(proba: np.ndarray) -> dict[str, Any]:
            return evaluate_probe(target, proba, classes)

    if baseline and split.texts is not None:
        models.append((TFIDF, text_model, split.texts))
    if stage is not None:
        stage.set_total(len(models))
    results: dict[str, dict[str, Any]] = {}
    for name, make, X in models:
        if done is not None and name in done:
            results[name] = dict(done[name])
        else:
            check_cancel(cancel, f"candidate {name}")
            t = time.perf_counter()
            proba = np.asarray(cross_val_predict(make(), X, target, cv=cv,
                                                 method="predict_proba"), dtype=np.float64)
            results[name] = {**score(proba), "seconds": round(time.perf_counter() - t, 2),
                             "oof_proba": proba}
            if on_result is not None:
                on_result(name, results[name])
        if stage is not None:
            stage.advance(1)
    return results


def _make(candidate: Candidate, seed: int) -> Any:
    return candidate.make(random_state=seed)


def _subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def _random_subset(Y: np.ndarray, names: Sequence[str], n: int | None,
                   seed: int) -> np.ndarray:
    """Sorted rows of a plain random subset of ``n`` documents (all when None)."""
    if n is None or n >= len(Y):
        return np.arange(len(Y))
    idx = np.sort(np.random.default_rng(seed).choice(len(Y), size=n, replace=False))
    k = Y[idx].sum(axis=0)
    bad = np.flatnonzero((k == 0) | (k == n))
    if bad.size:
        raise ConfigError(f"label {names[int(bad[0])]!r} has only one value in the random "
                          f"subset of {n} documents (seed {seed}); subsample more documents",
                          field="n_labels")
    return idx


def evaluate_candidates(
    train: LabelledSplit, test: LabelledSplit, *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    n_labels: int | None = None, seeds: Sequence[int] = (0,), baseline: bool = True,
) -> dict[str, dict[str, Any]]:
    """Fit each candidate (and TF-IDF) on the training split, score the test split.

    Parameters
    ----------
    n_labels
        Train on a stratified subsample of this many documents (all when None; for
        multilabel splits a plain random subset); with several ``seeds`` the metrics are
        means over subsamples (``<metric>_std`` added).

    Returns
    -------
    dict
        ``name -> metrics`` on the test split (multilabel splits: of
        :func:`multilabel_metrics` at threshold 0.5).

    Raises
    ------
    ConfigError
        Multilabel: the test split is not multilabel or has labels the training split
        lacks, or a subsample leaves a label with one value.
    """
    from auditor.probes import evaluate_probe

    models: list[tuple[str, Callable[[int], Any], Any, Any]]
    subsample: Callable[[int], np.ndarray]
    score: Callable[[np.ndarray], dict[str, Any]]
    if train.multilabel:
        assert train.Y is not None and train.label_names is not None
        names = train.label_names
        if not test.multilabel:
            raise ConfigError("the training split is multilabel but the test split is not "
                              "(load it with multilabel_sep)", field="labels")
        y_tr: np.ndarray = train.Y
        Y_te = label_indicator(test.y.tolist(), names)
        models = [(c.name, functools.partial(_multilabel_probe, c, names), train.X(c),
                   test.X(c)) for c in available_candidates(train, candidates)]
        tfidf: Callable[[int], Any] = functools.partial(tfidf_baseline, multilabel=True)
        subsample = functools.partial(_random_subset, y_tr, names, n_labels)
        score = functools.partial(multilabel_metrics, Y_te, labels=names)
    else:
        y_tr, y_te = train.y.astype(str), test.y.astype(str)
        classes = np.unique(y_tr)
        models = [(c.name, functools.partial(_make, c), train.X(c), test.X(c))
                  for c in available_candidates(train, candidates)]
        tfidf = tfidf_baseline

        def subsample(seed: int) -> np.ndarray:
            return _subsample(y_tr, n_labels, seed) if n_labels is not None \
                else np.arange(len(y_tr))

        def score(proba: np.ndarray) -> dict[str, Any]:
            return evaluate_probe(y_te, proba, classes)

    if baseline and train.texts is not None and test.texts is not None:
        models.append((TFIDF, tfidf, np.array(train.texts, dtype=object),
                       np.array(test.texts, dtype=object)))
    out: dict[str, dict[str, Any]] = {}
    for name, make, X_tr, X_te in models:
        runs = []
        for seed in (seeds if n_labels is not None else seeds[:1]):
            idx = subsample(seed)
            model = make(seed).fit(X_tr[idx], y_tr[idx])
            proba = model.predict_proba(X_te)
            m = score(proba)
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
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    stage: Stage | None = None, cancel: CancelToken | None = None,
    groups: Sequence[Any] | np.ndarray | None = None, select_by: str = "cv",
    group_column: str | None = None, transfer_labels: int | None = 200,
    transfer_candidates: Sequence[str] | None = None,
    transfer_scales: Sequence[float] | None = None,
    transfer_results: Mapping[str, Any] | None = None,
) -> Any:
    """Fit a head on a labelled split.

    Parameters
    ----------
    name
        Head name.
    split
        From :func:`load_split`.
    candidate
        A key of :data:`CANDIDATES`, or ``'auto'`` to cross-validate ``candidates`` (with
        the TF-IDF baseline) and keep the best (see :func:`best_candidate`).
    positive_class
        Binary heads: the flagged class (default: the minority class).
    target_precision, target_recall
        Binary heads: choose the threshold for this target on out-of-fold calibrated
        probabilities; by default the threshold maximising F1 there.
    folds
        Cross-validation folds (stratified; shuffled KFold for a multilabel split).
    random_state
        Seed of the folds and probes.
    description
        One line for ``auditor heads list``.
    cv_results
        Reuse results of :func:`cross_validate_candidates` on this split.
    sae_decoder
        ``(W_dec, b_dec, input_scale)`` of the SAE, needed to explain a ``raw`` head;
        loaded from the store's provenance path when None.
    candidates
        The pool ``'auto'`` chooses from (default :data:`DEFAULT_CANDIDATES`, the linear
        ones; pass ``tuple(CANDIDATES)`` to include LightGBM).
    stage, cancel
        Handed to :func:`cross_validate_candidates` (one unit per representation); the
        token is checked again before the calibration and the final fit.
    groups, select_by, group_column, transfer_labels, transfer_results
        ``select_by='transfer'`` with ``candidate='auto'``: choose the representation and
        its regularisation by leave-one-group-out transfer over ``groups`` (each
        document's value of ``group_column``; :func:`auditor.heads.transfer.
        select_by_transfer`, small-data regime at ``transfer_labels`` per class; reuse
        ``transfer_results`` if given), falling back to cross-validation when fewer than
        two groups can be scored; the card's ``transfer`` entry says which and why.
    transfer_candidates, transfer_scales
        The representations (default: ``candidates``) and regularisation factors (default
        :data:`auditor.heads.transfer.C_SCALES`) the transfer evaluation compares; fewer
        bound its cost (each is refit once per held-out group and regime).

    Returns
    -------
    Head
        With a card: data counts, CV table (with the baseline), choice and threshold.
        A multilabel split gives a multilabel head: a
        :class:`~auditor.probes.MultiLabelProbe` of the chosen representation, each
        label's threshold maximising its F1 on out-of-fold probabilities, no calibration.

    Raises
    ------
    ConfigError
        Unknown candidate, too few labels, an unreachable threshold target; for a
        multilabel split, a label with only one value or a binary-only option
        (``positive_class``, ``target_precision``, ``target_recall``).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from auditor.explain import base_probe
    from auditor.heads.head import Head, HeadConfig, guarded_settings
    from auditor.probes import CalibratedProbe, choose_threshold, expected_calibration_error

    if candidate != "auto" and candidate not in CANDIDATES:
        raise ConfigError(f"unknown candidate {candidate!r}; choose auto or one of "
                          f"{', '.join(CANDIDATES)}", field="candidate")
    if split.multilabel:
        given = [k for k, v in (("positive_class", positive_class),
                                ("target_precision", target_precision),
                                ("target_recall", target_recall)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} is for binary heads; a multilabel head "
                              f"has per-label max-F1 thresholds", field=given[0])
    if cv_results is None:
        cv_results = cross_validate_candidates(
            split, candidates=tuple(candidates) if candidate == "auto" else (candidate,),
            folds=folds, random_state=random_state, stage=stage, cancel=cancel)
    selection = None
    if candidate == "auto" and select_by == "transfer":
        from auditor.heads.transfer import C_SCALES, select_by_transfer

        selection = select_by_transfer(split, groups,
                                       candidates=tuple(transfer_candidates or candidates),
                                       C_scales=tuple(transfer_scales or C_SCALES),
                                       cv=cv_results, group_column=group_column,
                                       n_labels=transfer_labels, seed=random_state,
                                       result=transfer_results, cancel=cancel)
    elif select_by not in ("cv", "transfer"):
        raise ConfigError(f"select_by must be cv or transfer, got {select_by!r}",
                          field="select_by")
    check_cancel(cancel, "fitting the head")
    chosen = CANDIDATES[best_candidate(cv_results) if candidate == "auto" else candidate]
    if selection is not None and selection.candidate is not None:
        chosen = selection.candidate
    # out-of-fold probabilities of CV are reusable only at the candidate's own regularisation
    reuse_oof = selection is None or selection.C_scale == 1.0
    if split.multilabel:
        head = _train_multilabel(name, split, chosen, cv_results, auto=candidate == "auto",
                                 folds=folds, random_state=random_state,
                                 description=description, sae_decoder=sae_decoder)
        if selection is not None:
            head.card["representation"]["chosen_by"] = selection.chosen_by
            head.card["transfer"] = selection.card
        return head
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
    plain = cv_results.get(chosen.name, {}).get("oof_proba") if reuse_oof else None
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
        decoder = _projection(base_probe(probe).feature_weights_, sae_decoder, split.metadata)
    config = HeadConfig(
        name=name, classes=[str(c) for c in probe.classes_],
        representation=chosen.representation, sae=_sae_key(split.metadata),
        pooling=chosen.pooling, feature_transform=chosen.feature_transform,
        positive_class=positive_class, threshold=threshold, threshold_rule=rule,
        extract=guarded_settings(split.metadata), description=description)
    card: dict[str, Any] = {
        "head": name,
        "representation": {"candidate": chosen.name, "description": chosen.description,
                           "chosen_by": selection.chosen_by if selection is not None
                           else "best cross-validated macro-F1" if candidate == "auto"
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
    if selection is not None:
        card["representation"]["regularisation"] = _regularisation(chosen, selection.C_scale)
        card["transfer"] = selection.card
    domain = _fit_domain(split, chosen, random_state)
    if domain is not None:
        card["domain"] = domain.summary()
    return Head(config, probe, card=card, decoder=decoder, domain=domain)


def _regularisation(candidate: Candidate, scale: float) -> dict[str, Any]:
    """The card's record of a candidate's regularisation (its factor and value)."""
    if candidate.model == "boosted":
        return {"C_scale": scale, "min_child_samples": candidate.min_child_samples}
    return {"C_scale": scale, "C": candidate.C}


def _train_multilabel(
    name: str, split: LabelledSplit, chosen: Candidate,
    cv_results: Mapping[str, Mapping[str, Any]], *, auto: bool, folds: int,
    random_state: int, description: str,
    sae_decoder: tuple[np.ndarray, np.ndarray, float] | None,
) -> Any:
    """:func:`train_head` for a multilabel split (after the representation is chosen)."""
    from sklearn.model_selection import cross_val_predict

    from auditor.explain import base_probe
    from auditor.heads.head import Head, HeadConfig, guarded_settings

    assert split.Y is not None and split.label_names is not None
    Y, names = split.Y, split.label_names
    X = split.X(chosen)
    oof = cv_results.get(chosen.name, {}).get("oof_proba")
    if oof is None:
        cv = _multilabel_folds(Y, names, folds, random_state)
        oof = cross_val_predict(_multilabel_probe(chosen, names, random_state), X, Y, cv=cv,
                                method="predict_proba")
    else:
        _check_label_values(Y, names, folds)
    thresholds = [_max_f1_threshold(Y[:, k] == 1, np.asarray(oof)[:, k])
                  for k in range(len(names))]
    rule = "max F1 per label on out-of-fold probabilities"
    probe = _multilabel_probe(chosen, names, random_state, thresholds).fit(X, Y)
    decoder = None
    if chosen.representation == "raw":
        weights = np.vstack([np.asarray(base_probe(e).feature_weights_)[:1]
                             for e in probe.estimators_])
        decoder = _projection(weights, sae_decoder, split.metadata)
    config = HeadConfig(
        name=name, classes=list(names), representation=chosen.representation,
        sae=_sae_key(split.metadata), pooling=chosen.pooling,
        feature_transform=chosen.feature_transform, threshold_rule=rule,
        extract=guarded_settings(split.metadata), description=description,
        multilabel=True, thresholds=thresholds)
    shown = ", ".join(f"{n} {t:.3f}" for n, t in zip(names, thresholds, strict=True))
    card = {
        "head": name,
        "representation": {"candidate": chosen.name, "description": chosen.description,
                           "chosen_by": "best cross-validated macro-F1" if auto else "given"},
        "training": {"documents": len(Y),
                     "labels": {n: int(c) for n, c in zip(names, Y.sum(axis=0), strict=True)},
                     "documents_without_labels": int((Y.sum(axis=1) == 0).sum()),
                     "multilabel": True, "multilabel_sep": split.label_sep,
                     "folds": folds, "cv": "shuffled KFold", "random_state": random_state},
        "cross_validation": {k: {m: v for m, v in r.items() if m != "oof_proba"}
                             for k, r in cv_results.items()},
        "threshold": {"values": dict(zip(names, thresholds, strict=True)), "rule": rule},
        "calibration": {"method": "none", "chosen_by": "rule for multilabel heads",
                        "reason": "multilabel heads are not calibrated: each label's "
                                  "threshold is chosen on out-of-fold probabilities of the "
                                  "uncalibrated per-label probes it is applied to, and "
                                  "held-out calibration would cost every label's probe "
                                  "part of its training data"},
        "provenance": split.metadata,
        # the Markdown card renders single-label fields; these lines state the rest
        "notes": [f"Multilabel head: a document carries every label whose probability is "
                  f"at least its threshold ({shown}; {rule}), possibly none.",
                  "Probabilities are each label's own probe's, not calibrated; the "
                  "cross-validation metrics are at threshold 0.5 (micro-F1 and per-label "
                  "F1 are in card.json)."],
    }
    domain = _fit_domain(split, chosen, random_state)
    if domain is not None:
        card["domain"] = domain.summary()
    return Head(config, probe, card=card, decoder=decoder, domain=domain)


def _fit_domain(split: LabelledSplit, chosen: Candidate, random_state: int) -> Any:
    """The head's out-of-domain model (:func:`auditor.heads.domain.fit_domain`) on the
    SAE pooling the head reads (``mean`` for raw heads), or None when the split lacks it."""
    from auditor.heads.domain import fit_domain

    pooling = chosen.pooling if chosen.representation == "sae" else "mean"
    X = split.sae.get(pooling)
    if X is None or X.shape[0] < 5:
        return None
    return fit_domain(X, list(split.y), pooling=pooling, random_state=random_state)


def _sae_key(metadata: Mapping[str, Any]) -> str | None:
    """The store's SAE key when it has exactly one."""
    keys = list(metadata.get("saes") or {})
    return keys[0] if len(keys) == 1 else None


def _projection(weights: np.ndarray, sae_decoder: tuple[np.ndarray, np.ndarray, float] | None,
                metadata: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A raw head's weights projected on the SAE decoder (loaded from provenance if None)."""
    from auditor.explain import decoder_projection

    W_dec, b_dec, scale = sae_decoder if sae_decoder is not None else _decoder_of(metadata)
    return decoder_projection(weights, W_dec, b_dec, input_scale=scale)


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
        raise ConfigError("set sae_decoder: the store does not name exactly one SAE",
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
