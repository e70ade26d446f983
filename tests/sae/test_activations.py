"""Tests for auditor.sae.activations: collecting, storing and reading cached activations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auditor.errors import ConfigError, CorruptShard, ShardMissing
from auditor.lm import HookPoint, LoadedModel, TruncatedForward, load_model
from auditor.sae.activations import (
    MANIFEST_FILENAME,
    ActivationCache,
    ActivationCacheWriter,
    collect_activations,
    heldout_mask,
    open_cache,
    texts_fingerprint,
)
from auditor.testing import CORPUS

TEXTS = list(CORPUS[:24])
HOOKS = [HookPoint(1), HookPoint(2, "resid_pre")]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> LoadedModel:
    return load_model(tiny_llama_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def doc_lengths(lm: LoadedModel) -> list[int]:
    ids = lm.tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


@pytest.fixture(scope="module")
def cache(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> ActivationCache:
    out = tmp_path_factory.mktemp("acts")
    return collect_activations(TEXTS, lm=lm, hooks=HOOKS, out=out, max_length=16,
                               exclude_outliers=False, shard_tokens=100)


def test_collect_counts_shapes_dtypes(cache: ActivationCache, doc_lengths: list[int]) -> None:
    total = sum(doc_lengths)
    assert cache.hooks == [h.name for h in HOOKS]
    assert cache.d_model == 32
    for hook in HOOKS:
        # Specials (BOS) are excluded: exactly the content tokens are stored.
        assert cache.hook_tokens(hook) == total
        paths = cache.shard_paths(hook)
        assert len(paths) == -(-total // 100)
        raw = load_file(str(paths[0]))
        assert raw["acts"].dtype == torch.float16 and raw["acts"].shape == (100, 32)
        assert raw["pos"].dtype == torch.int32 and raw["doc"].dtype == torch.int32
    data = cache.tensors(HOOKS[0])
    assert data["acts"].dtype == torch.float32
    # Positions count content tokens across windows (max_length=16 splits documents).
    for doc, n in enumerate(doc_lengths):
        pos = data["pos"][data["doc"] == doc]
        assert sorted(pos.tolist()) == list(range(n))
    manifest = json.loads((cache.directory / MANIFEST_FILENAME).read_text())
    assert manifest["model"]["weights_sha256"]
    assert manifest["libraries"]["torch"] == torch.__version__
    assert manifest["counts"]["content_tokens"] == total
    assert manifest["counts"]["docs"] == len(TEXTS)


def test_collected_values_match_forward(cache: ActivationCache, lm: LoadedModel) -> None:
    ids = lm.tokenizer(TEXTS[0])["input_ids"][:16]  # first window: <bos> + 15 tokens
    forward = TruncatedForward(lm, HOOKS)
    out = forward(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    for hook in HOOKS:
        data = cache.tensors(hook)
        sel = (data["doc"] == 0) & (data["pos"] < 15)
        order = torch.argsort(data["pos"][sel])
        stored = data["acts"][sel][order]
        expected = out[hook][0, 1:].half().float()
        torch.testing.assert_close(stored, expected, rtol=0, atol=0)


def test_split_deterministic_disjoint(cache: ActivationCache) -> None:
    hook = HOOKS[0]
    train = cache.tensors(hook, split="train", heldout_fraction=0.3)
    held = cache.tensors(hook, split="heldout", heldout_fraction=0.3)
    again = cache.tensors(hook, split="heldout", heldout_fraction=0.3)
    assert torch.equal(held["acts"], again["acts"])
    train_docs, held_docs = set(train["doc"].tolist()), set(held["doc"].tolist())
    assert train_docs and held_docs and not train_docs & held_docs
    assert len(train["doc"]) + len(held["doc"]) == cache.n_tokens
    assert held_docs == {d for d in range(len(TEXTS)) if heldout_mask(np.array([d]),
                                                                       fraction=0.3)[0]}
    batches = list(cache.iter_batches(hook, batch_size=32, seed=1, heldout_fraction=0.3))
    assert all(b.dtype == torch.float32 and b.shape[1] == 32 for b in batches)
    assert sum(b.shape[0] for b in batches) == len(train["doc"])
    same = list(cache.iter_batches(hook, batch_size=32, seed=1, heldout_fraction=0.3))
    other = list(cache.iter_batches(hook, batch_size=32, seed=2, heldout_fraction=0.3))
    assert all(torch.equal(a, b) for a, b in zip(batches, same, strict=True))
    assert not torch.equal(batches[0], other[0])
    ordered = torch.cat(list(cache.iter_batches(hook, batch_size=50, shuffle=False,
                                                split="all")))
    assert torch.equal(ordered, cache.tensors(hook)["acts"])


def test_helpers(cache: ActivationCache) -> None:
    acts = cache.tensors(HOOKS[0])["acts"]
    assert cache.mean_norm(HOOKS[0]) == pytest.approx(float(acts.norm(dim=1).mean()), rel=1e-5)
    assert cache.mean_norm(HOOKS[0], split="train") > 0
    torch.testing.assert_close(cache.median(HOOKS[0]), acts.median(dim=0).values)
    with pytest.raises(ConfigError):
        cache.tensors("layer3.resid_post")


def test_skip_first_and_outliers(lm: LoadedModel, tmp_path: Path,
                                 doc_lengths: list[int]) -> None:
    cache = collect_activations(TEXTS, lm=lm, hooks=[HookPoint(1)], out=tmp_path / "a",
                                max_length=16, exclude_outliers=True, outlier_factor=1.05,
                                skip_first=2)
    manifest = cache.manifest
    threshold = manifest["thresholds"]["layer1.resid_post"]
    excluded = manifest["counts"]["excluded_outliers"]["layer1.resid_post"]
    expected = sum(max(0, n - 2) for n in doc_lengths)
    assert excluded > 0
    assert cache.n_tokens + excluded == expected
    data = cache.tensors(HOOKS[0])
    assert int(data["pos"].min()) >= 2
    assert float(data["acts"].norm(dim=1).max()) <= threshold * 1.001


def test_max_tokens_stops_early(lm: LoadedModel, tmp_path: Path) -> None:
    cache = collect_activations(TEXTS, lm=lm, hooks=[HookPoint(0)], out=tmp_path / "a",
                                max_length=16, exclude_outliers=False, max_tokens=20,
                                token_budget=64)
    assert 20 <= cache.n_tokens < 100
    assert cache.manifest["counts"]["truncated"] is True
    # the fingerprint covers what was read: one chunk, here all 24 texts
    assert cache.manifest["texts"] == {"sha256": texts_fingerprint(TEXTS), "docs": 24}


def test_manifest_names_the_texts(cache: ActivationCache, lm: LoadedModel,
                                  tmp_path: Path) -> None:
    assert cache.manifest["texts"] == {"sha256": texts_fingerprint(TEXTS), "docs": len(TEXTS)}
    assert cache.manifest["input"] is None
    source = {"path": "corpus.jsonl", "fingerprint": "sha256:abc"}
    other = collect_activations(TEXTS[:3][::-1], lm=lm, hooks=[HookPoint(0)],
                                out=tmp_path / "b", max_length=16, exclude_outliers=False,
                                source=source)
    assert other.manifest["input"] == source
    assert other.manifest["texts"]["docs"] == 3
    assert other.manifest["texts"]["sha256"] not in (texts_fingerprint(TEXTS[:3]),
                                                     cache.manifest["texts"]["sha256"])


def test_texts_fingerprint_sees_order_and_boundaries() -> None:
    base = texts_fingerprint(["ab", "c"])
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert base == texts_fingerprint(iter(["ab", "c"]))
    assert base not in {texts_fingerprint(["a", "bc"]), texts_fingerprint(["c", "ab"]),
                        texts_fingerprint(["abc"]), texts_fingerprint(["ab", "c", ""])}
    assert texts_fingerprint(["\ud800"]) != texts_fingerprint(["\ud801"])  # lone surrogates


def test_existing_cache_refused(cache: ActivationCache) -> None:
    with pytest.raises(ConfigError):
        ActivationCacheWriter(cache.directory, hooks=["layer1.resid_post"], d_model=32)


def _small_cache(root: Path) -> ActivationCache:
    writer = ActivationCacheWriter(root, hooks=["layer0.resid_post"], d_model=4, shard_tokens=5)
    writer.add("layer0.resid_post", torch.randn(12, 4), pos=torch.arange(12),
               doc=torch.arange(12) // 3)
    return open_cache(writer.close())


def test_corrupt_and_missing_shards(tmp_path: Path) -> None:
    cache = _small_cache(tmp_path / "c")
    paths = cache.shard_paths("layer0.resid_post")
    assert len(paths) == 3
    paths[1].write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptShard) as info:
        cache.tensors("layer0.resid_post")
    assert info.value.path == str(paths[1])
    paths[1].unlink()
    with pytest.raises(ShardMissing) as missing:
        list(cache.iter_batches("layer0.resid_post", batch_size=4))
    assert missing.value.path == str(paths[1])


def test_wrong_schema_and_no_manifest(tmp_path: Path) -> None:
    cache = _small_cache(tmp_path / "c")
    path = cache.shard_paths("layer0.resid_post")[0]
    from safetensors.torch import save_file

    save_file({"acts": torch.zeros(5, 4), "pos": torch.zeros(5, dtype=torch.int32),
               "doc": torch.zeros(5, dtype=torch.int32)}, str(path))
    with pytest.raises(CorruptShard, match="float16") as info:
        cache.read_shard("layer0.resid_post", 0)
    assert info.value.tensor == "acts"
    (tmp_path / "c" / MANIFEST_FILENAME).unlink()
    with pytest.raises(ShardMissing):
        open_cache(tmp_path / "c")


def test_heldout_only_computes_just_the_held_out_documents(
        lm: LoadedModel, cache: ActivationCache, tmp_path: Path) -> None:
    small = collect_activations(TEXTS, lm=lm, hooks=HOOKS, out=tmp_path / "heldout",
                                max_length=16, exclude_outliers=False, shard_tokens=100,
                                heldout_only=0.25)
    for hook in HOOKS:
        full = cache.tensors(hook, split="heldout", heldout_fraction=0.25)
        only = small.tensors(hook)
        assert 0 < only["acts"].shape[0] < cache.hook_tokens(hook)
        # the same tokens, with the documents' indices in the whole corpus
        for key in ("acts", "pos", "doc"):
            assert torch.equal(only[key], full[key]), key
    assert heldout_mask(small.tensors(HOOKS[0])["doc"], fraction=0.25).all()
    assert small.tensors(HOOKS[0], split="train", heldout_fraction=0.25)["acts"].shape[0] == 0
    # every text was read (and fingerprinted) though few were computed
    assert small.manifest["texts"] == cache.manifest["texts"]
    assert small.manifest["settings"]["heldout_only"] == 0.25
    with pytest.raises(ConfigError):
        collect_activations(TEXTS, lm=lm, hooks=HOOKS, out=tmp_path / "bad", heldout_only=1.0)
