"""How good is an SAE: reconstruction on cached activations, and the LM loss it costs.

:func:`evaluate_sae` measures reconstruction on an :class:`ActivationCache` split: FVU,
FVU with the top principal direction removed (a single direction can carry over half the
variance of a residual stream, so a low FVU can hide a poor reconstruction of the rest),
L0, dead and dense latents, a feature-density histogram, FVU by token position and, given
each document's group (say its genre), FVU per group.

:func:`delta_ce` splices the SAE into the model: the hooked layer's output is replaced by
the reconstruction at content positions (special tokens such as BOS stay clean) and the
next-token cross-entropy is compared with the clean model and with zero ablation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auditor.errors import ConfigError, HookError, StoreError
from auditor.sae.activations import ActivationCache, Split
from auditor.sae.model import LAYER_NORM_EPS, SAE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from auditor.lm import HookPoint
    from auditor.progress import Stage

__all__ = [
    "DENSE_THRESHOLD",
    "DENSITY_BIN_EDGES",
    "POSITION_BUCKETS",
    "CEMetrics",
    "SAEMetrics",
    "delta_ce",
    "evaluate_sae",
]

#: A latent is dense if it fires on more than this share of tokens.
DENSE_THRESHOLD = 0.1
#: Edges of the log10 firing-frequency histogram (frequencies below 1e-8 go in the first bin).
DENSITY_BIN_EDGES: tuple[float, ...] = tuple(float(e) for e in np.arange(-8.0, 0.01, 0.5))
#: Token-position buckets ``[start, stop)`` for FVU by position (positions within the document).
POSITION_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 10), (10, 50), (50, 200), (200, None))


def _bucket_label(start: int, stop: int | None) -> str:
    return f"{start}+" if stop is None else f"{start}-{stop - 1}"


@dataclass
class SAEMetrics:
    """Reconstruction metrics of an SAE on one split of an activation cache.

    Attributes
    ----------
    hook, split : str
        What was evaluated.
    n_tokens : int
        Tokens evaluated.
    fvu : float
        Fraction of variance unexplained, ``sum |x - x_hat|^2 / sum |x - mean(x)|^2``.
    fvu_without_top_direction : float
        The same after projecting the top principal direction of ``x`` out of both ``x``
        and ``x_hat``.
    top_direction_variance : float
        Share of the variance of ``x`` along that direction.
    mse : float
        Mean over tokens of ``|x - x_hat|^2``.
    l0 : float
        Mean active latents per token.
    dead_frac, dense_frac : float
        Share of latents that never fire / fire on more than 10 % of the tokens.
    density_hist : dict
        ``edges`` (log10 firing frequency, :data:`DENSITY_BIN_EDGES`) and ``counts`` of
        the latents that fire at least once.
    fvu_by_position : dict
        ``'0-9'``, ``'10-49'``, ``'50-199'``, ``'200+'`` → ``{'n_tokens', 'fvu'}``; each
        bucket's error over its variance around the global mean (``nan`` if empty).
    fvu_by_group : dict
        Group name → ``{'n_tokens', 'fvu'}`` for the groups present in the split, when
        document groups were given; each group's
        error over its variance around *its own* mean (the stricter choice: a genre's
        offset from the other genres does not count as explained).
    """

    hook: str
    split: str
    n_tokens: int
    fvu: float
    fvu_without_top_direction: float
    top_direction_variance: float
    mse: float
    l0: float
    dead_frac: float
    dense_frac: float
    density_hist: dict[str, list[float] | list[int]] = field(default_factory=dict)
    fvu_by_position: dict[str, dict[str, float]] = field(default_factory=dict)
    fvu_by_group: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN kept as float NaN)."""
        return asdict(self)


@dataclass
class CEMetrics:
    """Next-token cross-entropy with the SAE spliced in.

    Attributes
    ----------
    hook : str
    n_targets : int
        Content target tokens scored.
    n_patched : int
        Positions whose layer output was replaced.
    ce_clean, ce_sae, ce_zero : float
        Mean cross-entropy (nats) clean, with the reconstruction, with zeros.
    delta_ce : float
        ``ce_sae - ce_clean``.
    loss_recovered : float
        ``(ce_zero - ce_sae) / (ce_zero - ce_clean)`` (``nan`` if the denominator is 0).
    """

    hook: str
    n_targets: int
    n_patched: int
    ce_clean: float
    ce_sae: float
    ce_zero: float
    delta_ce: float
    loss_recovered: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _target(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """What the reconstruction is compared with: ``x``, or its layer-normed version."""
    if sae.cfg.normalize_activations == "layer_norm":
        x = x - x.mean(dim=-1, keepdim=True)
        return x / (x.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
    return x


def _reconstruct(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_hat``, active indices and values (padding has value 0) of ``[n, d_in]`` input."""
    codes = sae.encode_sparse(x, chunk_size=max(1, x.shape[0]))
    dense = torch.zeros(x.shape[0], sae.cfg.d_sae, dtype=codes.values.dtype,
                        device=codes.values.device)
    dense.scatter_(1, codes.indices, codes.values)
    return sae.decode(dense), codes.indices, codes.values


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    cache: ActivationCache,
    *,
    hook: HookPoint | str | None = None,
    split: Split = "heldout",
    heldout_fraction: float = 0.05,
    batch_size: int = 1024,
    max_tokens: int | None = None,
    doc_groups: Sequence[str] | None = None,
) -> SAEMetrics:
    """Measure how well ``sae`` reconstructs the activations of a cache split.

    Parameters
    ----------
    sae : SAE
        The SAE (any activation / normalisation; for ``'layer_norm'`` SAEs the target is
        the layer-normed input, since that normalisation cannot be undone).
    cache : ActivationCache
        The activations.
    hook : HookPoint or str or None
        Cache hook to read; ``None`` uses the SAE's ``hook_layer`` / ``hook_point``.
    split : {'heldout', 'train', 'all'}, default 'heldout'
    heldout_fraction : float, default 0.05
        Must match the one used for training for ``'heldout'`` to be unseen data.
    batch_size : int, default 1024
        Tokens encoded at once (peak memory ~ ``batch_size * d_sae`` floats).
    max_tokens : int or None
        Evaluate only the first this many tokens of the split.
    doc_groups : sequence of str or None
        Group of every cached document, indexed by the cache's ``doc`` number (the order
        the texts were collected in), e.g. the corpus's ``source`` column; adds
        ``fvu_by_group``.

    Returns
    -------
    SAEMetrics

    Raises
    ------
    ConfigError
        Bad arguments, or no hook given and the SAE names no layer.
    SAEModelMismatch
        The SAE's ``d_in`` differs from the cache's ``d_model``.
    StoreError
        The split is empty, or a shard is missing or corrupt.
    """
    name = _resolve_hook(sae, hook)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}",
                          field="batch_size")
    data = cache.tensors(name, split=split, heldout_fraction=heldout_fraction,
                         dtype=torch.float16)
    acts, pos, doc = data["acts"], data["pos"], data["doc"]
    if max_tokens is not None:
        acts, pos, doc = acts[:max_tokens], pos[:max_tokens], doc[:max_tokens]
    n = int(acts.shape[0])
    if n == 0:
        raise StoreError(f"split {split!r} of hook {name!r} holds no tokens",
                         path=cache.directory)
    d, d_sae = cache.d_model, sae.cfg.d_sae
    sum_x = torch.zeros(d, dtype=torch.float64)
    scatter_x = torch.zeros(d, d, dtype=torch.float64)
    scatter_e = torch.zeros(d, d, dtype=torch.float64)
    sum_err = 0.0
    fired = torch.zeros(d_sae, dtype=torch.int64)
    active = 0
    n_buckets = len(POSITION_BUCKETS)
    b_n = torch.zeros(n_buckets, dtype=torch.float64)
    b_err = torch.zeros(n_buckets, dtype=torch.float64)
    b_sq = torch.zeros(n_buckets, dtype=torch.float64)
    b_sum = torch.zeros(n_buckets, d, dtype=torch.float64)
    bounds = torch.tensor([b[0] for b in POSITION_BUCKETS[1:]], dtype=torch.int64)
    group_names, group_of_doc = _group_index(doc_groups, doc)
    n_groups = len(group_names)
    g_n = torch.zeros(n_groups, dtype=torch.float64)
    g_err = torch.zeros(n_groups, dtype=torch.float64)
    g_sq = torch.zeros(n_groups, dtype=torch.float64)
    g_sum = torch.zeros(n_groups, d, dtype=torch.float64)
    for start in range(0, n, batch_size):
        x_raw = acts[start : start + batch_size].float()
        x_hat, indices, values = _reconstruct(sae, x_raw)
        x = _target(sae, x_raw.to(x_hat.device)).double().cpu()
        err = x - x_hat.double().cpu()
        on = values > 0
        active += int(on.sum())
        fired += torch.bincount(indices[on].cpu(), minlength=d_sae)
        sum_x += x.sum(dim=0)
        scatter_x += x.T @ x
        scatter_e += err.T @ err
        err_sq = err.pow(2).sum(dim=1)
        sum_err += float(err_sq.sum())
        bucket = torch.bucketize(pos[start : start + batch_size].long(), bounds, right=True)
        b_n += torch.bincount(bucket, minlength=n_buckets).double()
        b_err.index_add_(0, bucket, err_sq)
        b_sq.index_add_(0, bucket, x.pow(2).sum(dim=1))
        b_sum.index_add_(0, bucket, x)
        if n_groups:
            group = group_of_doc[doc[start : start + batch_size].long()]
            g_n += torch.bincount(group, minlength=n_groups).double()
            g_err.index_add_(0, group, err_sq)
            g_sq.index_add_(0, group, x.pow(2).sum(dim=1))
            g_sum.index_add_(0, group, x)

    mean = sum_x / n
    centred = scatter_x - n * torch.outer(mean, mean)
    total_var = float(torch.trace(centred))
    eigvals, eigvecs = torch.linalg.eigh(centred)
    top = eigvecs[:, -1]
    top_var = float(eigvals[-1])
    err_top = float(top @ scatter_e @ top)
    fvu = sum_err / total_var if total_var > 0 else math.nan
    rest_var = total_var - top_var
    fvu_rest = (sum_err - err_top) / rest_var if rest_var > 0 else math.nan
    freq = fired.double() / n
    fired_freq = freq[fired > 0]
    log_freq = torch.log10(fired_freq).clamp(min=DENSITY_BIN_EDGES[0], max=DENSITY_BIN_EDGES[-1])
    counts, _ = np.histogram(log_freq.numpy(), bins=np.asarray(DENSITY_BIN_EDGES))
    by_position: dict[str, dict[str, float]] = {}
    for i, (lo, hi) in enumerate(POSITION_BUCKETS):
        count = float(b_n[i])
        var = float(b_sq[i] - 2 * (mean @ b_sum[i]) + count * (mean @ mean))
        by_position[_bucket_label(lo, hi)] = {
            "n_tokens": int(count),
            "fvu": float(b_err[i]) / var if count > 0 and var > 0 else math.nan,
        }
    by_group: dict[str, dict[str, float]] = {}
    for i, group_name in enumerate(group_names):
        count = float(g_n[i])
        if count == 0:  # no document of this group in the split
            continue
        var = float(g_sq[i] - g_sum[i] @ g_sum[i] / count)
        by_group[group_name] = {
            "n_tokens": int(count), "fvu": float(g_err[i]) / var if var > 0 else math.nan}
    return SAEMetrics(
        hook=name,
        split=split,
        n_tokens=n,
        fvu=fvu,
        fvu_without_top_direction=fvu_rest,
        top_direction_variance=top_var / total_var if total_var > 0 else math.nan,
        mse=sum_err / n,
        l0=active / n,
        dead_frac=float((fired == 0).double().mean()),
        dense_frac=float((freq > DENSE_THRESHOLD).double().mean()),
        density_hist={"edges": list(DENSITY_BIN_EDGES), "counts": [int(c) for c in counts]},
        fvu_by_position=by_position,
        fvu_by_group=by_group,
    )


def _group_index(
    doc_groups: Sequence[str] | None, doc: torch.Tensor
) -> tuple[list[str], torch.Tensor]:
    """Sorted group names and each document's group number (empty without groups)."""
    if doc_groups is None:
        return [], torch.zeros(0, dtype=torch.int64)
    if isinstance(doc_groups, str):
        raise ConfigError("doc_groups must be a sequence of group names, one per document",
                          field="doc_groups")
    highest = int(doc.max()) if doc.numel() else -1
    if highest >= len(doc_groups):
        raise ConfigError(
            f"doc_groups names {len(doc_groups)} documents but the cache holds document "
            f"{highest}: give one group per collected text, in collection order",
            field="doc_groups")
    names = sorted({str(g) for g in doc_groups})
    number = {g: i for i, g in enumerate(names)}
    return names, torch.tensor([number[str(g)] for g in doc_groups], dtype=torch.int64)


def _resolve_hook(sae: SAE, hook: HookPoint | str | None) -> str:
    if hook is not None:
        return hook if isinstance(hook, str) else hook.name
    if sae.cfg.hook_layer is None:
        raise ConfigError("the SAE does not say which layer it reads: set hook", field="hook")
    return f"layer{sae.cfg.hook_layer}.{sae.cfg.hook_point}"


# --------------------------------------------------------------------------- delta CE
def delta_ce(
    sae: SAE,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    hook: HookPoint | None = None,
    max_length: int = 512,
    batch_size: int = 8,
    progress: Stage | None = None,
) -> CEMetrics:
    """Next-token cross-entropy clean, with the SAE reconstruction and with zero ablation.

    Parameters
    ----------
    sae : SAE
        The SAE; it must reconstruct in the model's space (not ``'layer_norm'``).
    model : PreTrainedModel
        The full causal LM, with its head (its output must have ``logits``).
    tokenizer : PreTrainedTokenizerBase
        The model's fast tokenizer.
    texts : sequence of str
        Documents; long ones are split into windows of ``max_length`` tokens.
    hook : HookPoint or None
        Where to splice; ``None`` uses the SAE's ``hook_layer`` / ``hook_point``.
    max_length : int, default 512
        Window length, special tokens included.
    batch_size : int, default 8
        Windows per forward pass.
    progress : Stage or None
        Advanced by the windows scored (its total set to the number of windows).

    Returns
    -------
    CEMetrics

    Raises
    ------
    ConfigError
        Bad arguments, a ``'layer_norm'`` SAE, no content targets, or a model without
        logits.
    HookError
        The layer does not exist or its output cannot be replaced.
    SAEModelMismatch
        The SAE's width differs from the hidden size.

    Notes
    -----
    At content (non-special, unpadded) positions the hooked residual — the output of
    decoder layer ``L`` for ``'resid_post'``, its input for ``'resid_pre'`` — is replaced
    by ``sae(x)`` or by zeros; special positions such as BOS stay clean (massive-norm BOS
    activations are not part of SAE training). Targets are the content tokens of each
    window after its first token; the mean is over all of them (token-weighted).
    """
    from auditor.lm import HookPoint, collate, find_layers, plan_batches, tokenize_windows

    if sae.cfg.normalize_activations == "layer_norm":
        raise ConfigError("delta_ce needs an SAE that reconstructs in the model's space, "
                          "not a 'layer_norm' one", field="sae")
    if hook is None:
        hook = HookPoint.from_name(_resolve_hook(sae, None))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}",
                          field="batch_size")
    layers = find_layers(model)
    if not 0 <= hook.layer < len(layers):
        raise HookError(f"layer {hook.layer} is out of range (the model has {len(layers)})",
                        field=hook.name)
    layer = layers[hook.layer]
    param = next(model.parameters())
    device = param.device
    windows = tokenize_windows(list(texts), tokenizer, max_length=max_length)
    if progress is not None:
        progress.set_total(len(windows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums = dict.fromkeys(("clean", "sae", "zero"), 0.0)
    n_targets = n_patched = 0
    was_training = model.training
    model.eval()
    try:
        for batch in plan_batches([w.n_tokens for w in windows],
                                  token_budget=batch_size * max_length,
                                  max_batch_size=batch_size):
            ids, attn, keep = collate([windows[i] for i in batch], pad_id=int(pad),
                                      device=device)
            targets = keep[:, 1:] & attn[:, :-1].bool()
            count = int(targets.sum())
            if count == 0:
                continue
            n_targets += count
            n_patched += int(keep.sum())
            for mode in sums:
                replace = None if mode == "clean" else _replacement(sae, keep, mode)
                sums[mode] += _run(model, layer, hook, ids, attn, replace, targets)
            if progress is not None:
                progress.advance(len(batch))
    finally:
        model.train(was_training)
    if n_targets == 0:
        raise ConfigError("no content tokens to score in texts", field="texts")
    clean, with_sae, zero = (sums[m] / n_targets for m in ("clean", "sae", "zero"))
    denominator = zero - clean
    recovered = (zero - with_sae) / denominator if denominator != 0 else math.nan
    return CEMetrics(hook=hook.name, n_targets=n_targets, n_patched=n_patched,
                     ce_clean=clean, ce_sae=with_sae, ce_zero=zero,
                     delta_ce=with_sae - clean, loss_recovered=recovered)


def _replacement(sae: SAE, keep: torch.Tensor, mode: str) -> Any:
    def replace(hidden: torch.Tensor) -> torch.Tensor:
        new = hidden.clone()
        selected = hidden[keep]
        if mode == "zero":
            new[keep] = torch.zeros_like(selected)
        else:
            new[keep] = sae(selected.float()).to(device=hidden.device, dtype=hidden.dtype)
        return new

    return replace


#: Target positions projected to the vocabulary at once.
_CE_CHUNK = 256


def _final_norm(model: Any) -> torch.nn.Module | None:
    """The module whose output the LM head projects (the decoder's final norm), when the
    logits are exactly ``output_embedding(norm(h))`` (with Gemma's soft-capping); else
    ``None`` (the caller computes full logits)."""
    config = getattr(model, "config", None)
    if any(getattr(config, key, None) not in (None, 1, 1.0)
           for key in ("logit_scale", "logits_scaling", "output_multiplier_scale")):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    norm = getattr(decoder, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return norm if isinstance(norm, torch.nn.Module) and head is not None else None


def _run(model: Any, layer: torch.nn.Module, hook: HookPoint, ids: torch.Tensor,
         attn: torch.Tensor, replace: Any, targets: torch.Tensor) -> float:
    """Summed next-token cross-entropy of ``targets`` with ``replace`` spliced in."""
    handles = []
    if replace is not None:
        if hook.point == "resid_post":
            def post(_m: torch.nn.Module, _args: Any, output: Any) -> Any:
                if isinstance(output, torch.Tensor):
                    return replace(output)
                if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                    return (replace(output[0]), *output[1:])
                raise HookError(f"cannot replace the output of {hook.name} "
                                f"({type(output).__name__})", field=hook.name)

            handles.append(layer.register_forward_hook(post))
        else:
            def pre(_m: torch.nn.Module, args: Any, kwargs: Any) -> Any:
                if args and isinstance(args[0], torch.Tensor):
                    return (replace(args[0]), *args[1:]), kwargs
                if isinstance(kwargs.get("hidden_states"), torch.Tensor):
                    return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}
                raise HookError(f"cannot find the input of {hook.name}", field=hook.name)

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    norm = _final_norm(model)
    captured: dict[str, torch.Tensor] = {}
    if norm is not None:
        def keep_final(_m: torch.nn.Module, _args: Any, output: Any) -> None:
            captured["h"] = output[0] if isinstance(output, tuple) else output

        handles.append(norm.register_forward_hook(keep_final))
    try:
        with torch.inference_mode():
            kwargs: dict[str, Any] = {"logits_to_keep": 1} if norm is not None else {}
            try:
                output = model(input_ids=ids, attention_mask=attn, use_cache=False, **kwargs)
            except TypeError:  # a model without logits_to_keep: full logits
                captured.clear()
                output = model(input_ids=ids, attention_mask=attn, use_cache=False)
            if "h" in captured:
                return _ce_chunked(model, captured["h"][:, :-1][targets], ids[:, 1:][targets])
    finally:
        for handle in handles:
            handle.remove()
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ConfigError("the model returns no logits: pass the causal LM with its head",
                          field="model")
    return _ce_sum(logits, ids, targets)


def _ce_chunked(model: Any, hidden: torch.Tensor, gold: torch.Tensor) -> float:
    """Cross-entropy sum of ``hidden`` (final-norm states at the targets) against ``gold``,
    projecting :data:`_CE_CHUNK` positions to the vocabulary at a time."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    total = 0.0
    with torch.inference_mode():
        for start in range(0, hidden.shape[0], _CE_CHUNK):
            logits = head(hidden[start:start + _CE_CHUNK]).float()
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
            total += float(torch.nn.functional.cross_entropy(
                logits, gold[start:start + _CE_CHUNK], reduction="sum").double())
    return total


def _ce_sum(logits: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor) -> float:
    pred = logits[:, :-1][targets].float()
    gold = ids[:, 1:][targets]
    return float(torch.nn.functional.cross_entropy(pred, gold, reduction="sum").double())
