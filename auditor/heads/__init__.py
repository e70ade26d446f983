"""Heads: trained, saved probes that label documents (safety, topic, quality, …).

A head is a probe (:mod:`auditor.probes`) plus what is needed to use it safely: which
representation of a document it reads (pooled SAE features or mean raw activations), the
extraction settings and provenance its training features had, its classes and decision
threshold, and a card with its data and metrics against baselines.

- :class:`Head`, :class:`HeadConfig`, :func:`save_head`, :func:`write_head`,
  :func:`load_head`: the saved artefact; :func:`find_heads`, :func:`resolve_head`,
  :func:`list_heads`, :func:`load_heads`: heads found by name along the search path
  (:func:`auditor.defaults.heads_search_path`);
  :data:`HEAD_EXTRACT` (the default heads' extraction settings), :data:`GUARDED_EXTRACT`
  and :func:`guarded_settings` (the settings a head records and guards).
- :func:`train_head`, :func:`cross_validate_candidates`, :func:`evaluate_candidates`,
  :func:`load_split`: training with the representation chosen on validation data
  (single-label or multilabel: :func:`label_set`, :func:`label_indicator`,
  :func:`multilabel_metrics`).
- :func:`classify_store`: every head's labels, probabilities and top features per document.
"""

from auditor.heads.build import (
    CANDIDATES,
    DEFAULT_CANDIDATES,
    Candidate,
    LabelledSplit,
    best_candidate,
    cross_validate_candidates,
    evaluate_candidates,
    label_indicator,
    label_set,
    load_split,
    multilabel_metrics,
    train_head,
)
from auditor.heads.head import (
    GUARDED_EXTRACT,
    HEAD_EXTRACT,
    Head,
    HeadConfig,
    HeadInputs,
    guarded_settings,
    load_head,
    save_head,
    write_head,
)
from auditor.heads.search import FoundHead, find_heads, list_heads, load_heads, resolve_head

__all__ = [
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
    "GUARDED_EXTRACT",
    "HEAD_EXTRACT",
    "Candidate",
    "FoundHead",
    "Head",
    "HeadConfig",
    "HeadInputs",
    "LabelledSplit",
    "best_candidate",
    "cross_validate_candidates",
    "evaluate_candidates",
    "find_heads",
    "guarded_settings",
    "label_indicator",
    "label_set",
    "list_heads",
    "load_head",
    "load_heads",
    "load_split",
    "multilabel_metrics",
    "resolve_head",
    "save_head",
    "train_head",
    "write_head",
]
