"""Where an SAE training run's tokens come from: the :class:`TrainingSource` protocol.

Two sources implement it: :class:`CacheSource`, the training split of an activation cache
(:mod:`auditor.sae.activations`) held in memory, and :class:`auditor.sae.stream.ModelStream`,
which runs the model over a corpus as training goes. The trainer asks a source only for
what the protocol declares; a step's batch is a function of the step (and, for a stream,
of the position a checkpoint restores), which is what makes a resumed run exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from auditor.errors import ConfigError, StoreError
from auditor.sae.activations import ActivationCache
from auditor.sae.train_config import TrainConfig

if TYPE_CHECKING:
    from auditor.sae.stream import ModelStream

__all__ = ["CacheSource", "EpochOrder", "TrainingSource", "training_source"]


@runtime_checkable
class TrainingSource(Protocol):
    """What the trainer needs of its data.

    Attributes
    ----------
    d_model : int
        Activation width.
    """

    d_model: int

    def identity(self) -> dict[str, Any]:
        """What decides the tokens served; part of a checkpoint's identity (a resume on
        another identity is refused)."""
        ...

    def record(self) -> dict[str, Any]:
        """What ``training.json`` says of the data (``n_train_tokens``, ``cache``,
        ``cache_model``, ``cache_input``, ``cache_texts`` …)."""
        ...

    def scale_sample(self) -> torch.Tensor:
        """Tokens whose mean norm sets a fresh run's input scale."""
        ...

    def first_tokens(self, n: int) -> torch.Tensor:
        """The first ``n`` tokens served, float32 (the decoder-bias init of a fresh run)."""
        ...

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The ``[batch_size, d_model]`` tokens of (0-based) training step ``step``; steps
        are asked in order. A stream may raise :class:`~auditor.errors.JobCancelled` here,
        before the step, when its cancel token is set."""
        ...

    def plan(self, *, steps: int, batch_size: int) -> None:
        """Say how long the run is (a stream computes no more than it needs)."""
        ...

    def state(self) -> dict[str, Any]:
        """The source's position, JSON-able, for a checkpoint."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Go back to a checkpoint's position (:meth:`state` output)."""
        ...


class EpochOrder:
    """An endless, seeded stream of training tokens: epoch after epoch of permutations.

    Token ``j`` of the stream is row ``perm(j // n)[j % n]`` of ``acts``, where
    ``perm(e)`` is a permutation seeded by ``(seed, e)``. A step's batch depends only on
    the seed and the step, which is what makes resuming exact.
    """

    def __init__(self, acts: torch.Tensor, *, seed: int) -> None:
        self.acts = acts
        self.n = acts.shape[0]
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            # On the CPU whatever the device: the data order must not depend on it.
            generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=generator, device="cpu")
        return self._perms[epoch]

    def take(self, start: int, count: int) -> torch.Tensor:
        parts = []
        position = start
        while count > 0:
            epoch, offset = divmod(position, self.n)
            size = min(count, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + size])
            position += size
            count -= size
        return self.acts[torch.cat(parts)]


class CacheSource:
    """The training split of an activation cache as a :class:`TrainingSource`: loaded into
    memory in fp16, served in the seeded order of :class:`EpochOrder`."""

    def __init__(self, cache: ActivationCache, *, config: TrainConfig) -> None:
        self.cache = cache
        self.acts = cache.tensors(config.hook, split="train",
                                  heldout_fraction=config.heldout_fraction,
                                  dtype=torch.float16)["acts"]
        if int(self.acts.shape[0]) == 0:
            raise StoreError(f"no training tokens for hook {config.hook!r}",
                             path=cache.directory)
        self.d_model = cache.d_model
        self._stream = EpochOrder(self.acts, seed=config.seed)

    def identity(self) -> dict[str, Any]:
        return {"n_train_tokens": int(self.acts.shape[0]),
                "cache_model": self.cache.manifest.get("model"),
                "cache_texts": self.cache.manifest.get("texts")}

    def record(self) -> dict[str, Any]:
        manifest = self.cache.manifest
        return {"n_train_tokens": int(self.acts.shape[0]), "cache": str(self.cache.directory),
                "cache_model": manifest.get("model"),
                # What text the cache holds: the corpus file named at collection, and a
                # fingerprint of the texts themselves (None for caches written before
                # auditor recorded them).
                "cache_input": manifest.get("input"), "cache_texts": manifest.get("texts")}

    def scale_sample(self) -> torch.Tensor:
        return self.acts

    def first_tokens(self, n: int) -> torch.Tensor:
        return self._stream.take(0, min(n, self._stream.n)).float()

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self._stream.take(step * batch_size, batch_size)

    def plan(self, *, steps: int, batch_size: int) -> None:
        return None  # the whole training split is in memory already

    def state(self) -> dict[str, Any]:
        return {}  # the data order is a function of the step

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


def training_source(data: ActivationCache | ModelStream | TrainingSource,
                    config: TrainConfig) -> TrainingSource:
    """The source a run reads: a cache's training split, or a stream checked against the
    run's settings; any other object that implements :class:`TrainingSource` as is.

    Raises
    ------
    ConfigError
        A stream of another hook, held-out fraction or seed; or ``data`` is no source.
    """
    from auditor.sae.stream import ModelStream

    if isinstance(data, ModelStream):
        if data.hook.name != config.hook:
            raise ConfigError(f"the stream reads {data.hook.name!r}, the run trains on "
                              f"{config.hook!r}", field="layer")
        if data.heldout_fraction != config.heldout_fraction or data.seed != config.seed:
            raise ConfigError("the stream's heldout_fraction and seed must be the run's",
                              field="heldout_fraction")
        return data
    if isinstance(data, ActivationCache):
        return CacheSource(data, config=config)
    if isinstance(data, TrainingSource):
        return data
    raise ConfigError(f"data must be an ActivationCache or a ModelStream, got "
                      f"{type(data).__name__}", field="data")
