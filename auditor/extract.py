"""Text → activations → sparse SAE codes → pooled rows in a Parquet feature store.

:func:`extract_features` is the one extraction path used by the CLI, the workers and the
API. It streams documents in shards of ``shard_size``; each shard is tokenized into
windows of at most ``max_length`` tokens, length-bucketed into batches under a token
budget, run through the model's forward *truncated after the deepest hooked layer*,
encoded by every SAE hooked there and pooled per document. Finished shards are written
atomically with a done-marker, so an interrupted run resumes where it stopped and a bad
row never corrupts what was already written.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from auditor import __version__
from auditor._versions import library_versions
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError, RowError
from auditor.io import Document, batched
from auditor.outliers import CALIBRATION_METHOD
from auditor.pooling import DocumentPooler, validate_poolings
from auditor.progress import Stage, stage_of
from auditor.store import FeatureStoreWriter

if TYPE_CHECKING:
    import torch

    from auditor.lm import HookPoint, LoadedModel, TruncatedForward, Window
    from auditor.sae import SAE

__all__ = ["ExtractConfig", "ExtractSummary", "default_sae_keys", "extract_features"]


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract and how; saved (minus runtime knobs) as store provenance.

    Parameters
    ----------
    poolings
        Token → document poolings, a subset of ``{'max', 'mean', 'sum', 'count', 'last'}``.
    max_length
        Window length in tokens, special tokens included; longer documents are split into
        consecutive windows and pooled across them. Capped by the model's context.
    max_windows
        Keep only the first ``max_windows`` windows of each document (its first
        ``max_windows × max_length`` tokens, roughly); ``None`` keeps all. Documents cut
        short are counted in the run summary (``truncated_docs``).
    shard_size
        Documents per Parquet shard (the unit of atomic writes and of resuming).
    exclude_outliers
        Leave massive-activation tokens out of pooling (they are still counted per
        document in ``<sae>.n_excluded``).
    outlier_factor
        A token is an outlier at a hook when its residual norm exceeds ``outlier_factor``
        × the model's median content-token norm there (see :mod:`auditor.outliers`).
    outlier_threshold
        Absolute norm threshold, applied to every hook; overrides calibration.
    save_tokens
        Also write per-token sparse codes (``tokens-*.parquet``) for explanation work.
    raw_mean
        Also store each document's mean *raw* residual activation at every hooked layer
        (``raw_mean.<hook>``, d_model floats, over the same pooled tokens): the input of
        the raw-activation baseline probe.
    token_budget, max_batch_size, sae_chunk_size
        Runtime knobs (batch = at most ``token_budget`` padded tokens); they do not change
        results and are not part of provenance.
    """

    poolings: tuple[str, ...] = ("max",)
    max_length: int = 512
    max_windows: int | None = None
    shard_size: int = 1000
    exclude_outliers: bool = True
    outlier_factor: float = 5.0
    outlier_threshold: float | None = None
    save_tokens: bool = False
    raw_mean: bool = False
    token_budget: int = 8192
    max_batch_size: int = 64
    sae_chunk_size: int = 4096

    _RUNTIME = ("token_budget", "max_batch_size", "sae_chunk_size")

    def __post_init__(self) -> None:
        object.__setattr__(self, "poolings", validate_poolings(self.poolings))
        positive = ("max_length", "shard_size", "token_budget", "max_batch_size",
                    "sae_chunk_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}",
                                  field=name)
        if self.max_windows is not None and (
                isinstance(self.max_windows, bool) or not isinstance(self.max_windows, int)
                or self.max_windows < 1):
            raise ConfigError(f"max_windows must be a positive integer or None, got "
                              f"{self.max_windows!r}", field="max_windows")
        if self.max_length < 4:
            raise ConfigError("max_length must be at least 4 tokens", field="max_length")
        if not (self.outlier_factor > 1.0 and math.isfinite(self.outlier_factor)):
            raise ConfigError(f"outlier_factor must be > 1, got {self.outlier_factor!r}",
                              field="outlier_factor")
        if self.outlier_threshold is not None and not self.outlier_threshold > 0:
            raise ConfigError("outlier_threshold must be positive", field="outlier_threshold")

    def to_dict(self, *, include_runtime: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; ``from_dict`` inverts it."""
        d = asdict(self)
        d["poolings"] = list(self.poolings)
        if not include_runtime:
            for k in self._RUNTIME:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExtractConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown extract settings: {', '.join(unknown)}")
        kw = dict(d)
        if "poolings" in kw:
            kw["poolings"] = tuple(kw["poolings"])
        return cls(**kw)


@dataclass
class ExtractSummary:
    """What a run did: counts, speed and size."""

    out: str
    docs: int = 0
    docs_skipped_done: int = 0
    windows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    shards_written: int = 0
    shards_skipped: int = 0
    bytes_written: int = 0
    mean_active: dict[str, float] = field(default_factory=dict)
    excluded_tokens: dict[str, int] = field(default_factory=dict)
    bad_rows: int = 0
    truncated_docs: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Content tokens processed per second of wall time."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary, with ``tokens_per_s``."""
        d = asdict(self)
        d["tokens_per_s"] = round(self.tokens_per_s, 2)
        return d


def default_sae_keys(saes: Sequence[SAE]) -> list[str]:
    """Name SAEs by their hook (``layer9``, ``layer9_pre``), suffixing duplicates; an SAE
    that does not say its layer is ``sae`` (never ``layerNone``).

    Examples
    --------
    >>> from auditor.testing import make_random_sae
    >>> default_sae_keys([make_random_sae(layer=9), make_random_sae(layer=9)])
    ['layer9', 'layer9_2']
    """
    keys: list[str] = []
    for sae in saes:
        base = "sae" if sae.cfg.hook_layer is None else f"layer{sae.cfg.hook_layer}"
        if sae.cfg.hook_point == "resid_pre":
            base += "_pre"
        key, i = base, 2
        while key in keys:
            key, i = f"{base}_{i}", i + 1
        keys.append(key)
    return keys


def extract_features(
    documents: Iterable[Document],
    *,
    lm: LoadedModel,
    saes: Mapping[str, SAE],
    out: str | Path,
    config: ExtractConfig | None = None,
    input_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    total: int | None = None,
    progress: Stage | None = None,
    cancel: CancelToken | None = None,
    rank: int = 0,
    world_size: int = 1,
    bad_rows: Sequence[RowError] | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    total_shards: int | None = None,
) -> ExtractSummary:
    """Extract pooled sparse SAE features for ``documents`` into the store at ``out``.

    Parameters
    ----------
    documents
        Documents in input order (see :func:`auditor.io.read_documents`).
    lm
        The loaded model (:func:`auditor.lm.load_model`).
    saes
        ``key -> SAE``; each SAE's ``cfg.hook_layer`` / ``cfg.hook_point`` says where it
        reads. Keys name the store columns (``<key>.indices``, ``<key>.<pooling>``).
    out
        Store directory. An existing store with the same provenance is resumed.
    config
        Extraction settings; defaults to :class:`ExtractConfig()`.
    input_info
        Recorded as ``provenance["input"]`` (path and fingerprint of the input).
    overwrite
        Replace an existing store whose provenance differs instead of refusing.
    total
        Number of documents if known (the progress stage's total).
    progress
        The stage that receives progress (documents done, with ``docs``, ``tokens`` and
        ``bad_rows`` counters) after every batch; see :mod:`auditor.progress`.
    cancel
        Checked before every shard and batch; when set, :class:`JobCancelled` is raised
        there and every shard finished before stays valid (a rerun resumes after it).
    rank, world_size
        This process fills shard ``i`` only when ``i % world_size == rank``: several
        processes (say, Celery workers) fill one store without coordination, and the store
        filled by ``world_size`` ranks equals the store filled by one. Every rank reads the
        whole input (skipping others' shards costs reading, not the model).
    bad_rows
        A list the reader appends skipped rows to; its length goes into the summary.
    check
        Called with the store's provenance before any document is read or anything is
        written; whatever it raises stops the run (say, heads that cannot read these
        features, found before a long extraction instead of after it).
    total_shards
        How many shards the input makes, when the caller knows (a queued job counted its
        documents): a rank then stops reading after its last shard instead of reading
        the rest of the input only to skip it.

    Returns
    -------
    ExtractSummary

    Raises
    ------
    ConfigError
        No SAE, an SAE without a hook layer, or a key that would make a bad column name.
    SAEModelMismatch
        An SAE whose input width differs from the model's hidden size.
    ProvenanceMismatch
        ``out`` holds a store made with other settings (and ``overwrite`` is false).
    InputError
        From the reader, for a bad row; shards already written stay valid.
    JobCancelled
        ``cancel`` was set; shards already written stay valid.
    """
    from auditor.lm import HookPoint, TruncatedForward
    from auditor.outliers import outlier_thresholds
    from auditor.sae import check_compatible

    config = config or ExtractConfig()
    if (isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1
            or isinstance(rank, bool) or not isinstance(rank, int)
            or not 0 <= rank < world_size):
        raise ConfigError(f"rank must be in [0, world_size), got rank {rank!r} of "
                          f"world_size {world_size!r}", field="rank")
    if overwrite and world_size > 1:
        raise ConfigError("overwrite would delete other ranks' shards; clear the store with "
                          "one rank first", field="overwrite")
    if not saes:
        raise ConfigError("at least one SAE is required")
    hooks: dict[HookPoint, list[str]] = {}
    for key, sae in saes.items():
        if not key or any(c in key for c in ". /\\") or key in ("doc_id", "row", "n_tokens"):
            raise ConfigError(f"SAE key {key!r} cannot name a column (no dots, slashes, spaces)")
        if sae.cfg.hook_layer is None:
            raise ConfigError(f"SAE {key!r} does not say which layer it reads; give its layer",
                              path=sae.source_path)
        check_compatible(sae, d_model=lm.d_model, n_layers=lm.n_layers)
        hooks.setdefault(HookPoint(sae.cfg.hook_layer, sae.cfg.hook_point), []).append(key)
    max_length = min(config.max_length, lm.max_positions)
    forward = TruncatedForward(lm, list(hooks))

    started = time.perf_counter()
    thresholds = None
    if config.exclude_outliers:
        thresholds = outlier_thresholds(lm, forward, factor=config.outlier_factor,
                                        max_length=max_length, fixed=config.outlier_threshold,
                                        token_budget=config.token_budget)
    provenance = _provenance(lm=lm, saes=saes, config=config, max_length=max_length,
                             thresholds=thresholds, input_info=input_info)
    if check is not None:
        check(provenance)
    writer = FeatureStoreWriter(out, provenance=provenance, overwrite=overwrite)
    summary = ExtractSummary(out=str(out))
    active_sum = dict.fromkeys(saes, 0)
    summary.excluded_tokens = dict.fromkeys(saes, 0)

    stage = progress if progress is not None else stage_of(None, job="extract", name="docs")
    if total is not None:
        stage.set_total(total)

    def report(done_in_shard: int, tokens_in_shard: int) -> None:
        check_cancel(cancel, "a batch boundary")
        stage.update(summary.docs + summary.docs_skipped_done + done_in_shard,
                     docs=summary.docs + summary.docs_skipped_done + done_in_shard,
                     tokens=summary.tokens + tokens_in_shard,
                     bad_rows=len(bad_rows) if bad_rows is not None else 0)

    shards: Iterable[tuple[int, Sequence[Document]]] = enumerate(
        batched(documents, config.shard_size))
    if total_shards is not None:
        # every shard after this rank's last is another rank's: not even read
        last = max(range(rank, total_shards, world_size), default=-1)
        shards = itertools.islice(shards, last + 1)
    n_shards = 0
    for shard_index, docs in shards:
        n_shards = shard_index + 1
        check_cancel(cancel, f"shard {shard_index}")
        if shard_index % world_size != rank or writer.is_done(shard_index):
            # another rank's shard, or one finished before: nothing to compute, but a done
            # shard must hold the documents the input gives at its place
            writer.check_documents(shard_index, [d.doc_id for d in docs],
                                   [d.row for d in docs])
            summary.shards_skipped += 1
            summary.docs_skipped_done += len(docs)
            report(0, 0)
            continue
        table, stats = _extract_shard(
            docs, lm=lm, forward=forward, saes=saes, hooks=hooks, config=config,
            max_length=max_length, thresholds=thresholds, report=report,
        )
        if table.tokens is not None:
            # tokens first: the features shard's marker is what makes the shard done
            tpath = writer.write_shard(shard_index, table.tokens, kind="tokens")
            summary.bytes_written += tpath.stat().st_size
        path = writer.write_shard(shard_index, table.features)
        summary.bytes_written += path.stat().st_size
        summary.shards_written += 1
        summary.docs += len(docs)
        summary.windows += stats["windows"]
        summary.truncated_docs += stats["truncated"]
        summary.tokens += stats["tokens"]
        for key in saes:
            active_sum[key] += stats["active"][key]
            summary.excluded_tokens[key] += stats["excluded"][key]
        report(0, 0)
    summary.seconds = time.perf_counter() - started
    summary.mean_active = {k: (v / summary.docs if summary.docs else 0.0)
                           for k, v in active_sum.items()}
    summary.bad_rows = len(bad_rows) if bad_rows is not None else 0
    writer.finalize(summary={**summary.to_dict(),
                             "runtime": {k: getattr(config, k) for k in config._RUNTIME},
                             "device": str(lm.device)},
                    rank=rank, world_size=world_size,
                    # a rank that stopped after its last shard did not read the whole input
                    n_shards=None if total_shards is not None else n_shards)
    if progress is None:
        stage.close()
    return summary


# --------------------------------------------------------------------------- internals


@dataclass
class _ShardTables:
    features: pl.DataFrame
    tokens: pl.DataFrame | None


def _windows_for(docs: Sequence[Document], lm: LoadedModel, max_length: int,
                 max_windows: int | None = None) -> tuple[list[Window], int]:
    """The documents' windows, cut to ``max_windows`` per document, and how many were cut."""
    from auditor.lm import special_affixes, tokenize_windows

    texts = [d.text for d in docs]
    if max_windows is not None:
        prefix, suffix = special_affixes(lm.tokenizer)
        kept = max_windows * (max_length - len(prefix) - len(suffix)) + 1  # +1: "cut"
        texts = [_head_of(t, lm.tokenizer, tokens=kept) for t in texts]
    windows = tokenize_windows(texts, lm.tokenizer, max_length=max_length)
    if max_windows is None:
        return windows, 0
    cut = {w.doc_index for w in windows if w.window_index >= max_windows}
    return [w for w in windows if w.window_index < max_windows], len(cut)


#: Tokens tokenized past the kept ones, so the kept ones are never near a cut.
_HEAD_MARGIN = 64


def _head_of(text: str, tokenizer: Any, *, tokens: int) -> str:
    """The start of ``text`` that tokenizes to at least ``tokens`` tokens exactly as the
    whole text does, or ``text`` itself: a huge document kept to its first windows is not
    tokenized (or held) whole.

    A prefix cut at a space is tokenized, and so is one twice as long; when both give at
    least ``tokens + margin`` tokens and agree on the first ``tokens``, the cut is far
    enough from them to leave them as the whole text would. Otherwise a longer prefix is
    tried, up to the whole text.
    """
    needed = tokens + _HEAD_MARGIN
    size = needed * 8  # characters; most tokens are shorter
    if len(text) <= 2 * size:
        return text

    def ids(chars: int) -> list[int]:
        cut = text.rfind(" ", chars // 2, chars)
        return list(tokenizer(text[: cut if cut > 0 else chars], add_special_tokens=False,
                              return_attention_mask=False)["input_ids"])

    while 2 * size < len(text):
        short, long = ids(size), ids(2 * size)
        if len(short) >= needed and short[:tokens] == long[:tokens]:
            cut = text.rfind(" ", size // 2, size)
            return text[: cut if cut > 0 else size]
        size *= 2
    return text


def _hooks_of(saes: Mapping[str, SAE]) -> list[HookPoint]:
    from auditor.lm import HookPoint

    out: list[HookPoint] = []
    for sae in saes.values():
        hook = HookPoint(sae.cfg.hook_layer or 0, sae.cfg.hook_point)
        if hook not in out:
            out.append(hook)
    return out


def _pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return int(pad if pad is not None else 0)


def _provenance(
    *,
    lm: LoadedModel,
    saes: Mapping[str, SAE],
    config: ExtractConfig,
    max_length: int,
    thresholds: Mapping[str, float] | None,
    input_info: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "auditor_version": __version__,
        "libraries": library_versions(),
        "model": {
            "id": str(lm.model_id),
            "weights_sha256": lm.weights_sha256,
            "tokenizer": str(getattr(lm.tokenizer, "name_or_path", "")),
            "d_model": lm.d_model,
            "n_layers": lm.n_layers,
            "dtype": str(lm.dtype).removeprefix("torch."),
            "converted_from": lm.converted_from,
        },
        **_sae_provenance(saes, config),
        "max_length": max_length,
        "exclude": {
            "special_tokens": True,
            "outliers": dict(thresholds) if thresholds is not None else None,
            "outlier_method": (None if thresholds is None else "fixed"
                               if config.outlier_threshold is not None else CALIBRATION_METHOD),
        },
        "input": dict(input_info or {}),
    }


def _sae_provenance(saes: Mapping[str, SAE], config: ExtractConfig) -> dict[str, Any]:
    """The provenance keys the SAEs and settings make (without the model)."""
    return {
        "saes": {
            key: {
                "path": sae.source_path,
                "sha256": sae.sha256,
                "format": sae.cfg.source_format,
                "d_sae": sae.cfg.d_sae,
                "layer": sae.cfg.hook_layer,
                "hook_point": sae.cfg.hook_point,
                "activation": sae.cfg.activation,
                "k": sae.cfg.k,
            }
            for key, sae in saes.items()
        },
        "pooling": list(config.poolings),
        "raw_mean": ([h.name for h in _hooks_of(saes)] if config.raw_mean else []),
        "extract": config.to_dict(include_runtime=False),
    }


def preflight_provenance(model_dir: str | Path, saes: Mapping[str, SAE],
                         config: ExtractConfig) -> dict[str, Any]:
    """What a store's provenance will say of the model's identity, the SAEs and the
    settings, known before the model is loaded (the weights hash reads files, cached): a
    head or probe that refuses these refuses the store, so a job can stop before spending
    seconds loading a model it will not use."""
    from auditor.lm import weights_sha256

    return {"model": {"id": str(model_dir), "weights_sha256": weights_sha256(model_dir)},
            **_sae_provenance(saes, config)}


def _extract_shard(
    docs: Sequence[Document],
    *,
    lm: LoadedModel,
    forward: TruncatedForward,
    saes: Mapping[str, SAE],
    hooks: Mapping[HookPoint, Sequence[str]],
    config: ExtractConfig,
    max_length: int,
    thresholds: Mapping[str, float] | None,
    report: Callable[[int, int], None],
) -> tuple[_ShardTables, dict[str, Any]]:
    import torch

    from auditor.lm import collate, plan_batches

    windows, truncated = _windows_for(docs, lm, max_length, config.max_windows)
    poolers = {k: DocumentPooler(s.cfg.d_sae, poolings=config.poolings) for k, s in saes.items()}
    n_docs = len(docs)
    content = np.zeros(n_docs, dtype=np.int64)
    excluded = {k: np.zeros(n_docs, dtype=np.int64) for k in saes}
    windows_left = np.bincount([w.doc_index for w in windows], minlength=n_docs)
    # float64 sums on the CPU: exact enough for means over thousands of tokens
    raw_sums = {h.name: torch.zeros(n_docs, lm.d_model, dtype=torch.float64)
                for h in hooks} if config.raw_mean else {}
    raw_counts = {name: torch.zeros(n_docs, dtype=torch.float64) for name in raw_sums}
    token_batches: list[dict[str, Any]] = []
    pad_id = _pad_id(lm)
    tokens_done = 0
    docs_done = 0

    for batch in plan_batches([w.n_tokens for w in windows], token_budget=config.token_budget,
                              max_batch_size=config.max_batch_size):
        ws = [windows[i] for i in batch]
        ids, attn, keep = collate(ws, pad_id=pad_id, device=lm.device)
        T = ids.shape[1]
        doc_of_row = torch.tensor([w.doc_index for w in ws], dtype=torch.long)
        win_of_row = torch.tensor([w.window_index for w in ws], dtype=torch.long)
        # A token's order within its document, across windows (used by `last` pooling).
        order = win_of_row[:, None] * max_length + torch.arange(T)[None, :]
        keep_cpu = keep.cpu()
        tok_docs = doc_of_row[:, None].expand(-1, T)[keep_cpu].numpy()
        tok_order = order[keep_cpu].numpy()
        np.add.at(content, tok_docs, 1)
        tokens_done += int(keep_cpu.sum())

        acts_by_hook = forward(ids, attn)
        tok_batch = _token_batch(ws, keep_cpu, ids.cpu(), max_length) if config.save_tokens \
            else None
        for hook, acts in acts_by_hook.items():
            sel = acts[keep]  # [n_content_tokens, d_model]
            pooled_mask = np.ones(sel.shape[0], dtype=bool)
            if thresholds is not None:
                norms = sel.float().norm(dim=-1)
                pooled_mask = (norms <= thresholds[hook.name]).cpu().numpy()
            if config.raw_mean:
                rows = torch.from_numpy(tok_docs[pooled_mask])
                raw_sums[hook.name].index_add_(
                    0, rows, sel[torch.from_numpy(pooled_mask).to(sel.device)].double().cpu())
                raw_counts[hook.name].index_add_(0, rows, torch.ones(len(rows),
                                                                     dtype=torch.float64))
            for key in hooks[hook]:
                codes = saes[key].encode_sparse(sel, chunk_size=config.sae_chunk_size)
                idx = codes.indices.cpu().numpy()
                val = codes.values.float().cpu().numpy()
                poolers[key].add(tok_docs[pooled_mask], tok_order[pooled_mask],
                                 idx[pooled_mask], val[pooled_mask])
                np.add.at(excluded[key], tok_docs[~pooled_mask], 1)
                if tok_batch is not None:
                    tok_batch[f"{key}.indices"], tok_batch[f"{key}.values"] = _sparse_rows(idx, val)
                    tok_batch[f"{key}.pooled"] = pooled_mask
        if tok_batch is not None:
            token_batches.append(tok_batch)
        for w in ws:
            windows_left[w.doc_index] -= 1
            docs_done += int(windows_left[w.doc_index] == 0)
        report(docs_done, tokens_done)

    features = _features_table(docs, poolers, content, excluded, config)
    if raw_sums:
        features = features.with_columns([
            _list_series(f"raw_mean.{name}", list(
                (raw_sums[name] / raw_counts[name].clamp(min=1)[:, None]).float().numpy()),
                np.float32)
            for name in raw_sums])
    stats = {
        "windows": len(windows),
        "truncated": truncated,
        "tokens": int(content.sum()),
        "active": {k: int(features[f"{k}.indices"].list.len().sum()) for k in saes},
        "excluded": {k: int(v.sum()) for k, v in excluded.items()},
    }
    tokens = _tokens_table(token_batches, docs, list(saes)) if config.save_tokens else None
    return _ShardTables(features, tokens), stats


def _features_table(
    docs: Sequence[Document],
    poolers: Mapping[str, DocumentPooler],
    content: np.ndarray,
    excluded: Mapping[str, np.ndarray],
    config: ExtractConfig,
) -> pl.DataFrame:
    n = len(docs)
    cols: dict[str, pl.Series] = {
        "doc_id": pl.Series("doc_id", [d.doc_id for d in docs], dtype=pl.Utf8),
        "row": pl.Series("row", [d.row for d in docs], dtype=pl.UInt64),
        "n_tokens": pl.Series("n_tokens", content, dtype=pl.UInt32),
    }
    for key, pooler in poolers.items():
        pooled = pooler.pop_all(range(n))
        cols[f"{key}.indices"] = _list_series(
            f"{key}.indices", [pooled[i].indices for i in range(n)], np.uint32)
        for p in config.poolings:
            cols[f"{key}.{p}"] = _list_series(
                f"{key}.{p}", [pooled[i].values[p] for i in range(n)], np.float32)
        cols[f"{key}.n_excluded"] = pl.Series(f"{key}.n_excluded", excluded[key],
                                              dtype=pl.UInt32)
    frame = pl.DataFrame(list(cols.values()))
    extra_names = list(docs[0].extra) if docs else []
    if extra_names:
        extra = pl.DataFrame([d.extra for d in docs], infer_schema_length=None)
        clash = [c for c in extra.columns if c in frame.columns]
        if clash:
            raise ConfigError(f"passthrough column(s) {clash} clash with feature columns")
        frame = pl.concat([frame, extra], how="horizontal")
    return frame


def _list_series(name: str, arrays: Sequence[np.ndarray], dtype: type[np.generic]) -> pl.Series:
    """A List column from per-row arrays, built from offsets (no per-element Python)."""
    import pyarrow as pa

    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int32, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(arrays).astype(dtype, copy=False) if len(arrays) else \
        np.zeros(0, dtype=dtype)
    series = pl.from_arrow(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
    assert isinstance(series, pl.Series)
    return series.alias(name)


def _token_batch(
    ws: Sequence[Window], keep: torch.Tensor, ids: torch.Tensor, max_length: int
) -> dict[str, Any]:
    """The token columns of one batch's content tokens; SAE columns are added per key."""
    b_idx, t_idx = np.nonzero(keep.numpy())
    doc = np.array([ws[b].doc_index for b in b_idx.tolist()], dtype=np.int64)
    win = np.array([ws[b].window_index for b in b_idx.tolist()], dtype=np.int64)
    return {"_doc": doc, "position": win * max_length + t_idx,
            "token_id": ids.numpy()[b_idx, t_idx]}


def _sparse_rows(idx: np.ndarray, val: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-token active (indices, values), indices ascending."""
    out_i, out_v = [], []
    for i_row, v_row in zip(idx, val, strict=True):
        active = v_row > 0
        order = np.argsort(i_row[active])
        out_i.append(i_row[active][order].astype(np.uint32))
        out_v.append(v_row[active][order].astype(np.float32))
    return out_i, out_v


def _tokens_table(batches: list[dict[str, Any]], docs: Sequence[Document],
                  keys: Sequence[str]) -> pl.DataFrame:
    doc = np.concatenate([b["_doc"] for b in batches]) if batches else np.zeros(0, np.int64)
    pos = np.concatenate([b["position"] for b in batches]) if batches else np.zeros(0, np.int64)
    perm = np.lexsort((pos, doc))
    data: list[pl.Series] = [
        pl.Series("doc_id", [docs[d].doc_id for d in doc[perm].tolist()], dtype=pl.Utf8),
        pl.Series("position", pos[perm], dtype=pl.UInt32),
        pl.Series("token_id", np.concatenate([b["token_id"] for b in batches])[perm]
                  if batches else [], dtype=pl.UInt32),
    ]
    for key in keys:
        for col, dtype in (("indices", np.uint32), ("values", np.float32)):
            flat = [x for b in batches for x in b[f"{key}.{col}"]]
            data.append(_list_series(f"{key}.{col}", [flat[i] for i in perm.tolist()], dtype))
        pooled = (np.concatenate([b[f"{key}.pooled"] for b in batches]) if batches
                  else np.zeros(0, bool))
        data.append(pl.Series(f"{key}.pooled", pooled[perm], dtype=pl.Boolean))
    return pl.DataFrame(data)
