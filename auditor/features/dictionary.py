"""Build, merge and load a feature dictionary: what every SAE feature fires on.

A dictionary is a directory (by default ``dictionary/`` inside the SAE's directory, see
:func:`~auditor.features.files.default_dictionary_dir`)::

    dictionary.json     manifest: format, provenance (model and SAE hashes, layer, hook),
                        totals, the inputs merged so far, logit-lens method, file hashes
    features.parquet    one row per feature (see FEATURE_COLUMNS below)
    contexts.parquet    the top-activating contexts: feature, rank, activation, doc_id,
                        position, token_id, token, text (firing token in «…»), source
    labels.tsv          optional user label overrides (see auditor.features.labels)

``features.parquet`` columns: ``feature``; ``n_tokens_fired`` / ``n_docs_fired`` (tokens and
documents where the feature is nonzero); ``density`` / ``doc_density`` (the same as
fractions of all tokens / documents seen); ``max``, ``mean`` and ``sum`` of the nonzero
activations; ``p50``, ``p90``, ``p99`` (approximate quantiles of the nonzero activations,
from ``hist``, a mergeable histogram of log-activations: see :mod:`auditor.features.stats`);
``promoted`` / ``promoted_ids`` / ``promoted_logits`` and the ``suppressed`` equivalents (the
logit lens: see :mod:`auditor.features.logit_lens`); ``auto_label`` (see
:mod:`auditor.features.labels`), ``lens_coherent`` (the label shows the logit lens: its top
tokens agree), ``detection_auroc`` / ``detection_balanced_accuracy`` (how well a label
built from the even-ranked contexts picks out the odd-ranked ones among other features'
contexts; null for features with too few contexts: see :mod:`auditor.features.detection`).
The manifest's ``label_quality`` holds their distribution.

Per-token SAE codes come from the project's one extraction path,
:func:`auditor.extract.extract_features` with ``save_tokens=True``, run on chunks of
``chunk_docs`` documents into a temporary store whose token shard is folded into running
statistics and deleted; so disk use stays bounded by one chunk. Tokens excluded from
pooling as massive-activation outliers are excluded here too (and counted apart).

Building into an existing dictionary *merges*: counts and histograms add up, maxima and top
contexts merge. The model and SAE must be the same (weights hashes, layer, hook point),
else :class:`~auditor.errors.ProvenanceMismatch`; an input whose fingerprint was already
merged is refused, and so is a different ``exclude_outliers`` setting (it changes what a
token count means). Other settings may change between builds; each input's are recorded.
A build writes the dictionary only once it has read the whole corpus, so an interrupted
build leaves the previous dictionary as it was; given a ``checkpoint`` directory it saves
its running statistics after every chunk and a rerun resumes from the last finished chunk
(see :mod:`auditor.features.checkpoint`). Files are replaced atomically and the manifest,
written last, records their sha256, so an interrupted write is detected on load.

The job that loads the model and SAE, reads a corpus file and records the run is
:func:`auditor.jobs.dictionary.run_dictionary_build`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from auditor import __version__
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError, InputError, ProvenanceMismatch, StoreError
from auditor.features.checkpoint import ChunkCheckpoint, ChunkState
from auditor.features.files import (
    CONTEXTS_FILE,
    DICTIONARY_DIRNAME,
    FEATURES_FILE,
    FORMAT,
    MANIFEST,
    VERSION,
    default_dictionary_dir,
    load_contexts,
    load_manifest,
    read_table,
    verify_files,
    write_dictionary_files,
)
from auditor.features.labels import auto_label, coherent_promoted, resolve_overrides
from auditor.features.stats import (
    HIST_BINS,
    HIST_HI,
    HIST_LO,
    QUANTILES,
    Context,
    FeatureStats,
)

if TYPE_CHECKING:
    from auditor.features.detection import DetectionReport
    from auditor.features.logit_lens import LogitLens
    from auditor.io import Document
    from auditor.lm import LoadedModel
    from auditor.progress import Stage
    from auditor.sae import SAE

__all__ = [
    "CONTEXTS_FILE",
    "DICTIONARY_DIRNAME",
    "FEATURES_FILE",
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "BuildSummary",
    "DictionaryConfig",
    "build_dictionary",
    "default_dictionary_dir",
    "dictionary_provenance",
    "load_contexts",
    "load_dictionary",
    "load_manifest",
    "relabel_dictionary",
]

_SAE_KEY = "sae"  # column prefix in the temporary feature store


@dataclass(frozen=True)
class DictionaryConfig:
    """How a dictionary is built; saved in the manifest and round-trips through JSON.

    Parameters
    ----------
    max_length : int, default 512
        Window length in tokens (as in extraction); capped by the model's context.
    max_windows : int or None, default None
        Keep only each document's first windows (``None``: all).
    top_contexts : int, default 20
        Top-activating contexts kept per feature (distinct texts).
    context_tokens : int, default 8
        Tokens of context either side of the firing token.
    logit_tokens : int, default 10
        Promoted and suppressed logit-lens tokens kept per feature.
    exclude_outliers : bool, default True
        Leave massive-activation tokens out, as pooling does (see :mod:`auditor.outliers`).
    outlier_factor : float, default 5.0
        Outlier threshold as a multiple of the median token norm.
    chunk_docs : int, default 256
        Documents per extraction chunk (bounds memory and temporary disk use; a build
        resumes from its last finished chunk).
    token_budget, max_batch_size : int
        Batching knobs passed to extraction; they do not change results.
    """

    max_length: int = 512
    max_windows: int | None = None
    top_contexts: int = 20
    context_tokens: int = 8
    logit_tokens: int = 10
    exclude_outliers: bool = True
    outlier_factor: float = 5.0
    chunk_docs: int = 256
    token_budget: int = 8192
    max_batch_size: int = 64

    def __post_init__(self) -> None:
        positive = ("max_length", "top_contexts", "logit_tokens", "chunk_docs", "token_budget",
                    "max_batch_size")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("context_tokens", self.context_tokens, minimum=0)
        if self.max_windows is not None:
            _check_int("max_windows", self.max_windows, minimum=1)
        if not isinstance(self.exclude_outliers, bool):
            raise ConfigError("exclude_outliers must be a bool", field="exclude_outliers")
        if isinstance(self.outlier_factor, bool) or not isinstance(
                self.outlier_factor, (int, float)) or not (
                self.outlier_factor > 1 and math.isfinite(self.outlier_factor)):
            raise ConfigError(f"outlier_factor must be > 1, got {self.outlier_factor!r}",
                              field="outlier_factor")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DictionaryConfig:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            Unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown dictionary settings: {', '.join(unknown)}",
                              field=unknown[0])
        return cls(**dict(data))


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", field=name)


@dataclass
class BuildSummary:
    """What a build did.

    Attributes
    ----------
    out : str
        The dictionary directory.
    documents, tokens : int
        Totals in the dictionary after the build.
    new_documents, new_tokens : int
        Added by this build.
    features : int
        The SAE's number of features.
    alive : int
        Features that fired at least once (over everything merged).
    merged : bool
        The build merged into an existing dictionary.
    seconds : float
        Wall time.
    chunks : int
        Chunks of the corpus read, including those a resumed build found done.
    resumed_chunks : int
        Chunks found done by an earlier, interrupted run of the same build.
    label_quality : dict
        The automatic labels' detection-score distribution (the manifest's
        ``label_quality``; see :meth:`auditor.features.detection.DetectionReport.summary`).
    """

    out: str
    documents: int = 0
    tokens: int = 0
    new_documents: int = 0
    new_tokens: int = 0
    features: int = 0
    alive: int = 0
    merged: bool = False
    seconds: float = 0.0
    chunks: int = 0
    resumed_chunks: int = 0
    label_quality: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return asdict(self)


# --------------------------------------------------------------------------- provenance


def dictionary_provenance(lm: LoadedModel, sae: SAE) -> dict[str, Any]:
    """What a dictionary is *of*: the model, the SAE and where it reads.

    Parameters
    ----------
    lm : LoadedModel
        The model.
    sae : SAE
        The SAE. Its file's sha256 is used; an SAE built in memory is identified by the
        sha256 of its tensors instead (``sae.sha256_of == 'tensors'``).

    Returns
    -------
    dict
        ``model`` (id, weights_sha256, d_model, n_layers, vocab_size), ``sae`` (path,
        sha256, sha256_of, format, d_sae, activation, k), ``layer``, ``hook``.
    """
    from auditor.lm import HookPoint

    sha, sha_of = sae.sha256, "file"
    if sha is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(sae.canonical_tensors().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        sha, sha_of = digest.hexdigest(), "tensors"
    layer = sae.cfg.hook_layer
    return {
        "model": {
            "id": str(lm.model_id),
            "weights_sha256": lm.weights_sha256,
            "d_model": lm.d_model,
            "n_layers": lm.n_layers,
            "vocab_size": len(lm.tokenizer),
        },
        "sae": {
            "path": sae.source_path,
            "sha256": sha,
            "sha256_of": sha_of,
            "format": sae.cfg.source_format,
            "d_sae": sae.cfg.d_sae,
            "activation": sae.cfg.activation,
            "k": sae.cfg.k,
        },
        "layer": layer,
        "hook": HookPoint(layer or 0, sae.cfg.hook_point).name if layer is not None else None,
    }


def _identity(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that must agree for two builds to merge."""
    model, sae = provenance.get("model") or {}, provenance.get("sae") or {}
    return {
        "model": model.get("weights_sha256") or model.get("id"),
        "sae.sha256": sae.get("sha256"),
        "sae.d_sae": sae.get("d_sae"),
        "layer": provenance.get("layer"),
        "hook": provenance.get("hook"),
    }


def _check_same(old: Mapping[str, Any], new: Mapping[str, Any], *, path: Path) -> None:
    a, b = _identity(old), _identity(new)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        details = "; ".join(f"{k}: {a[k]!r} (dictionary) vs {b[k]!r} (now)" for k in diff)
        raise ProvenanceMismatch(
            f"cannot merge into a dictionary built with another model/SAE ({details}); "
            "write it elsewhere, or set overwrite to rebuild it", path=path, field=diff[0])


# --------------------------------------------------------------------------- building


def build_dictionary(
    documents: Iterable[Document],
    *,
    lm: LoadedModel,
    sae: SAE,
    out: str | Path,
    config: DictionaryConfig | None = None,
    input_info: Mapping[str, Any] | None = None,
    rebuild: bool = False,
    total: int | None = None,
    progress: Stage | None = None,
    cancel: CancelToken | None = None,
    checkpoint: str | Path | None = None,
    resume_key: str = "",
) -> BuildSummary:
    """Build a feature dictionary over ``documents``, or merge them into an existing one.

    Parameters
    ----------
    documents : iterable of Document
        The corpus (see :func:`auditor.io.read_documents`), in the same order on a rerun.
    lm : LoadedModel
        The model the SAE reads (:func:`auditor.lm.load_model`).
    sae : SAE
        The SAE; it must say which layer it reads.
    out : str or Path
        The dictionary directory; an existing dictionary there is merged into.
    config : DictionaryConfig, optional
        Build settings (defaults: :class:`DictionaryConfig()`).
    input_info : mapping, optional
        ``{'path': ..., 'fingerprint': ...}`` of the corpus, recorded in the manifest; a
        fingerprint already merged is refused.
    rebuild : bool, default False
        Discard an existing dictionary at ``out`` instead of merging into it.
    total : int, optional
        Number of documents, for the progress total (in chunks).
    progress : Stage, optional
        Advanced by one per chunk with ``docs`` and ``tokens`` counters (the documents and
        tokens of the corpus read so far); the caller closes it.
    cancel : CancelToken, optional
        Checked before every chunk and before writing; raises
        :class:`~auditor.errors.JobCancelled`. With a ``checkpoint`` every finished chunk is
        kept.
    checkpoint : str or Path, optional
        Directory for the per-chunk state (see :mod:`auditor.features.checkpoint`) and the
        chunk being extracted. A build finding a state there with the same ``resume_key``
        skips the documents it holds and goes on from there; the directory is removed once
        the dictionary is written. Without it, chunks go to a temporary directory and an
        interrupted build starts over.
    resume_key : str, default ''
        What a saved state must match to be resumed from (the caller's options and input).

    Returns
    -------
    BuildSummary

    Raises
    ------
    ConfigError
        Invalid settings, an SAE without a layer, an input already merged, or an
        ``exclude_outliers`` setting that differs from the existing dictionary's.
    InputError
        The corpus holds no documents.
    ProvenanceMismatch
        ``out`` holds a dictionary of another model or SAE.
    StoreError
        ``out`` holds something that is not a valid dictionary.
    SAEModelMismatch
        The SAE does not fit the model.
    JobCancelled
        ``cancel`` was set.
    """
    from auditor.extract import ExtractConfig, extract_features
    from auditor.io import batched
    from auditor.store import scan_features

    started = time.perf_counter()
    config = config or DictionaryConfig()
    root = Path(out)
    if sae.cfg.hook_layer is None:
        raise ConfigError("the SAE does not say which layer it reads; set layer",
                          path=sae.source_path, field="layer")
    provenance = dictionary_provenance(lm, sae)
    info = dict(input_info or {})
    previous = _previous(root, provenance, info, rebuild=rebuild,
                         exclude_outliers=config.exclude_outliers)
    base = FeatureStats(sae.cfg.d_sae)
    if previous is not None:
        base.restore(read_table(root, FEATURES_FILE), read_table(root, CONTEXTS_FILE),
                     previous["totals"])
    before_docs, before_tokens = base.documents, base.tokens

    extract_config = ExtractConfig(
        poolings=("max",), max_length=config.max_length, max_windows=config.max_windows,
        shard_size=config.chunk_docs, exclude_outliers=config.exclude_outliers,
        outlier_factor=config.outlier_factor, save_tokens=True,
        token_budget=config.token_budget, max_batch_size=config.max_batch_size)
    source = Path(str(info["path"])).name if info.get("path") else ""
    tokenizer = lm.tokenizer

    def decode(ids: Any) -> str:
        return str(tokenizer.decode(list(ids)))

    with contextlib.ExitStack() as stack:
        where = Path(checkpoint) if checkpoint is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="auditor-dictionary-"))) / "chunks"
        saved = ChunkCheckpoint(where, resume_key)
        state = saved.load(sae.cfg.d_sae) if checkpoint is not None else None
        resumed = state.chunks if state is not None else 0
        if state is None:
            state = ChunkState(chunks=0, documents=0, stats=base)
        stats = state.stats
        if progress is not None:
            if total is not None:
                progress.set_total(state.chunks + math.ceil(
                    max(total - state.documents, 0) / config.chunk_docs))
            if state.chunks:
                progress.update(state.chunks, docs=state.documents,
                                tokens=stats.tokens - before_tokens)
        remaining = itertools.islice(documents, state.documents, None)
        for chunk in batched(remaining, config.chunk_docs):
            check_cancel(cancel, f"chunk {state.chunks}")
            store = saved.scratch / f"chunk-{state.chunks:06d}"
            shutil.rmtree(store, ignore_errors=True)  # a chunk an interrupted run left
            extract_features(chunk, lm=lm, saes={_SAE_KEY: sae}, out=store,
                             config=extract_config, input_info={"chunk": state.chunks})
            tokens = scan_features(store, kind="tokens").collect()
            stats.add_tokens(tokens, key=_SAE_KEY, n_documents=len(chunk), decode=decode,
                             top=config.top_contexts, context_tokens=config.context_tokens,
                             source=source)
            state.chunks += 1
            state.documents += len(chunk)
            if checkpoint is not None:
                saved.save(state)
            shutil.rmtree(store, ignore_errors=True)
            if progress is not None:
                progress.advance(1, docs=state.documents, tokens=stats.tokens - before_tokens)
        check_cancel(cancel, "writing the dictionary")
    new_docs = stats.documents - before_docs
    if new_docs == 0:
        raise InputError("the corpus holds no documents", path=info.get("path"))

    lens = _logit_lens(lm, sae, config, previous, root)
    quality = _label_quality(stats, lens)
    features = _features_frame(stats, lens, quality)
    contexts = stats.contexts_frame()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    inputs = list(previous["inputs"]) if previous is not None else []
    inputs.append({
        "path": info.get("path"), "fingerprint": info.get("fingerprint"),
        "documents": new_docs, "tokens": stats.tokens - before_tokens,
        "config": config.to_dict(), "built_at": now, "auditor_version": __version__,
    })
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "auditor_version": __version__,
        "provenance": provenance,
        "config": config.to_dict(),
        "totals": {"documents": stats.documents, "tokens": stats.tokens,
                   "excluded_tokens": stats.excluded_tokens, "builds": len(inputs)},
        "inputs": inputs,
        "histogram": _histogram_spec(),
        "quantiles": list(QUANTILES),
        "logit_lens": lens.info,
        "label_quality": quality.summary(),
        "created_at": previous.get("created_at", now) if previous is not None else now,
        "updated_at": now,
    }
    write_dictionary_files(root, features, contexts, manifest)
    if checkpoint is not None:
        saved.clear()
    return BuildSummary(
        out=str(root), documents=stats.documents, tokens=stats.tokens, new_documents=new_docs,
        new_tokens=stats.tokens - before_tokens, features=sae.cfg.d_sae,
        alive=int((stats.n_tokens_fired > 0).sum()), merged=previous is not None,
        seconds=time.perf_counter() - started, chunks=state.chunks, resumed_chunks=resumed,
        label_quality=quality.summary())


def _previous(root: Path, provenance: Mapping[str, Any], info: Mapping[str, Any], *,
              rebuild: bool, exclude_outliers: bool) -> dict[str, Any] | None:
    if root.exists() and not root.is_dir():
        raise StoreError("not a directory", path=root, field="out")
    if not (root / MANIFEST).exists():
        if root.is_dir() and any(p.name in (FEATURES_FILE, CONTEXTS_FILE)
                                 for p in root.iterdir()):
            if not rebuild:
                raise StoreError(f"dictionary files without a {MANIFEST}; rebuild it",
                                 path=root)
        return None
    if rebuild:
        return None
    manifest = load_manifest(root)
    _check_same(manifest["provenance"], provenance, path=root)
    old_config = manifest.get("config") or {}
    if old_config.get("exclude_outliers") != exclude_outliers:
        raise ConfigError(
            f"the dictionary was built with exclude_outliers={old_config.get('exclude_outliers')}"
            f"; merging tokens counted with exclude_outliers={exclude_outliers} would mix two "
            "definitions of density (use the same setting, or set overwrite to rebuild it)",
            path=root, field="exclude_outliers")
    if manifest.get("histogram") != _histogram_spec():
        raise StoreError("the dictionary uses another histogram layout; rebuild it",
                         path=root, field="histogram")
    _check_new_input(manifest, info, path=root)
    verify_files(root, manifest)
    return manifest


def _check_new_input(manifest: Mapping[str, Any], info: Mapping[str, Any], *, path: Path) -> None:
    fingerprint = info.get("fingerprint")
    if fingerprint is None:
        return
    for item in manifest.get("inputs") or []:
        if item.get("fingerprint") == fingerprint:
            raise ConfigError(
                f"this corpus ({item.get('path')}) is already in the dictionary; merging it "
                "again would count it twice (rebuild the dictionary to start over)",
                path=path, field="corpus")


def _histogram_spec() -> dict[str, Any]:
    return {"scale": "log", "lo": HIST_LO, "hi": HIST_HI, "bins": HIST_BINS,
            "underflow_overflow": True}


def _logit_lens(lm: LoadedModel, sae: SAE, config: DictionaryConfig,
                previous: Mapping[str, Any] | None, root: Path) -> LogitLens:
    """The logit lens, reused from the previous build when it was made the same way."""
    from auditor.features.logit_lens import LogitLens, model_logit_lens

    if previous is not None and (previous.get("logit_lens") or {}).get("top") == \
            config.logit_tokens:
        frame = read_table(root, FEATURES_FILE)

        def ids(col: str) -> np.ndarray:
            return np.asarray(frame[col].to_list(), dtype=np.int64)

        def vals(col: str) -> np.ndarray:
            return np.asarray(frame[col].to_list(), dtype=np.float32)

        return LogitLens(
            promoted_ids=ids("promoted_ids"), promoted_logits=vals("promoted_logits"),
            suppressed_ids=ids("suppressed_ids"), suppressed_logits=vals("suppressed_logits"),
            promoted=frame["promoted"].to_list(), suppressed=frame["suppressed"].to_list(),
            info=dict(previous["logit_lens"]))
    return model_logit_lens(lm, sae.W_dec.detach(), top=config.logit_tokens)


def _label_quality(stats: FeatureStats, lens: LogitLens) -> DetectionReport:
    """Detection scores of the automatic labels, each built from the even-ranked contexts."""
    return _score_auto_labels(stats.contexts, lens.promoted, stats.n_features)


def _score_auto_labels(contexts: Mapping[int, list[Context]], promoted: list[list[str]],
                       n_features: int) -> DetectionReport:
    from auditor.features.detection import auto_labeller, score_labels

    texts = {f: [c.text for c in ctx] for f, ctx in contexts.items()}
    return score_labels(texts, auto_labeller(dict(enumerate(promoted))),
                        n_features=n_features)


def _label_columns(contexts: Mapping[int, list[Context]], promoted: list[list[str]],
                   quality: DetectionReport, n_features: int) -> list[pl.Series]:
    """``auto_label``, ``lens_coherent``, ``detection_auroc``,
    ``detection_balanced_accuracy``."""
    labels = []
    coherent = []
    for f in range(n_features):
        ctx = contexts.get(f, [])
        labels.append(auto_label([c.token for c in ctx], promoted[f],
                                 activations=[c.activation for c in ctx],
                                 contexts=[c.text for c in ctx]))
        coherent.append(bool(coherent_promoted(promoted[f])))
    scored = quality.by_feature()
    auc = [scored[f].auroc if f in scored else None for f in range(n_features)]
    bacc = [scored[f].balanced_accuracy if f in scored else None for f in range(n_features)]
    return [
        pl.Series("auto_label", labels, dtype=pl.String),
        pl.Series("lens_coherent", coherent, dtype=pl.Boolean),
        pl.Series("detection_auroc", auc, dtype=pl.Float32),
        pl.Series("detection_balanced_accuracy", bacc, dtype=pl.Float32),
    ]


def _features_frame(stats: FeatureStats, lens: LogitLens,
                    quality: DetectionReport) -> pl.DataFrame:
    n = stats.n_features
    fired = stats.n_tokens_fired
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(fired > 0, stats.sum / np.maximum(fired, 1), np.nan)
    q = stats.quantiles()
    cols: list[pl.Series] = [
        pl.Series("feature", np.arange(n), dtype=pl.UInt32),
        pl.Series("n_tokens_fired", fired, dtype=pl.UInt64),
        pl.Series("n_docs_fired", stats.n_docs_fired, dtype=pl.UInt64),
        pl.Series("density", fired / max(stats.tokens, 1), dtype=pl.Float64),
        pl.Series("doc_density", stats.n_docs_fired / max(stats.documents, 1), dtype=pl.Float64),
        pl.Series("max", stats.max, dtype=pl.Float32),
        pl.Series("mean", mean, dtype=pl.Float64, nan_to_null=True),
        pl.Series("sum", stats.sum, dtype=pl.Float64),
    ]
    for j, qq in enumerate(QUANTILES):
        cols.append(pl.Series(f"p{round(qq * 100)}", q[:, j], dtype=pl.Float32,
                              nan_to_null=True))
    cols += [
        _list_column("hist", stats.hist, pl.UInt64),
        pl.Series("promoted", lens.promoted, dtype=pl.List(pl.String)),
        _list_column("promoted_ids", lens.promoted_ids, pl.UInt32),
        _list_column("promoted_logits", lens.promoted_logits, pl.Float32),
        pl.Series("suppressed", lens.suppressed, dtype=pl.List(pl.String)),
        _list_column("suppressed_ids", lens.suppressed_ids, pl.UInt32),
        _list_column("suppressed_logits", lens.suppressed_logits, pl.Float32),
        *_label_columns(stats.contexts, lens.promoted, quality, n),
    ]
    return pl.DataFrame(cols)


def relabel_dictionary(dictionary_dir: str | Path) -> dict[str, Any]:
    """Recompute a dictionary's automatic labels and their detection scores in place.

    For a dictionary built before the current labels (or their scoring) existed: reads
    its contexts and logit-lens tokens, rewrites the ``auto_label``, ``lens_coherent``
    and ``detection_*`` columns and the manifest's ``label_quality``; needs neither the
    model nor the SAE, and leaves statistics, contexts and label overrides as they were.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary.

    Returns
    -------
    dict
        The new ``label_quality`` summary.

    Raises
    ------
    StoreError, CorruptShard
        No dictionary there, or files that do not match its manifest.
    """
    root = Path(dictionary_dir)
    manifest = load_manifest(root)
    verify_files(root, manifest)
    frame = read_table(root, FEATURES_FILE)
    contexts_table = read_table(root, CONTEXTS_FILE)
    stats = FeatureStats(frame.height)
    stats.restore(frame, contexts_table, manifest["totals"])
    promoted = [list(p or []) for p in frame["promoted"].to_list()]
    quality = _score_auto_labels(stats.contexts, promoted, frame.height)
    frame = frame.with_columns(_label_columns(stats.contexts, promoted, quality, frame.height))
    summary = quality.summary()
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    write_dictionary_files(root, frame, contexts_table,
                           {**manifest, "label_quality": summary})
    return summary


def _list_column(name: str, matrix: np.ndarray, dtype: Any) -> pl.Series:
    """A List column from the rows of a 2-D array."""
    import pyarrow as pa

    rows, width = matrix.shape
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))
    series = pl.from_arrow(arr)
    assert isinstance(series, pl.Series)
    return series.alias(name).cast(pl.List(dtype))


# --------------------------------------------------------------------------- reading


def load_dictionary(
    dictionary_dir: str | Path,
    *,
    overrides: str | Path | Mapping[int, str] | None = None,
    verify: bool = True,
) -> pl.DataFrame:
    """Load a dictionary's per-feature table, with labels.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.
    overrides : path or mapping, optional
        Label overrides (see :func:`auditor.features.feature_labels`); ``None`` reads the
        dictionary's ``labels.json`` / ``labels.tsv`` if present.
    verify : bool, default True
        Check the files against the sha256 recorded in the manifest.

    Returns
    -------
    polars.DataFrame
        One row per feature, in order: the columns listed in the module docstring plus
        ``label`` (the override if any, else ``auto_label``).

    Raises
    ------
    StoreError
        No dictionary, or missing files.
    CorruptShard
        A file is unreadable or does not match the manifest.
    ConfigError
        A malformed override file.
    """
    root = Path(dictionary_dir)
    manifest = load_manifest(root)
    if verify:
        verify_files(root, manifest)
    frame = read_table(root, FEATURES_FILE)
    labels = resolve_overrides(root, overrides, n_features=frame.height)
    auto = frame["auto_label"].to_list()
    merged = [labels.get(i, a) for i, a in enumerate(auto)]
    return frame.with_columns(pl.Series("label", merged, dtype=pl.String))
