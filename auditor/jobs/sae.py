"""SAE jobs: collect activations, train an SAE, evaluate it; convert and describe SAEs.

Every job follows the contract of :mod:`auditor.jobs._contract`: options and a result that
round-trip through JSON, ``out/_job.json``, idempotent reruns, progress events and a cancel
token. Heavy libraries (torch, transformers) are imported inside the functions, so the CLI
imports this module cheaply.

* :func:`run_sae_collect` caches a corpus's activations in ``out``; a killed or cancelled
  collection resumes from its last whole chunk of documents.
* :func:`run_sae_train` trains in ``out`` (the SAE, ``training.json``, checkpoints and, when
  it collects them itself, ``out/activations``); a cancelled run checkpoints its last step
  and a rerun resumes from it, ending with the weights an uninterrupted run gives.
* :func:`run_sae_eval` writes ``out/evaluation.json``; with ``card`` it also renders the
  SAE's ``CARD.md`` (and copies the evaluation) into the SAE directory, the one write a job
  makes outside ``out``, and only when asked.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from auditor import __version__
from auditor._files import atomic_write_text, read_json_optional, sha256_bytes
from auditor._versions import library_versions
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.jobs._contract import (
    JOB_FILE,
    JobOptions,
    JobResult,
    json_values,
    read_job,
    relative_to,
    run_recorded,
    runtime_field,
)
from auditor.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    from auditor.lm import LoadedModel
    from auditor.sae import SAE, TrainConfig

__all__ = [
    "EVALUATION_FILENAME",
    "SAECollectOptions",
    "SAECollectResult",
    "SAEEvalOptions",
    "SAEEvalResult",
    "SAETrainOptions",
    "SAETrainResult",
    "read_corpus_groups",
    "read_corpus_texts",
    "run_sae_collect",
    "run_sae_eval",
    "run_sae_train",
    "sae_convert",
    "sae_info",
    "write_card",
]

#: The evaluation record :func:`run_sae_eval` writes into ``out`` (and, with ``card``, into
#: the SAE directory).
EVALUATION_FILENAME = "evaluation.json"
#: Where :func:`run_sae_train` collects a corpus's activations, inside its ``out``.
ACTIVATIONS_DIRNAME = "activations"


# --------------------------------------------------------------------------- corpora
def read_corpus_texts(path: str | Path, *, text_column: str = "text",
                      limit: int | None = None) -> Iterator[str]:
    """Texts of a corpus file in any input format :func:`auditor.io.read_documents` reads."""
    from auditor.io import read_documents

    for i, doc in enumerate(read_documents(path, text_column=text_column, skip_bad_rows=True)):
        if limit is not None and i >= limit:
            return
        yield doc.text


def read_corpus_groups(path: str | Path, *, group_column: str = "source",
                       text_column: str = "text") -> list[str]:
    """Each document's ``group_column`` value, for the documents :func:`read_corpus_texts`
    yields (same rows skipped), i.e. indexed like an activation cache collected from it."""
    from auditor.io import read_documents

    return [str(doc.extra[group_column])
            for doc in read_documents(path, text_column=text_column,
                                      passthrough=(group_column,), skip_bad_rows=True)]


# --------------------------------------------------------------------------- collect
def _positive(value: int | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < 1:
        raise ConfigError(f"must be a positive integer, got {value!r}", field=name)


@dataclass(frozen=True)
class SAECollectOptions(JobOptions):
    """Options of :func:`run_sae_collect`.

    Parameters
    ----------
    layers
        Decoder layers whose output (``resid_post``) is kept, all from one forward pass.
    model
        Model directory; ``None`` is the embedded default model (or the model handed to
        the job).
    max_length
        Window length in tokens.
    max_tokens
        Stop once this many tokens are kept (``None``: the whole corpus).
    heldout_only
        Compute only the documents held out at this fraction (what a training run with
        that ``heldout_fraction`` never reads): an evaluation cache.
    text_column
        The corpus's text column.
    device
        Where the model runs (a runtime field).
    """

    layers: tuple[int, ...] = ()
    model: str | None = None
    max_length: int = 512
    max_tokens: int | None = None
    heldout_only: float | None = None
    text_column: str = "text"
    device: str | None = runtime_field(None)

    def validate(self) -> None:
        if not self.layers:
            raise ConfigError("give at least one layer", field="layers")
        if any(layer < 0 for layer in self.layers):
            raise ConfigError(f"layers must be >= 0, got {list(self.layers)}", field="layers")
        _positive(self.max_length, "max_length")
        _positive(self.max_tokens, "max_tokens", optional=True)
        if self.heldout_only is not None and not 0 <= self.heldout_only < 1:
            raise ConfigError(f"must be in [0, 1), got {self.heldout_only!r}",
                              field="heldout_only")


@dataclass(frozen=True)
class SAECollectResult(JobResult):
    """What :func:`run_sae_collect` cached (the cache's ``info()``).

    Attributes
    ----------
    directory
        The cache, relative to ``out`` (``"."``).
    model, d_model, hooks, max_length, settings, thresholds
        As the cache's manifest records them (``hooks``: per hook ``n_tokens``,
        ``n_docs``, ``mean_norm``).
    input, texts
        The corpus file and its fingerprint; the fingerprint and count of the texts read.
    """

    directory: str
    d_model: int
    hooks: dict[str, dict[str, Any]]
    model: dict[str, Any] | None = None
    max_length: int | None = None
    settings: dict[str, Any] | None = None
    thresholds: dict[str, float] | None = None
    input: dict[str, Any] | None = None
    texts: dict[str, Any] | None = None


def run_sae_collect(
    corpus: str | Path,
    *,
    out: str | Path,
    options: SAECollectOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    model: LoadedModel | None = None,
) -> SAECollectResult:
    """Run the model over a corpus once and cache its layers' activations for SAE training
    and evaluation (:func:`auditor.sae.collect_activations`) in ``out``.

    Parameters
    ----------
    corpus
        A text file (JSONL/Parquet/CSV/txt); bad rows are skipped, as for training.
    out
        The cache directory.
    options
        See :class:`SAECollectOptions`.
    progress
        Receives ``sae-collect`` events of stage ``docs`` (documents read, with ``tokens``).
    cancel
        Checked after every forward batch; a rerun resumes from the last whole chunk.
    model
        A loaded model to use instead of loading ``options.model``.

    Returns
    -------
    SAECollectResult

    Raises
    ------
    JobConflict
        ``out`` holds a collection with other options or of another corpus, and
        ``options.overwrite`` is false.
    ConfigError
        ``out`` holds a finished cache made without a job record and
        ``options.overwrite`` is false.
    JobCancelled
        ``cancel`` was set.
    """

    def work(root: Path) -> SAECollectResult:
        return _collect(corpus, root, options, progress=progress, cancel=cancel, model=model)

    return run_recorded("sae-collect", out=out, options=options, input=str(corpus),
                        result_type=SAECollectResult, work=work)


def _collect(corpus: str | Path, root: Path, options: SAECollectOptions, *,
             progress: ProgressCallback | None, cancel: CancelToken | None,
             model: LoadedModel | None) -> SAECollectResult:
    from auditor.io import count_documents
    from auditor.lm import HookPoint, load_model
    from auditor.sae import collect_activations

    source = _corpus_source(corpus)  # before the model: a missing corpus fails at once
    lm = model if model is not None else load_model(_model_dir(options.model),
                                                     device=options.device,
                                                     progress=progress is not None)
    reporter = Progress(progress, job="sae-collect")
    with reporter.stage("docs", total=count_documents(corpus)) as stage:
        cache = collect_activations(
            read_corpus_texts(corpus, text_column=options.text_column), lm=lm,
            hooks=[HookPoint(layer) for layer in options.layers], out=root,
            max_length=options.max_length, max_tokens=options.max_tokens,
            overwrite=options.overwrite, source=source, heldout_only=options.heldout_only,
            stage=stage, cancel=cancel)
    info = json_values(cache.info())
    manifest = cache.manifest
    return SAECollectResult(
        directory=relative_to(cache.directory, root), d_model=int(info["d_model"]),
        hooks=info["hooks"], model=info.get("model"), max_length=info.get("max_length"),
        settings=info.get("settings"), thresholds=info.get("thresholds"),
        input=json_values(manifest.get("input")), texts=json_values(manifest.get("texts")))


# --------------------------------------------------------------------------- train
@dataclass(frozen=True)
class SAETrainOptions(JobOptions):
    """Options of :func:`run_sae_train`: a :class:`~auditor.sae.TrainConfig` and where the
    activations come from.

    Parameters
    ----------
    config
        The run's settings as ``TrainConfig.to_dict()`` (build with :meth:`of`; read back
        with :attr:`train_config`). Its runtime settings (``checkpoint_every``,
        ``keep_checkpoints``) are left out of the options hash.
    source
        What the job's ``input`` is: ``'cache'``, an activation cache; ``'corpus'``, a text
        file whose activations are collected into ``out/activations`` first (and reused on
        a rerun); ``'stream'``, a text file run through the model chunk by chunk as
        training goes, never written.
    model
        Model directory for ``'corpus'`` and ``'stream'`` (default: the embedded model).
    init
        An SAE (any format :func:`auditor.sae.load_sae` reads) to continue training from;
        its sha256 and training record go into ``training.json``.
    collect_tokens
        ``'corpus'``: a cap on the tokens collected.
    max_length
        ``'corpus'`` and ``'stream'``: window length in tokens.
    chunk_tokens
        ``'stream'``: tokens computed, held in memory and shuffled together.
    text_column
        The corpus's text column.
    resume
        Go on from the last checkpoint in ``out`` (a runtime field). ``False`` starts the
        run over: the checkpoints and the job record of a training run in ``out`` are
        removed first (whatever its options were; the collected activations are kept).
    device
        Where collection and training run (a runtime field; a checkpoint resumes on any).
    """

    config: dict[str, Any] = field(default_factory=dict)
    source: Literal["cache", "corpus", "stream"] = "cache"
    model: str | None = None
    init: str | None = None
    collect_tokens: int | None = None
    max_length: int = 512
    chunk_tokens: int = 524_288
    text_column: str = "text"
    resume: bool = runtime_field(True)
    device: str | None = runtime_field(None)

    @classmethod
    def of(cls, config: TrainConfig, **kwargs: Any) -> SAETrainOptions:
        """Options for ``config``; ``kwargs`` are the other fields."""
        return cls(config=config.to_dict(), **kwargs)

    @property
    def train_config(self) -> TrainConfig:
        """:attr:`config` as a :class:`~auditor.sae.TrainConfig`."""
        from auditor.sae.train_config import TrainConfig

        return TrainConfig.from_dict(self.config)

    def validate(self) -> None:
        if not self.config:
            raise ConfigError("a train config (layer, d_sae, k, …) is required",
                              field="config")
        # Normalised to the full record, so equal settings hash equally however given.
        object.__setattr__(self, "config", self.train_config.to_dict())
        if self.source == "stream" and self.collect_tokens is not None:
            raise ConfigError("collect_tokens caps a collected cache; a stream reads the "
                              "corpus as training needs it (set the config's n_tokens)",
                              field="collect_tokens")
        _positive(self.collect_tokens, "collect_tokens", optional=True)
        _positive(self.max_length, "max_length")
        _positive(self.chunk_tokens, "chunk_tokens")

    def options_hash(self) -> str:
        """As :meth:`JobOptions.options_hash`, with the config's runtime settings left out
        (they do not change the trained weights)."""
        from auditor.sae.train_config import TrainConfig

        d = self.to_dict()
        for f in fields(self):
            if not f.metadata.get("hash", True):
                d.pop(f.name, None)
        d["config"] = {k: v for k, v in d["config"].items() if k not in TrainConfig.RUNTIME}
        return sha256_bytes(json.dumps(d, sort_keys=True, allow_nan=False))


@dataclass(frozen=True)
class SAETrainResult(JobResult):
    """What :func:`run_sae_train` produced.

    Attributes
    ----------
    sae, training
        The SAE directory and its ``training.json``, relative to ``out``.
    sha256
        Of the SAE's weights file.
    steps, tokens
        Steps and training tokens of the whole run (resumed parts included).
    loss, fvu, auxk_loss, dead_frac
        Metrics of the last step (``None`` where not a finite number).
    input_scale
        The constant the inputs are multiplied by.
    seconds
        Wall time of the call that finished the run.
    resumed_from
        The checkpoint step that call resumed from.
    resamples
        ``step, latents`` of every dead-latent resample.
    config
        The run's ``TrainConfig.to_dict()``.
    """

    sae: str
    training: str
    sha256: str
    steps: int
    tokens: int
    loss: float | None
    fvu: float | None
    auxk_loss: float | None
    dead_frac: float | None
    input_scale: float
    seconds: float
    resumed_from: int | None
    resamples: list[dict[str, int]]
    config: dict[str, Any]


def run_sae_train(
    input: str | Path,
    *,
    out: str | Path,
    options: SAETrainOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    model: LoadedModel | None = None,
    init: SAE | None = None,
) -> SAETrainResult:
    """Train a TopK or BatchTopK SAE on a hook's activations: from a cache, from a corpus
    collected into a cache first, or streamed from the model as training goes.

    Parameters
    ----------
    input
        An activation cache, or a corpus file (``options.source``).
    out
        Run directory: the trained SAE (auditor format), ``training.json``, checkpoints
        and, for ``source='corpus'``, the collected ``activations``.
    options
        See :class:`SAETrainOptions`.
    progress
        Receives ``sae-train`` events of stage ``steps`` (with ``tokens``, ``loss``,
        ``fvu``, ``dead_frac``), of each streamed chunk (``activations, chunk N``), and
        the ``sae-collect`` events of a collection.
    cancel
        Checked before every training step (and between a stream's groups of documents,
        a collection's batches): the run writes a checkpoint of its last whole step and
        raises :class:`~auditor.errors.JobCancelled`; a rerun resumes from it.
    model, init
        A loaded model (collection, stream) and init SAE to use instead of loading
        ``options.model`` and ``options.init`` (``options.init`` still names the init's
        files for the record).

    Returns
    -------
    SAETrainResult

    Raises
    ------
    ConfigError
        An unusable device (refused before ``out`` is touched), settings that do not fit
        the data or the init, a checkpoint in ``out`` made with other settings.
    JobConflict
        ``out`` holds a run with other options or data and ``options.overwrite`` is false.
    JobCancelled
        ``cancel`` was set.
    """
    from auditor.lm import resolve_device_dtype

    resolve_device_dtype(options.device, "float32")  # before a file is written
    if not options.resume:
        _restart(Path(out))
    inputs = {"data": _cache_input(input) if options.source == "cache" else str(input),
              "init": _sae_input(options.init)}

    def work(root: Path) -> SAETrainResult:
        return _train(input, root, options, progress=progress, cancel=cancel, model=model,
                      init=init)

    return run_recorded("sae-train", out=out, options=options, input=inputs,
                        result_type=SAETrainResult, work=work, clear=_clear_run)


def _train(input: str | Path, root: Path, options: SAETrainOptions, *,
           progress: ProgressCallback | None, cancel: CancelToken | None,
           model: LoadedModel | None, init: SAE | None) -> SAETrainResult:
    from auditor.lm import HookPoint, load_model
    from auditor.sae import ModelStream, StreamSettings, load_sae, open_cache, train_sae

    config = options.train_config
    start = init if init is not None else (None if options.init is None
                                           else load_sae(options.init))
    reporter = Progress(progress, job="sae-train")
    acts: Any
    if options.source == "stream":
        settings = StreamSettings(chunk_tokens=options.chunk_tokens,
                                  max_length=options.max_length)
        lm = model if model is not None else load_model(_model_dir(options.model),
                                                         device=options.device,
                                                         progress=progress is not None)
        column = options.text_column
        acts = ModelStream(lambda: read_corpus_texts(input, text_column=column), lm=lm,
                           hook=HookPoint(config.layer, config.point),  # type: ignore[arg-type]
                           settings=settings, heldout_fraction=config.heldout_fraction,
                           seed=config.seed, source=_corpus_source(input), progress=reporter,
                           cancel=cancel)
    elif options.source == "corpus":
        cache_dir = root / ACTIVATIONS_DIRNAME
        if not ((cache_dir / "manifest.json").is_file() and not (cache_dir / JOB_FILE).exists()):
            # (a finished cache without a job record, from an older auditor, is reused)
            run_sae_collect(input, out=cache_dir, options=SAECollectOptions(
                layers=(config.layer,), model=options.model, max_length=options.max_length,
                max_tokens=options.collect_tokens, text_column=options.text_column,
                device=options.device, overwrite=True),
                progress=progress, cancel=cancel, model=model)
        acts = open_cache(cache_dir)
    else:
        acts = open_cache(input)
    with reporter.stage("steps", total=config.steps) as stage:
        result = train_sae(acts, config=config, out=root, resume=options.resume, init=start,
                           device=options.device, stage=stage, cancel=cancel)
    if options.init is not None:
        _record_init_training(root, Path(options.init))
    assert result.sae.sha256 is not None
    return SAETrainResult(
        sae=relative_to(result.out, root), training="training.json",
        sha256=result.sae.sha256, steps=result.steps, tokens=result.tokens,
        loss=_finite(result.loss), fvu=_finite(result.fvu),
        auxk_loss=_finite(result.auxk_loss), dead_frac=_finite(result.dead_frac),
        input_scale=float(result.input_scale), seconds=float(result.seconds),
        resumed_from=result.resumed_from,
        resamples=[{"step": int(r["step"]), "latents": int(r["latents"])}
                   for r in result.resamples],
        config=config.to_dict())


def _restart(root: Path) -> None:
    """Forget a training run in ``root`` (its checkpoints and its record) so that it starts
    over; a record of another job is left for :func:`run_recorded` to refuse."""
    previous = read_job(root) if root.is_dir() else None
    if previous is not None and previous.get("verb") != "sae-train":
        return
    shutil.rmtree(root / "checkpoints", ignore_errors=True)
    (root / JOB_FILE).unlink(missing_ok=True)


def _clear_run(root: Path) -> None:
    """Remove a training run from ``root``, keeping the activations it collected (they are
    a job of their own, with their own record)."""
    for child in root.iterdir():
        if child.name == ACTIVATIONS_DIRNAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _record_init_training(out: Path, init: Path) -> None:
    """Copy the init SAE's own training summary (if it has one) into ``out/training.json``,
    so the card can give the whole history of a continued run.

    The init may be a finished run (its ``training.json``) or a checkpoint of one
    (``state.json``: steps, tokens, settings and the SAE that run started from).
    """
    root = init if init.is_dir() else init.parent
    previous = read_json_optional(root / "training.json")
    state = read_json_optional(root / "state.json")
    if not previous and state:
        identity = state.get("identity") or {}
        previous = {"checkpoint": str(root), "steps": state.get("step"),
                    "tokens": state.get("tokens"), "seconds": state.get("seconds"),
                    "config": identity.get("config") or {},
                    "cache_texts": identity.get("cache_texts")}
        if identity.get("init_sha256"):
            run = read_json_optional(root.parent.parent / "training.json")  # finished since?
            previous["init"] = (run["init"] if isinstance(run.get("init"), dict)
                                else {"sha256": identity["init_sha256"]})
    record = read_json_optional(out / "training.json")
    if not previous or not record or not isinstance(record.get("init"), dict):
        return
    summary = {k: v for k, v in previous.items() if k != "history"}
    record["init"]["training"] = summary
    _write_record(out / "training.json", record)


# --------------------------------------------------------------------------- eval
@dataclass(frozen=True)
class SAEEvalOptions(JobOptions):
    """Options of :func:`run_sae_eval`.

    Parameters
    ----------
    cache
        Activation cache with the SAE's hook (required).
    layer
        Layer for SAEs whose files do not say.
    corpus
        Texts for the next-token loss comparison (the first ``ce_docs`` documents).
    model
        Model directory for ΔCE (default: the embedded default model).
    ce_docs, max_length
        How much text ΔCE uses.
    split
        Which cache split to score: ``'heldout'`` (never trained on), ``'all'`` for a
        cache of text no run of this SAE trained on (refused when its training chain
        read that text), or ``'train'``.
    groups_from, group_column
        The corpus the cache was collected from and its column naming each document's
        group (genre): adds FVU per group.
    whole_cache
        Also count firing over every cached token (training split included), the fairer
        dead-latent count.
    card
        Also copy the evaluation into the SAE directory and render its ``CARD.md`` there
        (a runtime field; done after every run, a recorded rerun included).
    device
        Device for ΔCE (a runtime field).
    """

    cache: str = ""
    layer: int | None = None
    corpus: str | None = None
    model: str | None = None
    ce_docs: int = 200
    max_length: int = 512
    split: Literal["train", "heldout", "all"] = "heldout"
    groups_from: str | None = None
    group_column: str = "source"
    whole_cache: bool = False
    card: bool = runtime_field(False)
    device: str | None = runtime_field(None)

    def validate(self) -> None:
        if not self.cache:
            raise ConfigError("an activation cache is required", field="cache")
        _positive(self.ce_docs, "ce_docs")
        _positive(self.max_length, "max_length")


@dataclass(frozen=True)
class SAEEvalResult(JobResult):
    """What :func:`run_sae_eval` measured (the content of ``evaluation.json``, with
    numbers that are not finite as ``None``).

    Attributes
    ----------
    evaluation
        ``evaluation.json``, relative to ``out``.
    sae_sha256
        The evaluated weights.
    cache
        The cache's path, model, split, corpus and texts.
    metrics
        :class:`auditor.sae.SAEMetrics` as a dict.
    whole_cache, ce, groups
        Dead/dense latents over every cached token; ΔCE; the genre column used.
    card
        The ``CARD.md`` written into the SAE directory (``options.card``), or ``None``.
    """

    evaluation: str
    sae_sha256: str | None
    cache: dict[str, Any]
    metrics: dict[str, Any]
    whole_cache: dict[str, Any] | None = None
    ce: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None
    card: str | None = None


def run_sae_eval(
    sae_path: str | Path,
    *,
    out: str | Path,
    options: SAEEvalOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    sae: SAE | None = None,
    causal_lm: tuple[Any, Any] | None = None,
) -> SAEEvalResult:
    """Evaluate an SAE on cached activations and, with a corpus, by ΔCE; write
    ``out/evaluation.json``.

    With ``options.card`` and an SAE directory, the evaluation is also copied into the
    SAE directory and its ``CARD.md`` rendered there (:func:`auditor.sae.card.write_card`):
    the only write outside ``out``, and an explicit one. The CLI's default ``out`` is
    ``SAE_DIR/evaluation``, replaced by each evaluation, with the card on.

    Parameters
    ----------
    sae_path
        The SAE (any supported format).
    out
        Where ``evaluation.json`` and the job record go.
    options
        See :class:`SAEEvalOptions`.
    progress
        Receives ``sae-eval`` events of stage ``evaluate`` (one unit per measurement).
    cancel
        Checked between the measurements.
    sae
        A loaded SAE to use instead of loading ``sae_path`` (which still names its files).
    causal_lm
        ``(model, tokenizer)``: a loaded Hugging Face causal LM for ΔCE, instead of
        loading ``options.model``.

    Raises
    ------
    ConfigError
        An unusable device (refused first), an SAE that does not say its layer, or
        ``split='all'`` on a cache of text that a run of this SAE's training chain read.
    JobConflict
        ``out`` holds an evaluation with other options or inputs and
        ``options.overwrite`` is false.
    JobCancelled
        ``cancel`` was set.
    """
    from auditor.lm import resolve_device_dtype

    # Checked first: an unusable device is refused before minutes of FVU scoring.
    resolve_device_dtype(options.device, None)
    inputs = {"sae": _sae_input(sae_path), "cache": _cache_input(options.cache),
              "corpus": options.corpus, "groups_from": options.groups_from}

    def work(root: Path) -> SAEEvalResult:
        return _evaluate(sae_path, root, options, progress=progress, cancel=cancel, sae=sae,
                         causal_lm=causal_lm)

    result = run_recorded("sae-eval", out=out, options=options, input=inputs,
                          result_type=SAEEvalResult, work=work)
    if options.card and Path(sae_path).is_dir():
        sae_dir = Path(sae_path)
        evaluation = Path(out) / result.evaluation
        atomic_write_text(sae_dir / EVALUATION_FILENAME, evaluation.read_text("utf-8"))
        card = write_card(sae_dir)
        # The recorded result says where the card went (a runtime output, not re-recorded).
        result = SAEEvalResult.from_dict({**result.to_dict(), "card": str(card)})
    return result


def _evaluate(sae_path: str | Path, root: Path, options: SAEEvalOptions, *,
              progress: ProgressCallback | None, cancel: CancelToken | None,
              sae: SAE | None, causal_lm: tuple[Any, Any] | None) -> SAEEvalResult:
    from auditor.lm import HookPoint, resolve_device_dtype
    from auditor.sae import evaluate_sae, load_sae, open_cache

    dev, dtype = resolve_device_dtype(options.device, None)
    loaded = sae if sae is not None else load_sae(sae_path, layer=options.layer)
    if loaded.cfg.hook_layer is None:
        raise ConfigError("the SAE does not say which layer it reads; give its layer",
                          path=sae_path, field="layer")
    hook = HookPoint(loaded.cfg.hook_layer, loaded.cfg.hook_point)
    acts = open_cache(options.cache)
    if options.split == "all":
        _refuse_training_text(sae_path, acts.manifest.get("texts"), cache=options.cache)
    doc_groups = (read_corpus_groups(options.groups_from, group_column=options.group_column)
                  if options.groups_from is not None else None)
    reporter = Progress(progress, job="sae-eval")
    total = 1 + int(options.whole_cache) + int(options.corpus is not None)
    with reporter.stage("evaluate", total=total) as stage:
        metrics = evaluate_sae(loaded, acts, hook=hook, split=options.split,
                               doc_groups=doc_groups)
        stage.advance(1)
        record: dict[str, Any] = {
            "auditor_version": __version__,
            "libraries": library_versions(),
            "sae_sha256": loaded.sha256,
            "cache": {"path": str(options.cache), "model": acts.manifest.get("model"),
                      "split": options.split, "input": acts.manifest.get("input"),
                      "texts": acts.manifest.get("texts")},
            "metrics": metrics.to_dict(),
        }
        if options.groups_from is not None:
            record["groups"] = {"corpus": str(options.groups_from),
                                "column": options.group_column}
        if options.whole_cache:
            check_cancel(cancel, "the whole-cache density")
            whole = evaluate_sae(loaded, acts, hook=hook, split="all")
            record["whole_cache"] = {key: getattr(whole, key) for key in
                                     ("n_tokens", "dead_frac", "dense_frac", "density_hist",
                                      "fvu")}
            stage.advance(1)
        if options.corpus is not None:
            check_cancel(cancel, "the next-token loss comparison")
            record["ce"] = _delta_ce(loaded, options, hook=hook, device=dev, dtype=dtype,
                                     causal_lm=causal_lm, reporter=reporter,
                                     progress=progress is not None)
            stage.advance(1)
    _write_record(root / EVALUATION_FILENAME, record)
    safe = json_values(record)
    return SAEEvalResult(
        evaluation=EVALUATION_FILENAME, sae_sha256=safe["sae_sha256"], cache=safe["cache"],
        metrics=safe["metrics"], whole_cache=safe.get("whole_cache"), ce=safe.get("ce"),
        groups=safe.get("groups"))


def _delta_ce(sae: SAE, options: SAEEvalOptions, *, hook: Any, device: Any, dtype: Any,
              causal_lm: tuple[Any, Any] | None, reporter: Progress,
              progress: bool = False) -> dict[str, Any]:
    """ΔCE of the SAE spliced into the full model on the corpus's first documents (a
    ``ce-windows`` progress stage counts the windows scored; ``progress``: transformers'
    weight-loading bar)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auditor.lm import transformers_bars
    from auditor.sae import delta_ce

    assert options.corpus is not None
    if causal_lm is not None:
        full, tokenizer = causal_lm
        device = next(full.parameters()).device
    else:
        model_dir = _model_dir(options.model)
        with transformers_bars(progress):
            full = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        full = full.to(device).eval()
    texts = list(read_corpus_texts(options.corpus, limit=options.ce_docs))
    with torch.inference_mode(), reporter.stage("ce-windows", total=None) as stage:
        ce = delta_ce(sae.to(device), full, tokenizer, texts, hook=hook,
                      max_length=options.max_length, progress=stage)
    return {**ce.to_dict(), "corpus": str(options.corpus), "docs": len(texts)}


def _refuse_training_text(sae_path: str | Path, texts: Any, *, cache: str | Path) -> None:
    """Refuse to score a whole cache as unseen when the SAE's training chain read its text.

    The texts fingerprint of the cache is compared with that of every run in the chain
    (``training.json`` and the ``init`` records inside it); runs too old to record one
    cannot be checked.
    """
    wanted = texts.get("sha256") if isinstance(texts, Mapping) else None
    if not wanted or not Path(sae_path).is_dir():
        return
    run: Any = read_json_optional(Path(sae_path) / "training.json")
    depth = 0
    while isinstance(run, Mapping):
        seen = run.get("cache_texts")
        if isinstance(seen, Mapping) and seen.get("sha256") == wanted:
            which = "its last run" if depth == 0 else f"run -{depth} of its training chain"
            raise ConfigError(
                f"the cache holds the text {which} trained on, so its tokens are not "
                "unseen; score its held-out split (split='heldout') or a cache of other "
                "text", path=cache, field="split")
        init = run.get("init")
        run = init.get("training") if isinstance(init, Mapping) else None
        depth += 1


# --------------------------------------------------------------------------- card, convert, info
def write_card(sae_dir: str | Path, *, extra: Mapping[str, Any] | None = None,
               evaluation: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Render an SAE directory's ``CARD.md``: :func:`auditor.sae.card.write_card`."""
    from auditor.sae.card import write_card as render

    return render(sae_dir, extra=extra, evaluation=evaluation, out=out)


def sae_convert(src: str | Path, dst: str | Path, *, format: str | None = None,
                k: int | None = None, layer: int | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Convert an SAE in any supported format into auditor's format at ``dst``
    (:func:`auditor.sae.convert_sae`); return what was written: ``path``, ``activation``,
    ``d_in``, ``d_sae``, ``sha256``.

    Raises
    ------
    ConfigError
        ``dst`` is a file, not writable, or a folder that is not empty (unless
        ``overwrite``): found before the source is read.
    """
    from auditor._files import check_writable
    from auditor.sae import convert_sae, load_sae

    target = Path(dst)
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConfigError("is not empty; converting into it would mix the SAE with what is "
                          "there (choose an empty folder, or set overwrite)", path=target,
                          field="dst")
    check_writable(target, field="dst")
    path = convert_sae(src, dst, format=format, k=k, layer=layer)
    loaded = load_sae(path)
    return {"path": str(path), "activation": loaded.cfg.activation, "d_in": loaded.cfg.d_in,
            "d_sae": loaded.cfg.d_sae, "sha256": loaded.sha256}


def sae_info(path: str | Path, *, format: str | None = None, k: int | None = None,
             layer: int | None = None) -> dict[str, Any]:
    """An SAE's detected format, configuration and hash, JSON-able."""
    from auditor.sae import detect_format, load_sae

    loaded = load_sae(path, format=format, k=k, layer=layer)
    return {"path": str(path), "format": format or detect_format(path),
            "sha256": loaded.sha256, "config": loaded.cfg.to_dict()}


# --------------------------------------------------------------------------- helpers
def _corpus_source(corpus: str | Path) -> dict[str, str]:
    """What a cache or a stream records of the corpus file it read."""
    from auditor.io import input_fingerprint

    return {"path": str(corpus), "fingerprint": input_fingerprint(corpus)}


def _cache_input(cache: str | Path) -> str:
    """What identifies a cache for a job's input fingerprint: its manifest (written last,
    naming every shard, the model and the texts), not gigabytes of shards."""
    manifest = Path(cache) / "manifest.json"
    return str(manifest if manifest.is_file() else cache)


def _sae_input(path: str | Path | None) -> str | dict[str, str] | None:
    """What identifies an SAE for a job's input fingerprint: its weights and config (not
    the checkpoints, caches or cards a run directory also holds)."""
    if path is None:
        return None
    p = Path(path)
    weights = p / "sae.safetensors"
    if p.is_dir() and weights.is_file():
        files = {"weights": str(weights)}
        if (p / "config.json").is_file():
            files["config"] = str(p / "config.json")
        return files
    return str(p)


def _model_dir(model: str | Path | None) -> str | Path:
    if model is not None:
        return model
    from auditor.defaults import default_model_dir

    return default_model_dir(progress=False)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write a JSON record atomically, as SAE records always were: sorted keys, a NaN
    metric kept as ``NaN``."""
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
