"""Logit lens of SAE features: which output tokens a feature's decoder direction promotes.

For feature ``f`` with decoder row ``d_f`` (``W_dec[f]``, ``d_model`` wide), the direct
effect of the feature on the next-token logits is approximated by::

    logits_f = W_U @ (g * d_f)

where ``W_U`` (``[vocab, d_model]``) is the model's unembedding matrix and ``g`` the
elementwise gain of the model's final norm.

What exactly is used
--------------------
* ``W_U`` is the LM head's weight when the model has its own (``tie_word_embeddings`` is
  false): read straight from the model directory's ``*.safetensors`` files (key
  ``lm_head.weight``), since :func:`auditor.lm.load_model` drops the head; models stored
  otherwise are loaded once with ``AutoModelForCausalLM`` to get it. With tied embeddings
  the input embedding matrix is used (raw, without Gemma's ``sqrt(d_model)`` input scale,
  which only applies on the input side).
* ``g`` is *measured* by running the final norm module (``norm``, ``ln_f``,
  ``final_layer_norm`` …) on a ±8 probe vector and its negation: for RMSNorm and LayerNorm
  ``(norm(v) - norm(-v)) / 2`` equals ``gain * v / rms(v)``, so conventions such as Gemma's
  ``x * (1 + weight)`` are handled without special cases and the bias cancels.
* The norm's data-dependent ``1 / rms(x)`` factor is *not* applied: it is a positive scalar
  per token, so it scales all logits alike and does not change which tokens rank highest.
  Biases (LayerNorm, LM head) are the same for every feature and are ignored too, as is
  final-logit soft-capping (monotonic).
* Only ids below ``len(tokenizer)`` are ranked (rows beyond it are padding of the matrix).

Everything runs in float32 on the CPU (or the model's device), ``chunk_size`` features at a
time, so a 16k × 262k product never has to exist at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch

    from auditor.lm import LoadedModel

__all__ = [
    "FINAL_NORM_NAMES",
    "LogitLens",
    "final_norm_gain",
    "logit_lens",
    "model_logit_lens",
    "unembedding",
]

#: Attribute names under which base decoders keep their final norm.
FINAL_NORM_NAMES: tuple[str, ...] = ("norm", "final_norm", "ln_f", "final_layer_norm", "norm_f")

_PROBE_SCALE = 8.0  # |probe entries|: large enough that the norm's epsilon is negligible


@dataclass(frozen=True)
class LogitLens:
    """Top promoted and suppressed tokens of every feature.

    Attributes
    ----------
    promoted_ids, suppressed_ids : numpy.ndarray
        ``int64 [n_features, top]``: token ids with the largest (most negative) logit
        contribution, best first.
    promoted_logits, suppressed_logits : numpy.ndarray
        ``float32 [n_features, top]``: the matching values of ``W_U @ (g * d_f)``.
    promoted, suppressed : list of list of str
        The ids decoded one by one with the tokenizer.
    info : dict
        How ``W_U`` and ``g`` were obtained (recorded in the dictionary manifest).
    """

    promoted_ids: np.ndarray
    promoted_logits: np.ndarray
    suppressed_ids: np.ndarray
    suppressed_logits: np.ndarray
    promoted: list[list[str]]
    suppressed: list[list[str]]
    info: dict[str, Any]


def unembedding(lm: LoadedModel) -> tuple[torch.Tensor, str]:
    """Return the model's unembedding matrix and where it came from.

    Parameters
    ----------
    lm : LoadedModel
        The loaded (headless) model; ``lm.model_id`` should be its local directory when the
        LM head is not tied to the input embeddings.

    Returns
    -------
    W_U : torch.Tensor
        ``float32 [vocab, d_model]`` on the CPU.
    source : str
        ``'lm_head.weight (<file>)'``, ``'lm_head.weight (AutoModelForCausalLM)'`` or
        ``'tied input embeddings'``.

    Raises
    ------
    ModelLoadError
        The head is untied but cannot be found, or its width differs from ``d_model``.
    """
    import torch

    if _tied(lm):
        get_embeddings: Any = getattr(lm.model, "get_input_embeddings", None)
        emb = get_embeddings() if callable(get_embeddings) else None
        if emb is None or not isinstance(getattr(emb, "weight", None), torch.Tensor):
            raise ModelLoadError("the model has no input embedding matrix", path=lm.model_id)
        return _checked(emb.weight.detach().float().cpu(), lm), "tied input embeddings"
    directory = Path(lm.model_id).expanduser()
    if directory.is_dir():
        found = _head_from_safetensors(directory)
        if found is not None:
            weight, name = found
            return _checked(weight.float(), lm), f"lm_head.weight ({name})"
    try:
        from transformers import AutoModelForCausalLM

        full = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                                    local_files_only=True)
        head = full.get_output_embeddings()
        weight = head.weight.detach().float().cpu().clone()
    except Exception as exc:
        raise ModelLoadError(f"cannot find the LM head (untied) for the logit lens: {exc}",
                             path=lm.model_id) from exc
    return _checked(weight, lm), "lm_head.weight (AutoModelForCausalLM)"


def final_norm_gain(lm: LoadedModel) -> tuple[np.ndarray | None, str]:
    """Measure the elementwise gain of the model's final norm.

    Parameters
    ----------
    lm : LoadedModel
        The loaded base decoder (its final norm is e.g. ``lm.model.norm``).

    Returns
    -------
    gain : numpy.ndarray or None
        ``float32 [d_model]``; ``None`` when the model has no recognisable final norm
        (then no gain is applied).
    description : str
        What was found, e.g. ``'norm (LlamaRMSNorm): measured elementwise gain'``.

    Notes
    -----
    The module is run on ``v`` and ``-v`` where ``v`` alternates ``±8``; ``(norm(v) -
    norm(-v)) / 2`` divided by ``v / rms(v)`` is the gain, bias excluded. For an odd
    ``d_model`` a second probe covers the entry the first one leaves at zero (so that the
    probe's mean stays exactly zero for LayerNorm).
    """
    import torch

    module, name = _final_norm(lm.model)
    if module is None:
        return None, "no final norm found: no gain applied"
    d = lm.d_model
    gain = np.full(d, np.nan, dtype=np.float64)
    probes = [np.resize([1.0, -1.0], d)]
    if d % 2:
        probes[0][-1] = 0.0
        second = np.zeros(d)
        second[1:] = np.resize([1.0, -1.0], d - 1)
        probes.append(second)
    try:
        for raw in probes:
            v = raw * _PROBE_SCALE
            unit = v / np.sqrt(np.mean(v**2))
            x = torch.tensor(np.stack([v, -v]), dtype=lm.dtype, device=lm.device)[:, None, :]
            with torch.no_grad():
                out = module(x)
            out = out[0] if isinstance(out, tuple) else out
            y = out.float().cpu().numpy()[:, 0, :].astype(np.float64)
            nz = unit != 0
            gain[nz] = ((y[0] - y[1]) / 2.0)[nz] / unit[nz]
    except Exception as exc:  # an exotic norm we cannot probe: fall back to no gain
        return None, f"{name} ({type(module).__name__}): could not be probed ({exc}); no gain"
    if not np.isfinite(gain).all():
        return None, f"{name} ({type(module).__name__}): non-finite gain; no gain applied"
    return gain.astype(np.float32), f"{name} ({type(module).__name__}): measured elementwise gain"


def logit_lens(
    decoder: np.ndarray | torch.Tensor,
    unembed: np.ndarray | torch.Tensor,
    *,
    gain: np.ndarray | None = None,
    top: int = 10,
    vocab_size: int | None = None,
    decode: Any = None,
    chunk_size: int = 256,
    info: dict[str, Any] | None = None,
) -> LogitLens:
    """Rank output tokens by ``W_U @ (gain * d_f)`` for every decoder row ``d_f``.

    Parameters
    ----------
    decoder : array or Tensor
        ``[n_features, d_model]`` decoder directions (the SAE's ``W_dec``).
    unembed : array or Tensor
        ``[vocab, d_model]`` unembedding matrix (see :func:`unembedding`).
    gain : numpy.ndarray, optional
        ``[d_model]`` final-norm gain (see :func:`final_norm_gain`); ``None`` applies none.
    top : int, default 10
        Tokens kept per feature and direction.
    vocab_size : int, optional
        Rank only ids below this (e.g. ``len(tokenizer)``); default: all rows.
    decode : callable, optional
        ``decode(id) -> str``; default gives ``str(id)``.
    chunk_size : int, default 256
        Features per matrix product.
    info : dict, optional
        Provenance notes stored in :attr:`LogitLens.info`.

    Returns
    -------
    LogitLens

    Raises
    ------
    ConfigError
        ``top`` or ``chunk_size`` is not a positive integer, or the widths disagree.
    """
    import torch

    for name, value in (("top", top), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}", field=name)
    dec = torch.as_tensor(decoder).detach().float().cpu()
    W_U = torch.as_tensor(unembed).detach().float().cpu()
    if vocab_size is not None:
        W_U = W_U[: max(1, min(int(vocab_size), W_U.shape[0]))]
    if dec.ndim != 2 or W_U.ndim != 2 or dec.shape[1] != W_U.shape[1]:
        raise ConfigError(f"decoder {tuple(dec.shape)} and unembedding {tuple(W_U.shape)} "
                          "must share their last dimension (d_model)", field="unembed")
    if gain is not None:
        g = torch.as_tensor(np.asarray(gain, dtype=np.float32))
        if g.shape != (dec.shape[1],):
            raise ConfigError(f"gain has shape {tuple(g.shape)}, expected ({dec.shape[1]},)",
                              field="gain")
        dec = dec * g
    k = min(top, W_U.shape[0])
    n = dec.shape[0]
    p_ids = np.zeros((n, k), dtype=np.int64)
    p_val = np.zeros((n, k), dtype=np.float32)
    s_ids = np.zeros((n, k), dtype=np.int64)
    s_val = np.zeros((n, k), dtype=np.float32)
    W_T = W_U.T.contiguous()
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            logits = dec[start : start + chunk_size] @ W_T
            hi = torch.topk(logits, k, dim=1, largest=True, sorted=True)
            lo = torch.topk(logits, k, dim=1, largest=False, sorted=True)
            stop = start + logits.shape[0]
            p_ids[start:stop], p_val[start:stop] = hi.indices.numpy(), hi.values.numpy()
            s_ids[start:stop], s_val[start:stop] = lo.indices.numpy(), lo.values.numpy()
    decoder_fn = decode if decode is not None else str
    cache: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in cache:
            cache[i] = str(decoder_fn(i))
        return cache[i]

    return LogitLens(
        promoted_ids=p_ids, promoted_logits=p_val, suppressed_ids=s_ids, suppressed_logits=s_val,
        promoted=[[text(int(i)) for i in row] for row in p_ids],
        suppressed=[[text(int(i)) for i in row] for row in s_ids],
        info=dict(info or {}),
    )


def model_logit_lens(lm: LoadedModel, decoder: np.ndarray | torch.Tensor, *,
                     top: int = 10) -> LogitLens:
    """:func:`logit_lens` with the model's own unembedding, final-norm gain and tokenizer.

    Parameters
    ----------
    lm : LoadedModel
        The model the SAE reads.
    decoder : array or Tensor
        ``[n_features, d_model]`` decoder directions.
    top : int, default 10
        Tokens kept per feature and direction.

    Returns
    -------
    LogitLens
        With ``info = {'unembedding': ..., 'final_norm': ..., 'formula': ...}``.

    Raises
    ------
    ModelLoadError
        The unembedding cannot be found.
    """
    W_U, source = unembedding(lm)
    gain, norm_note = final_norm_gain(lm)
    tokenizer = lm.tokenizer

    def decode(i: int) -> str:
        return str(tokenizer.decode([i]))

    return logit_lens(
        decoder, W_U, gain=gain, top=top, vocab_size=len(tokenizer), decode=decode,
        info={"unembedding": source, "final_norm": norm_note,
              "formula": "W_U @ (final_norm_gain * W_dec[f]); no 1/rms, no bias",
              "top": top},
    )


# --------------------------------------------------------------------------- internals


def _tied(lm: LoadedModel) -> bool:
    configs = [getattr(lm.model, "config", None)]
    with contextlib.suppress(Exception):
        configs.append(configs[0].get_text_config())  # type: ignore[union-attr]
    for cfg in configs:
        value = getattr(cfg, "tie_word_embeddings", None)
        if isinstance(value, bool):
            return value
    return True  # transformers' default


def _head_from_safetensors(directory: Path) -> tuple[torch.Tensor, str] | None:
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                keys: Sequence[str] = list(f.keys())
                for key in keys:
                    if key == "lm_head.weight" or key.endswith(".lm_head.weight"):
                        return f.get_tensor(key), path.name
        except Exception as exc:
            raise ModelLoadError(f"cannot read weights for the logit lens: {exc}",
                                 path=path) from exc
    return None


def _checked(weight: torch.Tensor, lm: LoadedModel) -> torch.Tensor:
    if weight.ndim != 2 or weight.shape[1] != lm.d_model:
        raise ModelLoadError(f"unembedding has shape {tuple(weight.shape)}, expected "
                             f"[vocab, {lm.d_model}]", path=lm.model_id)
    return weight


def _final_norm(model: Any) -> tuple[Any, str]:
    import torch

    for name in FINAL_NORM_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module) and not any(
                isinstance(m, torch.nn.ModuleList) for m in module.children()):
            return module, name
    return None, ""
