"""Tests for auditor.sae.stream: training tokens computed by the model as training goes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from auditor.errors import ConfigError, StoreError
from auditor.lm import HookPoint, LoadedModel, load_model
from auditor.sae import ModelStream, StreamSettings, TrainConfig, train_sae
from auditor.sae.activations import collect_activations, heldout_mask, texts_fingerprint
from auditor.sae.train import TRAINING_FILENAME
from auditor.testing import CORPUS

TEXTS = list(CORPUS[:24])
HOOK = HookPoint(1)


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> LoadedModel:
    return load_model(tiny_llama_dir, device="cpu", dtype="float32")


def _stream(lm: LoadedModel, *, texts: list[str] | None = None, heldout: float = 0.25,
            seed: int = 0, **settings: Any) -> ModelStream:
    base: dict[str, Any] = dict(chunk_tokens=96, group_docs=4, max_length=16)
    base.update(settings)
    corpus = TEXTS if texts is None else texts
    return ModelStream(lambda: iter(corpus), lm=lm, hook=HOOK,
                       settings=StreamSettings(**base), heldout_fraction=heldout, seed=seed)


def _rows(acts: torch.Tensor) -> Counter[bytes]:
    """The tokens as a multiset of their fp16 bytes."""
    return Counter(row.numpy().tobytes() for row in acts.to(torch.float16))


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(layer=1, d_sae=64, k=4, batch_size=32, n_tokens=32 * 40,
                                warmup_steps=3, lr=3e-3, log_every=5, checkpoint_every=0,
                                heldout_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_a_pass_serves_exactly_the_tokens_a_cache_trains_on(lm: LoadedModel,
                                                            tmp_path: Path) -> None:
    cache = collect_activations(TEXTS, lm=lm, hooks=[HOOK], out=tmp_path / "cache",
                                max_length=16)
    cached = cache.tensors(HOOK, split="train", heldout_fraction=0.25)["acts"]
    # One chunk larger than the corpus: one whole pass, then a little of the next.
    stream = _stream(lm, chunk_tokens=cached.shape[0] + 1, group_docs=1000)
    served = stream.scale_sample()
    assert stream.position["epoch"] == 0 and stream._next[0] == 1  # wrapped to fill
    held = heldout_mask(torch.arange(len(TEXTS)), fraction=0.25)
    assert 0 < held.sum() < len(TEXTS)  # some documents are held out
    first_pass = _rows(served)
    extra = first_pass - _rows(cached)  # the few tokens taken from the second pass
    assert sum(extra.values()) <= served.shape[0] - cached.shape[0] + 64
    assert _rows(cached) - first_pass == Counter()  # every cached training token served


def test_chunks_are_shuffled_whole_groups_and_the_corpus_repeats(lm: LoadedModel) -> None:
    stream = _stream(lm, chunk_tokens=96, group_docs=4)
    batches = [stream.batch(step, 32) for step in range(30)]
    assert all(b.shape == (32, lm.d_model) and b.dtype == torch.float16 for b in batches)
    assert stream.position["chunk"] > 2 and stream.position["epoch"] >= 1
    assert stream.position["first_doc"] % 4 == 0  # chunks start at whole groups
    assert stream.totals["chunks"] == stream.position["chunk"] + 1
    # The same seed gives the same batches; another seed shuffles otherwise.
    again = _stream(lm, chunk_tokens=96, group_docs=4)
    assert all(torch.equal(again.batch(s, 32), batches[s]) for s in range(30))
    other = _stream(lm, chunk_tokens=96, group_docs=4, seed=1)
    assert not torch.equal(other.batch(0, 32), batches[0])


def test_restore_recomputes_the_chunk_it_was_in(lm: LoadedModel) -> None:
    stream = _stream(lm)
    for step in range(12):  # into the run, past a few chunks
        stream.batch(step, 32)
    state = json.loads(json.dumps(stream.state()))  # as a checkpoint keeps it
    later = [stream.batch(step, 32) for step in range(12, 20)]
    resumed = _stream(lm)
    resumed.restore(state)
    assert all(torch.equal(resumed.batch(s, 32), later[s - 12]) for s in range(12, 20))
    assert resumed.totals["chunks"] == stream.totals["chunks"] + 1  # the one computed again


def test_a_planned_run_computes_only_what_it_needs(lm: LoadedModel) -> None:
    whole = _stream(lm, chunk_tokens=10_000)
    whole.batch(0, 32)
    planned = _stream(lm, chunk_tokens=10_000)
    planned.plan(steps=2, batch_size=32)
    first = planned.scale_sample()
    assert 64 <= first.shape[0] < whole.totals["tokens"]  # whole groups, not 10,000 tokens
    assert planned.batch(1, 32).shape == (32, lm.d_model)
    assert planned.totals["chunks"] == 1
    with pytest.raises(ConfigError, match="less than one batch"):
        planned.plan(steps=2, batch_size=20_000)


class _Stop(Exception):
    pass


def test_streamed_training_learns_and_resumes_exactly(lm: LoadedModel, tmp_path: Path) -> None:
    cfg = _config(checkpoint_every=7, n_tokens=32 * 30)
    full = train_sae(_stream(lm), config=cfg, out=tmp_path / "full", device="cpu")
    assert full.history[-1]["fvu"] < full.history[0]["fvu"]

    def stop_at_17(record: Mapping[str, Any]) -> None:
        if record["step"] == 17:
            raise _Stop

    with pytest.raises(_Stop):
        train_sae(_stream(lm), config=cfg, out=tmp_path / "part", on_step=stop_at_17)
    resumed = train_sae(_stream(lm), config=cfg, out=tmp_path / "part")
    assert resumed.resumed_from == 14
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(resumed.sae, name), getattr(full.sae, name)), name
    assert resumed.history == full.history

    record = json.loads((tmp_path / "full" / TRAINING_FILENAME).read_text())
    assert record["cache"] is None and record["n_train_tokens"] is None
    assert record["cache_texts"] == {"sha256": texts_fingerprint(TEXTS), "docs": len(TEXTS)}
    stream = record["stream"]
    assert stream["chunk_tokens"] == 96 and stream["chunks"] >= 5
    assert stream["tokens"] >= 32 * 30 and stream["forward_seconds"] > 0
    assert record["cache_model"]["weights_sha256"] == lm.weights_sha256
    # Another chunk size serves other batches: its checkpoint is refused.
    with pytest.raises(ConfigError, match="other settings"):
        train_sae(_stream(lm, chunk_tokens=128), config=cfg, out=tmp_path / "part")


def test_stream_errors(lm: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no training tokens"):
        train_sae(_stream(lm, texts=[], heldout=0.0), config=_config(heldout_fraction=0.0),
                  out=tmp_path / "empty")
    # Every one of these documents falls in the held-out bucket.
    held = [t for t, h in zip(TEXTS, heldout_mask(torch.arange(len(TEXTS)), fraction=0.5),
                              strict=True) if h]
    lone = _stream(lm, texts=held[:1], heldout=0.99)
    with pytest.raises(StoreError, match="no training tokens"):
        lone.batch(0, 32)
    with pytest.raises(ConfigError, match="less than one batch"):
        train_sae(_stream(lm, chunk_tokens=16), config=_config(), out=tmp_path / "small")
    with pytest.raises(ConfigError, match=r"reads 'layer1\.resid_post'"):
        train_sae(_stream(lm), config=_config(layer=2), out=tmp_path / "layer")
    with pytest.raises(ConfigError, match="heldout_fraction and seed"):
        train_sae(_stream(lm, seed=3), config=_config(), out=tmp_path / "seed")
    with pytest.raises(ConfigError, match="texts must be strings"):
        _stream(lm, texts=[b"bytes"], heldout=0.0).batch(0, 32)  # type: ignore[list-item]
    for bad in ({"chunk_tokens": 0}, {"group_docs": -1}, {"outlier_factor": 1.0},
                {"max_length": True}):
        with pytest.raises(ConfigError):
            StreamSettings(**bad)
    assert not any((tmp_path / name).exists() for name in ("small", "layer", "seed"))
