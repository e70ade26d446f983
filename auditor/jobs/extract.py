"""The extraction job: load model and SAEs, read the input, extract into a store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError, RowError
from auditor.extract import ExtractConfig, ExtractSummary, ProgressCallback, default_sae_keys

__all__ = ["run_extract"]


def run_extract(
    input_path: str | Path,
    *,
    out: str | Path,
    model: str | Path | None = None,
    saes: Sequence[str] = (),
    layer: int | None = None,
    sae_format: str | None = None,
    k: int | None = None,
    config: ExtractConfig | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    passthrough: Sequence[str] = (),
    max_chars: int = 1_000_000,
    skip_bad_rows: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[ExtractSummary, list[RowError]]:
    """Extract pooled SAE features of the dataset at ``input_path`` into the store ``out``.

    Parameters
    ----------
    input_path
        JSONL, Parquet, CSV, a ``.txt`` file or a directory of ``.txt`` files.
    out
        Store directory; resumed when it holds a store with the same provenance.
    model
        Local Hugging Face model directory; ``None`` uses the embedded default
        (:func:`auditor.defaults.default_model_dir`, converted once on first use).
    saes
        SAE paths in any supported format, each optionally ``NAME=PATH``; empty uses the
        shipped default SAE (only together with the default model).
    layer, sae_format, k
        Passed to :func:`auditor.sae.load_sae` for SAEs whose files do not say.
    config
        Extraction settings.
    text_column, id_column, passthrough, max_chars, skip_bad_rows
        Passed to :func:`auditor.io.read_documents`.
    overwrite
        Replace a store with different provenance.
    device, dtype
        Where and in what precision to run (default: CUDA with bf16/fp16 if present).
    progress, on_progress
        Terminal progress bar; callback with running counts for job status.
    check
        Called with the store's provenance before extraction starts; see
        :func:`auditor.extract.extract_features`.

    Returns
    -------
    summary, skipped
        The run's :class:`~auditor.extract.ExtractSummary` and the rows skipped as bad.
    """
    from auditor.extract import extract_features
    from auditor.io import count_documents, input_fingerprint, read_documents
    from auditor.lm import load_model
    from auditor.sae import load_sae

    model, saes = resolve_defaults(model, saes, progress=progress)
    named = [_split_name(s) for s in saes]
    lm = load_model(model, device=device, dtype=dtype)
    loaded = [load_sae(path, format=sae_format, k=k, layer=layer, device=lm.device)
              for _, path in named]
    keys = [name or key for (name, _), key in zip(named, default_sae_keys(loaded), strict=True)]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"SAE names must be unique, got {keys}")

    bad: list[RowError] = []
    docs = read_documents(input_path, text_column=text_column, id_column=id_column,
                          passthrough=passthrough, max_chars=max_chars,
                          skip_bad_rows=skip_bad_rows, errors=bad)
    summary = extract_features(
        docs, lm=lm, saes=dict(zip(keys, loaded, strict=True)), out=out, config=config,
        input_info={"path": str(input_path), "fingerprint": input_fingerprint(input_path)},
        overwrite=overwrite, total=count_documents(input_path), progress=progress,
        on_progress=on_progress, bad_rows=bad, check=check,
    )
    return summary, bad


def resolve_defaults(
    model: str | Path | None, saes: Sequence[str], *, progress: bool = True
) -> tuple[str | Path, list[str]]:
    """Fill in the embedded default model and SAE where none is given.

    Raises
    ------
    ConfigError
        SAEs were left to default for a model that is not the default one, or no default
        SAE is installed.
    """
    from auditor import defaults

    if saes:
        return (model if model is not None else defaults.default_model_dir(progress=progress),
                list(saes))
    if model is not None:
        raise ConfigError("--sae is required with --model (the default SAE is trained for the "
                          f"default model, {defaults.DEFAULT_MODEL_NAME})", field="sae")
    sae = defaults.default_sae_path()
    if sae is None:
        raise ConfigError(f"the default SAE is not installed (expected under "
                          f"{defaults.models_dir() / 'sae'}); pass --sae", field="sae")
    return defaults.default_model_dir(progress=progress), [str(sae)]


def _split_name(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` → (NAME, PATH); a plain path (even one holding '=') keeps no name."""
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists() and "/" not in name:
        return name, path
    return None, spec
