"""The one SAE module auditor runs, whatever format its weights came from.

Parameters are stored in a single canonical orientation::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]
    threshold [d_sae]     (buffer, JumpReLU only)

Loaders in :mod:`auditor.sae.formats` transpose each source format into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save

from auditor._files import atomic_write_bytes, atomic_write_text
from auditor.errors import ConfigError, HookError, SAEModelMismatch
from auditor.sae.config import SAEConfig

__all__ = [
    "CONFIG_FILENAME",
    "LAYER_NORM_EPS",
    "SAE",
    "WEIGHTS_FILENAME",
    "SparseCodes",
    "check_compatible",
    "dtype_name",
    "torch_dtype",
]

#: File name of the config in auditor's own SAE format.
CONFIG_FILENAME = "config.json"
#: File name of the weights in auditor's own SAE format.
WEIGHTS_FILENAME = "sae.safetensors"
#: Epsilon added to the standard deviation by ``'layer_norm'`` input normalisation.
LAYER_NORM_EPS = 1e-5
# Encoder matmuls always run on blocks of exactly this many rows (zero padded), so a
# token's pre-activations do not depend on which other tokens share its batch: BLAS picks
# different kernels / reduction splits for different row counts, which changes the last
# bits. This is what makes encode_sparse (chunked) equal encode bit for bit.
_ROW_BLOCK = 128

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def torch_dtype(name: str) -> torch.dtype:
    """Return the torch dtype named by an :class:`SAEConfig` ``dtype`` string.

    Parameters
    ----------
    name : {'float32', 'float16', 'bfloat16', 'float64'}
        The dtype name.

    Returns
    -------
    torch.dtype
        The matching dtype.

    Raises
    ------
    ConfigError
        If the name is not a supported floating-point dtype.
    """
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unsupported dtype {name!r}; expected one of {list(_DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """Return the :class:`SAEConfig` ``dtype`` string of a torch dtype.

    Parameters
    ----------
    dtype : torch.dtype
        A supported floating-point dtype.

    Returns
    -------
    str
        Its name, e.g. ``'float32'``.

    Raises
    ------
    ConfigError
        If the dtype is not supported.
    """
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ConfigError(f"unsupported dtype {dtype}; expected one of {list(_DTYPES.values())}")


class SparseCodes(NamedTuple):
    """Per-token active latents, padded to a common width.

    Attributes
    ----------
    indices : torch.Tensor
        int64 ``[n_tokens, width]`` latent indices.
    values : torch.Tensor
        float ``[n_tokens, width]`` activations. Entries with value 0 are padding (their
        indices are distinct from the row's other indices, so ``scatter_`` is safe).
    """

    indices: torch.Tensor
    values: torch.Tensor


class SAE(torch.nn.Module):
    """A sparse autoencoder in auditor's canonical orientation.

    Parameters
    ----------
    cfg : SAEConfig
        Shapes and conventions. Parameters start as zeros of the right shapes, in
        ``cfg.dtype``, on the CPU.

    Attributes
    ----------
    cfg : SAEConfig
        The config.
    sha256 : str or None
        Hex sha256 of the weights file the SAE was loaded from; ``None`` if built in memory.
    source_path : str or None
        Path the SAE was loaded from; ``None`` if built in memory.

    Notes
    -----
    The encoder computes ``pre = (norm(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc``,
    optionally multiplies ``pre`` by the decoder row norms, and applies the activation.
    Parameters never require gradients: this module is for inference. The encoder matmul
    runs on fixed-size row blocks so that a token's code does not depend on the other
    tokens in its batch (see :meth:`encode_sparse`).
    """

    W_enc: torch.nn.Parameter
    b_enc: torch.nn.Parameter
    W_dec: torch.nn.Parameter
    b_dec: torch.nn.Parameter
    threshold: torch.Tensor

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise ConfigError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.sha256: str | None = None
        self.source_path: str | None = None
        dtype = torch_dtype(cfg.dtype)

        def param(*shape: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.zeros(*shape, dtype=dtype), requires_grad=False)

        self.W_enc = param(cfg.d_in, cfg.d_sae)
        self.b_enc = param(cfg.d_sae)
        self.W_dec = param(cfg.d_sae, cfg.d_in)
        self.b_dec = param(cfg.d_in)
        if cfg.activation == "jumprelu":
            self.register_buffer("threshold", torch.zeros(cfg.d_sae, dtype=dtype))

    # ------------------------------------------------------------------ helpers
    def canonical_tensors(self) -> dict[str, torch.Tensor]:
        """Return the weights by canonical name (``threshold`` only for JumpReLU).

        Returns
        -------
        dict of str to torch.Tensor
            ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` and, for JumpReLU, ``threshold``.
        """
        out: dict[str, torch.Tensor] = {
            "W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
        }
        if self.cfg.activation == "jumprelu":
            out["threshold"] = self.threshold
        return out

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"SAE input must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.cfg.d_in:
            width = x.shape[-1] if x.ndim else None
            raise SAEModelMismatch(
                f"input has last dimension {width}, but the SAE's d_in={self.cfg.d_in}",
                path=self.source_path,
                tensor="W_enc",
            )
        return x.to(device=self.W_enc.device, dtype=self.W_enc.dtype)

    def _decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``[n, d_sae]`` of an already cast ``[n, d_in]`` input."""
        cfg = self.cfg
        if cfg.normalize_activations == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            x = x / (x.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
        elif cfg.normalize_activations == "constant":
            assert cfg.input_scale is not None  # SAEConfig validates it for "constant"
            x = x * cfg.input_scale
        if cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = _blocked_matmul(x, self.W_enc) + self.b_enc
        if cfg.rescale_acts_by_decoder_norm:
            pre = pre * self._decoder_norms()
        return pre

    def _uses_topk(self) -> bool:
        cfg = self.cfg
        return cfg.activation == "topk" or (
            cfg.activation == "batchtopk" and cfg.batchtopk_threshold is None
        )

    def _select_topk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.relu_before_topk:
            pre = torch.relu(pre)
        values, indices = torch.topk(pre, self.cfg.k, dim=-1, sorted=True)  # type: ignore[arg-type]
        return indices, torch.relu(values)

    def _activate_dense(self, pre: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if self._uses_topk():
            indices, values = self._select_topk(pre)
            return torch.zeros_like(pre).scatter_(-1, indices, values)
        if cfg.activation == "relu":
            return torch.relu(pre)
        if cfg.activation == "jumprelu":
            threshold = self.threshold
        else:  # batchtopk with a learned global threshold
            threshold = torch.tensor(cfg.batchtopk_threshold, dtype=pre.dtype, device=pre.device)
        return torch.relu(pre) * (pre > threshold)

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encode activations into dense latents.

        Parameters
        ----------
        x : torch.Tensor
            ``[..., d_in]`` activations; cast to the parameters' dtype and device.

        Returns
        -------
        torch.Tensor
            ``[..., d_sae]`` latent activations (zeros where inactive).

        Raises
        ------
        SAEModelMismatch
            If the last dimension of ``x`` is not ``d_in``.
        """
        x = self._check_input(x)
        lead = x.shape[:-1]
        pre = self._pre_activation(x.reshape(-1, self.cfg.d_in))
        return self._activate_dense(pre).reshape(*lead, self.cfg.d_sae)

    def encode_sparse(self, x: torch.Tensor, *, chunk_size: int = 4096) -> SparseCodes:
        """Encode activations into padded sparse codes, ``chunk_size`` tokens at a time.

        For TopK (and BatchTopK without a threshold) no dense ``[n_tokens, d_sae]`` tensor
        is ever built: each chunk's pre-activations go straight to ``torch.topk`` and the
        width is ``k``. For ReLU/JumpReLU each chunk's width is its largest active count,
        and chunks are padded to a common width.

        Parameters
        ----------
        x : torch.Tensor
            ``[n_tokens, d_in]`` activations.
        chunk_size : int
            Tokens encoded at once; bounds peak memory to ``chunk_size * d_sae`` floats.

        Returns
        -------
        SparseCodes
            ``indices`` (int64) and ``values`` of shape ``[n_tokens, width]``; values equal
            to 0 are padding. Scattering them into zeros equals :meth:`encode` exactly.

        Raises
        ------
        ConfigError
            If ``x`` is not 2-D or ``chunk_size`` is not a positive integer.
        SAEModelMismatch
            If the last dimension of ``x`` is not ``d_in``.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"encode_sparse expects a [n_tokens, d_in] tensor, got {shape}")
        x = self._check_input(x)
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, x.shape[0], chunk_size):
            pre = self._pre_activation(x[start : start + chunk_size])
            if self._uses_topk():
                parts.append(self._select_topk(pre))
                continue
            dense = self._activate_dense(pre)
            width = int((dense != 0).sum(dim=-1).max().item())
            values, indices = torch.topk(dense, width, dim=-1, sorted=True)
            parts.append((indices, values))
        return _concat_padded(parts, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct activations from latents.

        Parameters
        ----------
        z : torch.Tensor
            ``[..., d_sae]`` latents.

        Returns
        -------
        torch.Tensor
            ``[..., d_in]`` reconstruction. ``'constant'`` input scaling is undone;
            ``'layer_norm'`` cannot be undone exactly (the per-token mean and std are not
            kept), so for it the reconstruction is in the normalised space.
        """
        z = z.to(device=self.W_dec.device, dtype=self.W_dec.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            z = z / self._decoder_norms()
        out = z @ self.W_dec + self.b_dec
        if self.cfg.normalize_activations == "constant":
            assert self.cfg.input_scale is not None
            out = out / self.cfg.input_scale
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``decode(encode(x))``.

        Parameters
        ----------
        x : torch.Tensor
            ``[..., d_in]`` activations.

        Returns
        -------
        torch.Tensor
            ``[..., d_in]`` reconstruction.
        """
        return self.decode(self.encode(x))

    def save(self, directory: str | Path) -> Path:
        """Save in auditor's format: ``config.json`` and ``sae.safetensors``.

        Parameters
        ----------
        directory : str or Path
            Directory to write (created if missing; existing files are overwritten).

        Returns
        -------
        Path
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        dtype = torch_dtype(self.cfg.dtype)
        tensors = {
            name: t.detach().to(device="cpu", dtype=dtype).contiguous()
            for name, t in self.canonical_tensors().items()
        }
        atomic_write_bytes(directory / WEIGHTS_FILENAME,
                           save(tensors, metadata={"format": "auditor"}))
        text = json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True)
        atomic_write_text(directory / CONFIG_FILENAME, text + "\n")
        return directory

    def extra_repr(self) -> str:
        cfg = self.cfg
        k = f", k={cfg.k}" if cfg.k is not None else ""
        return f"d_in={cfg.d_in}, d_sae={cfg.d_sae}, activation={cfg.activation!r}{k}"


def _blocked_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` computed on zero-padded blocks of exactly ``_ROW_BLOCK`` rows."""
    n = x.shape[0]
    out = x.new_empty(n, weight.shape[1])
    for start in range(0, n, _ROW_BLOCK):
        block = x[start : start + _ROW_BLOCK]
        rows = block.shape[0]
        if rows < _ROW_BLOCK:
            block = torch.nn.functional.pad(block, (0, 0, 0, _ROW_BLOCK - rows))
            out[start : start + rows] = (block @ weight)[:rows]
        else:
            torch.matmul(block, weight, out=out[start : start + rows])
    return out


def _free_indices(indices: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Per row, the ``count`` smallest indices in ``[0, width)`` not already in ``indices``.

    Padding entries get indices distinct from the row's real ones, so scattering padded
    codes into a dense tensor (``scatter_``) can never overwrite an active latent. A row
    holds ``width - count`` indices, so ``[0, width)`` always has ``count`` free ones.
    """
    taken = torch.zeros(indices.shape[0], width + 1, dtype=torch.int8, device=indices.device)
    taken.scatter_(1, indices.clamp(max=width), 1)
    order = torch.argsort(taken[:, :width], dim=1, stable=True)
    return order[:, :count]


def _concat_padded(parts: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> SparseCodes:
    if not parts:
        empty = torch.zeros(0, 0, device=x.device)
        return SparseCodes(empty.to(torch.int64), empty.to(x.dtype))
    width = max(values.shape[1] for _, values in parts)
    indices_out, values_out = [], []
    for indices, values in parts:
        pad = width - values.shape[1]
        if pad:
            indices = torch.cat([indices, _free_indices(indices, width, pad)], dim=1)
            values = torch.nn.functional.pad(values, (0, pad))
        indices_out.append(indices)
        values_out.append(values)
    return SparseCodes(torch.cat(indices_out).to(torch.int64), torch.cat(values_out))


def check_compatible(sae: SAE, *, d_model: int, n_layers: int | None = None) -> None:
    """Check that an SAE fits a model's hidden size and layer count.

    Parameters
    ----------
    sae : SAE
        The SAE.
    d_model : int
        The model's hidden size.
    n_layers : int or None
        The model's number of decoder layers; skips the layer check if ``None``.

    Raises
    ------
    SAEModelMismatch
        If ``sae.cfg.d_in != d_model``; the message names the SAE file and ``W_enc``.
    HookError
        If the SAE's ``hook_layer`` is not below ``n_layers``.
    """
    if sae.cfg.d_in != d_model:
        raise SAEModelMismatch(
            f"SAE input width d_in={sae.cfg.d_in} (W_enc has shape "
            f"{tuple(sae.W_enc.shape)}) does not match the model's hidden size "
            f"d_model={d_model}",
            path=sae.source_path,
            tensor="W_enc",
        )
    layer = sae.cfg.hook_layer
    if n_layers is not None and layer is not None and layer >= n_layers:
        raise HookError(
            f"SAE reads decoder layer {layer} but the model has only {n_layers} layers",
            path=sae.source_path,
            field="hook_layer",
        )
