"""Tests for auditor.sae.evaluate: reconstruction metrics and spliced-in cross-entropy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from auditor.errors import ConfigError
from auditor.lm import HookPoint
from auditor.sae import SAE, SAEConfig
from auditor.sae.activations import ActivationCache, ActivationCacheWriter, open_cache
from auditor.sae.evaluate import DENSITY_BIN_EDGES, delta_ce, evaluate_sae
from auditor.testing import CORPUS

HOOK = "layer1.resid_post"


def _cache(root: Path, x: torch.Tensor, pos: torch.Tensor) -> ActivationCache:
    writer = ActivationCacheWriter(root, hooks=[HOOK], d_model=x.shape[1], shard_tokens=7)
    writer.add(HOOK, x, pos=pos, doc=torch.arange(x.shape[0]))
    return open_cache(writer.close())


def _relu_sae(w_enc: torch.Tensor, w_dec: torch.Tensor, *, layer: int = 1,
              point: str = "resid_post") -> SAE:
    d_in, d_sae = w_enc.shape
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, activation="relu", hook_layer=layer,
                        hook_point=point))  # type: ignore[arg-type]
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
    return sae


def _perfect_sae(d: int, **kw: object) -> SAE:
    """relu(x) - relu(-x) == x exactly: d_sae = 2d, W_enc = [I, -I], W_dec = [I; -I]."""
    eye = torch.eye(d)
    return _relu_sae(torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0), **kw)  # type: ignore[arg-type]


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g).half().float()  # exactly representable in fp16
    x[:, 0] = x[:, 0].abs() + 0.5  # latent 0 always fires (dense)
    x[:, 2] = -x[:, 2].abs()  # latent 2 never fires (dead)
    x[:, 1] *= 3.0  # a dominant direction
    x = x.half().float()
    pos = torch.tensor([0, 5, 12, 60, 250] * 8, dtype=torch.int32)
    return x, pos


def test_metrics_against_hand_computed(tmp_path: Path,
                                       data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pos = data
    cache = _cache(tmp_path / "c", x, pos)
    m = evaluate_sae(_relu_sae(torch.eye(3), torch.eye(3)), cache, split="all", batch_size=9)
    xs = x.double().numpy()
    err = xs - np.maximum(xs, 0)  # x_hat = relu(x)
    mu = xs.mean(0)
    centred = xs - mu
    total = (centred**2).sum()
    assert m.n_tokens == 40
    assert m.fvu == pytest.approx((err**2).sum() / total, rel=1e-9)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    u = vecs[:, -1]
    err_perp = err - np.outer(err @ u, u)
    x_perp = centred - np.outer(centred @ u, u)
    assert m.fvu_without_top_direction == pytest.approx(
        (err_perp**2).sum() / (x_perp**2).sum(), rel=1e-9)
    assert m.top_direction_variance == pytest.approx(((centred @ u) ** 2).sum() / total)
    assert m.mse == pytest.approx((err**2).sum() / 40)
    assert m.l0 == pytest.approx(float((xs > 0).sum(1).mean()))
    assert m.dead_frac == pytest.approx(1 / 3)
    fires = (xs > 0).mean(0)
    assert m.dense_frac == pytest.approx(float((fires > 0.1).mean()))
    assert m.density_hist["edges"] == list(DENSITY_BIN_EDGES)
    assert sum(m.density_hist["counts"]) == 2  # the two latents that fire at least once
    assert m.density_hist["counts"][-1] >= 1  # latent 0 fires on every token: log10(1) = 0
    buckets = {"0-9": (0, 10), "10-49": (10, 50), "50-199": (50, 200), "200+": (200, 10**9)}
    for label, (lo, hi) in buckets.items():
        sel = (pos.numpy() >= lo) & (pos.numpy() < hi)
        expected = (err[sel] ** 2).sum() / ((xs[sel] - mu) ** 2).sum()
        assert m.fvu_by_position[label]["n_tokens"] == int(sel.sum())
        assert m.fvu_by_position[label]["fvu"] == pytest.approx(expected, rel=1e-9)
    assert m.to_dict()["fvu"] == m.fvu


def test_fvu_by_group_against_hand_computed(tmp_path: Path,
                                           data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pos = data  # one document per token (doc = arange)
    groups = ["news" if i % 3 else "mail" for i in range(40)]
    m = evaluate_sae(_relu_sae(torch.eye(3), torch.eye(3)), _cache(tmp_path / "c", x, pos),
                     split="all", batch_size=7, doc_groups=groups)
    xs = x.double().numpy()
    err = xs - np.maximum(xs, 0)
    assert sorted(m.fvu_by_group) == ["mail", "news"]
    for name in ("mail", "news"):
        sel = np.array([g == name for g in groups])
        own = xs[sel] - xs[sel].mean(0)  # variance around the group's own mean
        assert m.fvu_by_group[name]["n_tokens"] == int(sel.sum())
        assert m.fvu_by_group[name]["fvu"] == pytest.approx(
            (err[sel] ** 2).sum() / (own**2).sum(), rel=1e-9)
    assert evaluate_sae(_relu_sae(torch.eye(3), torch.eye(3)), _cache(tmp_path / "d", x, pos),
                        split="all").fvu_by_group == {}


def test_fvu_by_group_needs_a_group_per_document(
        tmp_path: Path, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pos = data
    cache = _cache(tmp_path / "c", x, pos)
    with pytest.raises(ConfigError, match="names 39 documents but the cache holds document 39"):
        evaluate_sae(_perfect_sae(3), cache, split="all", doc_groups=["a"] * 39)
    with pytest.raises(ConfigError, match="one per document"):
        evaluate_sae(_perfect_sae(3), cache, split="all", doc_groups="abc")


def test_perfect_sae_has_zero_fvu(tmp_path: Path, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pos = data
    m = evaluate_sae(_perfect_sae(3), _cache(tmp_path / "c", x, pos), split="all")
    assert m.fvu == 0.0 and m.fvu_without_top_direction == 0.0
    assert m.l0 == pytest.approx(3.0)  # one of each +/- pair per coordinate
    assert m.dead_frac == pytest.approx(2 / 6)  # -x0 and +x2 never fire


def test_split_and_hook_resolution(tmp_path: Path,
                                   data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, pos = data
    cache = _cache(tmp_path / "c", x, pos)
    held = evaluate_sae(_perfect_sae(3), cache, heldout_fraction=0.3)
    assert held.split == "heldout" and 0 < held.n_tokens < 40 and held.hook == HOOK
    with pytest.raises(ConfigError):
        evaluate_sae(_perfect_sae(3, layer=2), cache)


# --------------------------------------------------------------------------- delta CE
@pytest.fixture(scope="module")
def causal_lm(tiny_llama_dir: Path) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True)
    return model, tokenizer


TEXTS = list(CORPUS[:6])


@pytest.mark.parametrize("point", ["resid_post", "resid_pre"])
def test_delta_ce_perfect_and_zero(causal_lm: tuple[Any, Any], point: str) -> None:
    model, tokenizer = causal_lm
    hook = HookPoint(1, point)  # type: ignore[arg-type]
    perfect = delta_ce(_perfect_sae(32), model, tokenizer, TEXTS, hook=hook, max_length=16,
                       batch_size=4)
    assert perfect.delta_ce == 0.0
    assert perfect.loss_recovered == 1.0
    assert abs(perfect.ce_zero - perfect.ce_clean) > 1e-3  # ablation changes the loss
    zeros = _relu_sae(torch.eye(32), torch.zeros(32, 32), point=point)
    ablated = delta_ce(zeros, model, tokenizer, TEXTS, hook=hook, max_length=16,
                       batch_size=4)
    assert ablated.ce_sae == ablated.ce_zero
    assert ablated.loss_recovered == 0.0
    assert ablated.ce_clean == perfect.ce_clean
    assert ablated.to_dict()["hook"] == hook.name


def test_delta_ce_clean_matches_model_loss(causal_lm: tuple[Any, Any]) -> None:
    model, tokenizer = causal_lm
    text = TEXTS[1]
    m = delta_ce(_perfect_sae(32), model, tokenizer, [text], max_length=64)
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        reference = float(model(input_ids=ids, labels=ids).loss)
    assert m.n_targets == ids.shape[1] - 1
    assert m.ce_clean == pytest.approx(reference, rel=1e-5)


def test_delta_ce_keeps_bos_clean(causal_lm: tuple[Any, Any]) -> None:
    """Zero-ablating content positions must not touch BOS: a one-token text scores BOS only."""
    model, tokenizer = causal_lm
    zeros = _relu_sae(torch.eye(32), torch.zeros(32, 32))
    m = delta_ce(zeros, model, tokenizer, ["x"], max_length=8)
    # The only target ("x") is predicted from BOS, which stays clean in every run.
    assert m.n_targets == 1 and m.ce_zero == m.ce_clean and m.n_patched == 1


def test_delta_ce_never_holds_full_logits(causal_lm: tuple[Any, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The vocabulary projection sees at most _CE_CHUNK positions at once, the model's own
    logits are one position per window, and the loss equals the full-logits path."""
    import auditor.sae.evaluate as ev

    model, tokenizer = causal_lm
    zeros = _relu_sae(torch.eye(32), torch.zeros(32, 32))
    full = {}
    monkeypatch.setattr(ev, "_final_norm", lambda m: None)
    full["m"] = delta_ce(zeros, model, tokenizer, TEXTS, max_length=16, batch_size=4)
    monkeypatch.undo()
    monkeypatch.setattr(ev, "_CE_CHUNK", 3)
    rows: list[int] = []
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[-2]
                                                                     if a[0].dim() == 3
                                                                     else a[0].shape[0]))
    try:
        chunked = delta_ce(zeros, model, tokenizer, TEXTS, max_length=16, batch_size=4)
    finally:
        handle.remove()
    assert max(rows) <= 3
    for key in ("ce_clean", "ce_sae", "ce_zero"):
        assert getattr(chunked, key) == pytest.approx(getattr(full["m"], key), rel=1e-5)


def test_delta_ce_applies_gemma_soft_capping() -> None:
    """A tiny Gemma 3 with logit soft-capping: the chunked clean loss equals the model's."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=16,
                              final_logit_softcapping=2.0, sliding_window=8)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    ids = torch.randint(3, 64, (1, 12))

    from auditor.sae import evaluate as ev

    assert ev._final_norm(model) is not None
    hidden = {}
    handle = ev._final_norm(model).register_forward_hook(
        lambda m, a, out: hidden.__setitem__("h", out))
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids)
    handle.remove()
    targets = torch.ones(1, 11, dtype=torch.bool)
    total = ev._ce_chunked(model, hidden["h"][:, :-1][targets], ids[:, 1:][targets])
    assert total / 11 == pytest.approx(float(reference.loss), rel=1e-5)
