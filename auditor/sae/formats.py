"""Load SAEs from the public checkpoint layouts into auditor's canonical :class:`SAE`.

Supported layouts (keys of :data:`FORMATS`)::

    qwenscope    layer{L}.sae.pt             W_enc [d_sae, d_in]  W_dec [d_in, d_sae]  (TopK)
    saelens      cfg.json + sae_weights.safetensors   W_enc [d_in, d_sae]  W_dec [d_sae, d_in]
    gemmascope   params.npz                  W_enc [d_in, d_sae]  W_dec [d_sae, d_in]  (JumpReLU)
    gemmascope2  params.safetensors + config.json  w_enc [d_in, d_sae]  w_dec [d_sae, d_in]
    sparsify     cfg.json + sae.safetensors  encoder.weight [d_sae, d_in]  W_dec [d_sae, d_in]
    auditor      config.json + sae.safetensors  canonical names and orientation

Nothing is ever unpickled: ``.pt`` files go through ``torch.load(weights_only=True)``,
``.npz`` through ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from auditor._files import sha256_file
from auditor.errors import (
    ConfigError,
    SAEFormatError,
    SAEWeightsError,
    UnsafeFileError,
)
from auditor.sae.config import TOPK_ACTIVATIONS, SAEConfig
from auditor.sae.model import CONFIG_FILENAME, SAE, WEIGHTS_FILENAME, dtype_name

__all__ = [
    "FORMATS",
    "QWENSCOPE_RELEASE_PATTERN",
    "convert_sae",
    "detect_format",
    "load_sae",
]

#: Supported SAE layouts, name -> one-line description.
FORMATS: dict[str, str] = {
    "qwenscope": "Qwen-Scope: layer{L}.sae.pt plain state dict (TopK)",
    "saelens": "SAELens: cfg.json + sae_weights.safetensors",
    "gemmascope": "Gemma Scope: params.npz (JumpReLU)",
    "gemmascope2": "Gemma Scope 2: params.safetensors + config.json (JumpReLU)",
    "sparsify": "EleutherAI sparsify: cfg.json + sae.safetensors (TopK)",
    "auditor": "auditor: config.json + sae.safetensors",
}

#: Qwen-Scope release names, e.g. ``SAE-Res-Qwen3.5-2B-W32K-L0_50`` (k = 50).
QWENSCOPE_RELEASE_PATTERN = re.compile(
    r"SAE-Res-(?P<model>.+?)-W(?P<width>\d+[KkMm]?)-L0_(?P<k>\d+)"
)

_QWEN_FILE = re.compile(r"^layer(\d+)\.sae\.pt$")
_SAELENS_CFG = "cfg.json"
_SAELENS_WEIGHTS = "sae_weights.safetensors"
_SPARSIFY_CFG = "cfg.json"
_SPARSIFY_WEIGHTS = "sae.safetensors"
_GEMMA_NPZ = "params.npz"
_GEMMA2_WEIGHTS = "params.safetensors"
_GEMMA2_CFG = "config.json"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SAELENS_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_post|resid_pre)$")
_LAYER_DIR = re.compile(r"layer_(\d+)")
_SPARSIFY_HOOK = re.compile(r"^layers\.(\d+)$")


@dataclass(frozen=True)
class _Loaded:
    """What a format loader hands back: config, canonical tensors and the weights file."""

    cfg: SAEConfig
    tensors: dict[str, torch.Tensor]
    weights_path: Path


# --------------------------------------------------------------------------- readers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SAEFormatError("config file is missing", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SAEFormatError(f"cannot read JSON config: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise SAEFormatError(f"config must be a JSON object, got {type(data).__name__}", path=path)
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SAEFormatError("weights file is missing", path=path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError…
        raise SAEWeightsError(f"corrupt or unreadable safetensors file: {exc}", path=path) from exc


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise SAEWeightsError(f"cannot read .npz file: {exc}", path=path) from exc
    if magic not in _ZIP_MAGIC:
        raise SAEWeightsError("not a .npz (zip) archive", path=path)
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            arrays = {name: np.array(data[name]) for name in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafeFileError(
                "the .npz holds object arrays that would need unpickling; refusing to load",
                path=path,
            ) from exc
        raise SAEWeightsError(f"corrupt .npz file: {exc}", path=path) from exc
    except Exception as exc:  # BadZipFile, EOFError, OSError, zlib.error…
        raise SAEWeightsError(f"corrupt .npz file: {exc}", path=path) from exc
    out = {}
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu":
            raise SAEWeightsError(
                f"non-numeric array (dtype {array.dtype})", path=path, tensor=name
            )
        out[name] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def _read_pt(path: Path) -> dict[str, torch.Tensor]:
    try:
        with path.open("rb") as handle:
            data = torch.load(handle, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):  # not a pickle at all: random bytes
            raise SAEWeightsError(f"corrupt .pt file: {exc}", path=path) from exc
        raise UnsafeFileError(
            "the file holds pickled objects that torch's weights_only loader rejects; "
            "auditor never unpickles arbitrary objects",
            path=path,
        ) from exc
    except Exception as exc:  # truncated zip, bad magic number, EOFError…
        raise SAEWeightsError(f"corrupt or unreadable .pt file: {exc}", path=path) from exc
    if not isinstance(data, Mapping):
        raise SAEWeightsError(
            f"expected a state dict of tensors, got {type(data).__name__}", path=path
        )
    out = {}
    for name, value in data.items():
        if isinstance(value, torch.Tensor):
            out[str(name)] = value
    return out


# --------------------------------------------------------------------------- checks
def _take(
    tensors: Mapping[str, torch.Tensor],
    name: str,
    shape: tuple[int, ...] | None,
    path: Path,
    *,
    ndim: int | None = None,
) -> torch.Tensor:
    """Return ``tensors[name]`` after checking presence, shape and finiteness."""
    if name not in tensors:
        raise SAEWeightsError(
            f"tensor is missing (found {sorted(tensors)})", path=path, tensor=name
        )
    tensor = tensors[name]
    if ndim is not None and tensor.ndim != ndim:
        raise SAEWeightsError(
            f"expected a {ndim}-D tensor, got shape {tuple(tensor.shape)}", path=path, tensor=name
        )
    if shape is not None and tuple(tensor.shape) != shape:
        raise SAEWeightsError(
            f"wrong shape: expected {shape}, got {tuple(tensor.shape)}", path=path, tensor=name
        )
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise SAEWeightsError("holds NaN or infinite values", path=path, tensor=name)
    return tensor


def _make_cfg(source: Path, **values: Any) -> SAEConfig:
    try:
        return SAEConfig(**values)
    except ConfigError as exc:
        raise SAEFormatError(f"invalid SAE settings: {exc.message}", path=source) from exc


def _check_k_arg(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"k must be a positive integer, got {k!r}", field="k")


def _check_layer_arg(layer: int | None) -> None:
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise ConfigError(f"layer must be a non-negative integer, got {layer!r}", field="layer")


def _resolve_layer(found: int | None, layer: int | None, path: Path) -> int | None:
    if found is not None and layer is not None and found != layer:
        raise ConfigError(
            f"layer={layer} was asked for, but this SAE reads layer {found}", path=path
        )
    return found if found is not None else layer


def _path_parts(path: Path) -> tuple[str, ...]:
    return path.absolute().parts


# --------------------------------------------------------------------------- detection
def _qwen_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and _QWEN_FILE.match(p.name))


def _sparsify_subdirs(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir() and (p / _SPARSIFY_CFG).is_file() and (p / _SPARSIFY_WEIGHTS).is_file()
    )


def _detect_dir(directory: Path) -> str | None:
    def has(name: str) -> bool:
        return (directory / name).is_file()

    if has(CONFIG_FILENAME) and has(WEIGHTS_FILENAME):
        return "auditor"
    if has(_SAELENS_CFG) and has(_SAELENS_WEIGHTS):
        return "saelens"
    if has(_SPARSIFY_CFG) and has(_SPARSIFY_WEIGHTS):
        return "sparsify"
    if has(_GEMMA2_WEIGHTS):
        return "gemmascope2"
    if has(_GEMMA_NPZ):
        return "gemmascope"
    if _qwen_files(directory):
        return "qwenscope"
    if _sparsify_subdirs(directory):
        return "sparsify"
    return None


def detect_format(path: str | Path) -> str:
    """Work out which layout an SAE file or directory is in.

    Parameters
    ----------
    path : str or Path
        A weights file (``layer12.sae.pt``, ``params.npz``, ``params.safetensors``, …) or
        the directory holding the SAE's files.

    Returns
    -------
    str
        A key of :data:`FORMATS`.

    Raises
    ------
    SAEFormatError
        If the path does not exist or is in no known layout; the message names the path.
    """
    path = Path(path)
    if not path.exists():
        raise SAEFormatError("no such file or directory", path=path)
    if path.is_file():
        if _QWEN_FILE.match(path.name):
            return "qwenscope"
        if path.suffix == ".npz":
            return "gemmascope"
        found = _detect_dir(path.parent)
        if found is not None and found != "qwenscope":
            return found
        raise SAEFormatError(
            f"{path.name!r} is not a file of any known SAE layout ({', '.join(FORMATS)})",
            path=path,
        )
    found = _detect_dir(path)
    if found is None:
        raise SAEFormatError(
            "directory is in no known SAE layout; expected one of: "
            f"{CONFIG_FILENAME} + {WEIGHTS_FILENAME} (auditor), "
            f"{_SAELENS_CFG} + {_SAELENS_WEIGHTS} (saelens), "
            f"{_SPARSIFY_CFG} + {_SPARSIFY_WEIGHTS} (sparsify), "
            f"{_GEMMA2_WEIGHTS} (gemmascope2), {_GEMMA_NPZ} (gemmascope), "
            "layer<L>.sae.pt (qwenscope)",
            path=path,
        )
    return found


# --------------------------------------------------------------------------- qwenscope
def _parse_qwen_release(path: Path) -> re.Match[str] | None:
    for part in reversed(_path_parts(path)):
        match = QWENSCOPE_RELEASE_PATTERN.search(part)
        if match:
            return match
    return None


def _load_qwenscope(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    if path.is_dir():
        files = _qwen_files(path)
        if layer is not None:
            files = [f for f in files if f.name == f"layer{layer}.sae.pt"]
            if not files:
                available = [f.name for f in _qwen_files(path)]
                raise SAEFormatError(f"no layer{layer}.sae.pt here (found {available})", path=path)
        if not files:
            raise SAEFormatError("no layer<L>.sae.pt file in this directory", path=path)
        if len(files) > 1:
            raise SAEFormatError(
                f"several Qwen-Scope layers here ({[f.name for f in files]}); set layer",
                path=path, field="layer",
            )
        path = files[0]
    name_match = _QWEN_FILE.match(path.name)
    if name_match is None:
        raise SAEFormatError("Qwen-Scope files must be named layer<L>.sae.pt", path=path)
    hook_layer = _resolve_layer(int(name_match.group(1)), layer, path)
    release = _parse_qwen_release(path)
    if k is None:
        if release is None:
            raise SAEFormatError(
                "cannot tell k for this Qwen-Scope TopK SAE: no release name like "
                "'SAE-Res-<model>-W<width>-L0_<k>' in its path; set k",
                path=path, field="k",
            )
        k = int(release.group("k"))
    raw = _read_pt(path)
    w_enc = _take(raw, "W_enc", None, path, ndim=2)
    d_sae, d_in = w_enc.shape
    w_dec = _take(raw, "W_dec", (d_in, d_sae), path)
    b_enc = _take(raw, "b_enc", (d_sae,), path)
    b_dec = _take(raw, "b_dec", (d_in,), path)
    cfg = _make_cfg(
        path,
        d_in=d_in,
        d_sae=d_sae,
        activation="topk",
        k=k,
        hook_layer=hook_layer,
        hook_point="resid_post",
        source_format="qwenscope",
        source_name=release.group(0) if release else None,
        model_name=release.group("model") if release else None,
    )
    tensors = {"W_enc": w_enc.T, "b_enc": b_enc, "W_dec": w_dec.T, "b_dec": b_dec}
    return _Loaded(cfg, tensors, path)


# --------------------------------------------------------------------------- saelens
def _saelens_activation(
    cfg: Mapping[str, Any], raw: Mapping[str, torch.Tensor], cfg_path: Path
) -> tuple[str, int | None, float | None]:
    """Return (activation, k, batchtopk_threshold) for a SAELens config."""
    architecture = cfg.get("architecture") or "standard"
    activation_fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, Mapping) else None)
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if architecture == "standard":
        if activation_fn == "relu":
            return "relu", None, None
        if activation_fn == "topk":
            return "topk", k, None
        raise SAEFormatError(f"unsupported SAELens activation_fn {activation_fn!r}", path=cfg_path)
    if architecture == "jumprelu":
        return "jumprelu", None, None
    if architecture == "topk":
        return "topk", k, None
    if architecture in ("batchtopk", "matryoshka_batchtopk"):
        if "threshold" in raw:
            threshold = raw["threshold"].reshape(-1)
            if threshold.numel() and bool((threshold == threshold[0]).all()):
                return "batchtopk", k, float(threshold[0])
            return "jumprelu", None, None
        return "batchtopk", k, None
    raise SAEFormatError(
        f"unsupported SAELens architecture {architecture!r}; auditor runs "
        "standard, topk, jumprelu, batchtopk and matryoshka_batchtopk SAEs",
        path=cfg_path,
    )


def _saelens_normalization(cfg: Mapping[str, Any], cfg_path: Path) -> tuple[str, float | None]:
    norm = cfg.get("normalize_activations", "none")
    if norm in (None, False, "none"):
        return "none", None
    if norm == "layer_norm":
        return "layer_norm", None
    if norm in (True, "expected_average_only_in"):
        scale = cfg.get("norm_scaling_factor")
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            return "constant", float(scale)
        raise SAEFormatError(
            "normalize_activations='expected_average_only_in' needs the dataset norm "
            "scaling factor, which this cfg.json does not hold (no 'norm_scaling_factor'); "
            "fold it into the weights with SAELens' fold_activation_norm_scaling_factor "
            "and save again",
            path=cfg_path,
        )
    raise SAEFormatError(
        f"unsupported normalize_activations {norm!r} (auditor supports 'none', 'layer_norm' "
        "and 'expected_average_only_in' with a stored norm_scaling_factor)",
        path=cfg_path,
    )


def _saelens_hook(
    cfg: Mapping[str, Any], cfg_path: Path, layer: int | None
) -> tuple[int | None, str]:
    meta: Mapping[str, Any] = cfg["meta"] if isinstance(cfg.get("meta"), Mapping) else {}
    hook_name = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if hook_name is None:
        found = meta.get("hook_layer", cfg.get("hook_layer", cfg.get("hook_point_layer")))
        if isinstance(found, bool) or not isinstance(found, int):
            found = None
        return _resolve_layer(found, layer, cfg_path), "resid_post"
    match = _SAELENS_HOOK.match(str(hook_name))
    if match is None:
        raise SAEFormatError(
            f"unsupported hook {hook_name!r}: auditor reads the residual stream "
            "(blocks.<L>.hook_resid_post or blocks.<L>.hook_resid_pre)",
            path=cfg_path,
        )
    return _resolve_layer(int(match.group(1)), layer, cfg_path), match.group(2)


def _load_saelens(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    directory = path.parent if path.is_file() else path
    cfg_path = directory / _SAELENS_CFG
    weights_path = directory / _SAELENS_WEIGHTS
    cfg = _read_json(cfg_path)
    raw = _read_safetensors(weights_path)
    activation, cfg_k, batch_threshold = _saelens_activation(cfg, raw, cfg_path)
    if k is not None and activation in TOPK_ACTIVATIONS:
        cfg_k = k
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if not isinstance(d_in, int) or not isinstance(d_sae, int):
        raise SAEFormatError("cfg.json must give integer 'd_in' and 'd_sae'", path=cfg_path)
    tensors = {
        "W_enc": _take(raw, "W_enc", (d_in, d_sae), weights_path),
        "b_enc": _take(raw, "b_enc", (d_sae,), weights_path),
        "W_dec": _take(raw, "W_dec", (d_sae, d_in), weights_path),
        "b_dec": _take(raw, "b_dec", (d_in,), weights_path),
    }
    if activation == "jumprelu":
        tensors["threshold"] = _take(raw, "threshold", (d_sae,), weights_path)
    if "scaling_factor" in raw:
        # Old SAELens "finetuning scaling factor": latents are multiplied by it before
        # decoding. Folding it into W_dec's rows keeps encode and decode identical.
        scale = _take(raw, "scaling_factor", (d_sae,), weights_path)
        if not bool((scale == 1).all()):
            tensors["W_dec"] = tensors["W_dec"] * scale[:, None].to(tensors["W_dec"].dtype)
    normalization, input_scale = _saelens_normalization(cfg, cfg_path)
    hook_layer, hook_point = _saelens_hook(cfg, cfg_path, layer)
    meta: Mapping[str, Any] = cfg["meta"] if isinstance(cfg.get("meta"), Mapping) else {}
    model_name = meta.get("model_name") or cfg.get("model_name")
    cfg_obj = _make_cfg(
        cfg_path,
        d_in=d_in,
        d_sae=d_sae,
        activation=activation,
        k=cfg_k if activation in TOPK_ACTIVATIONS else None,
        hook_layer=hook_layer,
        hook_point=hook_point,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize_activations=normalization,
        input_scale=input_scale,
        rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        batchtopk_threshold=batch_threshold,
        source_format="saelens",
        source_name=meta.get("neuronpedia_id") or cfg.get("neuronpedia_id"),
        model_name=str(model_name) if model_name else None,
    )
    return _Loaded(cfg_obj, tensors, weights_path)


# --------------------------------------------------------------------------- gemma scope
def _gemma_layer(path: Path) -> int | None:
    for part in reversed(_path_parts(path)):
        match = _LAYER_DIR.match(part)
        if match:
            return int(match.group(1))
    return None


def _gemma_release(path: Path) -> str | None:
    for part in reversed(_path_parts(path)):
        if part.startswith("gemma-scope"):
            return part
    return None


def _check_gemma_site(path: Path) -> None:
    parts = _path_parts(path)
    bad = [
        p
        for p in parts
        if re.search(r"(^|[-_])(mlp|att|attn|transcoder|clt|crosscoder)([-_]|$)", p)
        or p in ("mlp_out", "attn_out", "mlp_out_all", "attn_out_all")
    ]
    if bad:
        raise SAEFormatError(
            f"this Gemma Scope SAE does not read the residual stream ({bad[-1]!r}); "
            "auditor only supports residual-stream SAEs",
            path=path,
        )


def _load_gemmascope(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    del k  # JumpReLU: no k
    weights_path = path if path.is_file() else path / _GEMMA_NPZ
    if not weights_path.is_file():
        raise SAEFormatError(f"no {_GEMMA_NPZ} here", path=path)
    _check_gemma_site(weights_path)
    raw = {
        ("W_" + name[2:] if name.startswith("w_") else name): t
        for name, t in _read_npz(weights_path).items()
    }
    w_enc = _take(raw, "W_enc", None, weights_path, ndim=2)
    d_in, d_sae = w_enc.shape
    tensors = {
        "W_enc": w_enc,
        "b_enc": _take(raw, "b_enc", (d_sae,), weights_path),
        "W_dec": _take(raw, "W_dec", (d_sae, d_in), weights_path),
        "b_dec": _take(raw, "b_dec", (d_in,), weights_path),
        "threshold": _take(raw, "threshold", (d_sae,), weights_path),
    }
    cfg = _make_cfg(
        weights_path,
        d_in=d_in,
        d_sae=d_sae,
        activation="jumprelu",
        hook_layer=_resolve_layer(_gemma_layer(weights_path), layer, weights_path),
        hook_point="resid_post",
        source_format="gemmascope",
        source_name=_gemma_release(weights_path),
    )
    return _Loaded(cfg, tensors, weights_path)


def _load_gemmascope2(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    del k  # JumpReLU: no k
    directory = path.parent if path.is_file() else path
    weights_path = directory / _GEMMA2_WEIGHTS
    cfg_path = directory / _GEMMA2_CFG
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    architecture = cfg.get("architecture", "jump_relu")
    if architecture not in ("jump_relu", "jumprelu"):
        raise SAEFormatError(
            f"unsupported Gemma Scope 2 architecture {architecture!r}", path=cfg_path
        )
    _check_gemma_site(weights_path)
    raw = _read_safetensors(weights_path)
    if "affine_skip_connection" in raw:
        raise SAEFormatError(
            "this is a transcoder (it has an affine_skip_connection); auditor only "
            "supports residual-stream SAEs",
            path=weights_path,
        )
    # Gemma Scope 2 stores w_enc as [d_in, d_sae] and w_dec as [d_sae, d_in].
    w_enc = _take(raw, "w_enc", None, weights_path, ndim=2)
    d_in, d_sae = w_enc.shape
    width = cfg.get("width")
    if isinstance(width, int) and width != d_sae:
        raise SAEWeightsError(
            f"config.json says width={width} but w_enc has shape {tuple(w_enc.shape)} "
            "([d_in, d_sae] expected)",
            path=weights_path,
            tensor="w_enc",
        )
    tensors = {
        "W_enc": w_enc,
        "b_enc": _take(raw, "b_enc", (d_sae,), weights_path),
        "W_dec": _take(raw, "w_dec", (d_sae, d_in), weights_path),
        "b_dec": _take(raw, "b_dec", (d_in,), weights_path),
        "threshold": _take(raw, "threshold", (d_sae,), weights_path),
    }
    found = _gemma_layer(weights_path)
    hook_in = cfg.get("hf_hook_point_in")
    if found is None and isinstance(hook_in, str):
        match = re.search(r"layers?[._](\d+)", hook_in)
        found = int(match.group(1)) if match else None
    model_name = cfg.get("model_name")
    cfg_obj = _make_cfg(
        weights_path,
        d_in=d_in,
        d_sae=d_sae,
        activation="jumprelu",
        hook_layer=_resolve_layer(found, layer, weights_path),
        hook_point="resid_post",
        source_format="gemmascope2",
        source_name=_gemma_release(weights_path),
        model_name=str(model_name) if model_name else None,
    )
    return _Loaded(cfg_obj, tensors, weights_path)


# --------------------------------------------------------------------------- sparsify
def _load_sparsify(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    directory = path.parent if path.is_file() else path
    if not (directory / _SPARSIFY_CFG).is_file():
        subdirs = _sparsify_subdirs(directory) if directory.is_dir() else []
        if layer is not None:
            wanted = f"layers.{layer}"
            chosen = [d for d in subdirs if d.name == wanted]
            if not chosen:
                raise SAEFormatError(
                    f"no {wanted}/ hookpoint here (found {[d.name for d in subdirs]})",
                    path=directory,
                )
            directory = chosen[0]
        elif len(subdirs) == 1:
            directory = subdirs[0]
        elif subdirs:
            raise SAEFormatError(
                f"several sparsify hookpoints here ({[d.name for d in subdirs]}); set layer",
                path=directory, field="layer",
            )
        else:
            raise SAEFormatError(f"no {_SPARSIFY_CFG} here", path=directory)
    cfg_path = directory / _SPARSIFY_CFG
    weights_path = directory / _SPARSIFY_WEIGHTS
    cfg = _read_json(cfg_path)
    if cfg.get("transcode"):
        raise SAEFormatError("sparsify transcoders are not supported", path=cfg_path)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise SAEFormatError(f"unsupported sparsify activation {activation!r}", path=cfg_path)
    raw = _read_safetensors(weights_path)
    if "W_skip" in raw:
        raise SAEFormatError("sparsify skip connections are not supported", path=weights_path)
    w_enc = _take(raw, "encoder.weight", None, weights_path, ndim=2)
    d_sae, d_in = w_enc.shape
    cfg_d_in = cfg.get("d_in")
    if isinstance(cfg_d_in, int) and cfg_d_in != d_in:
        raise SAEWeightsError(
            f"cfg.json says d_in={cfg_d_in} but encoder.weight has shape {tuple(w_enc.shape)} "
            "([d_sae, d_in] expected)",
            path=weights_path,
            tensor="encoder.weight",
        )
    num_latents = cfg.get("num_latents")
    if isinstance(num_latents, int) and num_latents > 0 and num_latents != d_sae:
        raise SAEWeightsError(
            f"cfg.json says num_latents={num_latents} but encoder.weight has shape "
            f"{tuple(w_enc.shape)} ([d_sae, d_in] expected)",
            path=weights_path,
            tensor="encoder.weight",
        )
    tensors = {
        "W_enc": w_enc.T,
        "b_enc": _take(raw, "encoder.bias", (d_sae,), weights_path),
        "W_dec": _take(raw, "W_dec", (d_sae, d_in), weights_path),
        "b_dec": _take(raw, "b_dec", (d_in,), weights_path),
    }
    hook = _SPARSIFY_HOOK.match(directory.name)
    if hook is None and re.match(r"^layers\.\d+\.", directory.name):
        raise SAEFormatError(
            f"hookpoint {directory.name!r} is not a residual stream; auditor reads "
            "decoder-layer outputs (layers.<L>)",
            path=directory,
        )
    found = int(hook.group(1)) if hook else None
    cfg_obj = _make_cfg(
        cfg_path,
        d_in=d_in,
        d_sae=d_sae,
        activation="topk",
        k=k if k is not None else cfg.get("k"),
        hook_layer=_resolve_layer(found, layer, cfg_path),
        hook_point="resid_post",
        apply_b_dec_to_input=True,
        relu_before_topk=True,
        source_format="sparsify",
        source_name=directory.parent.name if hook else directory.name,
    )
    return _Loaded(cfg_obj, tensors, weights_path)


# --------------------------------------------------------------------------- auditor
def _load_auditor(path: Path, *, k: int | None, layer: int | None) -> _Loaded:
    directory = path.parent if path.is_file() else path
    cfg_path = directory / CONFIG_FILENAME
    weights_path = directory / WEIGHTS_FILENAME
    data = _read_json(cfg_path)
    try:
        cfg = SAEConfig.from_dict(data)
    except ConfigError as exc:
        raise SAEFormatError(f"invalid auditor SAE config: {exc.message}", path=cfg_path) from exc
    raw = _read_safetensors(weights_path)
    d_in, d_sae = cfg.d_in, cfg.d_sae
    tensors = {
        "W_enc": _take(raw, "W_enc", (d_in, d_sae), weights_path),
        "b_enc": _take(raw, "b_enc", (d_sae,), weights_path),
        "W_dec": _take(raw, "W_dec", (d_sae, d_in), weights_path),
        "b_dec": _take(raw, "b_dec", (d_in,), weights_path),
    }
    if cfg.activation == "jumprelu":
        tensors["threshold"] = _take(raw, "threshold", (d_sae,), weights_path)
    if k is not None:
        if cfg.activation not in TOPK_ACTIVATIONS:
            raise ConfigError(f"k= only applies to TopK SAEs, not {cfg.activation!r}", path=path)
        cfg = _make_cfg(cfg_path, **{**_fields(cfg), "k": k})
    hook_layer = _resolve_layer(cfg.hook_layer, layer, cfg_path)
    if hook_layer != cfg.hook_layer:
        cfg = replace(cfg, hook_layer=hook_layer)
    return _Loaded(cfg, tensors, weights_path)


def _fields(cfg: SAEConfig) -> dict[str, Any]:
    out = cfg.to_dict()
    out.pop("architecture")
    out.pop("auditor_version")
    return out


_LOADERS: dict[str, Callable[..., _Loaded]] = {
    "qwenscope": _load_qwenscope,
    "saelens": _load_saelens,
    "gemmascope": _load_gemmascope,
    "gemmascope2": _load_gemmascope2,
    "sparsify": _load_sparsify,
    "auditor": _load_auditor,
}


# --------------------------------------------------------------------------- public API
def load_sae(
    path: str | Path,
    *,
    format: str | None = None,
    k: int | None = None,
    layer: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SAE:
    """Load an SAE from any supported layout into auditor's canonical :class:`SAE`.

    Parameters
    ----------
    path : str or Path
        The SAE's weights file or directory.
    format : str or None
        A key of :data:`FORMATS`; detected with :func:`detect_format` if ``None``.
    k : int or None
        Latents per token for TopK SAEs. Required for Qwen-Scope files whose path holds
        no release name (``SAE-Res-<model>-W<width>-L0_<k>``); overrides the stored k
        otherwise.
    layer : int or None
        Which layer to load when the path holds several (Qwen-Scope directory, sparsify
        checkpoint); for other layouts, the layer the SAE reads if the files do not say.
        Must agree with the layer the files name.
    device : str or torch.device
        Where the parameters live.
    dtype : torch.dtype
        Parameter dtype (a floating-point dtype); inputs are cast to it.

    Returns
    -------
    SAE
        The SAE with ``sha256`` (of the weights file) and ``source_path`` set.

    Raises
    ------
    SAEFormatError
        Unknown layout, missing file, bad or unsupported config.
    SAEWeightsError
        Missing tensor, wrong shape, NaN/inf, corrupt file.
    UnsafeFileError
        The file would need unpickling arbitrary objects.
    ConfigError
        Invalid arguments (unknown ``format``, bad ``k``/``layer``/``dtype``, or a
        ``layer`` that disagrees with the files).
    """
    path = Path(path)
    _check_k_arg(k)
    _check_layer_arg(layer)
    name = dtype_name(dtype)
    if format is None:
        format = detect_format(path)
    elif format not in _LOADERS:
        raise ConfigError(f"unknown SAE format {format!r}; expected one of {list(FORMATS)}")
    elif not path.exists():
        raise SAEFormatError("no such file or directory", path=path)
    loaded = _LOADERS[format](path, k=k, layer=layer)
    cfg = replace(loaded.cfg, dtype=name)
    with torch.device(device):  # built where it will live: no second copy of the weights
        sae = SAE(cfg)
    with torch.no_grad():
        for tensor_name, value in sae.canonical_tensors().items():
            value.copy_(loaded.tensors[tensor_name].to(dtype))
    _check_finite_after_cast(sae, loaded.weights_path)
    sae.sha256 = sha256_file(loaded.weights_path)
    sae.source_path = str(loaded.weights_path)
    sae.eval()
    return sae


def _check_finite_after_cast(sae: SAE, path: Path) -> None:
    for name, value in sae.canonical_tensors().items():
        if not bool(torch.isfinite(value).all()):
            raise SAEWeightsError(
                f"overflows dtype {sae.cfg.dtype} (non-finite after casting)",
                path=path,
                tensor=name,
            )


def convert_sae(
    src: str | Path,
    dst: str | Path,
    *,
    format: str | None = None,
    k: int | None = None,
    layer: int | None = None,
) -> Path:
    """Convert an SAE from any supported layout to auditor's own (float32).

    Parameters
    ----------
    src : str or Path
        Source weights file or directory.
    dst : str or Path
        Directory to write ``config.json`` and ``sae.safetensors`` into.
    format, k, layer
        As for :func:`load_sae`.

    Returns
    -------
    Path
        The destination directory. The saved config keeps ``source_format`` and
        ``source_name`` of the original.
    """
    sae = load_sae(src, format=format, k=k, layer=layer)
    return sae.save(dst)
