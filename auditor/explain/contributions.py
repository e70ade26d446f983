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

Two kinds of evidence
---------------------
A contribution is *present* evidence when its feature fired in the document (activation
> 0) and *absent* evidence when it did not (activation 0, contribution nonzero): "this is
benign because the insult feature did *not* fire". :meth:`Contributions.evidence` returns
the two apart, so that an absence is never read as something the text contains.

Which probes produce absent evidence:

- LightGBM (TreeSHAP): any feature a tree splits on contributes whether or not it fired;
  a decision can rest mostly on absences.
- Linear probes on SAE features: an absent feature contributes exactly 0. The input is
  sparse and never centred, and ``log1p`` / ``binarize`` / scaling all keep 0 at 0, so
  ``coef × scaled(0) = 0``: what a zero feature "does" lives in the intercept (the bias),
  which is the score of a document where nothing fired. Only a dense, centred linear probe
  (``center=True``, used for raw activations) gives a zero feature ``−w·offset``, which is
  then reported as absent evidence.
- Raw-activation heads explained through the decoder (:mod:`auditor.explain.decompose`):
  ``z̄_f × (W_dec[f]·w)``, exactly 0 when the feature did not fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError

__all__ = ["Contributions", "Evidence", "FeatureContribution", "base_probe",
           "feature_contributions"]


class FeatureContribution(NamedTuple):
    """One feature's part in one decision.

    ``present``: the feature fired in the document (``activation > 0``); False for absent
    evidence. True when no activations were given to tell.
    """

    feature: int
    contribution: float
    activation: float
    present: bool = True


class Evidence(NamedTuple):
    """One decision's evidence in two kinds: features that fired, and features whose not
    firing contributed (each list largest ``|contribution|`` first)."""

    present: list[FeatureContribution]
    absent: list[FeatureContribution]


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
        sign: str = "both", kind: str = "all",
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
        kind : {'all', 'present', 'absent'}
            Every feature, only those that fired (activation > 0) or only those that did
            not (needs ``activations``).

        Returns
        -------
        list of FeatureContribution
        """
        if sign not in ("both", "positive", "negative"):
            raise ConfigError(f"sign must be both, positive or negative, got {sign!r}",
                              field="sign")
        if kind not in ("all", "present", "absent"):
            raise ConfigError(f"kind must be all, present or absent, got {kind!r}",
                              field="kind")
        if kind != "all" and activations is None:
            raise ConfigError("present / absent evidence needs the activations",
                              field="activations")
        m = self.values[output]
        start, end = m.indptr[row], m.indptr[row + 1]
        cols, vals = m.indices[start:end], m.data[start:end]
        acts = np.zeros(len(cols)) if activations is None else \
            _row_values(activations, row, cols)
        keep = vals > 0 if sign == "positive" else vals < 0 if sign == "negative" else vals != 0
        if kind == "present":
            keep &= acts > 0
        elif kind == "absent":
            keep &= acts == 0
        cols, vals, acts = cols[keep], vals[keep], acts[keep]
        key = -vals if sign == "positive" else vals if sign == "negative" else -np.abs(vals)
        order = np.argsort(key, kind="stable")[:k]
        fired = acts[order] > 0 if activations is not None else np.ones(len(order), bool)
        return [FeatureContribution(int(c), float(v), float(a), bool(f))
                for c, v, a, f in zip(cols[order], vals[order], acts[order], fired,
                                      strict=True)]

    def evidence(self, row: int, *, output: int = 0, k: int = 5, activations: Any
                 ) -> Evidence:
        """One decision's top-``k`` present and top-``k`` absent evidence, apart.

        Parameters
        ----------
        row, output
            As for :meth:`top`.
        k
            Features of each kind (so up to ``2k`` in all).
        activations
            ``[n_docs, n_features]`` pooled activations: a feature fired where its value
            is > 0.

        Returns
        -------
        Evidence
            ``present`` (fired) and ``absent`` (did not fire), each by ``|contribution|``.

        Examples
        --------
        >>> import scipy.sparse as sp
        >>> c = Contributions(outputs=["insult"], bias=np.zeros((1, 1)),
        ...                   values=[sp.csr_matrix(np.array([[0.5, -2.0, 0.0]]))])
        >>> ev = c.evidence(0, k=2, activations=sp.csr_matrix(np.array([[1.5, 0.0, 3.0]])))
        >>> [(f.feature, f.contribution) for f in ev.present]
        [(0, 0.5)]
        >>> [(f.feature, f.contribution, f.present) for f in ev.absent]
        [(1, -2.0, False)]
        """
        return Evidence(
            present=self.top(row, output=output, k=k, activations=activations,
                             kind="present"),
            absent=self.top(row, output=output, k=k, activations=activations,
                            kind="absent"))


def _row_values(matrix: Any, row: int, cols: np.ndarray) -> np.ndarray:
    """``matrix[row, cols]`` as a float array (CSR read through its index arrays)."""
    if sp.issparse(matrix):
        m = matrix if isinstance(matrix, sp.csr_matrix) else sp.csr_matrix(matrix)
        start, end = m.indptr[row], m.indptr[row + 1]
        idx, data = m.indices[start:end], m.data[start:end]
        if not m.has_sorted_indices:
            order = np.argsort(idx, kind="stable")
            idx, data = idx[order], data[order]
        pos = np.searchsorted(idx, cols)
        pos = np.minimum(pos, max(len(idx) - 1, 0))
        hit = (idx[pos] == cols) if len(idx) else np.zeros(len(cols), bool)
        return np.where(hit, data[pos] if len(idx) else 0.0, 0.0).astype(np.float64)
    return np.asarray(np.asarray(matrix)[row], dtype=np.float64)[cols]


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
