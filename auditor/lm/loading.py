"""Load a Hugging Face causal LM as a headless decoder, and decide its device and dtype.

:func:`resolve_device_dtype` is the one place where auditor chooses a device and a dtype;
:func:`load_model` calls it and returns a :class:`LoadedModel` that holds only the base
decoder (no LM head), its fast tokenizer, the decoder layer list used for hooks, and a
content hash of the weight files for provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from auditor.errors import ConfigError, HookError, ModelLoadError
from auditor.lm._cache import cache_dir, cached_sha256
from auditor.lm.gguf import gguf_source

__all__ = [
    "LoadedModel",
    "cache_dir",
    "find_layers",
    "load_model",
    "native_bfloat16",
    "resolve_device_dtype",
    "transformers_bars",
    "weights_sha256",
]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

# Files whose bytes are hashed for ``weights_sha256`` (config/tokenizer files are not weights).
_WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")

# Attribute names under which models keep their list of decoder blocks.
_LAYER_LIST_NAMES: tuple[str, ...] = ("layers", "h", "blocks")
# Attribute names of containers that may hold that list one or two levels down.
_NESTING_NAMES: tuple[str, ...] = (
    "model",
    "decoder",
    "transformer",
    "language_model",
    "text_model",
    "gpt_neox",
    "backbone",
    "encoder",
)

# A tokenizer.model_max_length at or above this is HF's "unknown" sentinel, not a real limit.
_SANE_MAX_LENGTH = 10_000_000


def resolve_device_dtype(
    device: str | None = None, dtype: str | None = None
) -> tuple[torch.device, torch.dtype]:
    """Decide the device and dtype the model runs in.  The one place auditor does this.

    Parameters
    ----------
    device : str, optional
        A torch device string (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...).  ``None`` picks
        ``'cuda'`` when available, else ``'cpu'``.
    dtype : {'float32', 'fp32', 'bf16', 'bfloat16', 'fp16', 'float16'}, optional
        ``None`` picks bfloat16 on a CUDA device that supports it natively (compute
        capability 8.0+ or ROCm; emulated bf16 is slow so it is not used), float16 on
        older CUDA devices and float32 on the CPU.

    Returns
    -------
    tuple of (torch.device, torch.dtype)

    Raises
    ------
    ConfigError
        If ``dtype`` is not one of the accepted names, ``device`` is not a valid device
        string, or CUDA is asked for but not available.

    Examples
    --------
    >>> resolve_device_dtype("cpu")
    (device(type='cpu'), torch.float32)
    >>> resolve_device_dtype("cpu", "bf16")
    (device(type='cpu'), torch.bfloat16)
    """
    if device is None:
        resolved_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved_device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"invalid device {device!r}: {exc}", field="device") from exc
        if resolved_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} asked for but CUDA is not available", field="device"
            )

    if dtype is None:
        if resolved_device.type == "cuda":
            bf16 = native_bfloat16(resolved_device)
            resolved_dtype = torch.bfloat16 if bf16 else torch.float16
        else:
            resolved_dtype = torch.float32
    else:
        key = dtype.strip().lower() if isinstance(dtype, str) else dtype
        if key not in _DTYPES:
            allowed = ", ".join(repr(name) for name in _DTYPES)
            raise ConfigError(f"unknown dtype {dtype!r}; expected one of {allowed}", field="dtype")
        resolved_dtype = _DTYPES[key]
    return resolved_device, resolved_dtype


def native_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively.

    On a CUDA device: compute capability 8.0+ (Ampere or newer) or ROCm. On the CPU:
    AVX512-BF16 or AMX, as oneDNN reports it. Elsewhere bfloat16 is emulated, several times
    slower than float32 (5.6x measured for the SAE encoder product on a 2-core AMD EPYC
    Zen 3 with AVX2 only), so auditor does not choose it.

    Examples
    --------
    >>> isinstance(native_bfloat16("cpu"), bool)
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        if torch.version.hip:
            return True
        major, _minor = torch.cuda.get_device_capability(device)
        return major >= 8
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bfloat16 path
        return False


@dataclass
class LoadedModel:
    """A headless decoder ready for activation capture.

    Attributes
    ----------
    model : torch.nn.Module
        The base decoder (no LM head), in eval mode, on ``device`` in ``dtype``.
    tokenizer : PreTrainedTokenizerBase
        The model's fast tokenizer; ``pad_token`` is always set.
    model_id : str
        The path or name the model was loaded from.
    weights_sha256 : str or None
        Content hash of the weight files (see :func:`weights_sha256`), or ``None`` when
        there are no local weight files to hash.
    device : torch.device
    dtype : torch.dtype
    d_model : int
        Hidden size (width of the residual stream).
    n_layers : int
        Number of decoder layers (``len(layers)``).
    max_positions : int
        Usable context length in tokens.
    layers : torch.nn.ModuleList
        The decoder layers, in order; hook points index into this list.
    converted_from : dict or None
        For a directory converted from a GGUF file (:func:`auditor.lm.gguf.convert_gguf`),
        that file's ``name``, ``sha256`` and ``size``: ``model_id`` is then a cache path,
        and this names what it holds. ``None`` otherwise.
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    weights_sha256: str | None
    device: torch.device
    dtype: torch.dtype
    d_model: int
    n_layers: int
    max_positions: int
    layers: torch.nn.ModuleList
    converted_from: dict[str, Any] | None = None


@contextlib.contextmanager
def transformers_bars(enabled: bool) -> Iterator[None]:
    """Within the block, ``transformers``' own progress bars (``Loading weights`` …) are off
    unless ``enabled``; the previous setting is restored after.

    Parameters
    ----------
    enabled : bool
        False silences them; True leaves them as they are (on by default).

    Examples
    --------
    >>> from transformers.utils import logging as hf_logging
    >>> with transformers_bars(False):
    ...     hf_logging.is_progress_bar_enabled()
    False
    """
    from transformers.utils import logging as hf_logging

    if enabled or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def load_model(
    name_or_path: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    local_files_only: bool = True,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, keeping only the base decoder.

    Parameters
    ----------
    name_or_path : str or Path
        A local model directory, or (with ``local_files_only=False``) a Hub model id.
    device : str, optional
        Passed to :func:`resolve_device_dtype`.
    dtype : str, optional
        Passed to :func:`resolve_device_dtype`.
    local_files_only : bool, default True
        When true, ``name_or_path`` must be an existing local directory and nothing is
        downloaded.
    model : PreTrainedModel, optional
        An already-built model (causal LM or base model); skips loading the weights.  It is
        moved to the resolved device and dtype.
    tokenizer : PreTrainedTokenizerBase, optional
        An already-built fast tokenizer; skips loading the tokenizer.
    progress : bool, default True
        Let ``transformers`` draw its ``Loading weights`` bar on stderr; jobs pass False
        when their progress is off (``--no-progress``, workers).

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        If the directory is missing, the config or weights cannot be loaded, or the
        tokenizer is missing or not a fast tokenizer.
    HookError
        If no decoder layer list can be found in the model.
    ConfigError
        If ``device`` or ``dtype`` is invalid.

    Notes
    -----
    The LM head is dropped: the returned ``model`` is e.g. ``LlamaForCausalLM.model``,
    ``Gemma3ForCausalLM.model`` or ``Gemma3ForConditionalGeneration``'s language model, so
    logits are never computed.
    """
    model_id = str(name_or_path)
    resolved_device, resolved_dtype = resolve_device_dtype(device, dtype)
    local_dir = Path(name_or_path).expanduser()
    is_local = local_dir.is_dir()
    needs_files = model is None or tokenizer is None
    if needs_files and not is_local and local_files_only:
        what = "does not exist" if not local_dir.exists() else "is not a directory"
        raise ModelLoadError(f"model directory {what}", path=model_id)
    source = str(local_dir) if is_local else model_id

    with transformers_bars(progress):
        if model is None:
            model = _load_pretrained(source, dtype=resolved_dtype,
                                     local_files_only=local_files_only)
        if tokenizer is None:
            tokenizer = _load_tokenizer(source, local_files_only=local_files_only)
    _check_tokenizer(tokenizer, model_id=model_id)

    base = _base_decoder(model)
    layers = find_layers(base)
    base.to(device=resolved_device, dtype=resolved_dtype)
    base.eval()
    base.requires_grad_(False)

    config = getattr(base, "config", None) or getattr(model, "config", None)
    text_config = _text_config(config)
    d_model = _d_model(text_config, base, model_id=model_id)
    max_positions = _max_positions(text_config, tokenizer)

    weights_dir = local_dir if is_local else _hub_snapshot(model_id)
    digest = weights_sha256(weights_dir) if weights_dir is not None else None

    return LoadedModel(
        model=base,
        tokenizer=tokenizer,
        model_id=model_id,
        weights_sha256=digest,
        device=resolved_device,
        dtype=resolved_dtype,
        d_model=d_model,
        n_layers=len(layers),
        max_positions=max_positions,
        layers=layers,
        converted_from=gguf_source(local_dir) if is_local else None,
    )


def find_layers(module: torch.nn.Module) -> torch.nn.ModuleList:
    """Find the list of decoder layers of a (base) transformer model.

    Looks for a non-empty ``torch.nn.ModuleList`` attribute named ``layers``, ``h`` or
    ``blocks`` on ``module``, then on common containers (``model``, ``decoder``,
    ``transformer``, ``language_model``, ...) up to two levels down.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    torch.nn.ModuleList

    Raises
    ------
    HookError
        If no such list exists.
    """
    frontier: list[torch.nn.Module] = [module]
    for _depth in range(3):
        next_frontier: list[torch.nn.Module] = []
        for candidate in frontier:
            for name in _LAYER_LIST_NAMES:
                found = getattr(candidate, name, None)
                if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
                    return found
            for name in _NESTING_NAMES:
                child = getattr(candidate, name, None)
                if isinstance(child, torch.nn.Module) and child is not candidate:
                    next_frontier.append(child)
        frontier = next_frontier
    raise HookError(
        f"cannot find the decoder layers of {type(module).__name__}: no ModuleList named "
        f"{', '.join(_LAYER_LIST_NAMES)} on it or on its "
        f"{', '.join(_NESTING_NAMES)} submodules"
    )


def weights_sha256(directory: str | Path) -> str | None:
    """Hash the weight files of a model directory, with a per-file cache.

    The digest is SHA-256 over, for each weight file in sorted order of file name: the
    UTF-8 file name, a NUL byte, and the 32-byte SHA-256 of the file's
    content.  Per-file digests are cached as small JSON sidecars in
    ``cache_dir() / 'hashes'`` keyed by (absolute resolved path, size, ``mtime_ns``), so
    loading the same multi-GB checkpoint again does not re-read it.

    Parameters
    ----------
    directory : str or Path
        A model directory.  Weight files are ``*.safetensors``, ``*.bin``, ``*.pt``,
        ``*.pth``, ``*.ckpt`` and ``*.gguf`` directly in it (subdirectories such as
        ``original/`` are not loaded by ``from_pretrained`` and are not hashed).

    Returns
    -------
    str or None
        Hex digest, or ``None`` if the directory holds no weight files.
    """
    root = Path(directory)
    if not root.is_dir():
        return None
    files = sorted(
        (path for path in root.iterdir() if path.suffix in _WEIGHT_SUFFIXES and path.is_file()),
        key=lambda path: path.name,
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8"))
        digest.update(b"\0")
        digest.update(bytes.fromhex(cached_sha256(path)))
    return digest.hexdigest()


def _load_pretrained(source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
    """Load the model with ``AutoModelForCausalLM``, falling back to ``AutoModel``."""
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_files_only}
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ValueError as causal_exc:
        # Unrecognised configuration class for a causal LM: try the bare model class.
        if "Unrecognized configuration class" not in str(causal_exc):
            raise ModelLoadError(f"cannot load model: {causal_exc}", path=source) from causal_exc
        try:
            return AutoModel.from_pretrained(source, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model: {exc}", path=source) from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot load model: {exc}", path=source) from exc


def _load_tokenizer(source: str, *, local_files_only: bool) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    except Exception as exc:
        raise ModelLoadError(f"cannot load tokenizer: {exc}", path=source) from exc


def _check_tokenizer(tokenizer: Any, *, model_id: str) -> None:
    """Require a fast tokenizer and make sure it has a pad token."""
    if not isinstance(tokenizer, PreTrainedTokenizerBase) or not getattr(
        tokenizer, "is_fast", False
    ):
        raise ModelLoadError(
            f"a fast (Rust-backed) tokenizer is required, got {type(tokenizer).__name__}",
            path=model_id,
        )
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError(
                "tokenizer has no pad, eos or unk token to pad with", path=model_id
            )
        tokenizer.pad_token = fallback


def _base_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The headless decoder inside ``model`` (``model.model`` for ``*ForCausalLM``)."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        with contextlib.suppress(Exception):
            decoder = get_decoder()
            if isinstance(decoder, torch.nn.Module):
                return decoder
    base = getattr(model, "base_model", None)
    if isinstance(base, torch.nn.Module):
        return base
    return model


def _text_config(config: Any) -> Any:
    """The text sub-config of a multimodal config, else the config itself."""
    if config is None:
        return None
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        with contextlib.suppress(Exception):
            return get_text_config()
    return config


def _d_model(config: Any, base: torch.nn.Module, *, model_id: str) -> int:
    for name in ("hidden_size", "d_model", "n_embd"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    embeddings = getattr(base, "get_input_embeddings", None)
    if callable(embeddings):
        with contextlib.suppress(Exception):
            return int(embeddings().embedding_dim)
    raise ModelLoadError("cannot determine the model's hidden size", path=model_id)


def _max_positions(config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """Usable context: the config's position limit, capped by a sane tokenizer limit."""
    limits: list[int] = []
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _SANE_MAX_LENGTH:
        limits.append(tok_limit)
    return min(limits) if limits else 2048


def _hub_snapshot(model_id: str) -> Path | None:
    """The already-downloaded Hub snapshot of ``model_id``, without network access."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        return None
