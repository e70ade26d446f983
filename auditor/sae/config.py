"""The validated, frozen description of one sparse autoencoder.

:class:`SAEConfig` says everything needed to run an SAE's encoder and decoder in
auditor's canonical orientation, whatever format the weights came from. It round-trips
through :meth:`SAEConfig.to_dict` / :meth:`SAEConfig.from_dict` and is saved as
``config.json`` next to the weights by :meth:`auditor.sae.SAE.save`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from auditor import __version__
from auditor.errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "HOOK_POINTS",
    "NORMALIZATIONS",
    "TOPK_ACTIVATIONS",
    "SAEConfig",
]

#: Activation functions auditor can run.
ACTIVATIONS: tuple[str, ...] = ("topk", "batchtopk", "jumprelu", "relu")
#: Activations that select ``k`` latents per token (and so need ``k``).
TOPK_ACTIVATIONS: tuple[str, ...] = ("topk", "batchtopk")
#: Where in a decoder layer the SAE reads the residual stream.
HOOK_POINTS: tuple[str, ...] = ("resid_post", "resid_pre")
#: Input normalisations applied before encoding.
NORMALIZATIONS: tuple[str, ...] = ("none", "layer_norm", "constant")
#: Names of the floating-point dtypes weights may be stored in.
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")

# Keys to_dict adds that are not fields.
_ARCHITECTURE_KEY = "architecture"
_VERSION_KEY = "auditor_version"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SAEConfig:
    """Shape, activation and input conventions of one SAE.

    Parameters
    ----------
    d_in : int
        Width of the activations the SAE reads (the model's hidden size).
    d_sae : int
        Number of latents (dictionary size).
    activation : {'topk', 'batchtopk', 'jumprelu', 'relu'}
        Activation function applied to the encoder pre-activations.
    k : int or None
        Latents kept per token. Required for ``'topk'`` and ``'batchtopk'``.
    hook_layer : int or None
        Index of the decoder layer whose residual stream the SAE reads.
    hook_point : {'resid_post', 'resid_pre'}
        Residual stream after (``'resid_post'``) or before (``'resid_pre'``) that layer.
    apply_b_dec_to_input : bool
        Subtract ``b_dec`` from the (normalised) input before encoding.
    normalize_activations : {'none', 'layer_norm', 'constant'}
        ``'layer_norm'``: ``(x - mean) / (std_unbiased + 1e-5)`` over the last dim.
        ``'constant'``: ``x * input_scale``.
    input_scale : float or None
        Scale used by ``'constant'`` normalisation; must be set exactly then.
    rescale_acts_by_decoder_norm : bool
        Multiply pre-activations by the decoder row norms before the activation (and
        divide latents by them before decoding), as SAELens does.
    relu_before_topk : bool
        Apply ReLU before the top-k selection (EleutherAI sparsify) instead of after it
        (SAELens, Qwen-Scope). Only for TopK-style activations.
    batchtopk_threshold : float or None
        For ``'batchtopk'``: the learned global threshold used at inference. ``None``
        runs plain per-token TopK instead.
    source_format : str
        Format the weights were loaded from (a key of :data:`auditor.sae.FORMATS`).
    source_name : str or None
        Release or checkpoint name, if known.
    model_name : str or None
        Name of the language model the SAE was trained on, if known.
    dtype : {'float32', 'float16', 'bfloat16', 'float64'}
        Dtype of the parameters (and of the saved weights).

    Raises
    ------
    ConfigError
        If any value is out of range or the combination is inconsistent.

    Examples
    --------
    >>> cfg = SAEConfig(d_in=16, d_sae=64, activation="topk", k=4)
    >>> SAEConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    d_in: int
    d_sae: int
    activation: Literal["topk", "batchtopk", "jumprelu", "relu"]
    k: int | None = None
    hook_layer: int | None = None
    hook_point: Literal["resid_post", "resid_pre"] = "resid_post"
    apply_b_dec_to_input: bool = False
    normalize_activations: Literal["none", "layer_norm", "constant"] = "none"
    input_scale: float | None = None
    rescale_acts_by_decoder_norm: bool = False
    relu_before_topk: bool = False
    batchtopk_threshold: float | None = None
    source_format: str = "auditor"
    source_name: str | None = None
    model_name: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}",
                field="activation",
            )
        self._check_k()
        if self.hook_layer is not None and (not _is_int(self.hook_layer) or self.hook_layer < 0):
            raise ConfigError(
                f"must be a non-negative integer or None, got {self.hook_layer!r}",
                field="hook_layer",
            )
        if self.hook_point not in HOOK_POINTS:
            raise ConfigError(
                f"unknown hook point {self.hook_point!r}; expected one of {HOOK_POINTS}",
                field="hook_point",
            )
        if self.normalize_activations not in NORMALIZATIONS:
            raise ConfigError(
                f"unknown normalisation {self.normalize_activations!r}; "
                f"expected one of {NORMALIZATIONS}",
                field="normalize_activations",
            )
        self._check_input_scale()
        for name in ("apply_b_dec_to_input", "rescale_acts_by_decoder_norm", "relu_before_topk"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"must be a bool, got {getattr(self, name)!r}", field=name)
        if self.relu_before_topk and self.activation not in TOPK_ACTIVATIONS:
            raise ConfigError(
                f"only applies to {TOPK_ACTIVATIONS}, not {self.activation!r}",
                field="relu_before_topk",
            )
        self._check_batchtopk_threshold()
        if not isinstance(self.source_format, str) or not self.source_format:
            raise ConfigError("must be a non-empty string", field="source_format")
        for name in ("source_name", "model_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"must be a string or None, got {value!r}", field=name)
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"unknown dtype {self.dtype!r}; expected one of {DTYPES}", field="dtype"
            )

    def _check_k(self) -> None:
        if self.k is None:
            if self.activation in TOPK_ACTIVATIONS:
                raise ConfigError(f"activation {self.activation!r} needs k", field="k")
            return
        if not _is_int(self.k) or not 1 <= self.k <= self.d_sae:
            raise ConfigError(
                f"must be an integer in [1, d_sae={self.d_sae}], got {self.k!r}", field="k"
            )

    def _check_input_scale(self) -> None:
        if self.normalize_activations == "constant":
            scale = self.input_scale
            if scale is None or not _is_real(scale) or not math.isfinite(scale) or scale <= 0:
                raise ConfigError(
                    f"normalize_activations='constant' needs a finite positive input_scale, "
                    f"got {scale!r}",
                    field="input_scale",
                )
        elif self.input_scale is not None:
            raise ConfigError(
                "only used with normalize_activations='constant'", field="input_scale"
            )

    def _check_batchtopk_threshold(self) -> None:
        value = self.batchtopk_threshold
        if value is None:
            return
        if self.activation != "batchtopk":
            raise ConfigError(
                f"only applies to activation 'batchtopk', not {self.activation!r}",
                field="batchtopk_threshold",
            )
        if not _is_real(value) or not math.isfinite(value):
            raise ConfigError(
                f"must be a finite number, got {value!r}", field="batchtopk_threshold"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field plus ``architecture`` and the version.

        Returns
        -------
        dict of str to Any
            The fields, ``"architecture"`` (the activation) and ``"auditor_version"``.
        """
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out[_ARCHITECTURE_KEY] = self.activation
        out[_VERSION_KEY] = __version__
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SAEConfig:
        """Build a config from :meth:`to_dict` output.

        Parameters
        ----------
        d : Mapping of str to Any
            Field values. ``"auditor_version"`` is ignored; ``"architecture"`` must agree
            with ``"activation"`` when both are present.

        Returns
        -------
        SAEConfig
            The validated config.

        Raises
        ------
        ConfigError
            On unknown keys, missing required keys or invalid values.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"SAE config must be a mapping, got {type(d).__name__}")
        values = dict(d)
        values.pop(_VERSION_KEY, None)
        architecture = values.pop(_ARCHITECTURE_KEY, None)
        if "activation" not in values and architecture is not None:
            values["activation"] = architecture
        elif architecture is not None and architecture != values["activation"]:
            raise ConfigError(
                f"architecture {architecture!r} disagrees with activation {values['activation']!r}",
                field=_ARCHITECTURE_KEY,
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown SAE config keys {unknown}")
        missing = sorted(name for name in ("d_in", "d_sae", "activation") if name not in values)
        if missing:
            raise ConfigError(f"SAE config is missing required keys {missing}")
        return cls(**values)
