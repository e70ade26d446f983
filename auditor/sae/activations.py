"""An on-disk cache of residual-stream activations for training and evaluating SAEs.

Running the model is the slow part of SAE training (~900 tokens/s for Gemma 3 270M on two
CPU cores), so :func:`collect_activations` runs it once and stores the content-token
activations of every hook in fp16 safetensors shards; :class:`ActivationCache` reads them
back as float32 batches for any number of training runs.

Layout::

    out/
      manifest.json                      written last: a cache without it is unfinished
      layer3.resid_post/00000.safetensors  acts [n, d_model] fp16, pos [n] int32, doc [n] int32
      layer3.resid_post/00001.safetensors
      ...
      _resume/                           while collecting: where a rerun goes on from

Collection resumes: after every chunk of 256 documents the writer records the shards
written so far and the tokens not yet in a shard (``_resume/``); a collection that was
killed or cancelled goes on from the last whole chunk when it is run again with the same
settings, and ends with the cache an uninterrupted run writes.

``pos`` is the position of the token among its document's content tokens (0 = first
token after the special prefix, counting across windows); ``doc`` is the document's index
in the input. Documents are split into a training and a held-out part by a hash of
``doc`` (see :func:`heldout_mask`), so the split is deterministic and never cuts a
document in two.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from auditor import __version__
from auditor._files import atomic_write_text
from auditor._versions import library_versions
from auditor.errors import ConfigError, CorruptShard, JobCancelled, ShardMissing, StoreError

if TYPE_CHECKING:
    from auditor.cancel import CancelToken
    from auditor.lm import HookPoint, LoadedModel, TruncatedForward
    from auditor.progress import Stage

__all__ = [
    "MANIFEST_FILENAME",
    "ActivationCache",
    "ActivationCacheWriter",
    "Split",
    "collect_activations",
    "forward_batches",
    "heldout_mask",
    "open_cache",
    "pick_documents",
    "texts_fingerprint",
]

#: Name of the manifest file; it is written last.
MANIFEST_FILENAME = "manifest.json"
#: Version of the on-disk layout.
CACHE_FORMAT_VERSION = 1

Split = Literal["train", "heldout", "all"]
_SPLITS: tuple[str, ...] = ("train", "heldout", "all")
_TENSORS: tuple[str, ...] = ("acts", "pos", "doc")
_DOCS_PER_CHUNK = 256
#: Where an unfinished collection keeps what a rerun needs to go on.
_RESUME_DIRNAME = "_resume"
_RESUME_STATE = "state.json"


def _hook_name(hook: HookPoint | str) -> str:
    return hook if isinstance(hook, str) else hook.name


def _check_positive_int(value: object, name: str, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {kind} integer, got {value!r}", field=name)


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(
            f"heldout_fraction must be in [0, 1), got {value!r}", field="heldout_fraction"
        )
    return float(value)


def heldout_mask(doc: np.ndarray | torch.Tensor, *, fraction: float) -> np.ndarray:
    """Which documents fall in the held-out bucket.

    Parameters
    ----------
    doc : array of int
        Document indices.
    fraction : float
        Expected share of documents held out, in ``[0, 1)``.

    Returns
    -------
    numpy.ndarray of bool
        ``True`` for held-out documents. A document's bucket depends only on its index
        (a SplitMix64 hash), so it is the same in every run and for every ``fraction`` the
        held-out set only grows with ``fraction``.

    Examples
    --------
    >>> heldout_mask(np.arange(6), fraction=0.5).tolist()
    [False, False, False, True, True, True]
    """
    fraction = _check_fraction(fraction)
    values = doc.cpu().numpy() if isinstance(doc, torch.Tensor) else np.asarray(doc)
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    unit = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.asarray(unit < fraction)


# --------------------------------------------------------------------------- writing
class ActivationCacheWriter:
    """Write activation shards and, on :meth:`close`, the manifest.

    Parameters
    ----------
    out : Path
        Cache directory (created). An existing finished cache is refused unless
        ``overwrite``.
    hooks : sequence of str or HookPoint
        The hooks that will be written.
    d_model : int
        Activation width.
    shard_tokens : int, default 262144
        Tokens per shard file (the last one may be shorter).
    overwrite : bool, default False
        Replace an existing finished cache.
    resume : mapping or None
        The ``writer`` record of :meth:`save_progress` (``_resume/state.json``) of an
        unfinished collection into ``out``: its shards are kept and its unwritten tokens
        reloaded, so writing goes on where it stopped. ``None`` starts empty.

    Raises
    ------
    StoreError
        ``resume`` names a shard or a file that is not there.

    Examples
    --------
    >>> import tempfile
    >>> w = ActivationCacheWriter(Path(tempfile.mkdtemp()), hooks=["layer0.resid_post"],
    ...                           d_model=4)
    >>> w.add("layer0.resid_post", torch.ones(3, 4), pos=torch.arange(3), doc=torch.zeros(3))
    >>> open_cache(w.close()).n_tokens
    3
    """

    def __init__(
        self,
        out: str | Path,
        *,
        hooks: Sequence[HookPoint | str],
        d_model: int,
        shard_tokens: int = 262144,
        overwrite: bool = False,
        resume: Mapping[str, Any] | None = None,
    ) -> None:
        _check_positive_int(d_model, "d_model")
        _check_positive_int(shard_tokens, "shard_tokens")
        names = list(dict.fromkeys(_hook_name(h) for h in hooks))
        if not names:
            raise ConfigError("at least one hook is required", field="hooks")
        for name in names:
            if not name or any(c in name for c in "/\\") or name.startswith("."):
                raise ConfigError(f"hook name {name!r} cannot name a directory", field="hooks")
        self.out = Path(out)
        manifest = self.out / MANIFEST_FILENAME
        if manifest.exists():
            if not overwrite:
                raise ConfigError(
                    "an activation cache already exists here; set overwrite to replace it",
                    path=self.out,
                )
            manifest.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        if resume is None:
            shutil.rmtree(self.out / _RESUME_DIRNAME, ignore_errors=True)
        kept = _resumed_shards(resume, names)
        for name in names:
            directory = self.out / name
            directory.mkdir(exist_ok=True)
            for stale in directory.glob("*.safetensors"):
                if f"{name}/{stale.name}" not in kept:
                    stale.unlink()
        self.hooks = names
        self.d_model = d_model
        self.shard_tokens = shard_tokens
        self._buffers: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
            n: [] for n in names
        }
        self._buffered = dict.fromkeys(names, 0)
        self._shards: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        self._norm_sum = dict.fromkeys(names, 0.0)
        self._docs: dict[str, set[int]] = {n: set() for n in names}
        # Documents counted before a resume (a document never spans two chunks).
        self._docs_before = dict.fromkeys(names, 0)
        if resume is not None:
            self._restore(resume)

    def _restore(self, state: Mapping[str, Any]) -> None:
        root = self.out / _RESUME_DIRNAME
        try:
            for name in self.hooks:
                self._shards[name] = [{"file": str(s["file"]), "n_tokens": int(s["n_tokens"])}
                                      for s in state["shards"][name]]
                self._norm_sum[name] = float(state["norm_sum"][name])
                self._docs_before[name] = int(state["n_docs"][name])
                pending = state["pending"].get(name)
                if pending:
                    data = load_file(str(root / str(pending)))
                    part = (data["acts"], data["pos"], data["doc"])
                    self._buffers[name] = [part]
                    self._buffered[name] = int(part[0].shape[0])
        except (KeyError, TypeError, ValueError, AttributeError, OSError,
                SafetensorError) as exc:
            raise StoreError(f"cannot resume the unfinished collection: {exc!r}",
                             path=root) from exc
        for name in self.hooks:
            for shard in self._shards[name]:
                if not (self.out / shard["file"]).is_file():
                    raise StoreError("cannot resume the unfinished collection: a shard it "
                                     "wrote is gone", path=self.out / shard["file"])

    def save_progress(self, record: Mapping[str, Any]) -> None:
        """Record what a rerun needs to go on from here: the shards written so far and the
        tokens not yet in a shard (``_resume/``), with the caller's ``record`` (JSON-able)
        beside them. Atomic: a rerun sees this call's state or the previous one's.
        """
        root = self.out / _RESUME_DIRNAME
        root.mkdir(exist_ok=True)
        previous = _read_resume(self.out)
        serial = int((previous or {}).get("serial", -1)) + 1
        pending: dict[str, str | None] = {}
        for name in self.hooks:
            if not self._buffered[name]:
                pending[name] = None
                continue
            parts = self._buffers[name]
            part = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                    torch.cat([p[2] for p in parts]))
            self._buffers[name] = [part]
            filename = f"{name}.{serial:06d}.safetensors"
            tmp = root / f".{filename}.{os.getpid()}.tmp"
            save_file({"acts": part[0].contiguous(), "pos": part[1].contiguous(),
                       "doc": part[2].contiguous()}, str(tmp))
            os.replace(tmp, root / filename)
            pending[name] = filename
        writer = {"shards": self._shards,
                  "norm_sum": self._norm_sum,
                  "n_docs": {n: self._docs_before[n] + len(self._docs[n]) for n in self.hooks},
                  "pending": pending}
        atomic_write_text(root / _RESUME_STATE, json.dumps(
            {**record, "serial": serial, "writer": writer}, indent=1) + "\n")
        keep = {_RESUME_STATE, *(f for f in pending.values() if f)}
        for path in root.iterdir():
            if path.name not in keep:
                path.unlink()

    def add(
        self,
        hook: HookPoint | str,
        acts: torch.Tensor,
        *,
        pos: torch.Tensor,
        doc: torch.Tensor,
    ) -> None:
        """Append tokens of one hook; full shards are written as they fill.

        Parameters
        ----------
        hook : str or HookPoint
            One of the writer's hooks.
        acts : torch.Tensor
            ``[n, d_model]`` activations (stored as fp16).
        pos, doc : torch.Tensor
            ``[n]`` integer positions within the document and document indices.
        """
        name = _hook_name(hook)
        if name not in self._buffers:
            raise ConfigError(f"hook {name!r} is not one of {self.hooks}", field="hook")
        if acts.ndim != 2 or acts.shape[1] != self.d_model:
            raise ConfigError(
                f"acts must be [n, {self.d_model}], got {tuple(acts.shape)}", field="acts"
            )
        n = acts.shape[0]
        if pos.shape != (n,) or doc.shape != (n,):
            raise ConfigError("pos and doc must be [n] like acts", field="pos")
        if n == 0:
            return
        half = acts.detach().to(device="cpu", dtype=torch.float16)
        self._norm_sum[name] += float(half.float().norm(dim=-1).double().sum())
        doc_i = doc.detach().cpu().to(torch.int32)
        self._docs[name].update(doc_i.unique().tolist())
        self._buffers[name].append((half, pos.detach().cpu().to(torch.int32), doc_i))
        self._buffered[name] += n
        while self._buffered[name] >= self.shard_tokens:
            self._flush(name, self.shard_tokens)

    def _flush(self, name: str, count: int) -> None:
        parts = self._buffers[name]
        acts = torch.cat([p[0] for p in parts])
        pos = torch.cat([p[1] for p in parts])
        doc = torch.cat([p[2] for p in parts])
        index = len(self._shards[name])
        filename = f"{index:05d}.safetensors"
        path = self.out / name / filename
        tmp = path.with_name(f".{filename}.{os.getpid()}.tmp")
        save_file(
            {"acts": acts[:count].contiguous(), "pos": pos[:count].contiguous(),
             "doc": doc[:count].contiguous()},
            str(tmp),
            metadata={"format": "auditor-activations", "hook": name},
        )
        os.replace(tmp, path)
        self._shards[name].append({"file": f"{name}/{filename}", "n_tokens": int(count)})
        rest = acts.shape[0] - count
        self._buffers[name] = [(acts[count:], pos[count:], doc[count:])] if rest else []
        self._buffered[name] = rest

    def n_tokens(self, hook: HookPoint | str) -> int:
        """Tokens added so far for ``hook``."""
        name = _hook_name(hook)
        return sum(s["n_tokens"] for s in self._shards[name]) + self._buffered[name]

    def close(self, **extra: Any) -> Path:
        """Write the remaining tokens and the manifest (last).

        Parameters
        ----------
        **extra
            JSON-able entries added to the manifest (model, thresholds, settings, ...).

        Returns
        -------
        Path
            The cache directory.
        """
        for name in self.hooks:
            if self._buffered[name]:
                self._flush(name, self._buffered[name])
        hooks = {}
        for name in self.hooks:
            n = sum(s["n_tokens"] for s in self._shards[name])
            hooks[name] = {
                "n_tokens": n,
                "n_docs": self._docs_before[name] + len(self._docs[name]),
                "mean_norm": self._norm_sum[name] / n if n else None,
                "shards": self._shards[name],
            }
        manifest = {
            "format": "auditor-activations",
            "format_version": CACHE_FORMAT_VERSION,
            "auditor_version": __version__,
            "libraries": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "d_model": self.d_model,
            "dtype": "float16",
            "hooks": hooks,
            **extra,
        }
        atomic_write_text(self.out / MANIFEST_FILENAME, json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(self.out / _RESUME_DIRNAME, ignore_errors=True)
        return self.out


def _resumed_shards(state: Mapping[str, Any] | None, names: Sequence[str]) -> set[str]:
    """The shard files a resumed writer keeps (``hook/NNNNN.safetensors``)."""
    if state is None:
        return set()
    try:
        return {str(s["file"]) for name in names for s in state["shards"][name]}
    except (KeyError, TypeError) as exc:
        raise StoreError(f"cannot resume the unfinished collection: {exc!r}") from exc


def _read_resume(out: Path) -> dict[str, Any] | None:
    """The resume record of an unfinished collection in ``out``, or ``None``."""
    path = out / _RESUME_DIRNAME / _RESUME_STATE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# --------------------------------------------------------------------------- collection
def collect_activations(
    texts: Iterable[str],
    *,
    lm: LoadedModel,
    hooks: Sequence[HookPoint],
    out: str | Path,
    max_length: int = 512,
    token_budget: int = 8192,
    max_tokens: int | None = None,
    exclude_outliers: bool = True,
    outlier_factor: float = 5.0,
    skip_first: int = 0,
    shard_tokens: int = 262144,
    overwrite: bool = False,
    progress: bool = False,
    source: Mapping[str, Any] | None = None,
    heldout_only: float | None = None,
    resume: bool = True,
    stage: Stage | None = None,
    cancel: CancelToken | None = None,
) -> ActivationCache:
    """Run the model over ``texts`` once and cache the content-token activations.

    Parameters
    ----------
    texts : iterable of str
        Documents, streamed in chunks of 256; their order gives the ``doc`` indices.
    lm : LoadedModel
        The model (:func:`auditor.lm.load_model`).
    hooks : sequence of HookPoint
        Where to read; all are captured in one truncated forward pass.
    out : str or Path
        Cache directory.
    max_length : int, default 512
        Window length in tokens (specials included), capped by the model's context.
    token_budget : int, default 8192
        Padded tokens per forward batch (a runtime knob; results do not depend on it).
    max_tokens : int or None
        Stop once at least this many tokens were kept at the first hook (checked after
        every batch, so it may overshoot by one batch).
    exclude_outliers : bool, default True
        Leave out massive-activation tokens (norm above ``outlier_factor`` × the model's
        median content-token norm at that hook, see :mod:`auditor.outliers`).
    outlier_factor : float, default 5.0
        See ``exclude_outliers``.
    skip_first : int, default 0
        Leave out each document's first ``skip_first`` content tokens.
    shard_tokens : int, default 262144
        Tokens per shard file.
    overwrite : bool, default False
        Replace an existing finished cache at ``out``.
    progress : bool, default False
        Show a tqdm bar (tokens).
    source : mapping or None
        Where ``texts`` came from, e.g. ``{"path": ..., "fingerprint": ...}`` of the corpus
        file (:func:`auditor.io.input_fingerprint`); recorded as the manifest's ``input``.
    heldout_only : float or None
        Run the model only over the documents in the held-out bucket at this fraction
        (:func:`heldout_mask`): a small cache of exactly the text that a run with that
        ``heldout_fraction`` never trains on, e.g. to evaluate an SAE trained from a
        stream of the same corpus. The other documents are read (and fingerprinted) but
        not computed; document indices stay those of the whole corpus.
    resume : bool, default True
        Go on from the last whole chunk of an unfinished collection into ``out`` made
        with the same model, hooks, settings and ``source`` (its ``_resume/`` record);
        the texts before it are read again (for the fingerprint) but not computed.
        Otherwise, or when the record is of another collection, start over.
    stage : Stage or None
        Progress events (:mod:`auditor.progress`): documents read, with ``tokens`` and
        ``docs`` counters. The caller sets its total and closes it.
    cancel : CancelToken or None
        Checked after every forward batch; when set, :class:`~auditor.errors.JobCancelled`
        is raised and a rerun resumes from the last whole chunk.

    Returns
    -------
    ActivationCache
        The finished cache.

    Raises
    ------
    ConfigError
        Invalid settings, or ``out`` holds a finished cache and ``overwrite`` is false.
    HookError
        A hook outside the model's layers.
    JobCancelled
        ``cancel`` was set.

    Notes
    -----
    Special tokens (BOS, EOS, padding, and special ids inside the text) are never stored.
    The manifest records the model id and weights hash, the hooks, the outlier
    thresholds, the settings, per-hook token counts, ``source`` and a fingerprint of the
    texts read (:func:`texts_fingerprint`; a run that ``max_tokens`` stops has read whole
    chunks of 256 documents, which the ``doc`` indices refer to), so a training run can
    name the text it learnt from even when the texts were not a file. It is written last:
    a cache without it is unfinished and :func:`open_cache` refuses it.
    """
    from tqdm.auto import tqdm

    from auditor.lm import TruncatedForward
    from auditor.outliers import CALIBRATION_METHOD, outlier_thresholds

    _check_positive_int(max_length, "max_length")
    _check_positive_int(token_budget, "token_budget")
    _check_positive_int(skip_first, "skip_first", allow_zero=True)
    if heldout_only is not None:
        heldout_only = _check_fraction(heldout_only)
    if max_tokens is not None:
        _check_positive_int(max_tokens, "max_tokens")
    if not (isinstance(outlier_factor, (int, float)) and outlier_factor > 1
            and math.isfinite(outlier_factor)):
        raise ConfigError(f"outlier_factor must be > 1, got {outlier_factor!r}",
                          field="outlier_factor")
    max_length = min(max_length, lm.max_positions)
    forward = TruncatedForward(lm, list(hooks))
    content_size = _content_size(lm, max_length)
    settings = {
        "exclude_outliers": exclude_outliers,
        "outlier_factor": float(outlier_factor),
        "skip_first": skip_first,
        "max_tokens": max_tokens,
        "shard_tokens": shard_tokens,
        "token_budget": token_budget,
        "heldout_only": heldout_only,
    }
    identity = json.loads(json.dumps({
        "hooks": [h.name for h in forward.hooks], "max_length": max_length,
        "model": lm.weights_sha256, "settings": settings,
        "input": None if source is None else dict(source)}, default=str))
    out = Path(out)
    state = None
    if resume and not (out / MANIFEST_FILENAME).exists():
        state = _read_resume(out)
        if state is not None and state.get("identity") != identity:
            state = None  # another collection's: start over
    writer: ActivationCacheWriter | None = None
    if state is not None:
        try:
            writer = ActivationCacheWriter(out, hooks=forward.hooks, d_model=lm.d_model,
                                           shard_tokens=shard_tokens, overwrite=overwrite,
                                           resume=state["writer"])
        except (StoreError, KeyError, TypeError):
            state = None
    thresholds: Mapping[str, float] | None = None
    if state is not None and exclude_outliers:
        thresholds = {str(k): float(v) for k, v in (state.get("thresholds") or {}).items()}
    elif exclude_outliers:
        thresholds = outlier_thresholds(lm, forward, factor=float(outlier_factor),
                                        max_length=max_length, token_budget=token_budget)
    if writer is None:
        writer = ActivationCacheWriter(out, hooks=forward.hooks, d_model=lm.d_model,
                                       shard_tokens=shard_tokens, overwrite=overwrite)
    counts = {"docs": 0, "windows": 0, "content_tokens": 0, "skipped_first": 0}
    excluded = {h.name: 0 for h in forward.hooks}
    chunks_done, seconds_before = 0, 0.0
    if state is not None:
        counts.update({k: int(v) for k, v in state["counts"].items()})
        excluded.update({k: int(v) for k, v in state["excluded"].items()})
        chunks_done, seconds_before = int(state["chunks"]), float(state["seconds"])
    first = forward.hooks[0].name
    started = time.perf_counter()
    bar = tqdm(total=max_tokens, unit="tok", disable=not progress, dynamic_ncols=True,
               desc="activations", initial=writer.n_tokens(first))
    if stage is not None:
        stage.update(counts["docs"], docs=float(counts["docs"]),
                     tokens=float(writer.n_tokens(first)))
    done = False
    texts_hash = _TextsHash()
    try:
        for number, chunk in enumerate(_chunks(texts, _DOCS_PER_CHUNK)):
            texts_hash.update(chunk)
            if number < chunks_done:  # computed before the resume
                continue
            picked, indices = pick_documents(chunk, first=counts["docs"],
                                             heldout_fraction=heldout_only, heldout=True)
            counts["docs"] += len(chunk)
            for batch in forward_batches(picked, lm=lm, forward=forward, max_length=max_length,
                                         token_budget=token_budget, doc_indices=indices,
                                         thresholds=thresholds, skip_first=skip_first,
                                         counts=counts, excluded=excluded):
                for hook in forward.hooks:
                    acts, pos, doc = batch[hook.name]
                    writer.add(hook, acts, pos=pos, doc=doc)
                kept = writer.n_tokens(first)
                bar.update(kept - bar.n)
                if max_tokens is not None and kept >= max_tokens:
                    done = True
                    break
                if cancel is not None and cancel.cancelled:
                    raise JobCancelled(f"cancelled in chunk {number} of the collection (a "
                                       f"rerun resumes after chunk {chunks_done - 1})",
                                       path=out)
            if done:
                break
            chunks_done = number + 1
            writer.save_progress({
                "identity": identity, "chunks": chunks_done, "counts": counts,
                "excluded": excluded,
                "thresholds": None if thresholds is None else dict(thresholds),
                "seconds": seconds_before + time.perf_counter() - started})
            if stage is not None:
                stage.update(counts["docs"], docs=float(counts["docs"]),
                             tokens=float(writer.n_tokens(first)))
            if cancel is not None and cancel.cancelled:
                raise JobCancelled(f"cancelled after chunk {number} of the collection (a "
                                   "rerun resumes from there)", path=out)
    finally:
        bar.close()
    seconds = seconds_before + time.perf_counter() - started
    writer.close(
        model={
            "id": str(lm.model_id),
            "weights_sha256": lm.weights_sha256,
            "d_model": lm.d_model,
            "n_layers": lm.n_layers,
            "dtype": str(lm.dtype).removeprefix("torch."),
        },
        max_length=max_length,
        content_size=content_size,
        counts={**counts, "excluded_outliers": excluded, "truncated": done},
        thresholds=None if thresholds is None else dict(thresholds),
        outlier_method=None if thresholds is None else CALIBRATION_METHOD,
        settings=settings,
        seconds=round(seconds, 3),
        input=None if source is None else dict(source),
        texts={"sha256": texts_hash.hexdigest(), "docs": texts_hash.docs},
    )
    return ActivationCache(out)


def forward_batches(
    texts: Sequence[str],
    *,
    lm: LoadedModel,
    forward: TruncatedForward,
    max_length: int,
    token_budget: int,
    doc_indices: Sequence[int] | None = None,
    thresholds: Mapping[str, float] | None = None,
    skip_first: int = 0,
    counts: dict[str, int] | None = None,
    excluded: dict[str, int] | None = None,
) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """The content-token activations of ``texts``, one forward batch at a time.

    The one place where documents become the tokens an SAE trains on, for a cache
    (:func:`collect_activations`) and for a run that streams from the model
    (:class:`auditor.sae.stream.ModelStream`) alike: documents are cut into windows of
    ``max_length``, batched under ``token_budget`` padded tokens, and of every window only
    the content tokens are kept (no BOS, EOS, padding or special ids), less each
    document's first ``skip_first`` tokens and, per hook, tokens whose norm exceeds
    ``thresholds`` (massive activations).

    Yields
    ------
    dict
        Hook name to ``(acts, pos, doc)``: float32 ``[m, d_model]`` activations on the CPU,
        each token's position in its document and its document's index: its entry in
        ``doc_indices`` (the texts' indices in their corpus), or its place in ``texts``.

    ``counts`` (``windows``, ``content_tokens``, ``skipped_first``) and ``excluded`` (per
    hook) are added to as batches go by, when given.
    """
    from auditor.lm import collate, plan_batches, special_affixes, tokenize_windows

    prefix, _suffix = special_affixes(lm.tokenizer)
    content_size = _content_size(lm, max_length)
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    pad_id = int(pad if pad is not None else 0)
    counts = {} if counts is None else counts
    excluded = {} if excluded is None else excluded
    texts = list(texts)
    if doc_indices is not None and len(doc_indices) != len(texts):
        raise ConfigError(f"{len(doc_indices)} document indices for {len(texts)} texts",
                          field="doc_indices")
    windows = tokenize_windows(texts, lm.tokenizer, max_length=max_length)
    counts["windows"] = counts.get("windows", 0) + len(windows)
    for batch in plan_batches([w.n_tokens for w in windows], token_budget=token_budget):
        ws = [windows[i] for i in batch]
        ids, attn, keep = collate(ws, pad_id=pad_id, device=lm.device)
        width = ids.shape[1]
        keep_cpu = keep.cpu()
        win = torch.tensor([w.window_index for w in ws], dtype=torch.long)
        doc_rows = torch.tensor([w.doc_index if doc_indices is None
                                 else doc_indices[w.doc_index] for w in ws], dtype=torch.long)
        pos_grid = win[:, None] * content_size + torch.arange(width)[None, :] - len(prefix)
        pos = pos_grid[keep_cpu]
        doc = doc_rows[:, None].expand(-1, width)[keep_cpu]
        counts["content_tokens"] = counts.get("content_tokens", 0) + int(pos.numel())
        wanted = pos >= skip_first
        counts["skipped_first"] = counts.get("skipped_first", 0) + int((~wanted).sum())
        out: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for hook, acts in forward(ids, attn).items():
            sel = acts[keep].float().cpu()
            mask = wanted.clone()
            if thresholds is not None:
                outlier = sel.norm(dim=-1) > thresholds[hook.name]
                excluded[hook.name] = excluded.get(hook.name, 0) + int((outlier & wanted).sum())
                mask &= ~outlier
            out[hook.name] = (sel[mask], pos[mask], doc[mask])
        yield out


def pick_documents(texts: Sequence[str], *, first: int, heldout_fraction: float | None,
                   heldout: bool) -> tuple[list[str], list[int]]:
    """The texts on one side of the held-out split, and their indices in the corpus.

    ``texts`` are documents ``first``, ``first + 1`` … of a corpus. With ``heldout`` the
    ones :func:`heldout_mask` puts in the held-out bucket at ``heldout_fraction`` are
    picked, otherwise the others; with no fraction, all of them.

    Examples
    --------
    >>> pick_documents(["a", "b", "c", "d"], first=2, heldout_fraction=0.5, heldout=False)
    (['a'], [2])
    """
    indices = np.arange(first, first + len(texts))
    if heldout_fraction is not None:
        indices = indices[heldout_mask(indices, fraction=heldout_fraction) == heldout]
    picked = indices.tolist()
    return [texts[i - first] for i in picked], picked


def _content_size(lm: LoadedModel, max_length: int) -> int:
    """Content tokens per window: ``max_length`` less the tokenizer's own specials."""
    from auditor.lm import special_affixes

    prefix, suffix = special_affixes(lm.tokenizer)
    return max_length - len(prefix) - len(suffix)


def texts_fingerprint(texts: Iterable[str]) -> str:
    """A fingerprint of a sequence of texts: order, boundaries and content.

    Parameters
    ----------
    texts : iterable of str

    Returns
    -------
    str
        ``"sha256:<hex>"`` of each text's UTF-8 bytes, each preceded by its length as
        8 little-endian bytes (so ``["ab", "c"]`` and ``["a", "bc"]`` differ).

    Examples
    --------
    >>> texts_fingerprint(["ab", "c"]) != texts_fingerprint(["a", "bc"])
    True
    >>> texts_fingerprint([])[:15]
    'sha256:e3b0c442'
    """
    h = _TextsHash()
    h.update(texts)
    return h.hexdigest()


class _TextsHash:
    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.docs = 0

    def update(self, texts: Iterable[str]) -> None:
        for text in texts:
            # surrogatepass: a lone surrogate (from a lenient reader) must not crash here
            data = text.encode("utf-8", "surrogatepass")
            self._h.update(len(data).to_bytes(8, "little"))
            self._h.update(data)
            self.docs += 1

    def hexdigest(self) -> str:
        return f"sha256:{self._h.hexdigest()}"


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"texts must be strings, got {type(text).__name__}", field="texts")
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- reading
class ActivationCache:
    """Read a cache written by :func:`collect_activations` or :class:`ActivationCacheWriter`.

    Parameters
    ----------
    directory : str or Path
        The cache directory.

    Attributes
    ----------
    directory : Path
    manifest : dict
        The parsed manifest.
    hooks : list of str
        Hook names, in collection order.
    d_model : int
        Activation width.

    Raises
    ------
    ShardMissing
        No manifest (the directory is not a cache, or collection did not finish).
    CorruptShard
        The manifest cannot be parsed or lacks required entries.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST_FILENAME
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ShardMissing(
                "no activation-cache manifest (not a cache, or collection did not finish)",
                path=path,
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptShard(f"cannot read the manifest: {exc}", path=path) from exc
        try:
            self.d_model = int(manifest["d_model"])
            hooks = manifest["hooks"]
            for entry in hooks.values():
                for shard in entry["shards"]:
                    str(shard["file"])
                    int(shard["n_tokens"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptShard(f"malformed manifest: {exc!r}", path=path) from exc
        self.manifest: dict[str, Any] = manifest
        self.hooks: list[str] = list(hooks)

    def __repr__(self) -> str:
        return (f"ActivationCache({str(self.directory)!r}, hooks={self.hooks}, "
                f"n_tokens={self.n_tokens})")

    def _entry(self, hook: HookPoint | str | None) -> dict[str, Any]:
        name = self.hooks[0] if hook is None else _hook_name(hook)
        try:
            return dict(self.manifest["hooks"][name])
        except KeyError:
            raise ConfigError(
                f"hook {name!r} is not in this cache (it has {self.hooks})", field="hook"
            ) from None

    @property
    def n_tokens(self) -> int:
        """Tokens stored for the first hook (each hook may differ by its outliers)."""
        return self.hook_tokens(None)

    def hook_tokens(self, hook: HookPoint | str | None) -> int:
        """Tokens stored for ``hook`` (the first hook if ``None``)."""
        return int(self._entry(hook)["n_tokens"])

    def shard_paths(self, hook: HookPoint | str) -> list[Path]:
        """The shard files of ``hook``, in order."""
        return [self.directory / s["file"] for s in self._entry(hook)["shards"]]

    def read_shard(self, hook: HookPoint | str, index: int) -> dict[str, torch.Tensor]:
        """Load one shard: ``acts`` fp16 ``[n, d_model]``, ``pos`` and ``doc`` int32 ``[n]``.

        Raises
        ------
        ShardMissing
            The file is not on disk.
        CorruptShard
            The file cannot be read or has the wrong tensors, dtypes or shapes.
        """
        shard = self._entry(hook)["shards"][index]
        path = self.directory / shard["file"]
        if not path.is_file():
            raise ShardMissing("activation shard named in the manifest is not on disk",
                               path=path)
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptShard(f"cannot read activation shard: {exc}", path=path) from exc
        n = int(shard["n_tokens"])
        expected = {"acts": ((n, self.d_model), torch.float16), "pos": ((n,), torch.int32),
                    "doc": ((n,), torch.int32)}
        for key, (shape, dtype) in expected.items():
            value = data.get(key)
            if value is None:
                raise CorruptShard("activation shard lacks a tensor", path=path, tensor=key)
            if tuple(value.shape) != shape or value.dtype != dtype:
                raise CorruptShard(
                    f"expected {dtype} {shape}, got {value.dtype} {tuple(value.shape)}",
                    path=path, tensor=key,
                )
        return {key: data[key] for key in _TENSORS}

    def _iter_shards(
        self, hook: HookPoint | str, split: Split, heldout_fraction: float
    ) -> Iterator[dict[str, torch.Tensor]]:
        if split not in _SPLITS:
            raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}", field="split")
        fraction = _check_fraction(heldout_fraction)
        for index in range(len(self._entry(hook)["shards"])):
            data = self.read_shard(hook, index)
            if split != "all":
                held = torch.from_numpy(heldout_mask(data["doc"], fraction=fraction))
                keep = held if split == "heldout" else ~held
                data = {key: value[keep] for key, value in data.items()}
            yield data

    def tensors(
        self,
        hook: HookPoint | str,
        *,
        split: Split = "all",
        heldout_fraction: float = 0.05,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, torch.Tensor]:
        """Load all tokens of a split into memory.

        Parameters
        ----------
        hook : str or HookPoint
        split : {'train', 'heldout', 'all'}, default 'all'
        heldout_fraction : float, default 0.05
            Share of documents in the held-out split (see :func:`heldout_mask`).
        dtype : torch.dtype, default torch.float32
            Dtype of ``acts`` (``torch.float16`` keeps the stored precision at half the
            memory).

        Returns
        -------
        dict of str to torch.Tensor
            ``acts`` ``[n, d_model]``, ``pos`` and ``doc`` int32 ``[n]``, in shard order.
        """
        parts = list(self._iter_shards(hook, split, heldout_fraction))
        if not parts:
            return {"acts": torch.zeros(0, self.d_model, dtype=dtype),
                    "pos": torch.zeros(0, dtype=torch.int32),
                    "doc": torch.zeros(0, dtype=torch.int32)}
        return {
            "acts": torch.cat([p["acts"] for p in parts]).to(dtype),
            "pos": torch.cat([p["pos"] for p in parts]),
            "doc": torch.cat([p["doc"] for p in parts]),
        }

    def iter_batches(
        self,
        hook: HookPoint | str,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        split: Split = "train",
        heldout_fraction: float = 0.05,
        drop_last: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Yield float32 ``[batch_size, d_model]`` batches of one split, one epoch.

        Parameters
        ----------
        hook : str or HookPoint
        batch_size : int
            Tokens per batch; the last batch may be shorter unless ``drop_last``.
        shuffle : bool, default True
            Shuffle tokens across the whole split with a generator seeded by ``seed``
            (this loads the split into memory in fp16). Without shuffling, shards are
            streamed one at a time in order.
        seed : int, default 0
        split : {'train', 'heldout', 'all'}, default 'train'
        heldout_fraction : float, default 0.05
        drop_last : bool, default False
        """
        _check_positive_int(batch_size, "batch_size")
        if shuffle:
            acts = self.tensors(hook, split=split, heldout_fraction=heldout_fraction,
                                dtype=torch.float16)["acts"]
            generator = torch.Generator().manual_seed(int(seed))
            order = torch.randperm(acts.shape[0], generator=generator)
            for start in range(0, acts.shape[0], batch_size):
                index = order[start : start + batch_size]
                if drop_last and index.numel() < batch_size:
                    return
                yield acts[index].float()
            return
        pending: list[torch.Tensor] = []
        count = 0
        for data in self._iter_shards(hook, split, heldout_fraction):
            pending.append(data["acts"])
            count += data["acts"].shape[0]
            while count >= batch_size:
                flat = torch.cat(pending)
                yield flat[:batch_size].float()
                pending, count = [flat[batch_size:]], flat.shape[0] - batch_size
        if count and not drop_last:
            yield torch.cat(pending).float()

    def mean_norm(
        self, hook: HookPoint | str, *, split: Split = "all", heldout_fraction: float = 0.05
    ) -> float:
        """Mean L2 norm of the stored (fp16) activations of a split.

        For ``split='all'`` the value recorded at collection is returned when present.
        """
        entry = self._entry(hook)
        if split == "all" and entry.get("mean_norm") is not None:
            return float(entry["mean_norm"])
        total, count = 0.0, 0
        for data in self._iter_shards(hook, split, heldout_fraction):
            total += float(data["acts"].float().norm(dim=-1).double().sum())
            count += data["acts"].shape[0]
        if count == 0:
            raise StoreError(f"no tokens in split {split!r} of hook {_hook_name(hook)!r}",
                             path=self.directory)
        return total / count

    def median(
        self,
        hook: HookPoint | str,
        *,
        split: Split = "all",
        heldout_fraction: float = 0.05,
        max_tokens: int = 65536,
    ) -> torch.Tensor:
        """Coordinate-wise median ``[d_model]`` (float32) of the first ``max_tokens`` tokens.

        Raises
        ------
        StoreError
            If the split holds no tokens.
        """
        _check_positive_int(max_tokens, "max_tokens")
        parts, count = [], 0
        for data in self._iter_shards(hook, split, heldout_fraction):
            parts.append(data["acts"][: max_tokens - count])
            count += parts[-1].shape[0]
            if count >= max_tokens:
                break
        if count == 0:
            raise StoreError(f"no tokens in split {split!r} of hook {_hook_name(hook)!r}",
                             path=self.directory)
        return torch.cat(parts).float().median(dim=0).values

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary: model, hooks and token counts, settings."""
        return {
            "directory": str(self.directory),
            "model": self.manifest.get("model"),
            "d_model": self.d_model,
            "hooks": {name: {k: v for k, v in entry.items() if k != "shards"}
                      for name, entry in self.manifest["hooks"].items()},
            "max_length": self.manifest.get("max_length"),
            "settings": self.manifest.get("settings"),
            "thresholds": self.manifest.get("thresholds"),
        }


def open_cache(directory: str | Path) -> ActivationCache:
    """Open an activation cache; see :class:`ActivationCache`."""
    return ActivationCache(directory)
