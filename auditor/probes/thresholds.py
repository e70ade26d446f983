"""Choosing a decision threshold that meets a precision or recall target."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from auditor.errors import ConfigError

__all__ = ["ThresholdChoice", "choose_threshold", "operating_points"]


class ThresholdChoice(NamedTuple):
    """A decision threshold (positive iff ``score >= threshold``) and its training rates."""

    threshold: float
    precision: float
    recall: float


def operating_points(
    y_true: Any, scores: Any, *, pos_label: Any = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of every distinct threshold ``score >= t``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels; ``pos_label`` marks the positive class.
    scores : array-like of shape (n_samples,)
        Higher means more positive.
    pos_label : object, default 1
        The positive label.

    Returns
    -------
    thresholds, precision, recall : ndarray
        One entry per distinct score, thresholds descending.

    Raises
    ------
    ConfigError
        Lengths differ, the inputs are empty, or no sample is positive.
    """
    y = np.asarray(y_true) == pos_label
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise ConfigError(
            f"y_true and scores must be non-empty and of equal length ({y.size} vs {s.size})"
        )
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores must be finite", field="scores")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ConfigError(f"y_true has no positive sample (pos_label={pos_label!r})",
                          field="y_true")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    n_pred = np.arange(1, s.size + 1)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each score
    return s[last], tp[last] / n_pred[last], tp[last] / n_pos


def choose_threshold(
    y_true: Any,
    scores: Any,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    pos_label: Any = 1,
) -> ThresholdChoice:
    """Pick the threshold meeting one target: precision ≥ p (max recall) or recall ≥ r.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    scores : array-like of shape (n_samples,)
        Scores or probabilities of the positive class; predicted positive iff
        ``score >= threshold``.
    target_precision : float or None
        Return the highest-recall threshold whose precision is at least this (ties: the
        higher precision, then the higher threshold).
    target_recall : float or None
        Return the highest-precision threshold whose recall is at least this (ties: the
        higher recall, then the higher threshold).
    pos_label : object, default 1
        The positive label.

    Returns
    -------
    ThresholdChoice
        ``threshold``, and the ``precision`` / ``recall`` it achieves on these data.

    Raises
    ------
    ConfigError
        Not exactly one target is given, a target is outside ``(0, 1]``, the inputs are
        invalid, or the target cannot be reached on these data.

    Examples
    --------
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], target_precision=1.0)
    ThresholdChoice(threshold=0.9, precision=1.0, recall=0.5)
    """
    if (target_precision is None) == (target_recall is None):
        raise ConfigError("give exactly one of target_precision and target_recall")
    name = "target_precision" if target_precision is not None else "target_recall"
    target = float(target_precision if target_precision is not None else target_recall)  # type: ignore[arg-type]
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], got {target}", field=name)
    thr, prec, rec = operating_points(y_true, scores, pos_label=pos_label)
    if target_precision is not None:
        ok = np.flatnonzero(prec >= target)
        if ok.size == 0:
            raise ConfigError(
                f"no threshold reaches precision {target:g} (best is {prec.max():.4g})",
                field=name,
            )
        # lexsort: last key is primary → recall, then precision, then threshold.
        best = ok[np.lexsort((thr[ok], prec[ok], rec[ok]))[-1]]
    else:
        ok = np.flatnonzero(rec >= target)
        best = ok[np.lexsort((thr[ok], rec[ok], prec[ok]))[-1]]  # recall 1 always exists
    return ThresholdChoice(float(thr[best]), float(prec[best]), float(rec[best]))
