"""Feature-dictionary jobs: build (or merge) a dictionary over a corpus; show, search and
label its features.

:func:`run_dictionary_build` loads the model and SAE (unless handed them), reads the corpus
and builds the dictionary in ``out`` with :func:`auditor.features.build_dictionary`, under
the job contract (:func:`~auditor.jobs._contract.run_recorded`): ``out/_job.json``,
idempotent reruns, per-chunk resume markers in ``out/_chunks/``, one progress stage
(``chunks``) and a cancel token checked between chunks.

:func:`run_feature_show`, :func:`run_feature_search` and :func:`run_feature_label` read or
edit an existing dictionary and return JSON results; they write no job record (a read has
nothing to resume, and a label edit is one atomic file write).

No heavy library is imported at module level: the CLI imports this module cheaply.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.cancel import CancelToken
from auditor.errors import ConfigError, InputFileError, JobConflict
from auditor.jobs._contract import (
    JOB_FILE,
    JobOptions,
    JobResult,
    fingerprint,
    read_job,
    run_recorded,
    runtime_field,
)
from auditor.jobs._pipeline import Pipeline, PipelineSpec
from auditor.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    from auditor.features import DictionaryConfig
    from auditor.lm import LoadedModel
    from auditor.sae import SAE

__all__ = [
    "BUILD_VERB",
    "CHECKPOINT_DIR",
    "DictionaryBuildOptions",
    "DictionaryBuildResult",
    "FeatureLabelOptions",
    "FeatureLabelResult",
    "FeatureSearchOptions",
    "FeatureSearchResult",
    "FeatureShowOptions",
    "FeatureShowResult",
    "default_dictionary_out",
    "resolve_dictionary",
    "run_dictionary_build",
    "run_feature_label",
    "run_feature_search",
    "run_feature_show",
]

#: The verb recorded in ``_job.json`` and in progress events.
BUILD_VERB = "dictionary-build"
#: Where a build keeps its per-chunk markers and state, inside ``out``.
CHECKPOINT_DIR = "_chunks"


def _positive(options: Any, *names: str, minimum: int = 1) -> None:
    for name in names:
        value = getattr(options, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}",
                              field=name)


@dataclass(frozen=True)
class DictionaryBuildOptions(JobOptions):
    """Settings of :func:`run_dictionary_build`.

    Parameters
    ----------
    model
        Local Hugging Face model directory; ``None``: the embedded default model.
    sae
        SAE file or directory; ``None``: the shipped default SAE (only with the default
        model).
    layer, k, sae_format
        Passed to :func:`auditor.sae.load_sae` for SAE files that do not say.
    text_column, id_column, max_chars
        Passed to :func:`auditor.io.read_documents`.
    max_length, max_windows, top_contexts, context_tokens, logit_tokens, exclude_outliers,
    outlier_factor
        The dictionary's settings (see :class:`auditor.features.DictionaryConfig`).
    dtype
        Model precision (``float32``, ``bfloat16``, ``float16``; default by device).
    merge
        Add this corpus to the dictionary ``out`` already holds instead of requiring an
        empty (or same-job) ``out``; see :func:`run_dictionary_build`. Not together with
        ``overwrite``.
    chunk_docs, token_budget, max_batch_size, device
        Runtime: chunking and batching do not change the dictionary (a resumed build goes
        on from the documents already read, whatever the chunk size).
    """

    model: str | None = None
    sae: str | None = None
    layer: int | None = None
    k: int | None = None
    sae_format: str | None = None
    text_column: str = "text"
    id_column: str | None = None
    max_chars: int = 1_000_000
    max_length: int = 512
    max_windows: int | None = None
    top_contexts: int = 20
    context_tokens: int = 8
    logit_tokens: int = 10
    exclude_outliers: bool = True
    outlier_factor: float = 5.0
    dtype: str | None = None
    merge: bool = False
    chunk_docs: int = runtime_field(256)
    token_budget: int = runtime_field(8192)
    max_batch_size: int = runtime_field(64)
    device: str | None = runtime_field(None)

    def validate(self) -> None:
        if self.merge and self.overwrite:
            raise ConfigError("merge adds to the dictionary in out and overwrite replaces it; "
                              "choose one", field="merge")
        _positive(self, "max_length", "max_windows", "top_contexts", "logit_tokens",
                  "chunk_docs", "token_budget", "max_batch_size", "max_chars", "k")
        _positive(self, "context_tokens", "layer", minimum=0)
        if not (self.outlier_factor > 1 and math.isfinite(self.outlier_factor)):
            raise ConfigError(f"outlier_factor must be > 1, got {self.outlier_factor!r}",
                              field="outlier_factor")

    def pipeline_spec(self) -> PipelineSpec:
        """Which model and SAE these options ask for (a handed pipeline must match)."""
        return PipelineSpec(model=self.model, saes=() if self.sae is None else (self.sae,),
                            layer=self.layer, sae_format=self.sae_format, k=self.k,
                            device=self.device, dtype=self.dtype)

    def dictionary_config(self) -> DictionaryConfig:
        """The library's :class:`~auditor.features.DictionaryConfig` of these options."""
        from auditor.features import DictionaryConfig

        return DictionaryConfig(
            max_length=self.max_length, max_windows=self.max_windows,
            top_contexts=self.top_contexts, context_tokens=self.context_tokens,
            logit_tokens=self.logit_tokens, exclude_outliers=self.exclude_outliers,
            outlier_factor=self.outlier_factor, chunk_docs=self.chunk_docs,
            token_budget=self.token_budget, max_batch_size=self.max_batch_size)


@dataclass(frozen=True)
class DictionaryBuildResult(JobResult):
    """What :func:`run_dictionary_build` did.

    Attributes
    ----------
    documents, tokens
        Totals in the dictionary after the build.
    new_documents, new_tokens
        Added by this build.
    features, alive
        The SAE's number of features; those that fired at least once (over everything
        merged).
    merged
        The build merged into a dictionary that was already in ``out``.
    chunks, resumed_chunks
        Chunks of the corpus read; of those, found done by an interrupted earlier run.
    seconds
        Wall time of the run that finished.
    files
        ``manifest``, ``features``, ``contexts``: the dictionary's files, relative to
        ``out``.
    label_quality
        How well the automatic labels detect their features: the distribution of the
        per-feature detection scores (AUROC and balanced accuracy: ``mean``, ``p25``,
        ``p50``, ``p75``, ``share_ge_0.7``), the features scored and skipped (see
        :mod:`auditor.features.detection`); also in the manifest. Empty in records of
        builds made before it existed.
    """

    documents: int
    tokens: int
    new_documents: int
    new_tokens: int
    features: int
    alive: int
    merged: bool
    chunks: int
    resumed_chunks: int
    seconds: float
    files: dict[str, str]
    label_quality: dict[str, Any] = field(default_factory=dict)


def _writable(target: Path) -> bool:
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _sae_path(model: str | None, sae: str | None) -> Path:
    from auditor import defaults

    if sae is not None:
        return Path(sae)
    if model is not None:
        raise ConfigError("an SAE is required with a model other than the default (the "
                          f"default SAE is trained for {defaults.DEFAULT_MODEL_NAME})",
                          field="sae")
    path = defaults.default_sae_path()
    if path is None:
        raise ConfigError("the default SAE is not installed (expected under "
                          f"{defaults.models_dir() / 'sae'}); name an SAE", field="sae")
    return path


def default_dictionary_out(model: str | None = None, sae: str | None = None) -> str:
    """Where a build writes when no ``out`` is given: the dictionary directory beside the
    SAE (:func:`auditor.features.default_dictionary_dir`), which must be writable.

    Loads nothing (the model is not needed to find the place).

    Raises
    ------
    ConfigError
        No SAE named and none installed, an SAE left to default with a non-default model,
        or a place that is not writable (``field="out"``).
    """
    from auditor.features.files import default_dictionary_dir

    target = default_dictionary_dir(_sae_path(model, sae))
    if not _writable(target):
        raise ConfigError(f"cannot write the dictionary beside the SAE ({target} is not "
                          "writable); name another output directory", path=target,
                          field="out")
    return str(target)


def resolve_dictionary(dictionary: str | Path | None) -> str:
    """``dictionary``, or the default SAE's dictionary directory when it is ``None``.

    Raises
    ------
    ConfigError
        ``None`` and no default SAE is installed (``field="dictionary"``).
    """
    if dictionary is not None:
        return str(dictionary)
    from auditor import defaults
    from auditor.features.files import default_dictionary_dir

    sae = defaults.default_sae_path()
    if sae is None:
        raise ConfigError("no dictionary named and no default SAE is installed",
                          field="dictionary")
    return str(default_dictionary_dir(sae))


def _keep_labels_clear(root: Path) -> None:
    """What ``overwrite`` removes: everything in ``out`` but the user's label overrides."""
    import shutil

    from auditor.features.files import LABELS_JSON, LABELS_TSV

    for child in root.iterdir():
        if child.name in (LABELS_TSV, LABELS_JSON):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _merge_clear(root: Path) -> None:
    """What a merge removes of the job it supersedes: its unfinished chunk state only."""
    import shutil

    shutil.rmtree(root / CHECKPOINT_DIR, ignore_errors=True)


def run_dictionary_build(
    corpus: str | Path,
    *,
    out: str | Path,
    options: DictionaryBuildOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    model: LoadedModel | None = None,
    sae: SAE | None = None,
    pipeline: Pipeline | None = None,
) -> DictionaryBuildResult:
    """Build the feature dictionary of ``corpus`` in ``out`` (or merge it into the one there).

    Everything is written under ``out``: the dictionary's files, ``_job.json`` and, while
    the build runs, ``_chunks/`` (per-chunk done markers with the running statistics,
    removed when the dictionary is written). A killed or cancelled build resumes from its
    last finished chunk and ends with the dictionary an uninterrupted build writes.

    The rule for what ``out`` may already hold:

    * ``merge=False`` (a plain build): ``out`` is empty, or holds this very job. A rerun
      with the same options and corpus returns the recorded result; an unfinished one
      resumes. A dictionary of another corpus or other options (or one built without a
      job record) is a :class:`~auditor.errors.JobConflict` unless ``overwrite``, which
      replaces it (keeping the label overrides ``labels.tsv`` / ``labels.json``).
    * ``merge=True`` (the user's explicit choice to add a corpus): the corpus is folded
      into the dictionary in ``out`` whatever job wrote it; the job's input is the corpus
      *and* that dictionary. The model and SAE must be the ones it was built with
      (:class:`~auditor.errors.ProvenanceMismatch`) and so must ``exclude_outliers``; a
      corpus the dictionary already holds is refused (:class:`~auditor.errors.ConfigError`,
      ``field="corpus"``: it would count twice). So a merge rerun after it finished is
      refused rather than repeated, while an unfinished merge resumes (the dictionary it
      merges into is rewritten only at the end; a merge killed in the instant between
      writing the dictionary and recording the job is refused on rerun the same way, its
      dictionary being complete). An empty ``out`` makes a merge a plain build. Options
      other than ``exclude_outliers`` may differ from the dictionary's earlier builds;
      the manifest records each input's.

    The job's input is the corpus (and, for a merge, the dictionary merged into); the
    model and SAE are named by the options (paths), and the manifest's provenance records
    their content hashes, which a merge checks.

    Parameters
    ----------
    corpus
        JSONL, Parquet, CSV, a ``.txt`` file or a directory of ``.txt`` files.
    out
        The dictionary directory (the CLI defaults it to
        :func:`default_dictionary_out`, beside the SAE).
    options
        See :class:`DictionaryBuildOptions`.
    progress
        Receives the ``chunks`` stage's events, with ``docs`` and ``tokens`` counters; the
        last has ``done == total``.
    cancel
        Checked before every chunk and before the dictionary is written.
    model, sae
        A loaded model and SAE to use instead of loading ``options.model`` /
        ``options.sae`` (a worker keeps them warm); they must be what those options name.
    pipeline
        Or a loaded :class:`~auditor.jobs.Pipeline` with one SAE (a warm worker's, as the
        extraction jobs take it); checked against the options.

    Raises
    ------
    JobConflict
        ``out`` holds another job's output and neither ``merge`` nor ``overwrite`` is set,
        or a merge finds the output of another verb there.
    ConfigError, InputError, ProvenanceMismatch, StoreError, ModelError, SAEError
        As :func:`auditor.features.build_dictionary` and the loaders raise them.
    JobCancelled
        ``cancel`` was set; finished chunks are kept for the rerun.
    """
    from auditor.features.files import CONTEXTS_FILE, FEATURES_FILE, MANIFEST, load_manifest
    from auditor.io import input_fingerprint

    if pipeline is not None:
        if model is not None or sae is not None:
            raise ConfigError("hand either a pipeline or a model and SAE", field="pipeline")
        pipeline.check(options.pipeline_spec())
        if len(pipeline.saes) != 1:
            raise ConfigError(f"a dictionary is of one SAE; the pipeline runs "
                              f"{len(pipeline.saes)}", field="pipeline")
        model, sae = pipeline.lm, next(iter(pipeline.saes.values()))
    src = Path(corpus)
    if not src.exists():
        raise InputFileError("no such corpus file or directory", path=src, field="corpus")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError("not a directory", path=root, field="out")
    previous = read_job(root)
    has_dictionary = (root / MANIFEST).is_file()
    if options.merge:
        if previous is not None and previous.get("verb") != BUILD_VERB:
            raise JobConflict(f"holds a {previous.get('verb')!r} job run, not a feature "
                              "dictionary to merge into; set overwrite to replace it",
                              path=root)
        if has_dictionary:
            fp = input_fingerprint(src)
            for item in load_manifest(root).get("inputs") or []:
                if item.get("fingerprint") == fp:
                    raise ConfigError(
                        f"this corpus ({item.get('path')}) is already in the dictionary; "
                        "merging it again would count it twice (rebuild the dictionary to "
                        "start over)", path=root, field="corpus")
        job_input: dict[str, Any] = {"corpus": src,
                                     "base": root / MANIFEST if has_dictionary else None}
        if previous is not None and (
                previous.get("options_hash") != options.options_hash()
                or previous.get("input_fingerprint") != fingerprint(job_input)):
            # the user chose to add this corpus: the record of the job that wrote (or
            # began to write) the dictionary is superseded, its unfinished state dropped
            _merge_clear(root)
            (root / JOB_FILE).unlink()
        clear = _merge_clear
    else:
        if previous is None and has_dictionary and not options.overwrite:
            raise JobConflict("holds a feature dictionary that this job did not write; set "
                              "merge to add this corpus to it, or set overwrite to replace "
                              "it",
                              path=root)
        job_input = {"corpus": src}
        clear = _keep_labels_clear

    def work(directory: Path) -> DictionaryBuildResult:
        from auditor.features import build_dictionary
        from auditor.io import count_documents, read_documents

        job = read_job(directory) or {}
        key = f"{job.get('options_hash')}|{job.get('input_fingerprint')}"
        info = {"path": str(src), "fingerprint": input_fingerprint(src)}
        lm, loaded = _load(options, model, sae, progress=progress is not None)
        docs = read_documents(src, text_column=options.text_column,
                              id_column=options.id_column, max_chars=options.max_chars)
        with Progress(progress, job=BUILD_VERB).stage("chunks") as stage:
            summary = build_dictionary(
                docs, lm=lm, sae=loaded, out=directory, config=options.dictionary_config(),
                input_info=info, rebuild=not options.merge, total=count_documents(src),
                progress=stage, cancel=cancel, checkpoint=directory / CHECKPOINT_DIR,
                resume_key=key)
        return DictionaryBuildResult(
            documents=summary.documents, tokens=summary.tokens,
            new_documents=summary.new_documents, new_tokens=summary.new_tokens,
            features=summary.features, alive=summary.alive, merged=summary.merged,
            chunks=summary.chunks, resumed_chunks=summary.resumed_chunks,
            seconds=round(float(summary.seconds), 3),
            files={"manifest": MANIFEST, "features": FEATURES_FILE, "contexts": CONTEXTS_FILE},
            label_quality=json.loads(json.dumps(summary.label_quality, allow_nan=False)))

    return run_recorded(BUILD_VERB, out=root, options=options, input=job_input,
                        result_type=DictionaryBuildResult, work=work, clear=clear)


def _load(options: DictionaryBuildOptions, model: LoadedModel | None,
          sae: SAE | None, *, progress: bool) -> tuple[LoadedModel, SAE]:
    """The model and SAE: those handed in, else loaded as the options name them
    (``progress``: transformers' weight-loading bar)."""
    if model is None and sae is None:
        from auditor.jobs._pipeline import load_pipeline

        loaded = load_pipeline(options.pipeline_spec(), progress=progress)
        return loaded.lm, next(iter(loaded.saes.values()))
    sae_path = _sae_path(options.model, options.sae) if sae is None else None
    if model is None:
        from auditor.jobs._pipeline import resolve_defaults
        from auditor.lm import load_model

        model_path, _ = resolve_defaults(options.model,
                                         [] if options.sae is None else [options.sae])
        model = load_model(model_path, device=options.device, dtype=options.dtype,
                           progress=progress)
    if sae is None:
        from auditor.sae import load_sae

        assert sae_path is not None
        sae = load_sae(sae_path, format=options.sae_format, k=options.k, layer=options.layer,
                       device=model.device)
    return model, sae


# --------------------------------------------------------------------------- reading / editing


@dataclass(frozen=True)
class FeatureShowOptions(JobOptions):
    """Settings of :func:`run_feature_show`.

    Parameters
    ----------
    feature
        The feature number.
    labels
        A label override file (default: the dictionary's ``labels.tsv`` / ``labels.json``).
    contexts
        Top contexts included.
    width
        Contexts are shortened to about this many characters in the rendered text.
    """

    feature: int = 0
    labels: str | None = None
    contexts: int = 10
    width: int = 100

    def validate(self) -> None:
        _positive(self, "feature", "contexts", minimum=0)
        _positive(self, "width")


@dataclass(frozen=True)
class FeatureShowResult(JobResult):
    """One feature of a dictionary.

    Attributes
    ----------
    dictionary
        The dictionary directory read.
    report
        :meth:`auditor.features.FeatureReport.to_dict`: label, densities, activations,
        logit-lens tokens, contexts, totals.
    text
        The report rendered for a terminal (:func:`auditor.features.format_feature`).
    """

    dictionary: str
    report: dict[str, Any]
    text: str


def run_feature_show(dictionary: str | Path | None, *,
                     options: FeatureShowOptions) -> FeatureShowResult:
    """Describe one feature of ``dictionary`` (``None``: the default SAE's dictionary).

    Raises
    ------
    ConfigError
        The feature is out of range (``field="feature"``), or no dictionary is named and
        no default SAE is installed.
    StoreError
        No dictionary there.
    """
    from auditor.features import describe_feature, format_feature

    root = resolve_dictionary(dictionary)
    report = describe_feature(root, options.feature, overrides=options.labels,
                              n_contexts=options.contexts)
    return FeatureShowResult(dictionary=root,
                             report=json.loads(json.dumps(report.to_dict(), allow_nan=False)),
                             text=format_feature(report, width=options.width))


@dataclass(frozen=True)
class FeatureSearchOptions(JobOptions):
    """Settings of :func:`run_feature_search`.

    Parameters
    ----------
    word
        What to look for in labels, contexts and logit-lens tokens.
    labels
        A label override file (default: the dictionary's own).
    limit
        Hits returned.
    """

    word: str = ""
    labels: str | None = None
    limit: int = 20

    def validate(self) -> None:
        _positive(self, "limit")


@dataclass(frozen=True)
class FeatureSearchResult(JobResult):
    """Features matching a word, best first.

    Attributes
    ----------
    dictionary
        The dictionary directory read.
    hits
        One dict per feature: ``feature``, ``score``, ``label``, ``density``, ``max``,
        ``matched`` (see :func:`auditor.features.search_features`).
    """

    dictionary: str
    hits: list[dict[str, Any]]


def run_feature_search(dictionary: str | Path | None, *,
                       options: FeatureSearchOptions) -> FeatureSearchResult:
    """Search ``dictionary`` (``None``: the default SAE's) for ``options.word``.

    Raises
    ------
    ConfigError
        An empty word.
    StoreError
        No dictionary there.
    """
    from auditor.features import search_features

    root = resolve_dictionary(dictionary)
    hits = search_features(root, options.word, limit=options.limit, overrides=options.labels)
    return FeatureSearchResult(
        dictionary=root, hits=json.loads(json.dumps(hits.to_dicts(), allow_nan=False)))


@dataclass(frozen=True)
class FeatureLabelOptions(JobOptions):
    """Settings of :func:`run_feature_label`.

    Parameters
    ----------
    feature
        The feature number.
    label
        Its new label; ``None`` together with ``remove`` removes the override.
    remove
        Remove the feature's override instead of setting one.
    """

    feature: int = 0
    label: str | None = None
    remove: bool = False

    def validate(self) -> None:
        _positive(self, "feature", minimum=0)
        if self.remove == (self.label is not None):
            raise ConfigError("give either a label or remove", field="label")


@dataclass(frozen=True)
class FeatureLabelResult(JobResult):
    """What :func:`run_feature_label` changed.

    Attributes
    ----------
    dictionary
        The dictionary directory.
    path
        The override file written (``labels.tsv`` in the dictionary).
    feature, label, removed
        The feature, its new label (``None`` when removed) and whether it was removed.
    """

    dictionary: str
    path: str
    feature: int
    label: str | None
    removed: bool


def run_feature_label(dictionary: str | Path | None, *,
                      options: FeatureLabelOptions) -> FeatureLabelResult:
    """Set (or remove) one label override of ``dictionary`` (``None``: the default SAE's).

    Raises
    ------
    ConfigError
        Feature out of range or empty label.
    StoreError
        No dictionary there.
    """
    from auditor.features import save_label_override

    root = resolve_dictionary(dictionary)
    path = save_label_override(root, options.feature, None if options.remove else options.label)
    return FeatureLabelResult(dictionary=root, path=str(path), feature=options.feature,
                              label=None if options.remove else options.label,
                              removed=options.remove)

