"""What a head can be built on: the candidate representations (with the probe reading
each), a store's labelled split in all of them, and the TF-IDF text baseline.

Shared by :mod:`auditor.heads.build` (cross-validation, training) and
:mod:`auditor.heads.transfer` (leave one source out), which imports it without importing
the builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.errors import ConfigError

__all__ = ["CANDIDATES", "DEFAULT_CANDIDATES", "TFIDF", "Candidate", "LabelledSplit",
           "available_candidates", "tfidf_baseline"]


@dataclass(frozen=True)
class Candidate:
    """One way to represent documents (and the probe reading them) for a head."""

    name: str
    representation: str
    pooling: str
    feature_transform: str
    C: float
    description: str
    model: str = "linear"
    min_child_samples: int = 20

    def make(self, *, random_state: int = 0) -> Any:
        """An unfitted probe for this representation."""
        from auditor.probes import BoostedProbe, LinearProbe

        if self.model == "boosted":
            # one thread: measured ~18x faster than 2 when the cores are shared
            return BoostedProbe(n_jobs=1, random_state=random_state,
                                min_child_samples=self.min_child_samples)
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
    Candidate("sae-max-lgbm", "sae", "max", "none", 0.0,
              "SAE features, max-pooled, LightGBM on document-frequency-selected columns",
              model="boosted"),
)}

#: What ``candidate='auto'`` cross-validates by default: the linear candidates. LightGBM
#: (``sae-max-lgbm``) costs 3-4x the fit time of a linear probe per binary task (and one
#: tree set per class), so it is evaluated when asked for (``candidates=tuple(CANDIDATES)``).
DEFAULT_CANDIDATES: tuple[str, ...] = tuple(
    n for n, c in CANDIDATES.items() if c.model == "linear")

#: The name of the TF-IDF text baseline in metrics tables.
TFIDF = "tfidf"


@dataclass
class LabelledSplit:
    """The labelled documents of one store, in every representation.

    Parameters
    ----------
    doc_ids
        Labelled documents, in store order.
    y
        Each document's label (multilabel splits: an object array of label lists).
    sae
        Pooling → CSR SAE features of the documents.
    raw
        Mean raw activations, when the store has them.
    texts
        Texts for the TF-IDF baseline.
    metadata
        The store's provenance.
    Y
        Multilabel splits: the 0/1 indicator matrix ``[n_docs, n_labels]``.
    label_names
        Multilabel splits: the labels (``Y``'s columns), sorted.
    label_sep
        Multilabel splits: the separator label strings were split on.
    """

    doc_ids: list[str]
    y: np.ndarray
    sae: dict[str, Any]
    raw: np.ndarray | None
    texts: list[str] | None
    metadata: dict[str, Any]
    Y: np.ndarray | None = None
    label_names: list[str] | None = None
    label_sep: str | None = None

    @property
    def multilabel(self) -> bool:
        """Whether documents carry label sets (``Y``) rather than one label."""
        return self.Y is not None

    def X(self, candidate: Candidate) -> Any:
        """The matrix a candidate reads."""
        if candidate.representation == "raw":
            if self.raw is None:
                raise ConfigError("the store has no raw means (extract with raw_mean)",
                                  field="raw_mean")
            return self.raw
        return self.sae[candidate.pooling]


def tfidf_baseline(random_state: int = 0, *, multilabel: bool = False) -> Any:
    """The unfitted TF-IDF + logistic-regression text baseline (one-vs-rest when
    ``multilabel``) every representation is compared with."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    lr = LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced",
                            random_state=random_state)
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
        OneVsRestClassifier(lr) if multilabel else lr)


def available_candidates(split: LabelledSplit, names: Sequence[str]) -> list[Candidate]:
    """The candidates of ``names`` the split has the representation for (a store without
    raw means or without a pooling leaves the candidates reading them out)."""
    out = []
    for n in names:
        c = CANDIDATES[n]
        if c.representation == "raw" and split.raw is None:
            continue
        if c.representation == "sae" and c.pooling not in split.sae:
            continue
        out.append(c)
    return out
