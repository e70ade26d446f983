"""The settings of one SAE training run: :class:`TrainConfig` (no torch needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from auditor.errors import ConfigError
from auditor.sae.config import HOOK_POINTS

__all__ = ["TrainConfig"]

_MAX_DEAD_TOKENS = 10_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value
    )


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

