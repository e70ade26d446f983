"""Train a TopK (or BatchTopK) sparse autoencoder on cached activations.

The recipe follows Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") and
EleutherAI's ``sparsify``:

* inputs are multiplied by a constant ``input_scale = sqrt(d_model) / mean_norm`` measured
  on the training split and stored in the SAE's config (``normalize_activations='constant'``);
* encode: ``z = topk(relu((x * s - b_dec) @ W_enc + b_enc))``; decode ``z @ W_dec + b_dec``
  (so the trained SAE has ``apply_b_dec_to_input=True`` and ``relu_before_topk=True``);
* init: random unit-norm decoder rows, ``W_enc = W_dec.T``, ``b_enc = 0``, ``b_dec`` the
  geometric median of a sample of scaled inputs;
* loss: FVU (squared error over the batch's total variance) plus ``auxk_alpha`` × AuxK,
  which reconstructs the residual error from the top ``auxk_k`` *dead* latents;
* Adam (0.9, 0.999, eps 6.25e-10), linear warm-up then linear decay to zero; the decoder
  gradient's component parallel to each row is removed before the step and the rows are
  renormalised to unit norm after it.

BatchTopK (Bussmann et al. 2024, ``activation='batchtopk'``) keeps the ``batch × k``
largest pre-activations of the whole batch instead of ``k`` per token, so a token may use
more or fewer latents while the mean stays ``k``; at inference a single global threshold
(a running mean of each batch's smallest kept value, saved as ``batchtopk_threshold``)
replaces the batch, so a token's code does not depend on its batch.

Checkpoints (``out/checkpoints/step-N/``) hold the SAE in auditor's format, the optimizer
moments and latent statistics as safetensors, and ``state.json`` (step, data position,
history). Nothing is pickled. The data order is a function of the seed and the position
only, so resuming from a checkpoint gives the same final weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from auditor import __version__
from auditor._versions import library_versions
from auditor.errors import ConfigError, StoreError
from auditor.sae.activations import ActivationCache
from auditor.sae.config import HOOK_POINTS, SAEConfig
from auditor.sae.model import SAE, WEIGHTS_FILENAME

if TYPE_CHECKING:
    from auditor.sae.stream import ModelStream

__all__ = ["TRAINING_FILENAME", "TrainConfig", "TrainResult", "geometric_median", "train_sae"]

#: Summary of a finished run written next to the SAE: config, metrics, history.
TRAINING_FILENAME = "training.json"
_CHECKPOINTS = "checkpoints"
_STATE = "state.json"
_OPTIMIZER = "optimizer.safetensors"
_BETAS = (0.9, 0.999)
_EPS = 6.25e-10
_PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")
_MAX_DEAD_TOKENS = 10_000_000
# BatchTopK's inference threshold: a running mean over about the last 100 batches, so it
# tracks the weights as they train (it matched the exact-k threshold of 65,536 training
# tokens to 0.05 % in the shipped candidate's run).
_THRESHOLD_MOMENTUM = 0.99


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value
    )


StepCallback = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one TopK or BatchTopK SAE training run.

    Parameters
    ----------
    layer : int
        Decoder layer whose activations are read.
    d_sae : int
        Number of latents.
    k : int
        Active latents per token (for BatchTopK: on average over a batch).
    point : {'resid_post', 'resid_pre'}, default 'resid_post'
        Hook point at ``layer``; the cache hook read is ``f"layer{layer}.{point}"``.
    lr : float or None
        Adam learning rate; ``None`` uses ``2e-4 / sqrt(d_sae / 2**14)`` (sparsify).
    batch_size : int, default 4096
        Tokens per step.
    n_tokens : int, default 10_000_000
        Training tokens in total, repeated epochs included; ``steps = n_tokens // batch_size``.
    warmup_steps : int, default 1000
        Linear learning-rate warm-up (capped at a tenth of the steps).
    decay_start : float, default 0.8
        Fraction of the steps after which the learning rate decays linearly to zero.
    auxk_alpha : float, default 1/32
        Weight of the AuxK loss; 0 disables it.
    auxk_k : int or None
        Dead latents AuxK may use per token; ``None`` is ``min(d_model // 2, 256, d_sae)``.
    dead_tokens : int or None
        A latent is dead if it has not fired in this many training tokens; ``None`` is
        ``min(10M, max(n_tokens // 20, batch_size))``.
    b_dec_init : {'geometric_median', 'mean', 'zeros'}, default 'geometric_median'
        How the decoder bias starts.
    init_tokens : int, default 32768
        Sample size for ``b_dec`` initialisation.
    heldout_fraction : float, default 0.05
        Share of documents kept out of training (see :func:`auditor.sae.activations.heldout_mask`).
    seed : int, default 0
        Seeds the weights and the data order.
    log_every : int, default 10
        Steps between entries of the history.
    checkpoint_every : int, default 1000
        Steps between checkpoints; 0 disables them.
    keep_checkpoints : int, default 2
        Most recent checkpoints kept on disk.
    resample_every : int, default 0
        Steps between dead-latent resamples before the decay starts; 0 disables them
        (AuxK alone). A resample points each dead latent at the reconstruction error of a
        token drawn with probability proportional to its squared error (Bricken et al.
        2023), with an encoder row as long as the live ones' mean, and resets its Adam
        moments: AuxK trains dead latents but rarely lifts them into the top k.
    encoder_dtype : {'float32', 'bfloat16'}, default 'float32'
        Precision of the dense ``[batch, d_in] x [d_in, d_sae]`` encoder product that picks
        each token's top k and gives their values (inputs rounded to bfloat16, products
        summed in float32, values rounded to bfloat16: ~0.2 % relative). The weights, the
        reconstruction and every gradient stay float32. ``'bfloat16'`` halves the cost of a
        step's largest product where the CPU has AVX512-BF16 or AMX (and on GPUs).
    activation : {'topk', 'batchtopk'}, default 'topk'
        ``'topk'``: exactly ``k`` latents per token. ``'batchtopk'``: the ``batch_size × k``
        largest pre-activations of the batch, at most ``batchtopk_max_k`` per token; the
        saved SAE applies the learned global threshold instead.
    batchtopk_max_k : int or None
        For ``'batchtopk'``: most latents one token may use in training (the candidates
        are each token's top ``batchtopk_max_k``); ``None`` is ``min(4 * k, d_sae)``.

    Raises
    ------
    ConfigError
        On an out-of-range or inconsistent value.

    Examples
    --------
    >>> cfg = TrainConfig(layer=3, d_sae=1024, k=32, n_tokens=1_000_000)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> round(cfg.learning_rate, 6)
    0.0008
    """

    layer: int
    d_sae: int
    k: int
    point: str = "resid_post"
    lr: float | None = None
    batch_size: int = 4096
    n_tokens: int = 10_000_000
    warmup_steps: int = 1000
    decay_start: float = 0.8
    auxk_alpha: float = 1 / 32
    auxk_k: int | None = None
    dead_tokens: int | None = None
    b_dec_init: str = "geometric_median"
    init_tokens: int = 32768
    heldout_fraction: float = 0.05
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resample_every: int = 0
    encoder_dtype: str = "float32"
    activation: str = "topk"
    batchtopk_max_k: int | None = None

    #: Fields that do not change the trained weights (may differ on resume).
    RUNTIME = ("checkpoint_every", "keep_checkpoints")
    B_DEC_INITS = ("geometric_median", "mean", "zeros")
    ENCODER_DTYPES = ("float32", "bfloat16")
    ACTIVATIONS = ("topk", "batchtopk")

    def __post_init__(self) -> None:
        positive = ("d_sae", "k", "batch_size", "n_tokens", "init_tokens", "log_every",
                    "keep_checkpoints")
        for name in positive:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("layer", "warmup_steps", "seed", "checkpoint_every", "resample_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(f"must be a non-negative integer, got {value!r}", field=name)
        for name in ("auxk_k", "dead_tokens", "batchtopk_max_k"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(f"must be a positive integer or None, got {value!r}",
                                  field=name)
        if self.k > self.d_sae:
            raise ConfigError(f"k={self.k} exceeds d_sae={self.d_sae}", field="k")
        if self.activation not in self.ACTIVATIONS:
            raise ConfigError(f"must be one of {self.ACTIVATIONS}, got {self.activation!r}",
                              field="activation")
        if self.batchtopk_max_k is not None and not self.k <= self.batchtopk_max_k <= self.d_sae:
            raise ConfigError(
                f"must be between k={self.k} and d_sae={self.d_sae}, got {self.batchtopk_max_k}",
                field="batchtopk_max_k")
        if self.point not in HOOK_POINTS:
            raise ConfigError(f"must be one of {HOOK_POINTS}, got {self.point!r}", field="point")
        if self.lr is not None and (not _is_real(self.lr) or self.lr <= 0):
            raise ConfigError(f"must be a positive number or None, got {self.lr!r}", field="lr")
        if not _is_real(self.decay_start) or not 0 <= self.decay_start <= 1:
            raise ConfigError(f"must be in [0, 1], got {self.decay_start!r}",
                              field="decay_start")
        if not _is_real(self.auxk_alpha) or self.auxk_alpha < 0:
            raise ConfigError(f"must be >= 0, got {self.auxk_alpha!r}", field="auxk_alpha")
        if not _is_real(self.heldout_fraction) or not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"must be in [0, 1), got {self.heldout_fraction!r}",
                              field="heldout_fraction")
        if self.b_dec_init not in self.B_DEC_INITS:
            raise ConfigError(f"must be one of {self.B_DEC_INITS}, got {self.b_dec_init!r}",
                              field="b_dec_init")
        if self.encoder_dtype not in self.ENCODER_DTYPES:
            raise ConfigError(
                f"must be one of {self.ENCODER_DTYPES}, got {self.encoder_dtype!r}",
                field="encoder_dtype")
        if self.n_tokens < self.batch_size:
            raise ConfigError(
                f"n_tokens={self.n_tokens} is less than one batch ({self.batch_size})",
                field="n_tokens",
            )

    # ------------------------------------------------------------------ derived values
    @property
    def hook(self) -> str:
        """The cache hook name, e.g. ``'layer3.resid_post'``."""
        return f"layer{self.layer}.{self.point}"

    @property
    def steps(self) -> int:
        """Optimizer steps: ``n_tokens // batch_size``."""
        return self.n_tokens // self.batch_size

    @property
    def learning_rate(self) -> float:
        """``lr``, or sparsify's default ``2e-4 / sqrt(d_sae / 2**14)``."""
        if self.lr is not None:
            return float(self.lr)
        return 2e-4 / math.sqrt(self.d_sae / 2**14)

    @property
    def resolved_dead_tokens(self) -> int:
        """``dead_tokens`` or its default for this run length."""
        if self.dead_tokens is not None:
            return self.dead_tokens
        return min(_MAX_DEAD_TOKENS, max(self.n_tokens // 20, self.batch_size))

    @property
    def candidates_per_token(self) -> int:
        """Latents a token may use in a training step: ``k`` (TopK) or the BatchTopK cap."""
        if self.activation == "topk":
            return self.k
        if self.batchtopk_max_k is not None:
            return self.batchtopk_max_k
        return min(4 * self.k, self.d_sae)

    def resolved_auxk_k(self, d_model: int) -> int:
        """``auxk_k`` or ``min(d_model // 2, 256, d_sae)``."""
        if self.auxk_k is not None:
            return min(self.auxk_k, self.d_sae)
        return max(1, min(d_model // 2, 256, self.d_sae))

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) ``step``: warm-up, plateau, linear decay to zero."""
        steps = self.steps
        warmup = min(self.warmup_steps, max(steps // 10, 0))
        factor = 1.0
        if warmup > 0 and step < warmup:
            factor = (step + 1) / warmup
        decay_from = int(self.decay_start * steps)
        if step >= decay_from and steps > decay_from:
            factor = min(factor, (steps - step) / (steps - decay_from))
        return self.learning_rate * factor

    def resamples_at(self, step: int) -> bool:
        """Whether dead latents are resampled after (1-based) ``step``."""
        every = self.resample_every
        return every > 0 and step % every == 0 and step < int(self.decay_start * self.steps)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, *, include_runtime: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        d = asdict(self)
        if not include_runtime:
            for name in self.RUNTIME:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"train config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown train settings: {', '.join(unknown)}")
        missing = sorted(n for n in ("layer", "d_sae", "k") if n not in d)
        if missing:
            raise ConfigError(f"train config is missing {', '.join(missing)}")
        return cls(**dict(d))


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    sae : SAE
        The trained SAE (also saved in ``out``).
    out : str
        Output directory.
    steps, tokens : int
        Steps taken and training tokens seen, in total (over all resumed parts).
    loss, fvu, auxk_loss, dead_frac : float
        Metrics of the last step (``dead_frac``: share of latents that had not fired in
        ``dead_tokens`` tokens).
    input_scale : float
        The constant the inputs are multiplied by.
    history : list of dict
        ``step, tokens, loss, fvu, auxk_loss, dead_frac, lr`` every ``log_every`` steps.
    seconds : float
        Wall time of this call.
    resumed_from : int or None
        Step of the checkpoint this call resumed from.
    resamples : list of dict
        ``step, latents`` of every dead-latent resample (``config.resample_every``).
    config : TrainConfig
    """

    sae: SAE
    out: str
    steps: int
    tokens: int
    loss: float
    fvu: float
    auxk_loss: float
    dead_frac: float
    input_scale: float
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None
    resamples: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the SAE itself)."""
        return {
            "out": self.out, "steps": self.steps, "tokens": self.tokens, "loss": self.loss,
            "fvu": self.fvu, "auxk_loss": self.auxk_loss, "dead_frac": self.dead_frac,
            "input_scale": self.input_scale, "config": self.config.to_dict(),
            "history": list(self.history), "seconds": self.seconds,
            "resumed_from": self.resumed_from, "resamples": list(self.resamples),
        }


# --------------------------------------------------------------------------- helpers
def geometric_median(points: torch.Tensor, *, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Geometric median of ``[n, d]`` points by Weiszfeld's algorithm (float64 inside).

    Parameters
    ----------
    points : torch.Tensor
        ``[n, d]`` points, ``n >= 1``.
    iters : int, default 100
        Maximum iterations.
    tol : float, default 1e-6
        Stop when the estimate moves less than ``tol`` × its norm (plus ``tol``).

    Returns
    -------
    torch.Tensor
        ``[d]`` float32 median.

    Examples
    --------
    For four points in convex position it is where the diagonals cross:

    >>> geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]))
    tensor([0.5000, 0.5000])
    """
    x = points.double()
    guess = x.mean(dim=0)
    for _ in range(iters):
        dist = (x - guess).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        moved = float((new - guess).norm())
        guess = new
        if moved <= tol * (float(guess.norm()) + 1.0):
            break
    return guess.float()


class _DataStream:
    """An endless, seeded stream of training tokens: epoch after epoch of permutations.

    Token ``j`` of the stream is row ``perm(j // n)[j % n]`` of ``acts``, where
    ``perm(e)`` is a permutation seeded by ``(seed, e)``. A step's batch depends only on
    the seed and the step, which is what makes resuming exact.
    """

    def __init__(self, acts: torch.Tensor, *, seed: int) -> None:
        self.acts = acts
        self.n = acts.shape[0]
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            # On the CPU whatever the device: the data order must not depend on it.
            generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=generator, device="cpu")
        return self._perms[epoch]

    def take(self, start: int, count: int) -> torch.Tensor:
        parts = []
        position = start
        while count > 0:
            epoch, offset = divmod(position, self.n)
            size = min(count, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + size])
            position += size
            count -= size
        return self.acts[torch.cat(parts)]


class _CacheData:
    """The training split of an activation cache, served like a
    :class:`auditor.sae.stream.ModelStream`: batches by step, an identity for checkpoints
    and a record for ``training.json``."""

    def __init__(self, cache: ActivationCache, *, config: TrainConfig) -> None:
        self.cache = cache
        self.acts = cache.tensors(config.hook, split="train",
                                  heldout_fraction=config.heldout_fraction,
                                  dtype=torch.float16)["acts"]
        if int(self.acts.shape[0]) == 0:
            raise StoreError(f"no training tokens for hook {config.hook!r}",
                             path=cache.directory)
        self.d_model = cache.d_model
        self._stream = _DataStream(self.acts, seed=config.seed)

    def identity(self) -> dict[str, Any]:
        return {"n_train_tokens": int(self.acts.shape[0]),
                "cache_model": self.cache.manifest.get("model"),
                "cache_texts": self.cache.manifest.get("texts")}

    def record(self) -> dict[str, Any]:
        manifest = self.cache.manifest
        return {"n_train_tokens": int(self.acts.shape[0]), "cache": str(self.cache.directory),
                "cache_model": manifest.get("model"),
                # What text the cache holds: the corpus file named at collection, and a
                # fingerprint of the texts themselves (None for caches written before
                # auditor recorded them).
                "cache_input": manifest.get("input"), "cache_texts": manifest.get("texts")}

    def scale_sample(self) -> torch.Tensor:
        return self.acts

    def first_tokens(self, n: int) -> torch.Tensor:
        return self._stream.take(0, min(n, self._stream.n)).float()

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self._stream.take(step * batch_size, batch_size)

    def plan(self, *, steps: int, batch_size: int) -> None:
        return None  # the whole training split is in memory already

    def state(self) -> dict[str, Any]:
        return {}  # the data order is a function of the step

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


class _Trainer:
    """Parameters, Adam moments and latent statistics of one run."""

    def __init__(self, *, d_in: int, config: TrainConfig,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.d_in = d_in
        # Every tensor of the run lives here; only the data order, the init draw and the
        # resample draw use CPU generators, so a seed means the same run on any device.
        self.device = device = torch.device(device)
        self.params: dict[str, torch.Tensor] = {
            # Stored [d_sae, d_in] (rows = latents) so gathering latents is contiguous;
            # transposed to the canonical [d_in, d_sae] on export.
            "W_enc": torch.zeros(config.d_sae, d_in, device=device),
            "b_enc": torch.zeros(config.d_sae, device=device),
            "W_dec": torch.zeros(config.d_sae, d_in, device=device),
            "b_dec": torch.zeros(d_in, device=device),
        }
        for p in self.params.values():
            p.requires_grad_(True)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.adam_step = 0
        self.since_fired = torch.zeros(config.d_sae, dtype=torch.int64, device=device)
        self.auxk_k = config.resolved_auxk_k(d_in)
        self.dead_tokens = config.resolved_dead_tokens
        self.encoder_dtype: torch.dtype = getattr(torch, config.encoder_dtype)
        # BatchTopK only: running mean of each batch's smallest kept pre-activation.
        self.threshold: float | None = None
        # The dense pre-activations, reused step after step: a fresh [batch, d_sae] tensor
        # each step costs page faults comparable to the relu over it.
        self._pre: torch.Tensor | None = None

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def initialise(self, sample: torch.Tensor) -> None:
        cfg = self.config
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, self.d_in, generator=generator, device="cpu")
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.params["W_dec"].copy_(w_dec)
        self.params["W_enc"].copy_(w_dec)
        self.params["b_enc"].zero_()
        if cfg.b_dec_init == "geometric_median":
            self.params["b_dec"].copy_(geometric_median(sample))
        elif cfg.b_dec_init == "mean":
            self.params["b_dec"].copy_(sample.double().mean(dim=0).float())
        else:
            self.params["b_dec"].zero_()

    @torch.no_grad()
    def load_weights(self, sae: SAE, *, renormalise: bool) -> None:
        for name in _PARAMS:
            value = getattr(sae, name).detach().float()
            self.params[name].copy_(value.T if name == "W_enc" else value)  # to the device
        if self.config.activation == "batchtopk" and sae.cfg.batchtopk_threshold is not None:
            self.threshold = float(sae.cfg.batchtopk_threshold)
        if renormalise:
            self._renormalise()

    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired in ``dead_tokens`` training tokens."""
        return self.since_fired >= self.dead_tokens

    # ------------------------------------------------------------------ step
    def step(self, x: torch.Tensor, *, lr: float) -> dict[str, float]:
        cfg = self.config
        p = self.params
        sae_in = x - p["b_dec"]
        # Select the top k on pre-activations computed without autograd; the selected ones
        # carry a sparse backward (_SelectedPre): O(n * k * d_in) instead of two more
        # dense [n, d_in] x [d_in, d_sae] products.
        with torch.no_grad():
            pre = self._dense_pre(sae_in)
            # The top k of pre, not of relu(pre): the same latents wherever k are positive,
            # and where fewer are, the extra picks get value 0 from the relu below (no
            # reconstruction, no gradient, not counted as firing).
            top_idx, rows, offsets, smallest = self._select(pre)
            if smallest is not None:
                self.threshold = smallest if self.threshold is None else (
                    _THRESHOLD_MOMENTUM * self.threshold + (1 - _THRESHOLD_MOMENTUM) * smallest)
        top_vals = torch.relu(_gathered_pre(sae_in, top_idx, p["W_enc"], p["b_enc"], pre=pre,
                                            rows=rows))
        x_hat = _sparse_decode(top_idx, top_vals, p["W_dec"], offsets=offsets) + p["b_dec"]
        error = x_hat - x
        total_variance = (x - x.mean(dim=0)).pow(2).sum()
        fvu = error.pow(2).sum() / total_variance

        dead = self.dead_mask()
        n_dead = int(dead.sum())
        auxk_loss = torch.zeros((), device=x.device)
        if n_dead > 0 and cfg.auxk_alpha > 0:
            k_aux = min(self.auxk_k, n_dead)
            scale = min(n_dead / self.auxk_k, 1.0)
            dead_idx = dead.nonzero().squeeze(1)
            # Dense only over the dead latents (usually few).
            dead_pre = torch.relu(sae_in @ p["W_enc"][dead_idx].T + p["b_enc"][dead_idx])
            aux_vals, aux_pos = dead_pre.topk(k_aux, dim=-1, sorted=False)
            e_hat = _sparse_decode(dead_idx[aux_pos], aux_vals, p["W_dec"])
            auxk_loss = scale * (e_hat + error.detach()).pow(2).sum() / total_variance
        loss = fvu + cfg.auxk_alpha * auxk_loss

        for t in p.values():
            t.grad = None
        loss.backward()
        with torch.no_grad():
            self._project_decoder_grad()
            self._adam(lr)
            self._renormalise()
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x.device)
            fired[top_idx[top_vals > 0]] = True
            self.since_fired += x.shape[0]
            self.since_fired[fired] = 0
        dead_frac = float(self.dead_mask().float().mean())
        return {"loss": float(loss.detach()), "fvu": float(fvu.detach()),
                "auxk_loss": float(auxk_loss.detach()),
                "dead_frac": dead_frac}

    def _select(self, pre: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor | None, torch.Tensor | None, float | None]:
        """The latents a step uses, from the dense pre-activations ``[n, d_sae]``.

        Returns ``(indices, rows, offsets, smallest)``: for TopK ``indices`` is ``[n, k]``
        and the rest ``None``; for BatchTopK a ragged list (entry ``j``: latent
        ``indices[j]`` of token ``rows[j]``), its bag ``offsets`` and the batch's smallest
        kept value.
        """
        cfg = self.config
        top_idx = pre.topk(cfg.candidates_per_token, dim=-1, sorted=False).indices
        if cfg.activation != "batchtopk":
            return top_idx, None, None, None
        # Ragged codes: only the kept entries (batch × k of them), each with its token, so
        # the sparse products cost what TopK's do, not 4x that.
        keep, smallest = _batch_top(pre.gather(1, top_idx), cfg.k * pre.shape[0])
        rows, cols = keep.nonzero(as_tuple=True)
        return top_idx[rows, cols], rows, _bag_offsets(rows, pre.shape[0]), smallest

    def _dense_pre(self, sae_in: torch.Tensor) -> torch.Tensor:
        """``sae_in @ W_enc.T + b_enc`` in ``encoder_dtype``, into the reused buffer."""
        p, dtype = self.params, self.encoder_dtype
        shape = (sae_in.shape[0], self.config.d_sae)
        if self._pre is None or self._pre.shape != shape:
            self._pre = torch.empty(shape, dtype=dtype, device=sae_in.device)
        return torch.addmm(p["b_enc"].detach().to(dtype), sae_in.detach().to(dtype),
                           p["W_enc"].detach().to(dtype).T, out=self._pre)

    @torch.no_grad()
    def resample_dead(self, x: torch.Tensor, *, generator: torch.Generator) -> int:
        """Re-initialise the dead latents toward ``x``'s worst-reconstructed tokens.

        Returns the number of latents resampled.
        """
        dead = self.dead_mask()
        dead_idx = dead.nonzero().squeeze(1)
        n = int(dead_idx.numel())
        if n == 0 or n == self.config.d_sae:
            return 0
        p = self.params
        sae_in = x - p["b_dec"]
        # The error of the codes a step would use (for BatchTopK: the batch's top, not
        # each token's top k); the threshold is not moved.
        top_idx, rows, offsets, _ = self._select(self._dense_pre(sae_in))
        top_vals = torch.relu(_gathered_pre(sae_in, top_idx, p["W_enc"], p["b_enc"], rows=rows))
        error = x - (_sparse_decode(top_idx, top_vals, p["W_dec"], offsets=offsets) + p["b_dec"])
        weight = error.pow(2).sum(dim=1).double()
        if not float(weight.sum()) > 0:
            return 0
        # Drawn on the CPU (``generator`` is a CPU generator): the same tokens on any device.
        rows = torch.multinomial(weight.cpu(), n, replacement=n > x.shape[0],
                                 generator=generator).to(x.device)
        direction = error[rows]
        direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        alive = ~dead
        p["W_dec"][dead_idx] = direction
        p["W_enc"][dead_idx] = direction * p["W_enc"][alive].norm(dim=1).mean()
        p["b_enc"][dead_idx] = 0.0
        # Fresh first moments; second moments at the live rows' mean so the first steps
        # are as large as anyone's (zeros would make them ~3x lr).
        for name in ("W_enc", "W_dec", "b_enc"):
            self.exp_avg[name][dead_idx] = 0.0
            self.exp_avg_sq[name][dead_idx] = self.exp_avg_sq[name][alive].mean(dim=0)
        self.since_fired[dead_idx] = 0
        return n

    def _project_decoder_grad(self) -> None:
        w = self.params["W_dec"]
        grad = w.grad
        if grad is None:
            return
        parallel = (grad * w).sum(dim=1, keepdim=True)
        grad -= parallel * w

    def _adam(self, lr: float) -> None:
        beta1, beta2 = _BETAS
        grads = {n: p.grad for n, p in self.params.items() if p.grad is not None}
        names = list(grads)
        if not names:
            return
        # One fused kernel over all tensors (about 3x faster than the per-op update, same
        # formula: lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)), t being
        # this step's 1-based number.
        self.adam_step += 1
        steps = [torch.tensor(float(self.adam_step), device=self.device) for _ in names]
        torch._fused_adam_(
            [self.params[n].data for n in names], [grads[n] for n in names],
            [self.exp_avg[n] for n in names], [self.exp_avg_sq[n] for n in names], [], steps,
            lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=_EPS, amsgrad=False,
            maximize=False,
        )

    def _renormalise(self) -> None:
        w = self.params["W_dec"]
        w.data /= w.data.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------------------ export
    def to_sae(self, *, input_scale: float, model_name: str | None) -> SAE:
        cfg = self.config
        # A BatchTopK SAE without a threshold yet (no step taken) encodes like TopK. The
        # exported SAE lives on the CPU, wherever it was trained.
        with torch.device("cpu"):
            sae = SAE(SAEConfig(
                d_in=self.d_in, d_sae=cfg.d_sae,
                activation=cfg.activation,  # type: ignore[arg-type]
                k=cfg.k, hook_layer=cfg.layer, hook_point=cfg.point,  # type: ignore[arg-type]
                apply_b_dec_to_input=True, normalize_activations="constant",
                input_scale=float(input_scale), relu_before_topk=True, source_format="auditor",
                model_name=model_name,
                batchtopk_threshold=self.threshold if cfg.activation == "batchtopk" else None,
            ))
        with torch.no_grad():
            for name in _PARAMS:
                value = self.params[name].detach()
                getattr(sae, name).copy_(value.T if name == "W_enc" else value)
        sae.eval()
        return sae

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """Copies on the CPU, for a checkpoint."""
        out = {f"exp_avg.{n}": t.to("cpu", copy=True) for n, t in self.exp_avg.items()}
        out.update({f"exp_avg_sq.{n}": t.to("cpu", copy=True)
                    for n, t in self.exp_avg_sq.items()})
        out["since_fired"] = self.since_fired.to("cpu", copy=True)
        return out

    @torch.no_grad()
    def load_optimizer(self, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
        for prefix, target in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for name, value in target.items():
                key = f"{prefix}.{name}"
                _check_tensor(tensors, key, value, path)
                value.copy_(tensors[key])  # from the CPU to the run's device
        _check_tensor(tensors, "since_fired", self.since_fired, path)
        self.since_fired.copy_(tensors["since_fired"])


def _check_tensor(tensors: Mapping[str, torch.Tensor], key: str, like: torch.Tensor,
                  path: Path) -> None:
    value = tensors.get(key)
    if value is None or value.shape != like.shape or value.dtype != like.dtype:
        got = None if value is None else (value.dtype, tuple(value.shape))
        raise StoreError(f"checkpoint tensor does not match the run (got {got})", path=path,
                         tensor=key)


class _SelectedPre(torch.autograd.Function):
    """Pre-activations of the selected latents, with a sparse backward pass.

    The selection is ``indices`` ``[n, k]`` (k latents per token) or, with ``rows``, a
    ragged list: entry ``j`` is latent ``indices[j]`` of token ``rows[j]`` (sorted by
    token). The forward pass only gathers from the dense pre-activations that were computed
    without autograd to pick the latents. The backward pass needs three products with the
    sparse ``[n, d_sae]`` matrix ``G`` of output gradients (one non-zero per entry):
    ``G.T @ sae_in`` for ``W_enc`` (a CSR matrix product), ``G @ W_enc`` for the input
    (an ``embedding_bag``) and the column sums of ``G`` for ``b_enc``. Gathering ``[n, k,
    d_in]`` encoder rows instead, as plain autograd does, was 60 % of a step's time.
    """

    @staticmethod
    def forward(
        ctx: Any, pre: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor | None,
        sae_in: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
    ) -> torch.Tensor:
        if rows is None:  # k per token: a ragged list in which every token has k entries
            values = pre.gather(1, indices)
            rows = torch.arange(sae_in.shape[0], device=indices.device).repeat_interleave(
                indices.shape[1])
        else:
            values = pre[rows, indices]
        ctx.save_for_backward(indices, rows, sae_in, w_enc)
        return values.to(sae_in.dtype)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[None, None, None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        indices, rows, sae_in, w_enc = ctx.saved_tensors
        d_sae, n = w_enc.shape[0], sae_in.shape[0]
        flat, flat_grad = indices.reshape(-1), grad.reshape(-1)
        grad_in = grad_w = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_in = torch.nn.functional.embedding_bag(
                flat, w_enc, _bag_offsets(rows, n), per_sample_weights=flat_grad, mode="sum")
        if ctx.needs_input_grad[4]:
            grad_w = _transposed_sparse(rows, flat, flat_grad, d_sae, n) @ sae_in
        if ctx.needs_input_grad[5]:
            grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(
                0, flat, flat_grad)
        return None, None, None, grad_in, grad_w, grad_b


def _batch_top(candidates: torch.Tensor, budget: int) -> tuple[torch.Tensor, float]:
    """BatchTopK's choice among each token's candidate pre-activations ``[n, c]``.

    Returns the mask of the ``budget`` largest positive values of the whole batch (ties
    at the boundary all kept) and the smallest kept value (0 when fewer than ``budget``
    are positive), the batch's threshold.
    """
    flat = candidates.reshape(-1).float()
    if budget < flat.numel():
        boundary = float(flat.topk(budget, sorted=False).values.min())
    else:
        boundary = float(flat.min())
    boundary = max(boundary, 0.0)
    return (candidates >= boundary) & (candidates > 0), boundary


def _bag_offsets(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Where each of ``n`` tokens' entries start in a ragged list sorted by token ``rows``."""
    offsets = torch.zeros(n, dtype=torch.int64, device=rows.device)
    offsets[1:] = torch.bincount(rows, minlength=n)[:-1].cumsum(0)
    return offsets


def _transposed_sparse(rows: torch.Tensor, latents: torch.Tensor, values: torch.Tensor,
                       width: int, n: int) -> torch.Tensor:
    """``[width, n]`` CSR matrix whose entry ``(latents[j], rows[j])`` is ``values[j]``."""
    order = torch.argsort(latents, stable=True)
    crow = torch.zeros(width + 1, dtype=torch.int64, device=latents.device)
    crow[1:] = torch.bincount(latents, minlength=width).cumsum(0)
    with warnings.catch_warnings():  # "CSR support is in beta": the product below is stable
        warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
        return torch.sparse_csr_tensor(crow, rows[order], values[order],
                                       size=(width, n), check_invariants=False)


def _gathered_pre(
    sae_in: torch.Tensor, indices: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
    *, pre: torch.Tensor | None = None, rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pre-activations of the latents ``indices``; ``w_enc`` is ``[d_sae, d_in]``.

    ``indices`` is ``[n, k]``, or with ``rows`` a ragged list (entry ``j``: latent
    ``indices[j]`` of token ``rows[j]``). ``pre`` is the dense ``sae_in @ w_enc.T + b_enc``
    when it is already at hand (computed without autograd); otherwise the selected rows
    are gathered.
    """
    if pre is not None:
        return _SelectedPre.apply(pre, indices, rows, sae_in, w_enc, b_enc)
    enc = torch.nn.functional.embedding(indices, w_enc)  # [n, k, d_in] or [m, d_in]
    if rows is not None:
        return (enc * sae_in[rows]).sum(dim=1) + b_enc[indices]
    return (enc * sae_in.unsqueeze(1)).sum(dim=2) + b_enc[indices]


def _sparse_decode(
    indices: torch.Tensor, values: torch.Tensor, w_dec: torch.Tensor,
    *, offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_j values[:, j] * w_dec[indices[:, j]]`` without a dense ``[n, d_sae]`` tensor.

    With ``offsets``, ``indices`` and ``values`` are ragged lists sorted by token and
    token ``i``'s entries start at ``offsets[i]``.
    """
    return torch.nn.functional.embedding_bag(
        indices, w_dec, offsets, per_sample_weights=values, mode="sum"
    )


# --------------------------------------------------------------------------- checkpoints
def _checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    root = out / _CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        name = path.name
        if path.is_dir() and name.startswith("step-") and name[5:].isdigit() \
                and (path / _STATE).is_file():
            found.append((int(name[5:]), path))
    return sorted(found)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_checkpoint(out: Path, trainer: _Trainer, *, step: int, state: dict[str, Any],
                     input_scale: float, model_name: str | None, keep: int) -> Path:
    root = out / _CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.to_sae(input_scale=input_scale, model_name=model_name).save(tmp)
    save_file(trainer.optimizer_tensors(), str(tmp / _OPTIMIZER),
              metadata={"format": "auditor-train-state"})
    _write_json(tmp / _STATE, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in _checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(path: Path, trainer: _Trainer) -> dict[str, Any]:
    from auditor.sae.formats import load_sae

    try:
        state = json.loads((path / _STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / _OPTIMIZER))
    except (OSError, ValueError, SafetensorError) as exc:
        raise StoreError(f"cannot read training checkpoint: {exc}", path=path) from exc
    trainer.load_weights(load_sae(path, format="auditor"), renormalise=False)
    trainer.load_optimizer(tensors, path / _OPTIMIZER)
    trainer.adam_step = int(state["adam_step"])
    threshold = state.get("threshold")
    trainer.threshold = None if threshold is None else float(threshold)
    return dict(state)


# --------------------------------------------------------------------------- public API
def train_sae(
    data: ActivationCache | ModelStream,
    *,
    config: TrainConfig,
    out: str | Path,
    resume: bool = True,
    init: SAE | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train a TopK or BatchTopK SAE on cached or streamed activations; save it into ``out``.

    Parameters
    ----------
    data : ActivationCache or ModelStream
        A cache (:func:`auditor.sae.activations.collect_activations`), whose training split
        (``config.heldout_fraction``) of hook ``config.hook`` is loaded into memory in fp16;
        or a :class:`auditor.sae.stream.ModelStream`, which runs the model over a corpus as
        training goes (its held-out documents skipped), one shuffled chunk in memory. A
        fresh run's input scale is the mean norm over the cache's training split, or over
        the stream's first chunk.
    config : TrainConfig
        The run's settings.
    out : str or Path
        Output directory: the SAE (``config.json`` + ``sae.safetensors``, loadable with
        :func:`auditor.sae.load_sae`), ``training.json`` and ``checkpoints/step-N/``.
    resume : bool, default True
        Continue from the latest checkpoint in ``out`` if there is one (its settings must
        match ``config`` except for ``checkpoint_every``/``keep_checkpoints``).
    init : SAE or None
        Start from these weights instead of a random init (same ``d_sae``; its
        ``input_scale`` is kept when it uses ``'constant'`` normalisation).
    progress : bool, default False
        Show a tqdm bar with loss, FVU and dead fraction.
    on_step : callable or None
        Called after every step with ``step`` (1-based), ``steps``, ``tokens``, ``loss``,
        ``fvu``, ``auxk_loss``, ``dead_frac`` and ``lr``.
    device : torch.device, str or None
        Where the weights, optimizer state and batches live (``'cpu'``, ``'cuda'``,
        ``'cuda:1'`` …); ``None`` is CUDA when available, else the CPU
        (:func:`auditor.lm.resolve_device_dtype`). The training split stays in CPU memory
        and each batch is moved over; the data order, the init and the resample draws come
        from CPU generators, so a seed gives the same run on any device (up to floating
        point). Checkpoints and the saved SAE are on the CPU, so a run may resume on
        another device. Recorded in ``training.json``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        The hook is not in the cache, ``d_sae``/``k`` do not fit, ``init`` does not match,
        a checkpoint in ``out`` was made with other settings, or ``device`` is not a
        device or is CUDA where there is none.
    StoreError
        The training split is empty, or a cache shard or checkpoint is missing or corrupt.
    """
    from tqdm.auto import tqdm

    from auditor.lm.loading import native_bfloat16, resolve_device_dtype

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    run_device, _ = resolve_device_dtype(None if device is None else str(device), "float32")
    if config.encoder_dtype == "bfloat16" and not native_bfloat16(run_device):
        warnings.warn(
            f"encoder_dtype='bfloat16' on a device ({run_device}) without native bfloat16 "
            "matrix products (a CPU needs AVX512-BF16/AMX, a GPU compute capability 8.0+): "
            "the encoder product is emulated and several times slower than float32",
            RuntimeWarning, stacklevel=2)
    out = Path(out)
    started = time.perf_counter()
    source = _training_data(data, config)
    source.plan(steps=config.steps, batch_size=config.batch_size)
    d_in = source.d_model
    record = source.record()
    model = record.get("cache_model")
    model_name = model.get("id") if isinstance(model, dict) else None
    trainer = _Trainer(d_in=d_in, config=config, device=run_device)
    identity = {"config": config.to_dict(include_runtime=False), "d_model": d_in,
                **source.identity()}
    if init is not None:  # a resume must continue from the same starting weights
        identity["init_sha256"] = init.sha256

    checkpoints = _checkpoint_dirs(out) if resume else []
    start_step, history, resumed_from = 0, [], None
    resamples: list[dict[str, int]] = []
    if checkpoints:
        step_found, path = checkpoints[-1]
        state = _load_checkpoint(path, trainer)
        saved = state.get("identity")
        if saved != json.loads(json.dumps(identity)):
            raise ConfigError(
                "the checkpoint in this directory was made with other settings or data; "
                "use another output directory or resume=False",
                path=path,
            )
        start_step, history = int(state["step"]), list(state["history"])
        resamples = list(state.get("resamples", []))
        source.restore(state.get("data") or {})
        input_scale = float(state["input_scale"])
        resumed_from = step_found
    else:
        input_scale = _input_scale(source, d_in, init)
        sample = source.first_tokens(config.init_tokens) * input_scale
        if init is not None:
            if init.cfg.d_in != d_in or init.cfg.d_sae != config.d_sae:
                raise ConfigError(
                    f"init SAE is {init.cfg.d_in}x{init.cfg.d_sae}, the run needs "
                    f"{d_in}x{config.d_sae}", field="init")
            trainer.load_weights(init, renormalise=True)
        else:
            trainer.initialise(sample)

    steps = config.steps
    metrics = {"loss": math.nan, "fvu": math.nan, "auxk_loss": math.nan, "dead_frac": 0.0}
    bar = tqdm(total=steps, initial=start_step, unit="step", disable=not progress,
               dynamic_ncols=True, desc="train sae")
    try:
        for step in range(start_step, steps):
            # Moved in fp16 (half the bytes), widened on the device.
            x = source.batch(step, config.batch_size).to(run_device, non_blocking=True)
            x = x.float() * input_scale
            lr = config.lr_at(step)
            metrics = trainer.step(x, lr=lr)
            done = step + 1
            if config.resamples_at(done):
                # Seeded by step so a resumed run draws the same tokens.
                generator = torch.Generator(device="cpu").manual_seed(
                    config.seed * 1_000_003 + done)
                n = trainer.resample_dead(x, generator=generator)
                if n:
                    resamples.append({"step": done, "latents": n})
                    metrics["dead_frac"] = float(trainer.dead_mask().float().mean())
            tokens = done * config.batch_size
            record = {"step": done, "tokens": tokens, **metrics, "lr": lr}
            if done % config.log_every == 0 or done == steps:
                history.append(record)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", fvu=f"{metrics['fvu']:.4f}",
                                dead=f"{metrics['dead_frac']:.3f}", refresh=False)
            bar.update(1)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < steps:
                state = {"step": done, "tokens": tokens, "adam_step": trainer.adam_step,
                         "threshold": trainer.threshold,
                         "input_scale": input_scale, "history": history,
                         "resamples": resamples, "identity": identity,
                         "data": source.state(),
                         "auditor_version": __version__,
                         "seconds": time.perf_counter() - started}
                _save_checkpoint(out, trainer, step=done, state=state, input_scale=input_scale,
                                 model_name=model_name, keep=config.keep_checkpoints)
            if on_step is not None:
                on_step({**record, "steps": steps})
    finally:
        bar.close()

    sae = trainer.to_sae(input_scale=input_scale, model_name=model_name)
    sae.save(out)
    sae.source_path = str(out / WEIGHTS_FILENAME)
    sae.sha256 = hashlib.sha256((out / WEIGHTS_FILENAME).read_bytes()).hexdigest()
    if resumed_from is not None and start_step >= steps:
        last = history[-1] if history else {}
        metrics = {k: float(last.get(k, math.nan)) for k in metrics}
    result = TrainResult(
        sae=sae, out=str(out), steps=steps, tokens=steps * config.batch_size,
        loss=metrics["loss"], fvu=metrics["fvu"], auxk_loss=metrics["auxk_loss"],
        dead_frac=metrics["dead_frac"], input_scale=input_scale, config=config,
        history=history, seconds=time.perf_counter() - started, resumed_from=resumed_from,
        resamples=resamples,
    )
    _write_json(out / TRAINING_FILENAME, {
        **result.to_dict(), "auditor_version": __version__,
        "libraries": library_versions(), **source.record(), "hook": config.hook,
        "sae_sha256": sae.sha256, "device": str(run_device),
        "init": None if init is None else {"path": init.source_path, "sha256": init.sha256},
    })
    return result


def _training_data(data: ActivationCache | ModelStream,
                   config: TrainConfig) -> _CacheData | ModelStream:
    from auditor.sae.stream import ModelStream

    if isinstance(data, ModelStream):
        if data.hook.name != config.hook:
            raise ConfigError(f"the stream reads {data.hook.name!r}, the run trains on "
                              f"{config.hook!r}", field="layer")
        if data.heldout_fraction != config.heldout_fraction or data.seed != config.seed:
            raise ConfigError("the stream's heldout_fraction and seed must be the run's",
                              field="heldout_fraction")
        return data
    if isinstance(data, ActivationCache):
        return _CacheData(data, config=config)
    raise ConfigError(f"data must be an ActivationCache or a ModelStream, got "
                      f"{type(data).__name__}", field="data")


def _input_scale(source: _CacheData | ModelStream, d_in: int, init: SAE | None) -> float:
    if init is not None:
        if init.cfg.normalize_activations == "constant":
            assert init.cfg.input_scale is not None
            return float(init.cfg.input_scale)
        if init.cfg.normalize_activations == "none":
            return 1.0
        raise ConfigError("init SAE must use 'constant' or no input normalisation",
                          field="init")
    acts = source.scale_sample()
    total = 0.0
    for start in range(0, acts.shape[0], 65536):
        total += float(acts[start : start + 65536].float().norm(dim=1).double().sum())
    mean_norm = total / acts.shape[0]
    if not mean_norm > 0 or not math.isfinite(mean_norm):
        raise StoreError(f"activations have mean norm {mean_norm}; cannot scale them")
    return math.sqrt(d_in) / mean_norm
