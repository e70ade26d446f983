"""Transfer: train without a source, score on it; choose a head's representation that way.

In-domain cross-validation rewards whatever separates the classes *in the training
corpus*, including its quirks (one source's formatting, another's vocabulary). Holding out
whole groups (the ``source`` each document came from, or its language) measures what a
user sees on text from elsewhere. :func:`transfer_evaluation` does leave-one-group-out
over the groups of a labelled split: for each held-out group it fits every candidate
representation (at several regularisation strengths) and the TF-IDF baseline on the other
groups, with all their labels and with at most ``n_labels`` per class, and scores the held
-out group. :func:`best_by_transfer` picks the representation and regularisation with the
best mean held-out score; :func:`select_by_transfer` is what :func:`train_head` calls
(falling back to cross-validation when fewer than two groups can be scored).

Scores per held-out group
-------------------------
* Documents whose class no other group is labelled with cannot be predicted; they are
  left out of the group's score and counted (``unseen``).
* A group with two or more (seen) classes: macro-F1 over the classes present in it
  (``metric = 'macro_f1'``); predictions of classes it does not have count as errors.
* A group with one (seen) class: accuracy, i.e. the recall of that class
  (``metric = 'accuracy'``). Its macro-F1 over its one class would be ``2r / (1 + r)``,
  a monotone function of the same recall; accuracy is reported because it reads directly.
  The mean over groups used for the choice mixes the two kinds; the table says which.
* Skipped, with a reason: fewer than ``min_group_docs`` documents, none of its classes
  labelled in the other groups, or the other groups having a single class.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    "C_SCALES",
    "TransferSelection",
    "best_by_transfer",
    "read_groups",
    "regularised",
    "select_by_transfer",
    "transfer_evaluation",
    "variant_name",
]

#: Regularisation variants tried per candidate: the candidate's C times each factor
#: (LightGBM: ``min_child_samples`` divided by it, see :func:`regularised`).
C_SCALES: tuple[float, ...] = (0.25, 1.0, 4.0)

#: LightGBM's default ``min_child_samples`` (the ×1 variant).
_MIN_CHILD = 20


def variant_name(candidate: str, scale: float) -> str:
    """The key of a candidate at a regularisation factor, e.g. ``sae-max-log1p@C×0.25``.

    Examples
    --------
    >>> variant_name("raw", 4.0), variant_name("raw", 1.0)
    ('raw@C×4', 'raw@C×1')
    """
    return f"{candidate}@C×{scale:g}"


def regularised(candidate: Candidate, scale: float) -> Candidate:
    """``candidate`` with its regularisation loosened (``scale > 1``) or tightened.

    Linear probes: ``C × scale``. LightGBM: ``min_child_samples = round(20 / scale)``
    (at least 2), the knob that most directly limits how specific a leaf may get.

    Examples
    --------
    >>> regularised(CANDIDATES["raw"], 4.0).C
    0.2
    >>> regularised(CANDIDATES["sae-max-lgbm"], 0.25).min_child_samples
    80
    """
    if scale <= 0:
        raise ConfigError(f"regularisation factors must be > 0, got {scale}",
                          field="C_scales")
    if candidate.model == "boosted":
        return dataclasses.replace(candidate,
                                   min_child_samples=max(2, round(_MIN_CHILD / scale)))
    return dataclasses.replace(candidate, C=candidate.C * scale)


def read_groups(store: str | Path, doc_ids: Sequence[str], column: str) -> np.ndarray | None:
    """Each document's group from a passthrough column of the store (None: no such column).

    Parameters
    ----------
    store
        The feature store the split was read from.
    doc_ids
        The split's documents (:attr:`LabelledSplit.doc_ids`).
    column
        The passthrough column (e.g. ``source``). Missing values become ``''``, a group
        of their own.

    Returns
    -------
    ndarray of str or None
        Aligned with ``doc_ids``; None when the store has no such column.
    """
    from auditor.store import read_features, read_metadata, scan_features

    if column not in scan_features(store).collect_schema().names():
        return None
    pools = [p for p in ("max", "mean") if p in (read_metadata(store).get("pooling") or [])]
    fm = read_features(store, pooling=pools[0] if pools else "max", columns=[column])
    assert fm.extra is not None
    group_of = dict(zip(fm.doc_ids, fm.extra[column].to_list(), strict=True))
    return np.array(["" if group_of.get(d) is None else str(group_of[d]) for d in doc_ids],
                    dtype=object)


def _make(candidate: Candidate, seed: int) -> Any:
    return candidate.make(random_state=seed)


def _per_class_cap(y: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted ``rows`` keeping at most ``n`` (seeded random) per class of ``y[rows]``."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in sorted(set(y[rows].tolist())):
        of_c = rows[y[rows] == c]
        keep.append(of_c if len(of_c) <= n else rng.choice(of_c, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def _score(y_true: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> float:
    """Macro-F1 over ``classes`` (two or more), else accuracy (see the module notes)."""
    from sklearn.metrics import f1_score

    if len(classes) >= 2:
        return float(f1_score(y_true, pred, labels=list(classes), average="macro",
                              zero_division=0))
    return float(np.mean(pred == y_true))


def transfer_evaluation(
    split: LabelledSplit, groups: Sequence[Any] | np.ndarray, *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES, n_labels: int | None = 200,
    C_scales: Sequence[float] = C_SCALES, seed: int = 0, min_group_docs: int = 20,
    baseline: bool = True, stage: Stage | None = None, cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Leave-one-group-out scores of every representation (see the module notes).

    Parameters
    ----------
    split
        A single-label split (:func:`~auditor.heads.load_split`).
    groups
        Each document's group (e.g. from :func:`read_groups`), aligned with ``split``.
    candidates
        The head's candidate pool; those the split has no representation for are left
        out. Each is fitted at every factor of ``C_scales`` (see :func:`regularised`).
    n_labels
        The small-data regime: at most this many training documents per class (seeded
        random); None scores all labels only.
    C_scales
        Regularisation factors.
    seed
        Seeds the subsample and the probes.
    min_group_docs
        A group with fewer documents is skipped.
    baseline
        Also score TF-IDF (at its own regularisation only), when the split has texts.
    stage, cancel
        Advanced once per held-out group (its total set to their number); checked
        before each representation of each group.

    Returns
    -------
    dict
        JSON-safe. ``group_column`` (None; set by callers), ``n_labels``, ``C_scales``,
        ``seed``, ``min_group_docs``; ``variants``: key → ``{"candidate", "C_scale"}``
        (TF-IDF is ``tfidf``); ``groups``: per group ``n``, ``classes`` (count per
        class), ``unseen`` (documents of classes no other group has), ``metric``
        (``macro_f1`` or ``accuracy``), ``n_scored``, ``all`` and ``few`` (variant →
        score; ``few`` None when ``n_labels`` is None), ``n_train`` / ``n_train_few``,
        ``seconds``; or ``skipped``: the reason; ``skipped``: group → reason; ``mean``:
        ``{"all": {variant: mean over scored groups}, "few": {...}}``; ``scored``: the
        scored groups; ``seconds``.

    Raises
    ------
    ConfigError
        A multilabel split, ``groups`` of the wrong length, no candidate the split has,
        an empty ``C_scales``, or ``n_labels < 1``.
    """
    if split.multilabel:
        raise ConfigError("transfer evaluation is for single-label splits", field="labels")
    g = np.asarray([str(v) for v in groups], dtype=object)
    y = split.y.astype(str)
    if len(g) != len(y):
        raise ConfigError(f"groups has {len(g)} values for {len(y)} documents",
                          field="groups")
    if not C_scales:
        raise ConfigError("give at least one regularisation factor", field="C_scales")
    if n_labels is not None and n_labels < 1:
        raise ConfigError(f"n_labels must be >= 1, got {n_labels}", field="n_labels")
    models: list[tuple[str, Callable[[int], Any], Any]] = []
    variants: dict[str, dict[str, Any]] = {}
    for c in available_candidates(split, candidates):
        for s in C_scales:
            key = variant_name(c.name, float(s))
            variants[key] = {"candidate": c.name, "C_scale": float(s)}
            models.append((key, functools.partial(_make, regularised(c, float(s))), split.X(c)))
    if not models:
        raise ConfigError(f"the split has none of the representations {list(candidates)}",
                          field="candidates")
    if baseline and split.texts is not None:
        variants[TFIDF] = {"candidate": TFIDF, "C_scale": 1.0}
        models.append((TFIDF, tfidf_baseline, np.array(split.texts, dtype=object)))

    names = sorted(set(g.tolist()))
    if stage is not None:
        stage.set_total(len(names))
    start = time.perf_counter()
    out_groups: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        t0 = time.perf_counter()
        held = g == name
        counts = collections.Counter(y[held].tolist())
        info: dict[str, Any] = {"n": int(held.sum()), "classes": dict(sorted(counts.items()))}
        train_rows = np.flatnonzero(~held)
        seen_classes = set(y[train_rows].tolist())
        seen = sorted(c for c in counts if c in seen_classes)
        reason = None
        if info["n"] < min_group_docs:
            reason = f"{info['n']} documents (< {min_group_docs})"
        elif len(seen_classes) < 2:
            reason = (f"the other groups are labelled with one class only "
                      f"({', '.join(sorted(seen_classes)) or 'none'})")
        elif not seen:
            reason = (f"none of its classes ({', '.join(sorted(counts))}) is labelled in "
                      f"the other groups")
        if reason is not None:
            skipped[name] = info["skipped"] = reason
            out_groups[name] = info
            if stage is not None:
                stage.advance(1)
            continue
        test_rows = np.flatnonzero(held & np.isin(y, seen))
        few_rows = (None if n_labels is None
                    else _per_class_cap(y, train_rows, n_labels, seed))
        same = few_rows is not None and len(few_rows) == len(train_rows)
        info.update({"unseen": {c: k for c, k in sorted(counts.items()) if c not in seen},
                     "metric": "macro_f1" if len(seen) >= 2 else "accuracy",
                     "n_scored": len(test_rows), "n_train": len(train_rows),
                     "n_train_few": None if few_rows is None else len(few_rows),
                     "all": {}, "few": None if few_rows is None else {}})
        for key, make, X in models:
            check_cancel(cancel, f"transfer to {name}: {key}")
            for regime, rows in (("all", train_rows), ("few", few_rows)):
                if rows is None:
                    continue
                if regime == "few" and same:
                    info["few"][key] = info["all"][key]
                    continue
                model = make(seed).fit(X[rows], y[rows])
                info[regime][key] = _score(y[test_rows], np.asarray(model.predict(
                    X[test_rows])).astype(str), seen)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        out_groups[name] = info
        if stage is not None:
            stage.advance(1)
    scored = [n for n in names if n not in skipped]
    mean: dict[str, dict[str, float] | None] = {"all": None, "few": None}
    for regime in ("all", "few"):
        if scored and (regime == "all" or n_labels is not None):
            mean[regime] = {k: float(np.mean([out_groups[n][regime][k] for n in scored]))
                            for k in variants}
    return {"group_column": None, "n_labels": n_labels,
            "C_scales": [float(s) for s in C_scales], "seed": seed,
            "min_group_docs": min_group_docs, "variants": variants, "groups": out_groups,
            "skipped": skipped, "scored": scored, "mean": mean,
            "seconds": round(time.perf_counter() - start, 2)}


def best_by_transfer(result: Mapping[str, Any],
                     cv: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[str, float]:
    """The candidate and regularisation factor with the best mean held-out score.

    Ties (at three decimals) go to the better in-domain cross-validated macro-F1 of the
    candidate (``cv``, when given), then to the factor nearest 1.

    Parameters
    ----------
    result
        From :func:`transfer_evaluation`.
    cv
        From :func:`~auditor.heads.cross_validate_candidates` on the same split.

    Returns
    -------
    (str, float)
        The :data:`~auditor.heads.CANDIDATES` key and its ``C_scale``.

    Raises
    ------
    ConfigError
        No group was scored, or no candidate (only the text baseline) was evaluated.
    """
    means = (result.get("mean") or {}).get("all")
    if not means:
        raise ConfigError("no held-out group was scored: nothing to choose by transfer",
                          field="groups")
    variants = result["variants"]
    keys = [k for k in means if variants[k]["candidate"] in CANDIDATES]
    if not keys:
        raise ConfigError("no candidate representation was evaluated", field="candidates")

    def rank(k: str) -> tuple[float, float, float]:
        v = variants[k]
        in_domain = ((cv or {}).get(v["candidate"]) or {}).get("macro_f1") or 0.0
        return (round(means[k], 3), round(in_domain, 3), -abs(math.log(v["C_scale"])))

    best = max(keys, key=rank)
    return variants[best]["candidate"], float(variants[best]["C_scale"])


@dataclass(frozen=True)
class TransferSelection:
    """What :func:`select_by_transfer` decided.

    Parameters
    ----------
    candidate
        The chosen representation, regularisation applied; None: choose by CV instead.
    C_scale
        Its regularisation factor (1.0 on fallback).
    chosen_by
        One line for the card.
    card
        The card's ``transfer`` entry: the evaluation (if one ran), ``chosen`` (candidate,
        ``C_scale``, variant, mean score) or ``fallback`` (the reason).
    """

    candidate: Candidate | None
    C_scale: float
    chosen_by: str
    card: dict[str, Any]


def select_by_transfer(
    split: LabelledSplit, groups: Sequence[Any] | np.ndarray | None, *,
    candidates: Sequence[str], cv: Mapping[str, Mapping[str, Any]],
    group_column: str | None = None, n_labels: int | None = 200,
    C_scales: Sequence[float] = C_SCALES, seed: int = 0, min_group_docs: int = 20,
    result: Mapping[str, Any] | None = None,
    stage: Stage | None = None, cancel: CancelToken | None = None,
) -> TransferSelection:
    """Choose a head's representation by transfer, or say why cross-validation decides.

    Transfer decides when at least two groups are scored; otherwise (no groups, one
    group, a multilabel split, or fewer than two groups scorable) the selection has
    ``candidate=None`` and the reason, and the caller keeps the CV choice.

    Parameters
    ----------
    split, groups, candidates, n_labels, C_scales, seed, min_group_docs, stage, cancel
        As for :func:`transfer_evaluation`.
    cv
        The split's cross-validation results (tie-break of :func:`best_by_transfer`).
    group_column
        The column the groups came from (recorded in the card).
    result
        A transfer evaluation already run with these settings (not recomputed).
    """
    def fallback(reason: str, card: Mapping[str, Any] | None = None) -> TransferSelection:
        return TransferSelection(
            None, 1.0, f"best cross-validated macro-F1 (not by transfer: {reason})",
            {**(card or {}), "group_column": group_column, "chosen": None,
             "fallback": reason})

    if split.multilabel:
        return fallback("transfer selection is for single-label heads")
    if groups is None:
        return fallback(f"the data has no {group_column or 'group'} column")
    distinct = sorted({str(v) for v in groups})
    if len(distinct) < 2:
        return fallback(f"one {group_column or 'group'} only ({', '.join(distinct)})")
    if result is None:
        result = transfer_evaluation(split, groups, candidates=candidates, n_labels=n_labels,
                                     C_scales=C_scales, seed=seed,
                                     min_group_docs=min_group_docs, stage=stage,
                                     cancel=cancel)
    card = {**result, "group_column": group_column}
    if len(result["scored"]) < 2:
        return fallback(f"{len(result['scored'])} of {len(distinct)} groups could be "
                        f"scored (see skipped)", card)
    name, scale = best_by_transfer(result, cv)
    key = variant_name(name, scale)
    chosen = {"candidate": name, "C_scale": scale, "variant": key,
              "mean": result["mean"]["all"][key]}
    return TransferSelection(
        regularised(CANDIDATES[name], scale), scale,
        f"best mean held-out macro-F1 leaving one {group_column or 'group'} out "
        f"({len(result['scored'])} groups), regularisation C×{scale:g}",
        {**card, "chosen": chosen, "fallback": None})
