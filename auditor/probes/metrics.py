"""Evaluation of probes: metrics, learning curves and cross-validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError

__all__ = [
    "SCALAR_METRICS",
    "cross_validate_probe",
    "evaluate_probe",
    "expected_calibration_error",
    "learning_curve",
]

#: Keys of :func:`evaluate_probe`'s result that are single numbers (None when undefined).
SCALAR_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "auroc", "pr_auc", "ece")


def expected_calibration_error(
    correct: Any, confidence: Any, *, n_bins: int = 15
) -> float:
    """Expected calibration error over equal-width confidence bins.

    ``ECE = sum_b (n_b / n) * |accuracy_b - mean confidence_b|`` with bins
    ``[0, 1/B], (1/B, 2/B], …, ((B-1)/B, 1]``.

    Parameters
    ----------
    correct : array-like of bool, shape (n_samples,)
        Whether each prediction is right.
    confidence : array-like of shape (n_samples,)
        Probability of the predicted class (the max probability).
    n_bins : int, default 15
        Number of bins.

    Returns
    -------
    float

    Examples
    --------
    >>> expected_calibration_error([True, False], [0.9, 0.9])
    0.4
    """
    ok = np.asarray(correct, dtype=np.float64).ravel()
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    if ok.size == 0:
        raise ConfigError("no samples to compute the calibration error on")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    acc = np.bincount(bins, weights=ok, minlength=n_bins)
    cf = np.bincount(bins, weights=conf, minlength=n_bins)
    return round(float(np.abs(acc - cf).sum() / ok.size), 12)


def _per_class(y: np.ndarray, proba: np.ndarray, k: int, fn: Callable[..., Any]) -> float | None:
    t = y == k
    if t.all() or not t.any():
        return None
    return float(fn(t, proba[:, k]))


def evaluate_probe(y_true: Any, proba: Any, classes: Sequence[Any] | np.ndarray) -> dict[str, Any]:
    """Standard metrics of predicted probabilities.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, each one of ``classes``.
    proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities, columns in ``classes`` order (e.g. ``predict_proba``).
    classes : sequence
        Class labels (e.g. ``probe.classes_``).

    Returns
    -------
    dict
        ``n``; ``accuracy``; ``macro_f1``; ``auroc`` (binary: of ``classes[1]``;
        multiclass: macro one-vs-rest over the classes present with both outcomes);
        ``pr_auc`` (average precision, same averaging); ``ece`` (15 equal-width bins of
        the max probability); ``confusion_matrix`` (rows: true, columns: predicted, in
        ``classes`` order, nested lists); ``support`` (true count per class, list);
        ``classes`` (as JSON-friendly values). ``auroc``/``pr_auc`` are None when
        undefined (a single class in ``y_true``).

    Raises
    ------
    ConfigError
        Shapes disagree or ``y_true`` holds a label not in ``classes``.
    """
    cls = np.asarray(classes)
    p = np.asarray(proba, dtype=np.float64)
    y_raw = np.asarray(y_true)
    if p.ndim != 2 or p.shape != (y_raw.shape[0], cls.size) or cls.size < 2:
        raise ConfigError(
            f"proba must be [n_samples, n_classes] = [{y_raw.shape[0]}, {cls.size}], "
            f"got {list(p.shape)}"
        )
    if y_raw.size == 0:
        raise ConfigError("no samples to evaluate")
    index = {c: i for i, c in enumerate(cls.tolist())}
    try:
        y = np.array([index[v] for v in y_raw.tolist()], dtype=np.int64)
    except KeyError as e:
        raise ConfigError(f"y_true holds a label not in classes: {e.args[0]!r}") from e
    pred = np.argmax(p, axis=1)
    K = cls.size
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    labels = list(range(K))
    if K == 2:
        auroc = _per_class(y, p, 1, roc_auc_score)
        pr_auc = _per_class(y, p, 1, average_precision_score)
    else:
        aucs = [a for k in labels if (a := _per_class(y, p, k, roc_auc_score)) is not None]
        aps = [a for k in labels if (a := _per_class(y, p, k, average_precision_score))
               is not None]
        auroc = float(np.mean(aucs)) if aucs else None
        pr_auc = float(np.mean(aps)) if aps else None
    return {
        "n": int(y.size),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "auroc": auroc,
        "pr_auc": pr_auc,
        "ece": expected_calibration_error(pred == y, p.max(axis=1)),
        "confusion_matrix": cm.tolist(),
        "support": np.bincount(y, minlength=K).tolist(),
        "classes": cls.tolist(),
    }


def _make(make_probe: Any) -> Any:
    return clone(make_probe) if hasattr(make_probe, "fit") else make_probe()


def _take(X: Any, idx: np.ndarray) -> Any:
    return X[idx]


_Summary = dict[str, float | None]


def _summarise(runs: list[dict[str, Any]]) -> tuple[_Summary, _Summary]:
    mean: _Summary = {}
    std: _Summary = {}
    for key in SCALAR_METRICS:
        vals = [r[key] for r in runs if r[key] is not None]
        mean[key] = float(np.mean(vals)) if vals else None
        std[key] = float(np.std(vals)) if vals else None
    return mean, std


def learning_curve(
    make_probe: Any,
    X: Any,
    y: Any,
    *,
    sizes: Sequence[int | None] = (50, 200, 1000, None),
    test: tuple[Any, Any] | None = None,
    folds: int = 5,
    random_state: int = 0,
    cancel: CancelToken | None = None,
) -> list[dict[str, Any]]:
    """Test metrics of a probe trained on stratified subsamples of growing size.

    Parameters
    ----------
    make_probe : callable or estimator
        Zero-argument factory of an unfitted probe, or an estimator to clone.
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sizes : sequence of int or None, default (50, 200, 1000, None)
        Training-set sizes; None (or a size ≥ the available training data, minus one
        sample per class) uses it all. Sizes are deduplicated after clipping.
    test : (X_test, y_test) or None, default None
        Held-out data. None runs stratified ``folds``-fold cross-validation and subsamples
        each training fold.
    folds : int, default 5
        Folds when ``test`` is None.
    random_state : int, default 0
        Seeds the folds and the subsamples.
    cancel : CancelToken or None, default None
        Checked before each fit; raises :class:`~auditor.errors.JobCancelled`.

    Returns
    -------
    list of dict
        One per size: ``n_train`` (training samples used; the mean over folds in
        cross-validation mode) and the scalar metrics of :func:`evaluate_probe` (means over
        folds, plus ``<metric>_std``, in cross-validation mode).

    Raises
    ------
    ConfigError
        A size is smaller than the number of classes.
    """
    y = np.asarray(y)
    if test is not None:
        splits = [(np.arange(len(y)), None)]
    else:
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
        splits = [(tr, te) for tr, te in skf.split(np.zeros(len(y)), y)]
    n_classes = np.unique(y).size
    results: list[dict[str, Any]] = []
    seen: set[int] = set()
    for size in sizes:
        avail = min(len(tr) for tr, _ in splits)
        n = avail if size is None else min(int(size), avail)
        if n in seen:
            continue
        seen.add(n)
        if n < n_classes:
            raise ConfigError(f"training size {n} is smaller than the number of classes",
                              field="sizes")
        runs = []
        used = []
        for i, (tr, te) in enumerate(splits):
            check_cancel(cancel, f"size {n}, fold {i + 1}")
            sub = tr
            if size is not None and len(tr) - n >= n_classes:
                sub, _ = train_test_split(tr, train_size=n, stratify=y[tr],
                                          random_state=random_state)
            used.append(len(sub))
            probe = _make(make_probe).fit(_take(X, np.sort(sub)), y[np.sort(sub)])
            if te is None:
                assert test is not None
                X_te, y_te = test
            else:
                X_te, y_te = _take(X, te), y[te]
            runs.append(evaluate_probe(y_te, probe.predict_proba(X_te), probe.classes_))
        mean, std = _summarise(runs)
        row: dict[str, Any] = {"n_train": round(float(np.mean(used))), **mean}
        if test is None:
            row.update({f"{k}_std": v for k, v in std.items()})
        results.append(row)
    return results


def cross_validate_probe(
    make_probe: Any, X: Any, y: Any, *, folds: int = 5, random_state: int = 0
) -> dict[str, Any]:
    """Stratified k-fold cross-validation of a probe.

    Parameters
    ----------
    make_probe : callable or estimator
        Zero-argument factory of an unfitted probe, or an estimator to clone.
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    folds : int, default 5
    random_state : int, default 0
        Seeds the fold assignment.

    Returns
    -------
    dict
        ``folds``; ``mean`` and ``std`` (dicts over the scalar metrics, None when
        undefined in every fold); ``per_fold`` (the :func:`evaluate_probe` results);
        ``confusion_matrix`` summed over folds.
    """
    y = np.asarray(y)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    runs = []
    classes: np.ndarray | None = None
    for tr, te in skf.split(np.zeros(len(y)), y):
        probe = _make(make_probe).fit(_take(X, tr), y[tr])
        classes = probe.classes_
        runs.append(evaluate_probe(y[te], probe.predict_proba(_take(X, te)), probe.classes_))
    mean, std = _summarise(runs)
    cm = np.sum([np.asarray(r["confusion_matrix"]) for r in runs], axis=0)
    return {
        "folds": folds,
        "mean": mean,
        "std": std,
        "per_fold": runs,
        "confusion_matrix": cm.tolist(),
        "classes": None if classes is None else np.asarray(classes).tolist(),
    }
