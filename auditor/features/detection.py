"""Label quality as a detection score: does a label's text predict where its feature fires?

A delphi-style detection test (Paulo et al., *Automatically Interpreting Millions of
Features in LLMs*, 2024) with a scorer that needs no model and no network:

1. **Split.** A feature's top contexts are split by rank: even ranks (0, 2, 4, …) are
   given to the labeller; odd ranks (1, 3, …) are held out as *positives*.
2. **Negatives.** Twice as many contexts as there are positives are drawn, without
   replacement, from the other features' top contexts (a context whose text is also
   one of the feature's own is never a negative). The draw for feature ``f`` uses
   ``numpy.random.default_rng([seed, f])``, so it does not depend on which other
   features are scored, nor on their order.
3. **Score.** Text is cut into lower-cased words (``\\w+``), the ``«»`` markers and ``…``
   removed, and :data:`STOP_WORDS` (English function words and label boilerplate such as
   "promotes") dropped. A context's score is the IDF-weighted share of the label's words
   that occur in it: ``sum(idf(w) for w in label ∩ context) / sum(idf(w) for w in
   label)``, with ``idf(w) = log((N + 1) / (df(w) + 1)) + 1`` over all ``N`` contexts of
   the pool (``weighting='uniform'`` counts every word once).
4. **Measure.** AUROC of the scores, positives against negatives (ties count one half),
   and balanced accuracy at the fixed threshold "score > 0" (some label word occurs),
   which needs no fitting.

A label with no scoring word (``"never fired"``, punctuation) scores 0 everywhere: AUROC
0.5, balanced accuracy 0.5. Features with fewer than ``min_contexts`` top contexts (by
default 4: two to label from, two held out) are skipped and counted, as are features for
which no negative can be drawn.

The score is a floor on what a reader can do with the label, not a semantic judgement: it
rewards labels whose words recur in the held-out contexts. It is the same function for the
automatic labels (:func:`score_dictionary` without a labeller), for the pre-issue-25 labels
(:func:`auditor.features.labels.legacy_label`) and for an LLM's
(:func:`auditor.features.labels.llm_labeller`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from auditor.errors import ConfigError
from auditor.features.stats import CONTEXT_CLOSE, CONTEXT_OPEN, ELLIPSIS

__all__ = [
    "GOOD_AUROC",
    "STOP_WORDS",
    "DetectionReport",
    "DetectionScore",
    "auroc",
    "auto_labeller",
    "detection_score",
    "distribution",
    "label_words",
    "score_dictionary",
    "score_labels",
]

#: AUROC at or above which a label counts as good in the summary's ``share_ge_0.7``.
GOOD_AUROC = 0.7

#: Words that never count: English function words and the boilerplate of auto labels.
STOP_WORDS: frozenset[str] = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself
yourselves s t d ll m re ve
promotes promote never fired feature features token tokens
""".split())

_WORD = re.compile(r"\w+", re.UNICODE)

#: A labeller: ``labeller(feature, contexts_to_label_from) -> label``.
Labeller = Callable[[int, Sequence[str]], str]


def label_words(text: str) -> list[str]:
    """The words a label or context is scored by.

    Lower-cased ``\\w+`` runs of the text with the context markers ``«»`` and ``…``
    removed, stop words (:data:`STOP_WORDS`) dropped, in order, repeats kept.

    Examples
    --------
    >>> label_words("money, cash — 'pay the money back' → promotes pay")
    ['money', 'cash', 'pay', 'money', 'back', 'pay']
    >>> label_words("… to pay «the» money")
    ['pay', 'money']
    """
    clean = text.replace(CONTEXT_OPEN, " ").replace(CONTEXT_CLOSE, " ").replace(ELLIPSIS, " ")
    return [w for w in _WORD.findall(clean.casefold()) if w not in STOP_WORDS]


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties one half.

    Examples
    --------
    >>> auroc([0.9, 0.8], [0.1, 0.8])
    0.875
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ConfigError("AUROC needs positives and negatives", field="contexts")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def detection_score(
    label: str,
    positives: Sequence[str],
    negatives: Sequence[str],
    *,
    idf: Mapping[str, float] | None = None,
) -> tuple[float, float]:
    """AUROC and balanced accuracy of one label on positive and negative contexts.

    Parameters
    ----------
    label : str
        The label text.
    positives, negatives : sequence of str
        Contexts where the feature fires (held out from the labeller) and where it does
        not (other features' top contexts).
    idf : mapping, optional
        Word weights; ``None``: every word weighs 1.

    Returns
    -------
    auroc : float
        See :func:`auroc`.
    balanced_accuracy : float
        Mean of the true-positive and true-negative rates at "score > 0".

    Examples
    --------
    >>> detection_score("zebra", ["a «zebra» ran", "two zebra«s»"], ["a cat", "the dog"])
    (1.0, 1.0)
    """
    words = set(label_words(label))
    weight = {w: (idf.get(w, 1.0) if idf is not None else 1.0) for w in words}
    total = sum(weight.values())

    def score(text: str) -> float:
        if total <= 0:
            return 0.0
        present = words.intersection(label_words(text))
        return sum(weight[w] for w in present) / total

    pos = [score(t) for t in positives]
    neg = [score(t) for t in negatives]
    tpr = float(np.mean([s > 0 for s in pos]))
    tnr = float(np.mean([s <= 0 for s in neg]))
    return auroc(pos, neg), (tpr + tnr) / 2


@dataclass(frozen=True)
class DetectionScore:
    """One feature's detection score.

    Attributes
    ----------
    feature : int
    label : str
        The label scored (built from the even-ranked contexts, or given).
    auroc, balanced_accuracy : float
    n_positive, n_negative : int
        Held-out positives and drawn negatives.
    """

    feature: int
    label: str
    auroc: float
    balanced_accuracy: float
    n_positive: int
    n_negative: int


@dataclass
class DetectionReport:
    """Per-feature detection scores and what was skipped.

    Attributes
    ----------
    scores : list of DetectionScore
        Scored features, in feature order.
    skipped_few_contexts : int
        Features with at least one but fewer than ``min_contexts`` top contexts.
    skipped_no_negatives : int
        Features for which no other feature's context could be drawn.
    no_contexts : int
        Features without any top context (never fired), when the caller knows them.
    settings : dict
        ``seed``, ``min_contexts``, ``negatives_per_positive``, ``weighting``.
    """

    scores: list[DetectionScore] = field(default_factory=list)
    skipped_few_contexts: int = 0
    skipped_no_negatives: int = 0
    no_contexts: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def by_feature(self) -> dict[int, DetectionScore]:
        """Scores keyed by feature."""
        return {s.feature: s for s in self.scores}

    def summary(self) -> dict[str, Any]:
        """The distribution, JSON-able: what a dictionary's manifest records.

        Returns
        -------
        dict
            ``method``, ``scored``, ``skipped`` (``few_contexts``, ``no_negatives``,
            ``no_contexts``), ``auroc`` and ``balanced_accuracy`` (each from
            :func:`distribution`) and the settings.
        """
        return {
            "method": "detection: held-out odd-ranked top contexts vs 2x other features' "
                      "contexts, IDF-weighted label-word overlap (auditor.features.detection)",
            "scored": len(self.scores),
            "skipped": {"few_contexts": self.skipped_few_contexts,
                        "no_negatives": self.skipped_no_negatives,
                        "no_contexts": self.no_contexts},
            "auroc": distribution([s.auroc for s in self.scores]),
            "balanced_accuracy": distribution([s.balanced_accuracy for s in self.scores]),
            **self.settings,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the summary and every score."""
        return {"summary": self.summary(), "scores": [asdict(s) for s in self.scores]}


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """``n``, ``mean``, ``p25``, ``p50``, ``p75`` and ``share_ge_0.7`` of scores.

    Values are rounded to 4 decimals; all but ``n`` are ``None`` when there are none.

    Examples
    --------
    >>> distribution([0.5, 0.7, 0.9, 1.0])["share_ge_0.7"]
    0.75
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "mean": None, "p25": None, "p50": None, "p75": None,
                "share_ge_0.7": None}
    q = np.quantile(arr, [0.25, 0.5, 0.75])
    return {"n": int(arr.size), "mean": round(float(arr.mean()), 4),
            "p25": round(float(q[0]), 4), "p50": round(float(q[1]), 4),
            "p75": round(float(q[2]), 4),
            "share_ge_0.7": round(float((arr >= GOOD_AUROC - 1e-12).mean()), 4)}


def score_labels(
    contexts: Mapping[int, Sequence[str]],
    labels: Mapping[int, str] | Labeller,
    *,
    seed: int = 0,
    min_contexts: int = 4,
    negatives_per_positive: int = 2,
    weighting: Literal["idf", "uniform"] = "idf",
    n_features: int | None = None,
) -> DetectionReport:
    """Detection scores of the labels of many features.

    Parameters
    ----------
    contexts : mapping of int to sequence of str
        Each feature's top contexts, best first (texts; the firing token may be marked
        ``«…»``). Every feature's contexts are also the pool negatives are drawn from.
    labels : mapping or callable
        ``{feature: label}`` given as is, or ``labeller(feature, even_ranked_contexts)``
        called once per scored feature with the contexts of ranks 0, 2, 4, ….
    seed : int, default 0
        Seed of the negative draws.
    min_contexts : int, default 4
        Features with fewer top contexts are skipped (at least 2).
    negatives_per_positive : int, default 2
        Negatives drawn per held-out positive.
    weighting : {'idf', 'uniform'}, default 'idf'
        How label words are weighted (see the module docstring).
    n_features : int, optional
        The dictionary's size: features in ``0 … n_features - 1`` without contexts are
        counted as ``no_contexts``.

    Returns
    -------
    DetectionReport

    Raises
    ------
    ConfigError
        ``min_contexts < 2``, ``negatives_per_positive < 1`` or an unknown weighting; a
        mapping of labels that lacks a scored feature.
    """
    if isinstance(min_contexts, bool) or not isinstance(min_contexts, int) or min_contexts < 2:
        raise ConfigError(f"min_contexts must be an integer >= 2, got {min_contexts!r}",
                          field="min_contexts")
    if isinstance(negatives_per_positive, bool) or not isinstance(
            negatives_per_positive, int) or negatives_per_positive < 1:
        raise ConfigError("negatives_per_positive must be an integer >= 1, got "
                          f"{negatives_per_positive!r}", field="negatives_per_positive")
    if weighting not in ("idf", "uniform"):
        raise ConfigError(f"weighting must be 'idf' or 'uniform', got {weighting!r}",
                          field="weighting")
    owners = np.asarray([f for f in sorted(contexts) for _ in contexts[f]], dtype=np.int64)
    pool = [str(t) for f in sorted(contexts) for t in contexts[f]]
    idf: dict[str, float] | None = None
    if weighting == "idf":
        df: Counter[str] = Counter()
        for text in pool:
            df.update(set(label_words(text)))
        idf = {w: math.log((len(pool) + 1) / (c + 1)) + 1 for w, c in df.items()}
    report = DetectionReport(settings={"seed": seed, "min_contexts": min_contexts,
                                       "negatives_per_positive": negatives_per_positive,
                                       "weighting": weighting})
    if n_features is not None:
        report.no_contexts = sum(1 for f in range(n_features) if not contexts.get(f))
    for f in sorted(contexts):
        texts = [str(t) for t in contexts[f]]
        if not texts:
            continue
        if len(texts) < min_contexts:
            report.skipped_few_contexts += 1
            continue
        building, positives = texts[0::2], texts[1::2]
        negatives = _negatives(pool, owners, feature=f, own=set(texts),
                               n=negatives_per_positive * len(positives), seed=seed)
        if not negatives:
            report.skipped_no_negatives += 1
            continue
        if callable(labels):
            label = str(labels(f, building))
        elif f in labels:
            label = str(labels[f])
        else:
            raise ConfigError(f"no label for feature {f}", field="labels")
        auc, bacc = detection_score(label, positives, negatives, idf=idf)
        report.scores.append(DetectionScore(feature=f, label=label, auroc=round(auc, 6),
                                            balanced_accuracy=round(bacc, 6),
                                            n_positive=len(positives),
                                            n_negative=len(negatives)))
    return report


def _negatives(pool: Sequence[str], owners: np.ndarray, *, feature: int, own: set[str],
               n: int, seed: int) -> list[str]:
    """``n`` contexts of other features (fewer if the pool is short), seeded per feature."""
    rng = np.random.default_rng([seed, feature])
    size = len(pool)
    if size == 0:
        return []
    if size > 64 * n:  # large pool: rejection sampling, as a feature owns a tiny share
        out: list[str] = []
        taken: set[int] = set()
        for _ in range(16):
            for i in rng.choice(size, size=min(size, 2 * n), replace=False).tolist():
                if i in taken or owners[i] == feature or pool[i] in own:
                    continue
                taken.add(i)
                out.append(pool[i])
                if len(out) == n:
                    return out
        rng = np.random.default_rng([seed, feature])  # hardly any eligible: draw exactly
    eligible = np.flatnonzero(owners != feature)
    eligible = np.asarray([i for i in eligible.tolist() if pool[i] not in own], dtype=np.int64)
    if eligible.size == 0:
        return []
    picked = rng.choice(eligible, size=min(n, eligible.size), replace=False)
    return [pool[int(i)] for i in picked]


def auto_labeller(promoted: Mapping[int, Sequence[str]] | None = None, *,
                  lens: Literal["coherent", "always", "never"] = "coherent",
                  legacy: bool = False) -> Labeller:
    """The automatic label as a labeller: built from the contexts it is given.

    Parameters
    ----------
    promoted : mapping of int to sequence of str, optional
        Each feature's promoted logit-lens tokens (none: no lens part).
    lens : {'coherent', 'always', 'never'}, default 'coherent'
        Passed to :func:`auditor.features.labels.auto_label`.
    legacy : bool, default False
        Build :func:`auditor.features.labels.legacy_label` instead (tokens, lens always).

    Returns
    -------
    callable
        ``labeller(feature, contexts) -> label``, the firing tokens read from the ``«…»``
        marks of the contexts.
    """
    from auditor.features.labels import auto_label, legacy_label

    def labeller(feature: int, texts: Sequence[str]) -> str:
        tokens = [_firing_token(t) for t in texts]
        lens_tokens = list((promoted or {}).get(feature, []) or [])
        if legacy:
            return legacy_label(tokens, lens_tokens)
        return auto_label(tokens, lens_tokens, contexts=texts, lens=lens)

    return labeller


def _firing_token(text: str) -> str:
    start = text.find(CONTEXT_OPEN)
    end = text.find(CONTEXT_CLOSE, start + 1)
    return text[start + 1:end] if start >= 0 and end >= 0 else ""


def score_dictionary(
    dictionary_dir: str | Path,
    *,
    labeller: Callable[[int, Sequence[str], Sequence[str]], str] | None = None,
    labels: Mapping[int, str] | None = None,
    seed: int = 0,
    min_contexts: int = 4,
    weighting: Literal["idf", "uniform"] = "idf",
) -> DetectionReport:
    """Detection scores of a dictionary's features, for its automatic labels or others.

    Parameters
    ----------
    dictionary_dir : str or Path
        A feature dictionary.
    labeller : callable, optional
        ``labeller(feature, even_ranked_contexts, promoted) -> str``, e.g.
        :func:`auditor.features.labels.llm_labeller`; default: the automatic label
        (:func:`auto_labeller`) built from the even-ranked contexts.
    labels : mapping, optional
        Fixed labels to score instead (e.g. a user's overrides). Note that a label built
        from all the top contexts has seen the held-out ones.
    seed, min_contexts, weighting
        See :func:`score_labels`.

    Returns
    -------
    DetectionReport

    Raises
    ------
    ConfigError
        Both ``labeller`` and ``labels`` given, or a bad setting.
    StoreError
        No dictionary there.
    """
    from auditor.features.files import load_contexts, load_feature_table

    if labeller is not None and labels is not None:
        raise ConfigError("give a labeller or labels, not both", field="labels")
    frame = load_feature_table(dictionary_dir)
    promoted = {int(f): list(p or []) for f, p in
                zip(frame["feature"].to_list(), frame["promoted"].to_list(), strict=True)}
    ctx = load_contexts(dictionary_dir).sort("feature", "rank")
    by_feature: dict[int, list[str]] = {}
    for f, text in zip(ctx["feature"].to_list(), ctx["text"].to_list(), strict=True):
        by_feature.setdefault(int(f), []).append(str(text))
    chosen: Mapping[int, str] | Labeller
    if labels is not None:
        chosen = labels
    elif labeller is not None:
        outer = labeller

        def chosen(feature: int, texts: Sequence[str]) -> str:
            return outer(feature, texts, promoted.get(feature, []))
    else:
        chosen = auto_labeller(promoted)
    return score_labels(by_feature, chosen, seed=seed, min_contexts=min_contexts,
                        weighting=weighting, n_features=frame.height)
