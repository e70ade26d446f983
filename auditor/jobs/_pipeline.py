"""A loaded model and its SAEs: what extraction jobs run, loaded once and handed around.

A job never loads a model it was handed: a worker loads a :class:`Pipeline` once per
process (lazily, after fork) and passes it to every task it runs; the CLI lets the job
load one. :class:`PipelineSpec` says which model and SAEs a job asks for; a handed
pipeline must match it, so a warm worker cannot silently run another model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.lm import LoadedModel
    from auditor.sae import SAE

__all__ = ["Pipeline", "PipelineSpec", "load_pipeline", "load_saes", "resolve_defaults",
           "split_sae_name"]


@dataclass(frozen=True)
class PipelineSpec:
    """Which model and SAEs to run, as a job's options name them.

    Parameters
    ----------
    model
        Local Hugging Face model directory; ``None`` for the embedded default.
    saes
        SAE paths, each optionally ``NAME=PATH``; empty for the shipped default SAE.
    layer, sae_format, k
        For SAEs whose files do not say.
    device, dtype
        Where and in what precision to run (default: CUDA with bf16/fp16 if present).
    """

    model: str | None = None
    saes: tuple[str, ...] = ()
    layer: int | None = None
    sae_format: str | None = None
    k: int | None = None
    device: str | None = None
    dtype: str | None = None

    def key(self) -> tuple[object, ...]:
        """What makes two specs load the same thing (a worker's cache key)."""
        return (self.model, self.saes, self.layer, self.sae_format, self.k, self.device,
                self.dtype)


@dataclass
class Pipeline:
    """A loaded model and its SAEs keyed by store column name."""

    spec: PipelineSpec
    lm: LoadedModel
    saes: Mapping[str, SAE]
    model_dir: str

    def check(self, spec: PipelineSpec) -> None:
        """Refuse to run a job that asks for another model or other SAEs than these.

        Raises
        ------
        ConfigError
            ``spec`` names another model, other SAEs or another device.
        """
        if spec.key() != self.spec.key():
            raise ConfigError(f"the loaded pipeline runs {self.spec}, the job asks for {spec}",
                              field="pipeline")


def split_sae_name(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` → (NAME, PATH); a plain path (even one holding '=') keeps no name."""
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists() and "/" not in name:
        return name, path
    return None, spec


def resolve_defaults(model: str | Path | None, saes: Sequence[str], *, progress: bool = False
                     ) -> tuple[str | Path, list[str]]:
    """Fill in the embedded default model and SAE where none is given (``progress``: show
    the default model's one-time conversion on stderr).

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
        raise ConfigError("an SAE is required with a model other than the default (the "
                          f"default SAE is trained for {defaults.DEFAULT_MODEL_NAME})",
                          field="sae")
    sae = defaults.default_sae_path()
    if sae is None:
        raise ConfigError(f"the default SAE is not installed (expected under "
                          f"{defaults.models_dir() / 'sae'}); name an SAE", field="sae")
    return defaults.default_model_dir(progress=progress), [str(sae)]


def load_saes(spec: PipelineSpec, *, device: str | None = None
              ) -> tuple[str | Path, dict[str, SAE]]:
    """The model directory ``spec`` resolves to and its SAEs, loaded (on ``device``,
    default CPU) and keyed by store column name, without loading the model.

    Raises
    ------
    ConfigError
        Two SAEs would get the same store column name, or defaults cannot be filled in.
    SAEError
        From loading.
    """
    from auditor.extract import default_sae_keys
    from auditor.sae import load_sae

    model, saes = resolve_defaults(spec.model, spec.saes)
    named = [split_sae_name(s) for s in saes]
    loaded = [load_sae(path, format=spec.sae_format, k=spec.k, layer=spec.layer,
                       device=device or "cpu") for _, path in named]
    keys = [name or key for (name, _), key in zip(named, default_sae_keys(loaded), strict=True)]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"SAE names must be unique, got {keys}", field="sae")
    return model, dict(zip(keys, loaded, strict=True))


def load_pipeline(spec: PipelineSpec, *, saes: tuple[str | Path, Mapping[str, SAE]] | None
                  = None, progress: bool = False) -> Pipeline:
    """Load the model and SAEs ``spec`` names (the embedded defaults where it names none).

    Parameters
    ----------
    spec
        Which model and SAEs.
    saes
        :func:`load_saes`'s answer for ``spec`` when the SAEs are already loaded (they are
        moved to the model's device).
    progress
        Let transformers draw its weight-loading bar on stderr.

    Raises
    ------
    ConfigError
        Two SAEs would get the same store column name, or defaults cannot be filled in.
    ModelLoadError, SAEError
        From loading.
    """
    from auditor.lm import load_model

    model, loaded = saes if saes is not None else load_saes(spec)
    lm = load_model(model, device=spec.device, dtype=spec.dtype, progress=progress)
    return Pipeline(spec=spec, lm=lm, saes={k: s.to(lm.device) for k, s in loaded.items()},
                    model_dir=str(model))
