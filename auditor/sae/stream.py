"""Training tokens computed by the model as training goes: an SAE trained without a disk cache.

A cache (:mod:`auditor.sae.activations`) costs ``tokens × d_model × 2`` bytes of disk and,
for training, of memory: 1 GB per million tokens at d_model 640, 4 GB at 2,048. A
:class:`ModelStream` keeps only one *chunk* in memory. It reads the corpus in order, skips
the held-out documents (the same ones a cache of that corpus would hold out, by
:func:`auditor.sae.activations.heldout_mask`, so ``auditor sae eval`` on such a cache scores
text the run never saw), runs the rest through the model in groups of ``group_docs``
documents until the chunk holds ``chunk_tokens`` tokens, shuffles the chunk and serves it
as batches. Past the last document the corpus starts again.

The tokens are those a cache would hold (:func:`auditor.sae.activations.forward_batches`:
content tokens only, massive activations left out). A chunk starts at a whole group of
documents, is shuffled by a generator seeded by the run's seed and the chunk's number, and
its place in the run (first document, pass over the corpus, first step) is part of every
checkpoint: a run resumed from a checkpoint computes the chunk it was in once more and goes
on exactly as an uninterrupted run would (on a device whose forward pass is deterministic,
such as the CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch

from auditor.errors import ConfigError, JobCancelled, StoreError
from auditor.progress import Progress, Stage
from auditor.sae.activations import forward_batches, pick_documents, texts_fingerprint

if TYPE_CHECKING:
    from auditor.cancel import CancelToken
    from auditor.lm import HookPoint, LoadedModel

__all__ = ["ModelStream", "StreamSettings"]


@dataclass(frozen=True)
class StreamSettings:
    """How a :class:`ModelStream` turns a corpus into training tokens.

    Parameters
    ----------
    chunk_tokens : int, default 524288
        Tokens computed, held in memory (fp16) and shuffled together; at least one batch.
        Larger chunks mix more documents into each batch.
    group_docs : int, default 256
        Documents run through the model together (a chunk is whole groups); as many as
        a cache's collection reads at a time, so the forward batches are as full.
    max_length : int, default 512
        Window length in tokens (specials included).
    token_budget : int, default 8192
        Padded tokens per forward batch.
    exclude_outliers : bool, default True
        Leave out massive-activation tokens, as a cache does.
    outlier_factor : float, default 5.0
        Their threshold, × the model's median content-token norm.

    Examples
    --------
    >>> StreamSettings.from_dict(StreamSettings(chunk_tokens=4096).to_dict())
    StreamSettings(chunk_tokens=4096, group_docs=256, max_length=512, token_budget=8192, exclude_outliers=True, outlier_factor=5.0)
    """  # noqa: E501

    chunk_tokens: int = 524_288
    group_docs: int = 256
    max_length: int = 512
    token_budget: int = 8192
    exclude_outliers: bool = True
    outlier_factor: float = 5.0

    def __post_init__(self) -> None:
        for name in ("chunk_tokens", "group_docs", "max_length", "token_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        factor = self.outlier_factor
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
            raise ConfigError(f"must be > 1, got {factor!r}", field="outlier_factor")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamSettings:
        """Build from :meth:`to_dict` output."""
        return cls(**dict(d))


class ModelStream:
    """Training batches computed from a corpus by the model, a shuffled chunk at a time.

    Parameters
    ----------
    texts : callable
        Returns a fresh iterable over the corpus's documents, in the same order each time
        (called once per pass over the corpus and once to fingerprint it).
    lm : LoadedModel
        The model (:func:`auditor.lm.load_model`); its device runs the forward passes.
    hook : HookPoint
        Where the SAE reads.
    settings : StreamSettings
    heldout_fraction : float
        Documents skipped as held out (the training run's ``heldout_fraction``).
    seed : int
        Seeds each chunk's shuffle (with the chunk's number).
    source : mapping or None
        Where the texts came from (corpus path and fingerprint), for the run's record.
    progress : bool or Progress, default False
        ``True`` shows a bar (tokens) while a chunk is computed; a
        :class:`~auditor.progress.Progress` gets a stage ``"activations, chunk N"`` per chunk
        instead (tokens computed out of the chunk's size).
    cancel : CancelToken or None
        Checked before each group of documents is computed; when it is set,
        :meth:`batch` raises :class:`~auditor.errors.JobCancelled` and the stream stays at
        the start of the chunk it was computing (a checkpoint of the run resumes it).

    Raises
    ------
    ConfigError
        Invalid settings.

    Notes
    -----
    Nothing is computed until the first :meth:`batch` (or :meth:`first_tokens`), so a
    training run can restore its position from a checkpoint first.
    """

    def __init__(self, texts: Callable[[], Iterable[str]], *, lm: LoadedModel, hook: HookPoint,
                 settings: StreamSettings, heldout_fraction: float, seed: int,
                 source: Mapping[str, Any] | None = None, progress: bool | Progress = False,
                 cancel: CancelToken | None = None) -> None:
        if not isinstance(settings, StreamSettings):
            raise ConfigError(f"settings must be StreamSettings, got {type(settings).__name__}")
        self._texts = texts
        self.lm = lm
        self.hook = hook
        self.settings = settings
        self.heldout_fraction = float(heldout_fraction)
        self.seed = int(seed)
        self.source = None if source is None else dict(source)
        self.progress = progress
        self.cancel = cancel
        self.d_model = int(lm.d_model)
        self.max_length = min(settings.max_length, lm.max_positions)
        # Where the current chunk starts: its number, the pass over the corpus, the index
        # of its first document and the first training step it serves.
        self.position = {"chunk": 0, "epoch": 0, "first_doc": 0, "first_step": 0}
        self.totals = {"chunks": 0, "docs": 0, "tokens": 0, "forward_seconds": 0.0}
        self._forward: Any = None
        self._thresholds: Mapping[str, float] | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._chunk: torch.Tensor | None = None  # shuffled fp16 [n, d_model], on the CPU
        self._next: tuple[int, int] = (0, 0)  # (epoch, first doc) of the chunk after it
        self._reader: tuple[int, int, Iterator[str]] | None = None  # (epoch, next doc, it)
        self._plan: tuple[int, int] | None = None  # (steps, batch size) of the run

    # ------------------------------------------------------------------ identity
    def model_record(self) -> dict[str, Any]:
        """The model, as a cache manifest records it."""
        lm = self.lm
        return {"id": str(lm.model_id), "weights_sha256": lm.weights_sha256,
                "d_model": lm.d_model, "n_layers": lm.n_layers,
                "dtype": str(lm.dtype).removeprefix("torch.")}

    def texts_record(self) -> dict[str, Any]:
        """A fingerprint of the whole corpus's texts and its document count (one read of
        the texts, no model), as a cache of the same corpus would record them."""
        if self._fingerprint is None:
            counter = _Counting(self._texts())
            self._fingerprint = {"sha256": texts_fingerprint(counter), "docs": counter.n}
        return dict(self._fingerprint)

    def identity(self) -> dict[str, Any]:
        """What decides the tokens served: part of a checkpoint's identity."""
        return {"stream": self.settings.to_dict(), "hook": self.hook.name,
                "model": self.model_record(), "texts": self.texts_record()}

    def record(self) -> dict[str, Any]:
        """What ``training.json`` says of the run's data: no cache; the stream's settings
        and totals (chunks, documents and tokens computed, seconds spent computing them,
        a chunk computed again after a resume included);
        the model, the corpus and its texts' fingerprint, under the keys a cached run
        uses."""
        stream = {**self.settings.to_dict(), "max_length": self.max_length,
                  "thresholds": None if self._thresholds is None else dict(self._thresholds),
                  **self.totals}
        return {"n_train_tokens": None, "cache": None, "stream": stream,
                "cache_model": self.model_record(), "cache_input": self.source,
                "cache_texts": self.texts_record()}

    # ------------------------------------------------------------------ position
    def state(self) -> dict[str, Any]:
        """The current chunk's place, for a checkpoint (:meth:`restore` inverts it)."""
        return {**self.position, "totals": dict(self.totals)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Go back to the chunk a checkpoint was in; it is computed again when needed."""
        try:
            self.position = {key: int(state[key]) for key in self.position}
            totals = state.get("totals") or {}
            self.totals = {key: type(value)(totals.get(key, value))
                           for key, value in self.totals.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"checkpoint has no valid stream position: {exc}") from exc
        self._chunk = None

    # ------------------------------------------------------------------ serving
    def plan(self, *, steps: int, batch_size: int) -> None:
        """Say how many steps of ``batch_size`` tokens the run takes: a chunk is then
        computed only as far as the run still needs (in whole document groups), so a short
        run or the last chunk of a long one does not compute ``chunk_tokens`` it will not
        use. A run resumed with the same plan computes the same chunks.

        Raises
        ------
        ConfigError
            ``batch_size`` exceeds ``chunk_tokens``.
        """
        self._check_batch(batch_size)
        self._plan = (int(steps), int(batch_size))

    def scale_sample(self) -> torch.Tensor:
        """The first chunk's tokens, fp16: a fresh run's input scale is their mean norm."""
        self._ensure(0, batch_size=1)
        assert self._chunk is not None
        return self._chunk

    def first_tokens(self, n: int) -> torch.Tensor:
        """The first ``n`` tokens of the first chunk (after its shuffle), float32: for the
        decoder-bias init of a fresh run."""
        self._ensure(0, batch_size=1)
        assert self._chunk is not None
        return self._chunk[:n].float()

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The tokens of training step ``step`` (steps come in order), fp16 on the CPU."""
        self._ensure(step, batch_size=batch_size)
        assert self._chunk is not None
        start = (step - self.position["first_step"]) * batch_size
        return self._chunk[start : start + batch_size]

    def _check_batch(self, batch_size: int) -> None:
        if batch_size > self.settings.chunk_tokens:
            raise ConfigError(f"chunk_tokens={self.settings.chunk_tokens} is less than one "
                              f"batch ({batch_size})", field="chunk_tokens")

    def _ensure(self, step: int, *, batch_size: int) -> None:
        self._check_batch(batch_size)
        while True:
            if self._chunk is None:
                self._load_chunk(batch_size)
            assert self._chunk is not None
            steps = self._chunk.shape[0] // batch_size
            if step < self.position["first_step"] + steps:
                return
            epoch, first_doc = self._next
            self.position = {"chunk": self.position["chunk"] + 1, "epoch": epoch,
                             "first_doc": first_doc,
                             "first_step": self.position["first_step"] + steps}
            self._chunk = None

    def _load_chunk(self, batch_size: int) -> None:
        from tqdm.auto import tqdm

        started = time.perf_counter()
        self._prepare()
        want = self.settings.chunk_tokens
        if self._plan is not None:  # no more than the run still needs
            steps, planned = self._plan
            want = min(want, max(steps - self.position["first_step"], 1) * planned)
        want = max(want, batch_size)
        name = f"activations, chunk {self.position['chunk']}"
        stage = (Stage(self.progress, name, want) if isinstance(self.progress, Progress)
                 else None)
        bar = tqdm(total=want, unit="tok", disable=stage is not None or not self.progress,
                   dynamic_ncols=True, leave=False, desc=name)
        try:
            chunk, epoch, doc = self._compute(want, bar, stage)
        finally:
            bar.close()
        if stage is not None:
            stage.close()
        generator = torch.Generator(device="cpu").manual_seed(
            self.seed * 1_000_003 + self.position["chunk"])
        self._chunk = chunk[torch.randperm(chunk.shape[0], generator=generator, device="cpu")]
        self._next = (epoch, doc)
        self.totals["chunks"] += 1
        self.totals["tokens"] += int(chunk.shape[0])
        self.totals["forward_seconds"] += time.perf_counter() - started

    def _compute(self, want: int, bar: Any,
                 stage: Stage | None) -> tuple[torch.Tensor, int, int]:
        """At least ``want`` tokens from the current chunk's first document on (whole
        groups), and the (pass, document) where the next chunk starts."""
        parts: list[torch.Tensor] = []
        have = 0
        epoch, doc = self.position["epoch"], self.position["first_doc"]
        whole_pass, added = doc == 0, False  # has a whole pass over the corpus given nothing?
        while have < want:
            if self.cancel is not None and self.cancel.cancelled:
                raise JobCancelled(f"cancelled while computing chunk {self.position['chunk']} "
                                   "of the stream")
            group = self._read(epoch, doc)
            if not group:  # past the last document: the next pass over the corpus
                if whole_pass and not added:
                    raise StoreError("the corpus has no training tokens: every document is "
                                     "empty, held out or made only of excluded tokens")
                epoch, doc = epoch + 1, 0
                whole_pass, added = True, False
                continue
            train, _ = pick_documents(group, first=doc, heldout_fraction=self.heldout_fraction,
                                      heldout=False)
            doc += len(group)
            if not train:
                continue
            for batch in forward_batches(train, lm=self.lm, forward=self._forward,
                                         max_length=self.max_length,
                                         token_budget=self.settings.token_budget,
                                         thresholds=self._thresholds):
                acts = batch[self.hook.name][0].to(torch.float16)
                parts.append(acts)
                have += acts.shape[0]
                added = added or acts.shape[0] > 0
                if have > bar.total:  # the group being read overshoots the chunk size
                    bar.total = have
                bar.update(have - bar.n)
                if stage is not None:
                    if stage.total is not None and have > stage.total:
                        stage.set_total(have)
                    stage.update(have, tokens=float(have))
            self.totals["docs"] += len(train)
        return torch.cat(parts), epoch, doc

    def _read(self, epoch: int, doc: int) -> list[str]:
        """The next ``group_docs`` texts from document ``doc`` of pass ``epoch`` (a reader
        left at that place is reused; otherwise the corpus is read up to it)."""
        if self._reader is None or self._reader[:2] != (epoch, doc):
            iterator = iter(self._texts())
            skipped = sum(1 for _ in islice(iterator, doc))
            if skipped < doc:
                return []
            self._reader = (epoch, doc, iterator)
        iterator = self._reader[2]
        group = list(islice(iterator, self.settings.group_docs))
        for text in group:
            if not isinstance(text, str):
                raise ConfigError(f"texts must be strings, got {type(text).__name__}",
                                  field="texts")
        self._reader = (epoch, doc + len(group), iterator)
        return group

    def _prepare(self) -> None:
        """The truncated forward pass and the outlier thresholds, once."""
        if self._forward is not None:
            return
        from auditor.lm import TruncatedForward
        from auditor.outliers import outlier_thresholds

        self._forward = TruncatedForward(self.lm, [self.hook])
        if self.settings.exclude_outliers:
            self._thresholds = outlier_thresholds(
                self.lm, self._forward, factor=float(self.settings.outlier_factor),
                max_length=self.max_length, token_budget=self.settings.token_budget)


class _Counting:
    """Passes texts through and counts them."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.n = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.n += 1
            yield text
