"""The extraction job: a dataset's pooled SAE features into a feature store.

``run_extract(input, out=STORE, options=ExtractOptions(...))`` reads the dataset, runs the
model and SAEs (loaded from the options, or a :class:`~auditor.jobs.Pipeline` handed in)
and writes the store at ``out``. Shards resume; ``rank`` / ``world_size`` let several
processes fill one store (shard ``i`` belongs to rank ``i % world_size``); a cancel token
stops it at the next batch with every finished shard valid.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken
from auditor.errors import ConfigError
from auditor.jobs._contract import JobOptions, JobResult, run_recorded, runtime_field
from auditor.jobs._pipeline import (
    Pipeline,
    PipelineSpec,
    load_pipeline,
    load_saes,
    resolve_defaults,
)
from auditor.progress import Progress, ProgressCallback

__all__ = ["ExtractOptions", "ExtractResult", "resolve_defaults", "run_extract",
           "shipped_heads_settings", "with_heads_defaults"]

# ExtractConfig's fields, repeated here so these options stay importable without numpy
_CONFIG_FIELDS = ("poolings", "max_length", "max_windows", "shard_size", "exclude_outliers",
                  "outlier_factor", "outlier_threshold", "save_tokens", "raw_mean",
                  "token_budget", "max_batch_size", "sae_chunk_size")


@dataclass(frozen=True)
class ExtractOptions(JobOptions):
    """Settings of one extraction job.

    Parameters
    ----------
    model, saes, layer, sae_format, k, device, dtype
        Which model and SAEs to run (see :class:`~auditor.jobs.PipelineSpec`); defaults:
        the embedded model and the shipped SAE.
    poolings, max_length, max_windows, shard_size, exclude_outliers, outlier_factor,
    outlier_threshold, save_tokens, raw_mean
        Extraction settings (see :class:`auditor.extract.ExtractConfig`).
    token_budget, max_batch_size, sae_chunk_size
        Batch shape; they do not change results.
    text_column, id_column, passthrough, max_chars, skip_bad_rows
        How the dataset is read (see :func:`auditor.io.read_documents`).
    rank, world_size
        Fill only the shards ``i`` with ``i % world_size == rank``.
    total_shards
        How many shards the input makes, when known (a queued job's shard task): a rank
        stops reading after its last shard.
    """

    model: str | None = None
    saes: tuple[str, ...] = ()
    layer: int | None = None
    sae_format: str | None = None
    k: int | None = None
    device: str | None = runtime_field(None)
    dtype: str | None = None
    poolings: tuple[str, ...] = ("max",)
    max_length: int = 512
    max_windows: int | None = None
    shard_size: int = 1000
    exclude_outliers: bool = True
    outlier_factor: float = 5.0
    outlier_threshold: float | None = None
    save_tokens: bool = False
    raw_mean: bool = False
    token_budget: int = runtime_field(8192)
    max_batch_size: int = runtime_field(64)
    sae_chunk_size: int = runtime_field(4096)
    text_column: str = "text"
    id_column: str | None = None
    passthrough: tuple[str, ...] = ()
    max_chars: int = 1_000_000
    skip_bad_rows: bool = False
    rank: int = runtime_field(0)
    world_size: int = runtime_field(1)
    total_shards: int | None = runtime_field(None)

    def validate(self) -> None:
        self.extract_config()  # ExtractConfig validates its own fields
        if self.max_chars < 1:
            raise ConfigError("max_chars must be positive", field="max_chars")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank must be in [0, world_size), got {self.rank} of "
                              f"{self.world_size}", field="rank")
        if self.total_shards is not None and self.total_shards < 0:
            raise ConfigError("total_shards must be >= 0", field="total_shards")
        if self.overwrite and self.world_size > 1:
            raise ConfigError("overwrite would delete other ranks' shards; clear the store "
                              "with one rank first", field="overwrite")

    def extract_config(self) -> Any:
        """The :class:`auditor.extract.ExtractConfig` these options describe."""
        from auditor.extract import ExtractConfig

        return ExtractConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS})

    def with_config(self, config: Mapping[str, Any]) -> ExtractOptions:
        """These options with the extraction settings of ``config`` (an
        :meth:`ExtractConfig.to_dict`), e.g. what the heads were trained on."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown extract settings: {', '.join(unknown)}",
                              field=unknown[0])
        return type(self).from_dict({**self.to_dict(), **config})

    def pipeline_spec(self) -> PipelineSpec:
        """Which model and SAEs these options ask for."""
        return PipelineSpec(model=self.model, saes=self.saes, layer=self.layer,
                            sae_format=self.sae_format, k=self.k, device=self.device,
                            dtype=self.dtype)


@dataclass(frozen=True)
class ExtractResult(JobResult):
    """What an extraction did: counts, speed, size and the rows skipped as bad.

    ``summary`` is :meth:`auditor.extract.ExtractSummary.to_dict`; ``skipped`` holds each
    skipped row's error record (:meth:`AuditorError.to_dict`); ``ids`` says how documents
    are keyed (``column 'id'`` or ``row numbers``, :func:`auditor.io.describe_ids`; the
    store records the column as ``input.read.id_column``).
    """

    store: str
    summary: dict[str, Any]
    skipped: tuple[dict[str, Any], ...] = ()
    ids: str | None = None


def run_extract(
    input: str | Path,
    *,
    out: str | Path,
    options: ExtractOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> ExtractResult:
    """Extract pooled SAE features of the dataset ``input`` into the store ``out``.

    Parameters
    ----------
    input
        JSONL, Parquet, CSV, a ``.txt`` file or a directory of ``.txt`` files.
    out
        The store directory; resumed when it holds a store with the same provenance.
    options
        See :class:`ExtractOptions`.
    progress
        Receives a ``docs`` stage: documents done (including shards done before or by
        other ranks) with ``tokens`` and ``bad_rows`` counters.
    cancel
        Checked at every batch and shard; see :func:`auditor.extract.extract_features`.
    pipeline
        A model and SAEs already loaded (a warm worker's); must match the options.
    check
        Called with the store's provenance before extraction starts (e.g. heads that must
        accept the features).

    Returns
    -------
    ExtractResult

    Raises
    ------
    ConfigError, InputError, ModelError, SAEError, StoreError
        As their names say; shards written before an error stay valid.
    JobConflict
        ``out`` holds an extraction job with other options or of another input.
    JobCancelled
        ``cancel`` was set.
    """
    spec = options.pipeline_spec()
    if pipeline is not None:
        pipeline.check(spec)
    job_file = "_job.json" if options.world_size == 1 else \
        f"_job.rank-{options.rank}-of-{options.world_size}.json"

    def work(root: Path) -> ExtractResult:
        from auditor.errors import RowError
        from auditor.extract import extract_features
        from auditor.io import (
            ROW_NUMBERS,
            count_documents,
            describe_ids,
            input_fingerprint,
            read_documents,
            resolve_id_column,
        )

        id_column = resolve_id_column(input, options.id_column)  # before the model loads
        if pipeline is not None:
            loaded = pipeline
        else:
            saes = load_saes(spec)
            if check is not None:  # refuse before spending seconds on the model
                from auditor.extract import preflight_provenance

                check(preflight_provenance(saes[0], saes[1], options.extract_config()))
            loaded = load_pipeline(spec, saes=saes, progress=progress is not None)
        bad: list[RowError] = []
        docs = read_documents(input, text_column=options.text_column,
                              id_column=ROW_NUMBERS if id_column is None else id_column,
                              passthrough=options.passthrough,
                              max_chars=options.max_chars, skip_bad_rows=options.skip_bad_rows,
                              errors=bad)
        with Progress(progress, job="extract").stage("docs",
                                                     total=count_documents(input)) as stage:
            summary = extract_features(
                docs, lm=loaded.lm, saes=loaded.saes, out=root,
                config=options.extract_config(),
                input_info={"path": str(input), "fingerprint": input_fingerprint(input),
                            # which rows land in which shard and what each row holds
                            "read": {"text_column": options.text_column,
                                     "id_column": id_column,  # None: row numbers
                                     "passthrough": list(options.passthrough),
                                     "max_chars": options.max_chars,
                                     "skip_bad_rows": options.skip_bad_rows}},
                overwrite=options.overwrite, progress=stage,
                cancel=cancel, rank=options.rank, world_size=options.world_size,
                bad_rows=bad, check=check, total_shards=options.total_shards)
        return ExtractResult(store=".", summary=summary.to_dict(),
                             skipped=tuple(e.to_dict() for e in bad),
                             ids=describe_ids(id_column))

    return run_recorded("extract", out=out, options=options, input=input,
                        result_type=ExtractResult, work=work, job_file=job_file,
                        clear=_clear_store)


def shipped_heads_settings() -> dict[str, Any]:
    """What the shipped heads are trained on (:data:`auditor.heads.HEAD_EXTRACT`), less the
    raw-activation means only a raw head reads."""
    from auditor.heads import HEAD_EXTRACT

    return {**HEAD_EXTRACT.to_dict(include_runtime=False), "raw_mean": False}


def with_heads_defaults(options: ExtractOptions, *, given: Collection[str] = ()
                        ) -> ExtractOptions:
    """With the embedded default model and SAE, the extraction settings not ``given``
    follow the shipped heads' (128-token windows, the first 2, max and mean pooling), so
    the store serves them; another model or SAE keeps ``options`` as they are.

    Examples
    --------
    >>> o = with_heads_defaults(ExtractOptions(), given={"max_length"})
    >>> o.max_length, o.max_windows, o.poolings
    (512, 2, ('max', 'mean'))
    >>> with_heads_defaults(ExtractOptions(saes=("x",))).max_windows is None
    True
    """
    if options.model is not None or options.saes:
        return options
    return options.with_config({k: v for k, v in shipped_heads_settings().items()
                                if k not in given})


def _clear_store(root: Path) -> None:
    """What ``overwrite`` removes before a new run: the job record; the store's own files
    are replaced by the writer (``overwrite``), so a new input is validated first."""
    for name in root.glob("_job*.json"):
        name.unlink()
