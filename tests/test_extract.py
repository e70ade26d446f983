"""Extraction end to end on a tiny random Llama, against an independent reference.

The reference runs each window alone through the *full* model with
``output_hidden_states=True``, encodes every content token densely and pools in numpy; the
pipeline under test batches, pads, truncates the forward and pools sparsely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from auditor.errors import (
    ConfigError,
    IncompleteStore,
    ProvenanceMismatch,
    RowError,
    SAEModelMismatch,
)
from auditor.extract import ExtractConfig, default_sae_keys, extract_features
from auditor.io import Document, read_documents
from auditor.lm import load_model, tokenize_windows
from auditor.store import read_features, read_metadata, scan_features
from auditor.testing import make_random_sae

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Rain is expected tomorrow morning.",
    "A sparse autoencoder learns an overcomplete dictionary of features. " * 6,  # windows
    "ok",
    "Scientists measured the temperature of the lake every hour, and the price rose.",
    "Children played football in the park until it got dark.",
    "Write a function that returns the sum of two integers.",
]


def _docs(texts=TEXTS):
    return [Document(row=i, doc_id=f"d{i}", text=t, extra={}) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path):
    return load_model(tiny_llama_dir, device="cpu")


@pytest.fixture(scope="module")
def full_model(tiny_llama_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _reference(lm, full_model, sae, texts, *, layer, point, max_length, threshold=None,
               max_windows=None):
    """Per document: dense [n_tokens, d_sae] codes of its pooled tokens, in order."""
    from auditor.lm import tokenize_windows

    per_doc: dict[int, list[np.ndarray]] = {i: [] for i in range(len(texts))}
    excluded = np.zeros(len(texts), dtype=int)
    content = np.zeros(len(texts), dtype=int)
    windows = tokenize_windows(texts, lm.tokenizer, max_length=max_length)
    assert max(w.n_tokens for w in windows) <= max_length
    for w in sorted(windows, key=lambda w: (w.doc_index, w.window_index)):
        if max_windows is not None and w.window_index >= max_windows:
            continue
        ids = torch.tensor([w.input_ids])
        with torch.no_grad():
            hs = full_model(ids, output_hidden_states=True).hidden_states
        acts = hs[layer + 1 if point == "resid_post" else layer][0]
        keep = ~torch.tensor(w.special_mask)
        acts = acts[keep]
        content[w.doc_index] += int(keep.sum())
        if threshold is not None:
            ok = acts.norm(dim=-1) <= threshold
            excluded[w.doc_index] += int((~ok).sum())
            acts = acts[ok]
        with torch.no_grad():
            per_doc[w.doc_index].append(sae.encode(acts).numpy())
    return {d: np.concatenate(v) for d, v in per_doc.items()}, content, excluded


def _pool(codes: np.ndarray, how: str) -> np.ndarray:
    if how == "max":
        return codes.max(0)
    if how == "mean":
        return codes.mean(0)
    if how == "sum":
        return codes.sum(0)
    if how == "count":
        return (codes > 0).sum(0).astype(np.float64)
    return codes[-1]


POOLS = ("max", "mean", "sum", "count", "last")


def test_extract_matches_reference_all_poolings(lm, full_model, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    config = ExtractConfig(poolings=POOLS, max_length=16, shard_size=3, token_budget=64,
                           max_batch_size=4, exclude_outliers=False)
    summary = extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=tmp_path / "s",
                               config=config, input_info={"path": "mem"})
    assert summary.docs == len(TEXTS) and summary.shards_written == 3
    assert summary.windows > len(TEXTS)  # the long document was split
    ref, content, _ = _reference(lm, full_model, sae, TEXTS, layer=1, point="resid_post",
                                 max_length=16)
    frame = scan_features(tmp_path / "s").collect()
    assert frame["doc_id"].to_list() == [f"d{i}" for i in range(len(TEXTS))]
    assert frame["n_tokens"].to_list() == content.tolist()
    for how in POOLS:
        fm = read_features(tmp_path / "s", pooling=how)
        expected = np.stack([_pool(ref[d], how) for d in range(len(TEXTS))])
        np.testing.assert_allclose(fm.X.toarray(), expected, rtol=1e-4, atol=1e-5,
                                   err_msg=how)
    # indices are exactly the features that fired somewhere in the document
    for d, idx in enumerate(frame["layer1.indices"].to_list()):
        assert idx == np.flatnonzero((ref[d] > 0).any(0)).tolist()


def test_max_windows_keeps_only_the_first_windows(lm, full_model, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    config = ExtractConfig(poolings=("max", "mean"), max_length=16, max_windows=1,
                           exclude_outliers=False)
    summary = extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=tmp_path / "s",
                               config=config, input_info={"path": "mem"})
    windows = tokenize_windows(TEXTS, lm.tokenizer, max_length=16)
    long_docs = {w.doc_index for w in windows if w.window_index > 0}
    assert summary.windows == len(TEXTS) and summary.truncated_docs == len(long_docs) > 0
    ref, content, _ = _reference(lm, full_model, sae, TEXTS, layer=1, point="resid_post",
                                 max_length=16, max_windows=1)
    frame = scan_features(tmp_path / "s").collect()
    assert frame["n_tokens"].to_list() == content.tolist()
    fm = read_features(tmp_path / "s", pooling="mean")
    expected = np.stack([ref[d].mean(0) for d in range(len(TEXTS))])
    np.testing.assert_allclose(fm.X.toarray(), expected, rtol=1e-4, atol=1e-5)
    assert read_metadata(tmp_path / "s")["extract"]["max_windows"] == 1
    with pytest.raises(ConfigError, match="max_windows"):
        ExtractConfig(max_windows=0)


def test_several_saes_on_several_hooks_in_one_pass(lm, full_model, tmp_path: Path) -> None:
    saes = [make_random_sae(layer=1, seed=1), make_random_sae(layer=2, point="resid_pre", seed=2),
            make_random_sae(layer=2, seed=3, activation="jumprelu", d_sae=64),
            make_random_sae(layer=2, seed=4, activation="relu", d_sae=48)]
    keys = default_sae_keys(saes)
    assert keys == ["layer1", "layer2_pre", "layer2", "layer2_2"]
    config = ExtractConfig(poolings=("max", "mean"), max_length=24, exclude_outliers=False)
    extract_features(_docs(), lm=lm, saes=dict(zip(keys, saes, strict=True)),
                     out=tmp_path / "s", config=config)
    for key, sae in zip(keys, saes, strict=True):
        point = sae.cfg.hook_point
        ref, _, _ = _reference(lm, full_model, sae, TEXTS, layer=sae.cfg.hook_layer,
                               point=point, max_length=24)
        for how in ("max", "mean"):
            fm = read_features(tmp_path / "s", sae=key, pooling=how)
            assert fm.X.shape == (len(TEXTS), sae.cfg.d_sae)
            expected = np.stack([_pool(ref[d], how) for d in range(len(TEXTS))])
            np.testing.assert_allclose(fm.X.toarray(), expected, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{key} {how}")


def test_outlier_tokens_are_excluded_and_counted(lm, full_model, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    # Pick a threshold inside the token-norm distribution so that some tokens are outliers.
    from auditor.lm import HookPoint, TruncatedForward, collate, tokenize_windows

    windows = tokenize_windows(TEXTS, lm.tokenizer, max_length=32)
    ids, attn, keep = collate(windows, pad_id=lm.tokenizer.pad_token_id, device=lm.device)
    acts = TruncatedForward(lm, [HookPoint(1)])(ids, attn)[HookPoint(1)]
    threshold = float(acts[keep].norm(dim=-1).quantile(0.8))
    config = ExtractConfig(poolings=("max", "count"), max_length=32,
                           outlier_threshold=threshold)
    summary = extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=tmp_path / "s",
                               config=config)
    ref, content, excluded = _reference(lm, full_model, sae, TEXTS, layer=1,
                                        point="resid_post", max_length=32, threshold=threshold)
    assert excluded.sum() > 0
    frame = scan_features(tmp_path / "s").collect()
    assert frame["layer1.n_excluded"].to_list() == excluded.tolist()
    assert summary.excluded_tokens["layer1"] == excluded.sum()
    assert frame["n_tokens"].to_list() == content.tolist()
    fm = read_features(tmp_path / "s", pooling="count")
    expected = np.stack([_pool(ref[d], "count") if len(ref[d]) else np.zeros(96)
                         for d in range(len(TEXTS))])
    np.testing.assert_allclose(fm.X.toarray(), expected)
    assert read_metadata(tmp_path / "s")["exclude"]["outliers"] == {
        "layer1.resid_post": threshold}


def test_outlier_threshold_is_calibrated_and_recorded(lm, tmp_path: Path) -> None:
    from auditor.lm import HookPoint, TruncatedForward, collate, tokenize_windows
    from auditor.outliers import calibration_texts

    sae = make_random_sae(layer=1)
    extract_features(_docs(), lm=lm, saes={"l1": sae}, out=tmp_path / "s",
                     config=ExtractConfig(outlier_factor=1.05, max_length=32))
    meta = read_metadata(tmp_path / "s")
    thr = meta["exclude"]["outliers"]["layer1.resid_post"]
    # the threshold is factor x the median content-token norm on the calibration text
    windows = tokenize_windows(calibration_texts(), lm.tokenizer, max_length=32)
    norms = []
    for w in windows:
        ids, attn, keep = collate([w], pad_id=0, device=lm.device)
        acts = TruncatedForward(lm, [HookPoint(1)])(ids, attn)[HookPoint(1)]
        norms.append(acts[keep].norm(dim=-1))
    assert thr == pytest.approx(1.05 * float(torch.cat(norms).median()), rel=1e-5)
    # the median is cached per (model, window length): a second store agrees exactly
    extract_features(_docs()[:2], lm=lm, saes={"l1": sae}, out=tmp_path / "t",
                     config=ExtractConfig(outlier_factor=1.05, max_length=32))
    assert read_metadata(tmp_path / "t")["exclude"]["outliers"]["layer1.resid_post"] == thr
    # a factor just above 1 x median norm must exclude a good share of tokens
    frame = scan_features(tmp_path / "s").collect()
    assert 0 < frame["l1.n_excluded"].sum() < frame["n_tokens"].sum()


def test_token_output_agrees_with_pooled(lm, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=tmp_path / "s",
                     config=ExtractConfig(poolings=("max",), max_length=16, save_tokens=True,
                                          exclude_outliers=False, shard_size=4))
    tokens = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "s").glob("tokens-*"))])
    frame = scan_features(tmp_path / "s").collect()
    assert tokens.height == frame["n_tokens"].sum()
    for row in frame.iter_rows(named=True):
        t = tokens.filter(pl.col("doc_id") == row["doc_id"])
        assert t["position"].is_sorted()
        best: dict[int, float] = {}
        for idx, val in zip(t["layer1.indices"].to_list(), t["layer1.values"].to_list(),
                            strict=True):
            for i, v in zip(idx, val, strict=True):
                best[i] = max(best.get(i, 0.0), v)
        assert sorted(best) == row["layer1.indices"]
        np.testing.assert_allclose([best[i] for i in row["layer1.indices"]], row["layer1.max"],
                                   rtol=1e-6)


def test_provenance_recorded(lm, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=tmp_path / "s",
                     config=ExtractConfig(poolings=("max", "mean")),
                     input_info={"path": "x.jsonl", "fingerprint": "sha256:abc"})
    meta = read_metadata(tmp_path / "s")
    assert meta["model"]["weights_sha256"] == lm.weights_sha256 and lm.weights_sha256
    assert meta["saes"]["layer1"]["d_sae"] == 96
    assert meta["saes"]["layer1"]["layer"] == 1
    assert meta["pooling"] == ["max", "mean"]
    assert meta["input"]["fingerprint"] == "sha256:abc"
    assert meta["auditor_version"]
    # the library versions that produced the activations, as installed
    from importlib.metadata import version

    assert meta["libraries"]["torch"] == version("torch") == torch.__version__
    assert meta["libraries"]["transformers"] == version("transformers")
    import pyarrow.parquet as pq

    shard = sorted((tmp_path / "s").glob("features-*.parquet"))[0]
    file_meta = json.loads(pq.read_schema(shard).metadata[b"auditor"])
    assert file_meta["saes"] == meta["saes"]


def test_recorded_hashes_match_hashlib(lm, tiny_llama_dir: Path, tmp_path: Path) -> None:
    # The store's provenance names the SAE and model weights by hashes that hashlib,
    # reading the files itself, agrees with.
    import hashlib

    from auditor.sae import load_sae
    from auditor.sae.model import WEIGHTS_FILENAME

    sae_dir = make_random_sae(layer=1).save(tmp_path / "sae")
    extract_features(_docs(TEXTS[:2]), lm=lm, saes={"layer1": load_sae(sae_dir)},
                     out=tmp_path / "s", config=ExtractConfig(poolings=("max",)))
    meta = read_metadata(tmp_path / "s")
    sae_bytes = (sae_dir / WEIGHTS_FILENAME).read_bytes()
    assert meta["saes"]["layer1"]["sha256"] == hashlib.sha256(sae_bytes).hexdigest()
    weights = tiny_llama_dir / "model.safetensors"
    model_hash = hashlib.sha256(
        b"model.safetensors\0" + hashlib.sha256(weights.read_bytes()).digest()).hexdigest()
    assert sorted(p.name for p in tiny_llama_dir.glob("*.safetensors")) == [weights.name]
    assert meta["model"]["weights_sha256"] == model_hash


def test_resume_skips_done_shards(lm, tmp_path: Path) -> None:
    sae = make_random_sae(layer=1)
    config = ExtractConfig(shard_size=2, max_length=32, exclude_outliers=False)
    out = tmp_path / "s"
    first = extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=out, config=config)
    assert first.shards_written == 4
    before = read_features(out).X.toarray()
    # lose shard 1 (file and marker), as if the run had died while writing it
    (out / "features-00001.parquet").unlink()
    for marker in (out / "_done").glob("00001*"):
        marker.unlink()
    again = extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=out, config=config)
    assert (again.shards_written, again.shards_skipped) == (1, 3)
    np.testing.assert_allclose(read_features(out).X.toarray(), before, rtol=1e-6)
    # other settings on the same store are refused, and allowed with overwrite
    other = ExtractConfig(shard_size=2, max_length=32, exclude_outliers=False,
                          poolings=("mean",))
    with pytest.raises(ProvenanceMismatch):
        extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=out, config=other)
    extract_features(_docs(), lm=lm, saes={"layer1": sae}, out=out, config=other,
                     overwrite=True)
    assert read_metadata(out)["pooling"] == ["mean"]


def test_bad_row_keeps_written_shards(lm, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": t}) for t in TEXTS[:5]] + [json.dumps({"text": "   "})]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "s"
    with pytest.raises(RowError) as err:
        extract_features(read_documents(data), lm=lm, saes={"layer1": make_random_sae()},
                         out=out, config=ExtractConfig(shard_size=2, exclude_outliers=False))
    assert err.value.row == 5 and str(data) in str(err.value)
    with pytest.raises(IncompleteStore, match=r"2 shards \(4 documents\)"):
        read_features(out)  # the run stopped: the store says it is not whole
    fm = read_features(out, allow_partial=True)
    assert fm.doc_ids == ["0", "1", "2", "3"]  # two complete shards survive
    assert fm.X.nnz > 0


def test_passthrough_columns(lm, tmp_path: Path) -> None:
    docs = [Document(row=i, doc_id=f"d{i}", text=t, extra={"genre": f"g{i % 2}", "n": i})
            for i, t in enumerate(TEXTS)]
    extract_features(docs, lm=lm, saes={"layer1": make_random_sae()}, out=tmp_path / "s")
    fm = read_features(tmp_path / "s", columns=["genre", "n"])
    assert fm.extra is not None
    assert fm.extra["genre"].to_list() == [f"g{i % 2}" for i in range(len(TEXTS))]


def test_errors(lm, tmp_path: Path) -> None:
    with pytest.raises(SAEModelMismatch, match="W_enc"):
        extract_features(_docs(), lm=lm, saes={"x": make_random_sae(d_in=48)},
                         out=tmp_path / "a")
    with pytest.raises(ConfigError, match="cannot name a column"):
        extract_features(_docs(), lm=lm, saes={"a.b": make_random_sae()}, out=tmp_path / "b")
    with pytest.raises(ConfigError):
        extract_features(_docs(), lm=lm, saes={}, out=tmp_path / "c")
    with pytest.raises(ConfigError, match="max_length"):
        ExtractConfig(max_length=0)
    with pytest.raises(ConfigError, match="unknown pooling"):
        ExtractConfig(poolings=("median",))
    cfg = ExtractConfig(poolings=("max", "last"), max_length=64)
    assert ExtractConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown extract settings"):
        ExtractConfig.from_dict({"pool": "max"})


def test_raw_means_match_reference(lm, full_model, tmp_path: Path) -> None:
    from auditor.lm import tokenize_windows
    from auditor.store import read_raw_means

    saes = {"a": make_random_sae(layer=1), "b": make_random_sae(layer=2, point="resid_pre")}
    extract_features(_docs(), lm=lm, saes=saes, out=tmp_path / "s",
                     config=ExtractConfig(max_length=16, raw_mean=True, exclude_outliers=False,
                                          shard_size=3))
    assert read_metadata(tmp_path / "s")["raw_mean"] == ["layer1.resid_post", "layer2.resid_pre"]
    windows = tokenize_windows(TEXTS, lm.tokenizer, max_length=16)
    for hook, index in (("layer1.resid_post", 2), ("layer2.resid_pre", 2)):
        X, ids = read_raw_means(tmp_path / "s", hook=hook)
        assert ids == [f"d{i}" for i in range(len(TEXTS))] and X.shape == (len(TEXTS), 32)
        sums = np.zeros((len(TEXTS), 32))
        counts = np.zeros(len(TEXTS))
        for w in windows:
            with torch.no_grad():
                hs = full_model(torch.tensor([w.input_ids]), output_hidden_states=True)
            acts = hs.hidden_states[index][0][~torch.tensor(w.special_mask)].numpy()
            sums[w.doc_index] += acts.sum(0)
            counts[w.doc_index] += len(acts)
        np.testing.assert_allclose(X, sums / counts[:, None], rtol=1e-4, atol=1e-5)
    # heavy vectors stay out of `extra` unless asked for
    fm = read_features(tmp_path / "s", sae="a")
    assert fm.extra is not None and not any(c.startswith("raw_mean.") for c in fm.extra.columns)
    with pytest.raises(ConfigError, match="no raw means"):
        read_raw_means(tmp_path / "s", hook="layer7.resid_post")


def test_an_sae_without_a_layer_is_named_plainly(lm, tmp_path: Path) -> None:
    """No ``layerNone`` anywhere: such an SAE is keyed ``sae``, and refused by that name."""
    import dataclasses

    sae = make_random_sae()
    sae.cfg = dataclasses.replace(sae.cfg, hook_layer=None)
    assert default_sae_keys([sae]) == ["sae"]
    with pytest.raises(ConfigError, match="SAE 'sae' does not say which layer") as err:
        extract_features(_docs(), lm=lm, saes={"sae": sae}, out=tmp_path / "s")
    assert "layerNone" not in str(err.value)


def test_a_huge_document_kept_to_its_first_windows_is_not_tokenized_whole(
        lm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_windows, only a verified head of a long text is tokenized; the features
    equal those of tokenizing the whole text and then keeping its first windows."""
    import auditor.extract as extract_module
    import auditor.lm as lm_module

    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "goal", "match", "vote", "law", "x", "yz"]
    huge = " ".join(rng.choice(words, 20_000))  # ~100k characters
    docs = [Document(row=0, doc_id="big", text=huge, extra={}),
            Document(row=1, doc_id="small", text="alpha beta", extra={})]
    config = ExtractConfig(max_length=16, max_windows=2, exclude_outliers=False)
    sae = make_random_sae()
    seen: list[int] = []
    real = lm_module.tokenize_windows

    def spy(texts: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(len(t) for t in texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(lm_module, "tokenize_windows", spy)
    capped = extract_features(docs, lm=lm, saes={"layer1": sae}, out=tmp_path / "a",
                              config=config)
    assert max(seen) < len(huge) // 10  # the head, not the whole text
    monkeypatch.setattr(extract_module, "_head_of", lambda text, tokenizer, tokens: text)
    whole = extract_features(docs, lm=lm, saes={"layer1": sae}, out=tmp_path / "b",
                             config=config)
    assert capped.truncated_docs == whole.truncated_docs == 1
    assert capped.tokens == whole.tokens
    a, b = read_features(tmp_path / "a"), read_features(tmp_path / "b")
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
