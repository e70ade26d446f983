"""Capture residual-stream activations at named layers in one truncated forward pass.

A :class:`HookPoint` names a place in the residual stream.  :class:`TruncatedForward` runs
the decoder with PyTorch hooks on those layers and stops the forward pass right after the
deepest one, so the layers above it, the final norm and the LM head are never computed.

Conventions (Qwen-Scope / SAELens ``hook_resid_post``):

* ``resid_post`` at layer ``L`` is the output of decoder layer ``L``.  It equals
  ``output_hidden_states=True``'s ``hidden_states[L + 1]`` for every layer but the last:
  transformers replaces ``hidden_states[-1]`` by the output of the final norm, whereas the
  hook always returns the raw layer output.
* ``resid_pre`` at layer ``L`` is the input of decoder layer ``L``, i.e.
  ``hidden_states[L]`` (``resid_pre`` of layer 0 is the, possibly scaled, token embedding).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from auditor.errors import ConfigError, HookError
from auditor.lm.loading import LoadedModel

__all__ = ["HookPoint", "PointName", "TruncatedForward"]

PointName = Literal["resid_post", "resid_pre"]
_POINTS: tuple[str, ...] = get_args(PointName)
_NAME_RE = re.compile(r"^layer(\d+)\.(\w+)$")


@dataclass(frozen=True)
class HookPoint:
    """A place in the residual stream of a decoder.

    Parameters
    ----------
    layer : int
        Index of the decoder layer, ``0 <= layer < n_layers`` (checked against a model by
        :class:`TruncatedForward`).
    point : {'resid_post', 'resid_pre'}, default 'resid_post'
        ``'resid_post'`` is the output of the layer, ``'resid_pre'`` its input.

    Examples
    --------
    >>> HookPoint(9).name
    'layer9.resid_post'
    >>> HookPoint.from_name("layer3.resid_pre")
    HookPoint(layer=3, point='resid_pre')
    """

    layer: int
    point: PointName = "resid_post"

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise HookError(f"hook layer must be an int, got {self.layer!r}", field="layer")
        if self.layer < 0:
            raise HookError(f"hook layer must be >= 0, got {self.layer}", field="layer")
        if self.point not in _POINTS:
            raise HookError(
                f"unknown hook point {self.point!r}; expected one of {', '.join(_POINTS)}",
                field="point",
            )

    @property
    def name(self) -> str:
        """The hook's name, e.g. ``'layer9.resid_post'``."""
        return f"layer{self.layer}.{self.point}"

    @classmethod
    def from_name(cls, name: str) -> HookPoint:
        """Parse a name made by :attr:`name`.

        Parameters
        ----------
        name : str
            ``'layer<L>.<point>'``.

        Returns
        -------
        HookPoint

        Raises
        ------
        HookError
            If ``name`` is not of that form or names an unknown point.
        """
        match = _NAME_RE.match(name.strip()) if isinstance(name, str) else None
        if match is None:
            raise HookError(f"malformed hook name {name!r}; expected e.g. 'layer9.resid_post'")
        return cls(int(match.group(1)), match.group(2))  # type: ignore[arg-type]


class _StopForward(Exception):
    """Raised from the deepest hook to stop the forward pass."""


class TruncatedForward:
    """Run a decoder up to its deepest hooked layer and return the hooked activations.

    Parameters
    ----------
    lm : LoadedModel
        The model, as returned by :func:`auditor.lm.load_model`.
    hooks : sequence of HookPoint
        Where to capture; duplicates are ignored.  All are captured in one forward pass.

    Raises
    ------
    HookError
        If a hook's layer is outside ``[0, lm.n_layers)``.
    ConfigError
        If ``hooks`` is empty.

    Notes
    -----
    The forward pass is aborted by an exception raised from a hook on the deepest hooked
    layer (its forward hook for ``resid_post``, its pre-hook when only ``resid_pre`` is
    asked there), so no layer above it runs and neither the final norm nor any head is
    computed.  It runs under :func:`torch.inference_mode` with ``use_cache=False``.

    Examples
    --------
    >>> forward = TruncatedForward(lm, [HookPoint(9)])  # doctest: +SKIP
    >>> acts = forward(input_ids, attention_mask)[HookPoint(9)]  # [B, T, d_model]  # doctest: +SKIP
    """

    def __init__(self, lm: LoadedModel, hooks: Sequence[HookPoint]) -> None:
        unique = list(dict.fromkeys(hooks))
        if not unique:
            raise ConfigError("at least one hook point is required", field="hooks")
        for hook in unique:
            if not isinstance(hook, HookPoint):
                raise HookError(f"expected a HookPoint, got {hook!r}")
            if not 0 <= hook.layer < lm.n_layers:
                raise HookError(
                    f"layer {hook.layer} is out of range: {lm.model_id} has "
                    f"n_layers={lm.n_layers} (valid layers 0..{lm.n_layers - 1})",
                    field=hook.name,
                )
        self.lm = lm
        self.hooks: tuple[HookPoint, ...] = tuple(unique)
        self.stop_layer: int = max(hook.layer for hook in unique)
        # Stop before the deepest layer runs if only its input is needed.
        self._stop_in_pre = all(
            hook.point == "resid_pre" for hook in unique if hook.layer == self.stop_layer
        )

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> dict[HookPoint, Tensor]:
        """Capture the hooked activations for one batch.

        Parameters
        ----------
        input_ids : Tensor
            ``[B, T]`` token ids (right padded).
        attention_mask : Tensor
            ``[B, T]``, 1 for real tokens and 0 for padding.

        Returns
        -------
        dict of HookPoint to Tensor
            ``[B, T, d_model]`` activations in the model's dtype, on its device, one per
            hook point, in the order the hooks were given.  Values at padded positions are
            meaningless.  They are inference tensors: read them (or ``.clone()`` them)
            rather than modifying them in place outside :func:`torch.inference_mode`.
        """
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ConfigError(
                f"input_ids and attention_mask must both be [B, T]; got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        captured: dict[HookPoint, Tensor] = {}
        handles = self._register(captured)
        try:
            with torch.inference_mode():
                self.lm.model(
                    input_ids=input_ids.to(self.lm.device),
                    attention_mask=attention_mask.to(self.lm.device),
                    use_cache=False,
                )
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [hook.name for hook in self.hooks if hook not in captured]
        if missing:
            raise HookError(
                f"the forward pass of {self.lm.model_id} never reached hook(s) "
                f"{', '.join(missing)}; the model does not call lm.layers in order"
            )
        return {hook: captured[hook] for hook in self.hooks}

    def _register(self, captured: dict[HookPoint, Tensor]) -> list[RemovableHandle]:
        handles: list[RemovableHandle] = []
        by_layer: dict[int, list[HookPoint]] = {}
        for hook in self.hooks:
            by_layer.setdefault(hook.layer, []).append(hook)
        try:
            for layer_index, layer_hooks in sorted(by_layer.items()):
                layer = self.lm.layers[layer_index]
                pre = [h for h in layer_hooks if h.point == "resid_pre"]
                post = [h for h in layer_hooks if h.point == "resid_post"]
                stop_here = layer_index == self.stop_layer
                if pre:
                    handles.append(
                        layer.register_forward_pre_hook(
                            _pre_hook(pre, captured, stop=stop_here and self._stop_in_pre),
                            with_kwargs=True,
                        )
                    )
                if post:
                    handles.append(
                        layer.register_forward_hook(_post_hook(post, captured, stop=stop_here))
                    )
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        return handles


def _pre_hook(hooks: list[HookPoint], captured: dict[HookPoint, Tensor], *, stop: bool) -> Any:
    def hook(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, Tensor):
            raise HookError(f"cannot find the hidden states in the input of {hooks[0].name}")
        for point in hooks:
            captured[point] = hidden
        if stop:
            raise _StopForward

    return hook


def _post_hook(hooks: list[HookPoint], captured: dict[HookPoint, Tensor], *, stop: bool) -> Any:
    def hook(_module: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        # A tensor (transformers >= 5), or a tuple / ModelOutput whose first item it is.
        hidden = output if isinstance(output, Tensor) else _first(output)
        if not isinstance(hidden, Tensor):
            raise HookError(f"cannot find the hidden states in the output of {hooks[0].name}")
        for point in hooks:
            captured[point] = hidden
        if stop:
            raise _StopForward

    return hook


def _first(output: Any) -> Any:
    try:
        return output[0]
    except (TypeError, IndexError, KeyError):
        return None
