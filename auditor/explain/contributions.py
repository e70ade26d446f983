"""Per-feature contributions of any probe, in one shape, and their top features per document.

Probes explain themselves differently: :class:`~auditor.probes.LinearProbe` gives
coefficient × scaled value, :class:`~auditor.probes.BoostedProbe` gives LightGBM TreeSHAP
(``pred_contrib``, sparse and per class), :class:`~auditor.probes.CalibratedProbe` wraps
either. :func:`feature_contributions` turns all of them into a :class:`Contributions`:
one ``[n_docs, n_features]`` CSR per explained output plus a bias, such that
``values[k].sum(1) + bias[:, k]`` is the base probe's score (logit / raw score) of output
``k``. Binary probes have one output (the positive class); multiclass probes one per class.

Calibration is a monotone map of that score, so the contributions explain the ranking of a
calibrated probe exactly and its probability up to the calibrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError

__all__ = ["Contributions", "FeatureContribution", "base_probe", "feature_contributions"]


class FeatureContribution(NamedTuple):
    """One feature's part in one decision."""

    feature: int
    contribution: float
    activation: float


@dataclass
class Contributions:
    """Additive per-feature contributions to a probe's score(s).

    Parameters
    ----------
    outputs : list
        The class each output explains: ``[positive_class]`` (binary), every class
        (multiclass) or every label (multilabel).
    values : list of scipy.sparse.csr_matrix
        Per output, ``[n_docs, n_features]`` contributions.
    bias : ndarray of shape (n_docs, n_outputs)
        What the features do not account for: the intercept (linear) or expected value
        (TreeSHAP), plus any explicitly separated terms (see ``residual``).
    residual : ndarray of shape (n_docs, n_outputs) or None
        For decompositions that are approximate (raw-activation heads explained through
        the SAE), the part of the score the features' reconstruction misses; included in
        neither ``values`` nor ``bias``.
    """

    outputs: list[Any]
    values: list[sp.csr_matrix]
    bias: np.ndarray
    residual: np.ndarray | None = None

    def output_index(self, label: Any) -> int:
        """Index of the output explaining ``label`` (binary: the negative class maps to
        the positive output, whose contributions then count against it)."""
        for k, out in enumerate(self.outputs):
            if out == label:
                return k
        if len(self.outputs) == 1:
            return 0
        raise ConfigError(f"no output explains class {label!r}; outputs: {self.outputs}",
                          field="label")

    def score(self) -> np.ndarray:
        """``[n_docs, n_outputs]``: features + bias (+ residual) = the base score."""
        s = np.column_stack([np.asarray(v.sum(axis=1)).ravel() for v in self.values])
        s = s + self.bias
        return s if self.residual is None else s + self.residual

    def coverage(self) -> np.ndarray:
        """Per document and output, the share of the score's feature-dependent part that
        the features account for: ``|Σ features| / (|Σ features| + |residual|)`` (1.0 for
        exact decompositions)."""
        feats = np.column_stack([np.asarray(v.sum(axis=1)).ravel() for v in self.values])
        if self.residual is None:
            return np.ones_like(feats)
        denom = np.abs(feats) + np.abs(self.residual)
        return np.divide(np.abs(feats), denom, out=np.ones_like(feats), where=denom > 0)

    def top(
        self, row: int, *, output: int = 0, k: int = 5, activations: Any = None,
        sign: str = "both",
    ) -> list[FeatureContribution]:
        """The ``k`` largest contributions of one document to one output.

        Parameters
        ----------
        row
            Document row.
        output
            Output index (see :meth:`output_index`).
        k
            How many features.
        activations
            ``[n_docs, n_features]`` matrix whose value is reported as each feature's
            activation (e.g. the pooled SAE features); zeros when None.
        sign : {'both', 'positive', 'negative'}
            Largest ``|contribution|``, largest positive, or most negative.

        Returns
        -------
        list of FeatureContribution
        """
        m = self.values[output]
        start, end = m.indptr[row], m.indptr[row + 1]
        cols, vals = m.indices[start:end], m.data[start:end]
        if sign == "positive":
            keep = vals > 0
            order = np.argsort(-vals[keep], kind="stable")
        elif sign == "negative":
            keep = vals < 0
            order = np.argsort(vals[keep], kind="stable")
        elif sign == "both":
            keep = vals != 0
            order = np.argsort(-np.abs(vals[keep]), kind="stable")
        else:
            raise ConfigError(f"sign must be both, positive or negative, got {sign!r}",
                              field="sign")
        cols, vals = cols[keep][order[:k]], vals[keep][order[:k]]
        acts = np.zeros(len(cols))
        if activations is not None:
            arow = sp.csr_matrix(activations[row]) if sp.issparse(activations) else None
            acts = (np.asarray(arow[:, cols].toarray()).ravel() if arow is not None
                    else np.asarray(activations[row])[cols])
        return [FeatureContribution(int(c), float(v), float(a))
                for c, v, a in zip(cols, vals, acts, strict=True)]


def base_probe(probe: Any) -> Any:
    """The probe whose scores are explained (the estimator inside a CalibratedProbe)."""
    from auditor.probes import CalibratedProbe

    return probe.estimator_ if isinstance(probe, CalibratedProbe) else probe


def _as_list(values: Any) -> list[sp.csr_matrix]:
    return [sp.csr_matrix(v) for v in values] if isinstance(values, list) \
        else [sp.csr_matrix(values)]


def feature_contributions(probe: Any, X: Any) -> Contributions:
    """Normalise a fitted probe's per-feature contributions on ``X``.

    Parameters
    ----------
    probe : LinearProbe, BoostedProbe or CalibratedProbe
        A fitted probe (a calibrated one is explained through its base estimator).
    X : {array-like, sparse matrix} of shape (n_docs, n_features)
        The probe's input.

    Returns
    -------
    Contributions
        Exact: ``score()`` equals the base probe's ``decision_function`` (column per
        output).

    Raises
    ------
    ConfigError
        The probe cannot attribute its score to features (e.g. a RuleProbe: its rule is
        its explanation).
    """
    base = base_probe(probe)
    if not hasattr(base, "contributions"):
        raise ConfigError(f"{type(base).__name__} has no per-feature contributions; its "
                          f"decision is explained by its rule", field="probe")
    values, bias = base.contributions(X, with_bias=True)
    mats = _as_list(values)
    bias = np.asarray(bias, dtype=np.float64).reshape(len(mats[0].indptr) - 1, len(mats))
    # multilabel probes explain each label (named by ``labels_``); binary ones the positive
    # class; multiclass ones every class
    classes = list(getattr(base, "labels_", base.classes_))
    outputs = [classes[1]] if len(mats) == 1 and len(classes) == 2 else classes
    for m in mats:
        m.sort_indices()
    return Contributions(outputs=outputs, values=mats, bias=bias)
