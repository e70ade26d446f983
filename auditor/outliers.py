"""Massive-activation tokens: per-(model, hook) norm thresholds.

Small LMs put a huge residual norm on a few tokens besides BOS (Gemma 3 270M at layer 9:
~60k against ~6k typical). An SAE spends the same latents on all of them, so max-pooling
would record "this document has an outlier" instead of its content. A token is an outlier
at a hook when its norm exceeds ``factor`` × the median content-token norm of that model at
that hook. The median is measured once on a fixed calibration text shipped with auditor
(so it does not depend on the user's data) and cached by the model's weights hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.lm import HookPoint, LoadedModel, TruncatedForward

__all__ = ["CALIBRATION_METHOD", "calibration_texts", "median_token_norms", "outlier_thresholds"]

CALIBRATION_METHOD = "factor x median content-token norm on auditor's calibration text"


def calibration_texts() -> list[str]:
    """The packaged calibration texts (varied genres and languages, ~3k tokens, CC0)."""
    raw = resources.files("auditor").joinpath("data/calibration.jsonl").read_text("utf-8")
    return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def median_token_norms(
    lm: LoadedModel,
    forward: TruncatedForward,
    *,
    max_length: int,
    token_budget: int = 8192,
) -> dict[str, float]:
    """Median residual norm of content tokens at each hook of ``forward``.

    Cached under the cache directory by (weights hash, hook, window length) when the model
    has a weights hash; a model without one is measured every time.

    Returns
    -------
    dict
        ``hook name -> median norm``.
    """
    import torch

    from auditor.lm import cache_dir, collate, plan_batches, tokenize_windows

    hooks: Sequence[HookPoint] = forward.hooks
    cache = None
    if lm.weights_sha256:
        cache = cache_dir() / "calibration" / f"{lm.weights_sha256[:32]}-{max_length}.json"
        try:
            known = json.loads(cache.read_text("utf-8"))
            if all(h.name in known for h in hooks):
                return {h.name: float(known[h.name]) for h in hooks}
        except (OSError, ValueError):
            known = {}
    else:
        known = {}

    windows = tokenize_windows(calibration_texts(), lm.tokenizer, max_length=max_length)
    norms: dict[str, list[torch.Tensor]] = {h.name: [] for h in hooks}
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for batch in plan_batches([w.n_tokens for w in windows], token_budget=token_budget):
        ids, attn, keep = collate([windows[i] for i in batch], pad_id=pad, device=lm.device)
        for hook, acts in forward(ids, attn).items():
            norms[hook.name].append(acts[keep].float().norm(dim=-1).cpu())
    medians = {name: float(torch.cat(parts).median()) for name, parts in norms.items()}

    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**known, **medians}, indent=2), "utf-8")
            os.replace(tmp, cache)  # atomic: concurrent workers never see half a file
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    return medians


def outlier_thresholds(
    lm: LoadedModel,
    forward: TruncatedForward,
    *,
    factor: float,
    max_length: int,
    fixed: float | None = None,
    token_budget: int = 8192,
) -> dict[str, float]:
    """Norm threshold per hook: ``fixed`` for every hook, or ``factor`` × median norm."""
    if fixed is not None:
        return {h.name: float(fixed) for h in forward.hooks}
    medians = median_token_norms(lm, forward, max_length=max_length, token_budget=token_budget)
    return {name: m * factor for name, m in medians.items()}
