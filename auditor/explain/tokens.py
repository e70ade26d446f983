"""Token-level evidence: where in a document a feature fired, and how strongly.

Reads the per-token codes an extraction wrote with ``save_tokens=True`` (see
:mod:`auditor.store`); ``auditor explain`` re-extracts the documents it explains with them
on, so the evidence is always recomputed for exactly the text being explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from auditor.errors import ConfigError, StoreError

__all__ = ["TokenHit", "render_evidence", "token_evidence"]


class TokenHit(NamedTuple):
    """One token where a feature fired."""

    position: int
    token_id: int
    token: str | None
    value: float


def token_evidence(
    store: str | Path, doc_id: str, features: Sequence[int], *, sae: str | None = None,
    tokenizer: Any = None,
) -> tuple[list[tuple[int, int, str | None]], dict[int, list[TokenHit]]]:
    """Per feature, the tokens of one document where it fired.

    Parameters
    ----------
    store
        A feature store extracted with ``save_tokens=True``.
    doc_id
        The document.
    features
        SAE feature indices.
    sae
        SAE key (the store's only one when None).
    tokenizer
        Decodes token ids to strings (ids only when None).

    Returns
    -------
    tokens, hits
        The document's content tokens ``(position, token_id, text)`` in order (positions
        as stored: ``window × max_length + offset in the window``), and ``feature ->`` its
        :class:`TokenHit` list, strongest first.

    Raises
    ------
    StoreError
        The store has no per-token codes, or not for ``doc_id``.
    ConfigError
        ``sae`` is not in the store.
    """
    from auditor.store import read_metadata, scan_features

    meta = read_metadata(store)
    saes = list(meta.get("saes") or {})
    key = sae if sae is not None else (saes[0] if len(saes) == 1 else None)
    if key not in saes:
        raise ConfigError(f"choose the SAE: the store has {saes}", field="sae")
    if not (meta.get("extract") or {}).get("save_tokens"):
        raise StoreError("no per-token codes in the store (extract with save_tokens)",
                         path=Path(store))
    try:
        lf = scan_features(store, kind="tokens")
        frame = lf.filter(pl.col("doc_id") == doc_id).select(
            "position", "token_id", f"{key}.indices", f"{key}.values").collect()
    except StoreError as e:
        raise StoreError(f"no per-token codes in the store (extract with save_tokens): "
                         f"{e.message}", path=Path(store)) from e
    if frame.height == 0:
        raise StoreError(f"no per-token codes for document {doc_id!r}", path=Path(store))
    frame = frame.sort("position")
    ids = frame["token_id"].to_list()
    texts: list[str | None] = ([tokenizer.decode([t]) for t in ids] if tokenizer is not None
                               else [None] * len(ids))
    tokens = list(zip(frame["position"].to_list(), ids, texts, strict=True))
    wanted = {int(f) for f in features}
    hits: dict[int, list[TokenHit]] = {f: [] for f in features}
    for row, (pos, tid, idx, val) in enumerate(frame.iter_rows()):
        idx_arr = np.asarray(idx, dtype=np.int64)
        for j in np.flatnonzero(np.isin(idx_arr, list(wanted))):
            f = int(idx_arr[j])
            hits[f].append(TokenHit(int(pos), int(tid), texts[row], float(val[j])))
    for f in hits:
        hits[f].sort(key=lambda h: (-h.value, h.position))
    return tokens, hits


def render_evidence(tokens: Sequence[tuple[int, int, str | None]], hits: Sequence[TokenHit],
                    *, width: int = 12) -> str:
    """The document's text with each firing token marked ``«token»`` (strength after it),
    cut to ``width`` tokens around the strongest hit; '…' marks cuts."""
    if not hits:
        return "(does not fire)"
    value_at = {h.position: h.value for h in hits}
    index_of = {pos: i for i, (pos, _, _) in enumerate(tokens)}
    centre = index_of.get(hits[0].position, 0)
    lo, hi = max(0, centre - width), min(len(tokens), centre + width + 1)
    parts = []
    for pos, tid, text in tokens[lo:hi]:
        shown = text if text is not None else f"<{tid}>"
        parts.append(f"«{shown}»{value_at[pos]:.2f}" if pos in value_at else shown)
    return ("…" if lo > 0 else "") + "".join(parts) + ("…" if hi < len(tokens) else "")
