"""Is an explanation faithful? Remove what it names and see whether the decision moves.

For each document, the ``k`` features that contribute most *towards* the predicted label
are zeroed and the document is re-scored; as a control, ``k`` features drawn at random from
those active in the document are zeroed instead (several draws, averaged). A faithful
explanation moves the predicted label's probability much more than the control does.

Zeroing a feature means: its pooled value is set to 0 (heads on SAE features), or its
reconstruction ``z̄_f · W_dec[f]`` is subtracted from the raw mean activation (heads on raw
activations, whose score is linear in it, so the score drops by exactly the feature's
contribution).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.explain.contributions import Contributions, base_probe

__all__ = ["faithfulness"]


def _supporting(contrib: Contributions, row: int, output: int, sign: float, k: int
                ) -> np.ndarray:
    m = contrib.values[output]
    cols = m.indices[m.indptr[row]:m.indptr[row + 1]]
    vals = m.data[m.indptr[row]:m.indptr[row + 1]] * sign
    keep = vals > 0
    order = np.argsort(-vals[keep], kind="stable")
    return np.asarray(cols[keep][order[:k]], dtype=np.int64)


def _rescore(head: Any, inputs: Any, contrib: Contributions, row: int,
             removals: list[np.ndarray]) -> np.ndarray:
    """Probabilities of one document with each feature set removed, ``[len(removals), C]``."""
    if head.config.representation == "sae":
        X = sp.csr_matrix(inputs.X[row])
        variants = []
        for feats in removals:
            v = X.copy().tolil()
            v[0, feats] = 0
            variants.append(v.tocsr())
        return np.asarray(head.probe.predict_proba(sp.vstack(variants).tocsr()))
    # raw heads are linear in the decomposition: each output's score drops by exactly
    # the removed features' contributions
    base = base_probe(head.probe)
    score = np.asarray(base.decision_function(inputs.X[row:row + 1]),
                       dtype=np.float64).reshape(1, -1)
    scores = np.repeat(score, len(removals), axis=0)
    for j, feats in enumerate(removals):
        for o, m in enumerate(contrib.values):
            scores[j, o] -= float(m[row, feats].sum()) if len(feats) else 0.0
    probe = head.probe
    if head.config.multilabel:  # one independent logistic output per label
        from scipy.special import expit

        return np.asarray(expit(scores))
    if hasattr(probe, "_calibrate"):
        p = probe._calibrate(scores)
    else:
        from scipy.special import expit, softmax

        p = expit(scores) if scores.shape[1] == 1 else softmax(scores, axis=1)
    if p.shape[1] == 1:
        return np.column_stack([1.0 - p[:, 0], p[:, 0]])
    total = p.sum(axis=1, keepdims=True)
    return np.asarray(p / np.where(total > 0, total, 1.0))


def faithfulness(head: Any, inputs: Any, *, k: int = 5, n_random: int = 10,
                 random_state: int = 0) -> dict[str, Any]:
    """Compare removing each decision's top-``k`` supporting features with removing ``k``
    random active ones.

    Parameters
    ----------
    head : auditor.heads.Head
    inputs : auditor.heads.HeadInputs
        The documents (``head.read(store)``).
    k : int, default 5
        Features removed per document.
    n_random : int, default 10
        Random draws per document for the control.
    random_state : int, default 0

    Returns
    -------
    dict
        ``k``, ``documents``, and for ``top_k`` and ``random_k``: ``mean_drop`` (mean fall
        of the predicted label's probability), ``flip_rate`` (share of documents whose label
        changes) and ``per_document`` drops; ``ratio`` = top-k mean drop / random mean drop.

    Raises
    ------
    ConfigError
        ``k`` or ``n_random`` is not positive.

    Notes
    -----
    Multilabel heads: each document's explained label (see
    :meth:`auditor.heads.Head.explained_labels`); a flip is that label crossing its
    threshold.
    """
    if k < 1 or n_random < 1:
        raise ConfigError("k and n_random must be positive", field="k")
    rng = np.random.default_rng(random_state)
    contrib = head.contributions(inputs)
    proba = head.predict_proba(inputs)
    multilabel = head.config.multilabel
    # the label each explanation is about (multilabel: its most probable present label)
    labels = head.explained_labels(proba) if multilabel else head.labels(proba).tolist()
    thresholds = head.config.label_thresholds() if multilabel else None
    classes = list(head.config.classes)
    acts = sp.csr_matrix(inputs.activations)
    top_drop, rand_drop, top_flip, rand_flip = [], [], [], []
    for i, label in enumerate(labels):
        c = classes.index(label)
        out = contrib.output_index(label)
        # binary: the single output is the positive class's score, so a negative prediction
        # is supported by negative contributions; multiclass / multilabel: the label's own
        sign = 1.0 if len(contrib.values) > 1 or contrib.outputs[0] == label else -1.0
        top = _supporting(contrib, i, out, sign, k)
        active = acts.indices[acts.indptr[i]:acts.indptr[i + 1]]
        draws = [rng.choice(active, size=min(k, len(active)), replace=False)
                 for _ in range(n_random)] if len(active) else [np.zeros(0, np.int64)]
        p = _rescore(head, inputs, contrib, i, [top, *draws])
        if thresholds is not None:  # a flip: the label's presence changes
            flips = (p[:, c] >= thresholds[c]) != (proba[i, c] >= thresholds[c])
        else:
            flips = head.labels(p) != label
        top_drop.append(proba[i, c] - p[0, c])
        top_flip.append(bool(flips[0]))
        rand_drop.append(float(np.mean(proba[i, c] - p[1:, c])))
        rand_flip.append(float(np.mean(flips[1:])))
    top_mean, rand_mean = float(np.mean(top_drop)), float(np.mean(rand_drop))
    return {
        "k": k, "documents": len(labels), "n_random": n_random,
        "top_k": {"mean_drop": top_mean, "flip_rate": float(np.mean(top_flip)),
                  "per_document": [float(v) for v in top_drop]},
        "random_k": {"mean_drop": rand_mean, "flip_rate": float(np.mean(rand_flip)),
                     "per_document": [float(v) for v in rand_drop]},
        "ratio": top_mean / rand_mean if abs(rand_mean) > 1e-12 else None,
    }
