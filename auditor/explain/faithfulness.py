"""Is an explanation faithful? Change what it names and see whether the decision moves.

An explanation names two kinds of evidence (see :mod:`auditor.explain.contributions`), and
each is tested by the intervention that undoes it:

- *present* evidence (features that fired and support the predicted label): the top-``k``
  are **zeroed** and the document re-scored;
- *absent* evidence (features whose not firing supports the label): the top-``k`` are
  **set to a typical firing value** and the document re-scored. The typical value is the
  feature's median nonzero activation from the feature dictionary when one is given
  (``p50``: a per-token median, so for max-pooled heads a modest value), else the median of
  its nonzero pooled activations in the documents being explained; a feature with neither
  (it never fires in them and there is no dictionary) cannot be tested and is skipped.

Each intervention has a control: ``k`` random features *of the same kind* (fired in the
document / did not fire in it and have a typical value), not among those named, drawn one
per named feature from features whose document density (share of the explained documents
where it fires) is within a factor 2 of that feature's (widened ×2 at a time while no
candidate is left), over ``n_random`` draws per document.

The effect is the drop of the explained label's probability, ``p(label) − p'(label)``
(positive: the change weakened the decision). Per kind, over the documents that have such
evidence: the mean drop with a seeded percentile-bootstrap 95 % interval, the decision flip
rate, the same for the control, and the paired difference (named − control) with its own
interval. A ratio of two means near zero is not reported: it is unstable and its sign
says nothing.

Changing a feature means: its pooled value is set (heads on SAE features), or for heads on
raw activations, whose score is linear in the decoded features, each output's score moves
by ``(new − old value) × (W_dec[f]·w)`` — exactly the feature's contribution for a zeroing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.explain.contributions import Contributions, base_probe

__all__ = ["FROM_DATA", "FROM_DICTIONARY", "bootstrap_mean", "data_typical_values",
           "faithfulness"]

#: How the typical firing value of a feature was chosen.
FROM_DICTIONARY = "dictionary p50 (median nonzero per-token activation)"
FROM_DATA = "median nonzero pooled activation in the explained documents"


def bootstrap_mean(values: Any, *, n_boot: int = 2000, confidence: float = 0.95,
                   random_state: int = 0) -> dict[str, float | None]:
    """Mean and percentile-bootstrap confidence interval of a sample.

    Parameters
    ----------
    values : array-like of float
    n_boot : int, default 2000
        Resamples.
    confidence : float, default 0.95
    random_state : int, default 0

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` (None for an empty sample).

    Examples
    --------
    >>> r = bootstrap_mean([1.0, 1.0, 1.0])
    >>> (r["mean"], r["low"], r["high"])
    (1.0, 1.0, 1.0)
    >>> bootstrap_mean([])["mean"] is None
    True
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if len(x) == 0:
        return {"mean": None, "low": None, "high": None}
    rng = np.random.default_rng(random_state)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {"mean": float(x.mean()), "low": float(low), "high": float(high)}


def data_typical_values(activations: Any) -> np.ndarray:
    """Each feature's median nonzero activation over the rows (NaN where it never fires).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> data_typical_values(sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])))
    array([ 2., nan])
    """
    A = sp.csc_matrix(activations, dtype=np.float64)
    A.eliminate_zeros()
    out = np.full(A.shape[1], np.nan)
    for f in np.flatnonzero(np.diff(A.indptr)):
        vals = A.data[A.indptr[f]:A.indptr[f + 1]]
        vals = vals[vals > 0]
        if len(vals):
            out[f] = float(np.median(vals))
    return out


def _supporting(contrib: Contributions, row: int, output: int, sign: float, acts: Any,
                *, present: bool, k: int) -> np.ndarray:
    """The top-``k`` features of one kind supporting the label (largest signed part)."""
    m = contrib.values[output]
    cols = m.indices[m.indptr[row]:m.indptr[row + 1]]
    vals = m.data[m.indptr[row]:m.indptr[row + 1]] * sign
    fired = np.isin(cols, acts.indices[acts.indptr[row]:acts.indptr[row + 1]][
        acts.data[acts.indptr[row]:acts.indptr[row + 1]] > 0])
    keep = (vals > 0) & (fired if present else ~fired)
    order = np.argsort(-vals[keep], kind="stable")
    return np.asarray(cols[keep][order[:k]], dtype=np.int64)


def _controls(chosen: np.ndarray, pool: np.ndarray, density: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """One feature from ``pool`` per chosen feature, of density within a factor 2 (widened
    while none is left), without repeats."""
    left = np.setdiff1d(pool, chosen)
    picked: list[int] = []
    for f in chosen:
        if len(left) == 0:
            break
        d = density[f]
        dens = density[left]
        factor = 2.0
        while True:
            band = (dens == 0) if d == 0 and factor <= 2.0 else \
                (dens >= d / factor) & (dens <= d * factor)
            if band.any() or factor > 64:
                break
            factor *= 2.0
        cands = left[band] if band.any() else left
        g = int(rng.choice(cands))
        picked.append(g)
        left = left[left != g]
    return np.asarray(picked, dtype=np.int64)


def _rescore(head: Any, inputs: Any, row: int,
             changes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Probabilities of one document with each change applied, ``[len(changes), C]``.

    A change is ``(features, new pooled values)``.
    """
    acts = sp.csr_matrix(inputs.activations[row])
    if head.config.representation == "sae":
        base = np.asarray(sp.csr_matrix(inputs.X[row]).toarray(), dtype=np.float64).ravel()
        variants = np.repeat(base[None, :], len(changes), axis=0)
        for j, (feats, values) in enumerate(changes):
            variants[j, feats] = values
        return np.asarray(head.probe.predict_proba(sp.csr_matrix(variants)))
    # raw heads are linear in the decoded features: each output's score moves by
    # (new - old) × the feature's decoder projection
    if head.decoder is None:
        raise ConfigError(f"head {head.name!r} reads raw activations but has no decoder "
                          f"projection", field="decoder")
    per_feature = head.decoder[0]
    if head.config.multilabel:
        score = np.column_stack([np.asarray(base_probe(e).decision_function(
            inputs.X[row:row + 1]), dtype=np.float64).reshape(-1)
            for e in head.probe.estimators_])
    else:
        score = np.asarray(base_probe(head.probe).decision_function(inputs.X[row:row + 1]),
                           dtype=np.float64).reshape(1, -1)
    scores = np.repeat(score, len(changes), axis=0)
    old = acts.toarray().ravel()
    for j, (feats, values) in enumerate(changes):
        if len(feats):
            scores[j] += (np.asarray(values) - old[feats]) @ per_feature[feats]
    return _probabilities(head, scores)


def _probabilities(head: Any, scores: np.ndarray) -> np.ndarray:
    from scipy.special import expit, softmax

    if head.config.multilabel:  # one independent logistic output per label
        return np.asarray(expit(scores))
    probe = head.probe
    if hasattr(probe, "_calibrate"):
        p = probe._calibrate(scores)
    else:
        p = expit(scores) if scores.shape[1] == 1 else softmax(scores, axis=1)
    if p.shape[1] == 1:
        return np.column_stack([1.0 - p[:, 0], p[:, 0]])
    total = p.sum(axis=1, keepdims=True)
    return np.asarray(p / np.where(total > 0, total, 1.0))


def faithfulness(head: Any, inputs: Any, *, k: int = 5, n_random: int = 10,
                 random_state: int = 0, typical: Any = None,
                 typical_source: str = FROM_DICTIONARY, n_boot: int = 2000,
                 confidence: float = 0.95) -> dict[str, Any]:
    """Test each decision's present and absent evidence against same-kind controls.

    Parameters
    ----------
    head : auditor.heads.Head
    inputs : auditor.heads.HeadInputs
        The documents (``head.read(store)``).
    k : int, default 5
        Features changed per document and kind.
    n_random : int, default 10
        Random control draws per document.
    random_state : int, default 0
        Seeds the control draws and the bootstrap.
    typical : array-like of shape (n_features,) or None
        Each feature's typical firing value (e.g. the dictionary's ``p50``; NaN or ≤ 0
        where unknown). None: :func:`data_typical_values` of the explained documents.
    typical_source : str
        Where ``typical`` came from, recorded as ``typical_value``.
    n_boot : int, default 2000
        Bootstrap resamples of the documents.
    confidence : float, default 0.95

    Returns
    -------
    dict
        ``k``, ``documents``, ``n_random``, ``n_boot``, ``confidence``, ``typical_value``
        (where the values came from) and, for ``present`` and ``absent``: ``documents``
        (those having evidence of that kind), ``intervention``, ``drop`` and
        ``control_drop`` (each ``mean``, ``low``, ``high``: the fall of the explained
        label's probability), ``flip_rate`` and ``control_flip_rate``, ``difference``
        (paired named − control drop, with its interval), ``per_document`` and
        ``control_per_document`` (drops, aligned with ``doc_ids``). ``absent`` also has
        ``untestable`` (documents none of whose named absent features has a typical
        value) and ``skipped_features`` (named absent features left out for want of one).

    Raises
    ------
    ConfigError
        ``k`` or ``n_random`` is not positive, or ``typical`` has the wrong length.

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
    labels = head.explained_labels(proba) if multilabel else head.labels(proba).tolist()
    thresholds = head.config.label_thresholds() if multilabel else None
    classes = list(head.config.classes)
    acts = sp.csr_matrix(inputs.activations, dtype=np.float64)
    acts.sort_indices()
    n_docs, n_features = acts.shape
    density = np.asarray((acts > 0).sum(axis=0), dtype=np.float64).ravel() / max(n_docs, 1)
    if typical is None:
        values, source = data_typical_values(acts), FROM_DATA
    else:
        values, source = np.asarray(typical, dtype=np.float64).ravel(), typical_source
        if len(values) != n_features:
            raise ConfigError(f"{len(values)} typical values for {n_features} features",
                              field="typical")
    usable = np.isfinite(values) & (values > 0)
    usable_idx = np.flatnonzero(usable)
    kinds: dict[str, dict[str, list[Any]]] = {
        kind: {"ids": [], "drop": [], "ctrl": [], "flip": [], "ctrl_flip": []}
        for kind in ("present", "absent")}
    untestable = skipped = 0
    for i, label in enumerate(labels):
        c = classes.index(label)
        out = contrib.output_index(label)
        # binary: the single output is the positive class's score, so a negative prediction
        # is supported by negative contributions; multiclass / multilabel: the label's own
        sign = 1.0 if len(contrib.values) > 1 or contrib.outputs[0] == label else -1.0
        active = acts.indices[acts.indptr[i]:acts.indptr[i + 1]][
            acts.data[acts.indptr[i]:acts.indptr[i + 1]] > 0]
        named_p = _supporting(contrib, i, out, sign, acts, present=True, k=k)
        # the explanation's own top-k absent features; those without a typical value
        # cannot be made to fire and are left out (not replaced by weaker ones)
        named_a = _supporting(contrib, i, out, sign, acts, present=False, k=k)
        skipped += int((~usable[named_a]).sum())
        if len(named_a) and not usable[named_a].any():
            untestable += 1
        named_a = named_a[usable[named_a]]
        for kind, named, pool in (("present", named_p, active),
                                  ("absent", named_a, np.setdiff1d(usable_idx, active))):
            if not len(named):
                continue

            def change(feats: np.ndarray, kind: str = kind) -> tuple[np.ndarray, np.ndarray]:
                return (feats, np.zeros(len(feats)) if kind == "present" else values[feats])

            draws = [_controls(named, pool, density, rng) for _ in range(n_random)]
            p = _rescore(head, inputs, i, [change(named), *(change(d) for d in draws)])
            if thresholds is not None:  # a flip: the label's presence changes
                flips = (p[:, c] >= thresholds[c]) != (proba[i, c] >= thresholds[c])
            else:
                flips = head.labels(p) != label
            acc = kinds[kind]
            acc["ids"].append(inputs.doc_ids[i])
            acc["drop"].append(float(proba[i, c] - p[0, c]))
            acc["ctrl"].append(float(np.mean(proba[i, c] - p[1:, c])))
            acc["flip"].append(bool(flips[0]))
            acc["ctrl_flip"].append(float(np.mean(flips[1:])))
    result: dict[str, Any] = {"k": k, "documents": len(labels), "n_random": n_random,
                              "n_boot": n_boot, "confidence": confidence,
                              "random_state": random_state, "typical_value": source}
    for j, (kind, acc) in enumerate(kinds.items()):
        drop, ctrl = np.asarray(acc["drop"]), np.asarray(acc["ctrl"])
        seed = random_state + 1 + 3 * j

        def boot(x: np.ndarray, s: int) -> dict[str, float | None]:
            return bootstrap_mean(x, n_boot=n_boot, confidence=confidence, random_state=s)

        result[kind] = {
            "documents": len(drop),
            "intervention": ("zero the top-k present (fired) features" if kind == "present"
                             else "set the top-k absent (did not fire) features to a "
                                  "typical firing value"),
            "drop": boot(drop, seed), "flip_rate": _mean(acc["flip"]),
            "control_drop": boot(ctrl, seed + 1), "control_flip_rate": _mean(acc["ctrl_flip"]),
            "difference": boot(drop - ctrl, seed + 2),
            "doc_ids": list(acc["ids"]),
            "per_document": [float(v) for v in drop],
            "control_per_document": [float(v) for v in ctrl],
        }
    result["absent"]["untestable"] = untestable
    result["absent"]["skipped_features"] = skipped
    return result


def _mean(values: list[Any]) -> float | None:
    return float(np.mean(values)) if values else None
