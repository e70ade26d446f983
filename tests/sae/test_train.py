"""Tests for auditor.sae.train: the TopK SAE trainer on small synthetic activation caches."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from auditor.errors import ConfigError
from auditor.sae import SAE, SAEConfig, load_sae
from auditor.sae.activations import ActivationCache, ActivationCacheWriter, open_cache
from auditor.sae.train import TRAINING_FILENAME, TrainConfig, geometric_median, train_sae
from auditor.testing import EMULATED_BF16_WARNING

D = 16
HOOK = "layer0.resid_post"


@pytest.fixture
def one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _synthetic(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of 64 random directions (what an SAE can learn)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(64, D, generator=g)
    codes = (torch.rand(n, 64, generator=g) < 0.05).float() * torch.rand(n, 64, generator=g) * 3
    return codes @ dirs + 0.5


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ActivationCache:
    x = _synthetic()
    n = x.shape[0]
    writer = ActivationCacheWriter(tmp_path_factory.mktemp("cache"), hooks=[HOOK], d_model=D,
                                   shard_tokens=1500)
    writer.add(HOOK, x, pos=torch.arange(n) % 40, doc=torch.arange(n) // 40)
    return open_cache(writer.close())


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(layer=0, d_sae=32, k=4, batch_size=64, n_tokens=64 * 60,
                                warmup_steps=5, lr=3e-3, log_every=5, checkpoint_every=0,
                                heldout_fraction=0.1)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- config
def test_config_round_trip_and_defaults() -> None:
    cfg = _config(auxk_k=8, dead_tokens=1000, checkpoint_every=7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.hook == HOOK and cfg.steps == 60
    default = TrainConfig(layer=2, d_sae=2**16, k=64)
    assert default.learning_rate == pytest.approx(1e-4)
    assert default.resolved_dead_tokens == 500_000
    assert default.resolved_auxk_k(640) == 256 and default.resolved_auxk_k(64) == 32
    assert "checkpoint_every" not in cfg.to_dict(include_runtime=False)


@pytest.mark.parametrize("bad", [
    {"k": 33}, {"k": 0}, {"d_sae": -1}, {"lr": -1.0}, {"decay_start": 1.5},
    {"auxk_alpha": -0.1}, {"n_tokens": 10}, {"point": "mlp_out"}, {"b_dec_init": "median"},
    {"heldout_fraction": 1.0}, {"batch_size": True}, {"dead_tokens": 0},
    {"resample_every": -1}, {"encoder_dtype": "float16"}, {"activation": "jumprelu"},
    {"activation": "batchtopk", "batchtopk_max_k": 3}, {"batchtopk_max_k": 33},
    {"batchtopk_max_k": 0},
])
def test_config_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _config(**bad)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({**_config().to_dict(), "momentum": 0.9})
    with pytest.raises(ConfigError, match="missing"):
        TrainConfig.from_dict({"layer": 0, "k": 4})


def test_lr_schedule() -> None:
    cfg = _config(n_tokens=64 * 100, warmup_steps=10, decay_start=0.8, lr=1.0)
    assert cfg.lr_at(0) == pytest.approx(0.1)
    assert cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(50) == pytest.approx(1.0)
    assert cfg.lr_at(90) == pytest.approx(0.5)
    assert cfg.lr_at(99) == pytest.approx(0.05)


def test_geometric_median_resists_outliers() -> None:
    points = torch.cat([torch.zeros(9, 2), torch.tensor([[1000.0, 1000.0]])])
    assert float(geometric_median(points).norm()) < 1e-3


# --------------------------------------------------------------------------- training
def test_training_reduces_loss_and_saves(cache: ActivationCache, tmp_path: Path) -> None:
    result = train_sae(cache, config=_config(), out=tmp_path / "sae")
    fvus = [h["fvu"] for h in result.history]
    assert len(result.history) == 12
    assert fvus[-1] < 0.6 * fvus[0]
    assert result.fvu == pytest.approx(fvus[-1])
    sae = result.sae
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32), rtol=0, atol=1e-5)
    cfg = sae.cfg
    assert (cfg.activation, cfg.k, cfg.hook_layer, cfg.hook_point) == ("topk", 4, 0, "resid_post")
    assert cfg.apply_b_dec_to_input and cfg.relu_before_topk
    assert cfg.normalize_activations == "constant"
    mean_norm = cache.mean_norm(HOOK, split="train", heldout_fraction=0.1)
    assert cfg.input_scale == pytest.approx(math.sqrt(D) / mean_norm, rel=1e-6)
    # The saved SAE reloads and encodes exactly like the returned one.
    loaded = load_sae(tmp_path / "sae")
    x = cache.tensors(HOOK, split="heldout", heldout_fraction=0.1)["acts"]
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded(x), sae(x))
    assert loaded.sha256 == sae.sha256
    assert (tmp_path / "sae" / TRAINING_FILENAME).is_file()
    # The trained SAE reconstructs held-out data in the original (unscaled) space.
    fvu = float((loaded(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.6


def test_encode_matches_training_forward(cache: ActivationCache, tmp_path: Path) -> None:
    """The SAE's encode conventions are the ones the trainer optimised."""
    sae = train_sae(cache, config=_config(n_tokens=64 * 10), out=tmp_path / "s").sae
    x = cache.tensors(HOOK)["acts"][:200]
    s = sae.cfg.input_scale
    assert s is not None
    pre = torch.relu((x * s - sae.b_dec) @ sae.W_enc + sae.b_enc)
    vals, idx = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter_(1, idx, vals)
    torch.testing.assert_close(sae.encode(x), z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), (z @ sae.W_dec + sae.b_dec) / s, rtol=1e-5, atol=1e-5)


def _init_with_dead_latent(scale: float) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=32, activation="topk", k=4, apply_b_dec_to_input=True,
                        relu_before_topk=True, normalize_activations="constant",
                        input_scale=scale))
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, D, generator=g)
    w /= w.norm(dim=1, keepdim=True)
    with torch.no_grad():
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.W_enc[:, 0] *= 0.01  # latent 0 never makes the top k: dead from the start
    return sae


@pytest.mark.parametrize("alpha", [1 / 32, 0.0])
def test_auxk_revives_dead_latent(cache: ActivationCache, tmp_path: Path, alpha: float) -> None:
    x = cache.tensors(HOOK)["acts"]
    scale = math.sqrt(D) / cache.mean_norm(HOOK)
    init = _init_with_dead_latent(scale)
    assert int((init.encode(x)[:, 0] > 0).sum()) == 0
    cfg = _config(n_tokens=64 * 150, warmup_steps=0, dead_tokens=256, auxk_alpha=alpha,
                  heldout_fraction=0.0, log_every=50)
    result = train_sae(cache, config=cfg, out=tmp_path / "sae", init=init)
    fires = int((result.sae.encode(x)[:, 0] > 0).sum())
    if alpha > 0:
        assert fires > 50
        assert any(h["auxk_loss"] > 0 for h in result.history[:1])
    else:
        assert fires == 0
        assert torch.equal(result.sae.W_enc[:, 0], init.W_enc[:, 0])
        assert result.dead_frac == pytest.approx(1 / 32)


def test_resampling_revives_dead_latent_without_auxk(cache: ActivationCache,
                                                     tmp_path: Path) -> None:
    x = cache.tensors(HOOK)["acts"]
    init = _init_with_dead_latent(math.sqrt(D) / cache.mean_norm(HOOK))
    cfg = _config(n_tokens=64 * 150, warmup_steps=0, dead_tokens=256, auxk_alpha=0.0,
                  heldout_fraction=0.0, log_every=50, resample_every=20)
    result = train_sae(cache, config=cfg, out=tmp_path / "sae", init=init)
    assert result.resamples and result.resamples[0] == {"step": 20, "latents": 1}
    assert all(r["step"] < 120 for r in result.resamples)  # none once the decay starts
    assert int((result.sae.encode(x)[:, 0] > 0).sum()) > 50
    assert not torch.equal(result.sae.W_dec[0], init.W_dec[0])
    torch.testing.assert_close(result.sae.W_dec.norm(dim=1), torch.ones(32))
    saved = json.loads((tmp_path / "sae" / TRAINING_FILENAME).read_text())
    assert saved["resamples"] == result.resamples
    assert saved["libraries"]["torch"] == torch.__version__
    assert saved["config"]["resample_every"] == 20


def test_resamples_at_stops_before_the_decay() -> None:
    cfg = _config(n_tokens=64 * 100, resample_every=25, decay_start=0.8)
    assert [s for s in range(1, 101) if cfg.resamples_at(s)] == [25, 50, 75]
    assert not any(_config(resample_every=0).resamples_at(s) for s in range(1, 61))


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("activation", "resample_every"),
                         [("topk", 0), ("topk", 5), ("batchtopk", 0)])
def test_resume_equals_uninterrupted(cache: ActivationCache, tmp_path: Path,
                                     one_thread: None, activation: str,
                                     resample_every: int) -> None:
    cfg = _config(n_tokens=64 * 40, checkpoint_every=10, keep_checkpoints=2, dead_tokens=128,
                  resample_every=resample_every, activation=activation)
    # With resampling, start from a dead latent so that there is something to resample.
    init = _init_with_dead_latent(math.sqrt(D) / cache.mean_norm(HOOK)) if resample_every else None
    full = train_sae(cache, config=cfg, out=tmp_path / "full", init=init)
    assert full.resumed_from is None

    def stop_at_25(record: Mapping[str, Any]) -> None:
        if record["step"] == 25:
            raise _Stop

    with pytest.raises(_Stop):
        train_sae(cache, config=cfg, out=tmp_path / "part", on_step=stop_at_25, init=init)
    ckpts = sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir())
    assert ckpts == ["step-10", "step-20"]  # keep_checkpoints=2 pruned nothing yet
    files = {p.suffix for p in (tmp_path / "part" / "checkpoints" / "step-20").iterdir()}
    assert files == {".json", ".safetensors"}  # nothing pickled
    resumed = train_sae(cache, config=cfg, out=tmp_path / "part", init=init)
    assert resumed.resumed_from == 20
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(resumed.sae, name), getattr(full.sae, name)), name
    assert resumed.sae.cfg == full.sae.cfg  # the BatchTopK threshold included
    assert resumed.history == full.history
    assert resumed.resamples == full.resamples
    assert bool(full.resamples) == (resample_every > 0)
    assert all(r["step"] % 5 == 0 and r["step"] < 32 for r in full.resamples)
    # A checkpoint made with other settings is refused.
    with pytest.raises(ConfigError, match="other settings"):
        train_sae(cache, config=_config(n_tokens=64 * 40, checkpoint_every=10, lr=1e-3),
                  out=tmp_path / "part", init=init)
    # resume=False starts over and gives the same result.
    again = train_sae(cache, config=cfg, out=tmp_path / "part", resume=False, init=init)
    assert torch.equal(again.sae.W_enc, full.sae.W_enc)


def test_decoder_gradient_parallel_component_removed(cache: ActivationCache) -> None:
    from auditor.sae.trainer import Trainer as _Trainer

    trainer = _Trainer(d_in=D, config=_config())
    x = cache.tensors(HOOK)["acts"][:64]
    trainer.initialise(x)
    seen: list[torch.Tensor] = []
    adam = trainer._adam

    def spy(lr: float) -> None:
        w, grad = trainer.params["W_dec"], trainer.params["W_dec"].grad
        assert grad is not None
        seen.append((grad * w).sum(dim=1))
        adam(lr)

    trainer._adam = spy  # type: ignore[method-assign]
    trainer.step(x, lr=1e-3)
    assert seen and float(seen[0].abs().max()) < 1e-6
    grad = trainer.params["W_dec"].grad
    assert grad is not None and float(grad.abs().max()) > 1e-4  # a real gradient was there


def test_selected_pre_backward_matches_dense_autograd() -> None:
    """The sparse backward of the selected pre-activations equals plain autograd's."""
    from auditor.sae.kernels import gathered_pre as _gathered_pre

    g = torch.Generator().manual_seed(3)
    n, d, m, k = 50, 12, 40, 5
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    upstream = torch.randn(n, k, generator=g, dtype=torch.float64)

    def grads(sparse: bool) -> tuple[torch.Tensor, ...]:
        xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
        dense = torch.addmm(bs, xs, ws.T)
        idx = dense.detach().topk(k, dim=-1).indices
        if sparse:
            vals = _gathered_pre(xs, idx, ws, bs, pre=dense.detach())
        else:
            vals = dense.gather(1, idx)
        vals.backward(upstream)
        assert xs.grad is not None and ws.grad is not None and bs.grad is not None
        return vals.detach(), xs.grad, ws.grad, bs.grad

    for fast, slow in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(fast, slow)
    # The gathering fallback (no dense pre-activations at hand) agrees too.
    xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
    idx = torch.addmm(b, x, w.T).topk(k, dim=-1).indices
    vals = _gathered_pre(xs, idx, ws, bs)
    vals.backward(upstream)
    assert ws.grad is not None
    torch.testing.assert_close(ws.grad, grads(False)[2])


def test_ragged_selection_backward_matches_dense_autograd() -> None:
    """BatchTopK's ragged selection (a varying number of latents per token, some tokens
    with none) has the same values and gradients as plain autograd, and decodes like a
    dense code."""
    from auditor.sae.kernels import bag_offsets as _bag_offsets
    from auditor.sae.kernels import gathered_pre as _gathered_pre
    from auditor.sae.kernels import sparse_decode as _sparse_decode

    g = torch.Generator().manual_seed(4)
    n, d, m = 30, 12, 40
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    mask = torch.rand(n, m, generator=g) < 0.15
    mask[3] = False  # a token with no latent
    rows, latents = mask.nonzero(as_tuple=True)
    upstream = torch.randn(rows.numel(), generator=g, dtype=torch.float64)

    def grads(ragged: bool | None) -> tuple[torch.Tensor, ...]:
        xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
        dense = torch.addmm(bs, xs, ws.T)
        if ragged is None:
            vals = dense[rows, latents]
        else:
            vals = _gathered_pre(xs, latents, ws, bs, rows=rows,
                                 pre=dense.detach() if ragged else None)
        vals.backward(upstream)
        assert xs.grad is not None and ws.grad is not None and bs.grad is not None
        return vals.detach(), xs.grad, ws.grad, bs.grad

    reference = grads(None)
    for ragged in (True, False):
        for fast, slow in zip(grads(ragged), reference, strict=True):
            torch.testing.assert_close(fast, slow)
    values = torch.rand(rows.numel(), generator=g, dtype=torch.float64)
    z = torch.zeros(n, m, dtype=torch.float64)
    z[rows, latents] = values
    decoded = _sparse_decode(latents, values, w, offsets=_bag_offsets(rows, n))
    torch.testing.assert_close(decoded, z @ w)
    assert float(decoded[3].abs().max()) == 0.0


def test_adam_step_is_the_textbook_formula() -> None:
    """The fused update equals Adam written out (bias-corrected, eps outside the sqrt)."""
    from auditor.sae.trainer import _BETAS, _EPS
    from auditor.sae.trainer import Trainer as _Trainer

    trainer = _Trainer(d_in=D, config=_config())
    g = torch.Generator().manual_seed(5)
    for p in trainer.params.values():
        p.data.copy_(torch.randn(p.shape, generator=g))
    expected = {n: p.detach().clone() for n, p in trainer.params.items()}
    m = {n: torch.zeros_like(p) for n, p in expected.items()}
    v = {n: torch.zeros_like(p) for n, p in expected.items()}
    beta1, beta2 = _BETAS
    for t in range(1, 4):
        for n, p in trainer.params.items():
            p.grad = torch.randn(p.shape, generator=g)
            m[n] = beta1 * m[n] + (1 - beta1) * p.grad
            v[n] = beta2 * v[n] + (1 - beta2) * p.grad**2
            denom = v[n].sqrt() / math.sqrt(1 - beta2**t) + _EPS
            expected[n] -= 1e-2 / (1 - beta1**t) * m[n] / denom
        trainer._adam(1e-2)
        assert trainer.adam_step == t
    for n, p in trainer.params.items():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(trainer.exp_avg[n], m[n], rtol=1e-5, atol=1e-7)


# Machine-dependent: where the CPU lacks native bfloat16 the run warns (tested below).
_EMULATED_BF16 = EMULATED_BF16_WARNING


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_on_a_cpu_without_it_warns(cache: ActivationCache, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            native: bool) -> None:
    import auditor.lm.loading as loading

    assert isinstance(loading.native_bfloat16(torch.device("cpu")), bool)  # the real probe
    asked: list[torch.device] = []
    monkeypatch.setattr(loading, "native_bfloat16",
                        lambda device: asked.append(device) or native)
    cfg = _config(encoder_dtype="bfloat16", n_tokens=64 * 2)
    if native:
        train_sae(cache, config=cfg, out=tmp_path / "sae")  # -W error: no warning at all
    else:
        with pytest.warns(RuntimeWarning, match="several times slower than float32"):
            train_sae(cache, config=cfg, out=tmp_path / "sae")
    assert asked and all(device == torch.device("cpu") for device in asked)
    train_sae(cache, config=_config(n_tokens=64 * 2), out=tmp_path / "fp32")  # never warns


@pytest.mark.filterwarnings(_EMULATED_BF16)
def test_bfloat16_encoder_trains_like_float32(cache: ActivationCache, tmp_path: Path) -> None:
    """The bf16 encoder product only rounds the forward values: same descent, close FVU."""
    runs = {dt: train_sae(cache, config=_config(encoder_dtype=dt, checkpoint_every=30),
                          out=tmp_path / dt)
            for dt in ("float32", "bfloat16")}
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    assert bf16.history[-1]["fvu"] < 0.6 * bf16.history[0]["fvu"]
    assert bf16.fvu == pytest.approx(fp32.fvu, rel=0.05)
    assert bf16.sae.W_enc.dtype == torch.float32
    saved = json.loads((tmp_path / "bfloat16" / TRAINING_FILENAME).read_text())
    assert saved["config"]["encoder_dtype"] == "bfloat16"
    # The config is part of the run's identity: a resume with the other dtype is refused.
    with pytest.raises(ConfigError, match="other settings"):
        train_sae(cache, config=_config(encoder_dtype="float32", checkpoint_every=30),
                  out=tmp_path / "bfloat16")


def test_step_with_fewer_positive_than_k_fires_only_positive(cache: ActivationCache) -> None:
    """The top k are taken on the raw pre-activations: picks with pre <= 0 are value 0,
    reconstruct nothing and do not count as firing."""
    from auditor.sae.trainer import Trainer as _Trainer

    trainer = _Trainer(d_in=D, config=_config(auxk_alpha=0.0))
    x = cache.tensors(HOOK)["acts"][:64]
    trainer.initialise(x)
    with torch.no_grad():
        trainer.params["b_enc"].fill_(-1e4)  # nothing is positive ...
        trainer.params["b_enc"][3] = 1e4  # ... but latent 3
    before = trainer.params["W_dec"].detach().clone()
    trainer.step(x, lr=1e-3)
    assert int(trainer.since_fired[3]) == 0
    assert bool((trainer.since_fired[torch.arange(32) != 3] == 64).all())
    moved = (trainer.params["W_dec"].detach() - before).norm(dim=1) > 1e-5  # not rounding
    assert moved.nonzero().flatten().tolist() == [3]


def test_resume_refuses_a_cache_of_other_texts(tmp_path: Path) -> None:
    """Same shapes, same token count, other texts: the checkpoint is not resumed on it."""
    x = _synthetic(n=1000)
    caches = []
    for name in ("a", "b"):
        writer = ActivationCacheWriter(tmp_path / name, hooks=[HOOK], d_model=D)
        writer.add(HOOK, x, pos=torch.arange(1000) % 40, doc=torch.arange(1000) // 40)
        caches.append(open_cache(writer.close(texts={"sha256": f"sha256:{name}", "docs": 25})))
    config = _config(n_tokens=64 * 10, checkpoint_every=5)
    train_sae(caches[0], config=config, out=tmp_path / "run")
    record = json.loads((tmp_path / "run" / TRAINING_FILENAME).read_text())
    assert record["cache_texts"] == {"sha256": "sha256:a", "docs": 25}
    assert record["cache_input"] is None
    with pytest.raises(ConfigError, match="other settings or data"):
        train_sae(caches[1], config=config, out=tmp_path / "run")


# --------------------------------------------------------------------------- BatchTopK
def test_batchtopk_step_keeps_the_batch_top_and_learns_a_threshold(
        cache: ActivationCache) -> None:
    """One step's codes are the batch's n * k largest positive pre-activations (a dense
    reference), tokens use different numbers of latents, and the threshold is the
    smallest kept value."""
    from auditor.sae.trainer import Trainer as _Trainer

    cfg = _config(activation="batchtopk", auxk_alpha=0.0)
    trainer = _Trainer(d_in=D, config=cfg)
    x = cache.tensors(HOOK)["acts"][:64]
    trainer.initialise(x)
    p = {n: t.detach().clone() for n, t in trainer.params.items()}
    pre = torch.relu((x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"])
    boundary = pre.reshape(-1).topk(64 * 4).values.min()
    z = pre * (pre >= boundary)
    expected_fvu = (z @ p["W_dec"] + p["b_dec"] - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    metrics = trainer.step(x, lr=1e-3)
    assert metrics["fvu"] == pytest.approx(float(expected_fvu), rel=1e-5)
    assert trainer.threshold == pytest.approx(float(boundary), rel=1e-6)
    per_token = (z > 0).sum(dim=1)
    assert int(per_token.sum()) == 64 * 4 and int(per_token.min()) != int(per_token.max())
    fired = torch.zeros(32, dtype=torch.bool)
    fired[(z > 0).any(dim=0)] = True
    assert bool((trainer.since_fired[fired] == 0).all())
    assert bool((trainer.since_fired[~fired] == 64).all())
    # The next step moves the threshold by the running mean, not to the new batch's value.
    first = trainer.threshold
    trainer.step(cache.tensors(HOOK)["acts"][64:128], lr=1e-3)
    assert trainer.threshold is not None and trainer.threshold != first


def test_batchtopk_resamples_toward_its_own_reconstruction_error(
        cache: ActivationCache) -> None:
    """Resampled directions are errors of the batch-top codes a step uses, not of each
    token's top k."""
    from auditor.sae.trainer import Trainer as _Trainer

    trainer = _Trainer(d_in=D, config=_config(activation="batchtopk", dead_tokens=64))
    x = cache.tensors(HOOK)["acts"][:64]
    trainer.initialise(x)
    p = {n: t.detach().clone() for n, t in trainer.params.items()}
    pre = torch.relu((x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"])
    z_batch = pre * (pre >= pre.reshape(-1).topk(64 * 4).values.min())
    z_token = pre * (pre >= pre.topk(4, dim=1).values[:, -1:])

    def unit_errors(z: torch.Tensor) -> torch.Tensor:
        error = x - (z @ p["W_dec"] + p["b_dec"])
        return error / error.norm(dim=1, keepdim=True)

    trainer.since_fired[:16] = 64
    assert trainer.resample_dead(x, generator=torch.Generator().manual_seed(0)) == 16
    directions = trainer.params["W_dec"].detach()[:16]
    best_batch = (directions @ unit_errors(z_batch).T).max(dim=1).values
    best_token = (directions @ unit_errors(z_token).T).max(dim=1).values
    torch.testing.assert_close(best_batch, torch.ones(16))
    assert float(best_token.min()) < 0.999
    assert trainer.threshold is None  # resampling does not move the threshold


def test_batchtopk_caps_the_latents_of_one_token(cache: ActivationCache,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A token whose pre-activations dominate the batch keeps at most batchtopk_max_k."""
    import auditor.sae.trainer as trainer_module

    cfg = _config(activation="batchtopk", batchtopk_max_k=6, auxk_alpha=0.0)
    trainer = trainer_module.Trainer(d_in=D, config=cfg)
    x = cache.tensors(HOOK)["acts"][:64].clone()
    trainer.initialise(x)
    x[0] *= 100.0  # every latent that fires on it fires hugely
    per_token: list[torch.Tensor] = []
    decode = trainer_module.sparse_decode

    def spy(indices: torch.Tensor, values: torch.Tensor, w: torch.Tensor, *,
            offsets: torch.Tensor | None = None) -> torch.Tensor:
        assert offsets is not None  # BatchTopK decodes a ragged list
        ends = torch.cat([offsets[1:], torch.tensor([values.numel()])])
        per_token.append(ends - offsets)
        return decode(indices, values, w, offsets=offsets)

    monkeypatch.setattr(trainer_module, "sparse_decode", spy)
    trainer.step(x, lr=1e-3)
    counts = per_token[0]
    assert counts.shape == (64,) and int(counts[0]) == 6
    assert int(counts.sum()) <= 64 * 4 and int(counts.max()) <= 6


def test_batchtopk_training_saves_a_thresholded_sae(cache: ActivationCache,
                                                   tmp_path: Path) -> None:
    cfg = _config(activation="batchtopk", n_tokens=64 * 120)
    result = train_sae(cache, config=cfg, out=tmp_path / "b")
    fvus = [h["fvu"] for h in result.history]
    assert fvus[-1] < 0.6 * fvus[0]
    loaded = load_sae(tmp_path / "b")
    assert loaded.cfg.activation == "batchtopk" and loaded.cfg.k == 4
    threshold = loaded.cfg.batchtopk_threshold
    assert threshold is not None and threshold > 0
    saved = json.loads((tmp_path / "b" / TRAINING_FILENAME).read_text())
    assert saved["config"]["activation"] == "batchtopk"
    # Inference applies the threshold, token by token: codes do not depend on the batch,
    # the mean number of active latents stays near k, and it varies between tokens.
    x = cache.tensors(HOOK, split="heldout", heldout_fraction=0.1)["acts"]
    z = loaded.encode(x)
    torch.testing.assert_close(loaded.encode(x[:7]), z[:7])
    s = loaded.cfg.input_scale
    assert s is not None
    pre = (x * s - loaded.b_dec) @ loaded.W_enc + loaded.b_enc
    torch.testing.assert_close(z, torch.relu(pre) * (pre > threshold), rtol=1e-5, atol=1e-5)
    active = (z > 0).sum(dim=1).float()
    assert 2.0 < float(active.mean()) < 8.0 and float(active.std()) > 0
    fvu = float((loaded(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.6


def test_batchtopk_can_continue_a_topk_sae(cache: ActivationCache, tmp_path: Path) -> None:
    """A TopK SAE is a valid start for BatchTopK (the fine-tune Bussmann et al. describe),
    and a BatchTopK init passes its threshold on."""
    topk = train_sae(cache, config=_config(n_tokens=64 * 20), out=tmp_path / "t").sae
    cfg = _config(activation="batchtopk", n_tokens=64 * 20)
    first = train_sae(cache, config=cfg, out=tmp_path / "b1", init=topk).sae
    assert first.cfg.activation == "batchtopk" and first.cfg.batchtopk_threshold is not None
    from auditor.sae.trainer import Trainer as _Trainer

    trainer = _Trainer(d_in=D, config=cfg)
    trainer.load_weights(first, renormalise=False)
    assert trainer.threshold == first.cfg.batchtopk_threshold


# --------------------------------------------------------------------------- device
@pytest.fixture
def meta_default_device() -> Iterator[None]:
    """Make ``meta`` the default device: a tensor created without naming its device lands
    there, and the first op that mixes it with the run's tensors fails. This is how the
    CUDA path is checked on a CPU-only machine: the trainer must place every tensor on the
    run's device (or deliberately on the CPU), never rely on the default."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_every_tensor_is_placed_on_the_run_device(cache: ActivationCache, tmp_path: Path,
                                                  activation: str) -> None:
    """Init from an SAE, AuxK and resampling on a dead latent, checkpoints, a resume and
    the export: all on ``device='cpu'`` while the default device is ``meta``."""
    init = _init_with_dead_latent(math.sqrt(D) / cache.mean_norm(HOOK))
    cfg = _config(n_tokens=64 * 40, checkpoint_every=10, dead_tokens=128, resample_every=5,
                  activation=activation)
    reference = train_sae(cache, config=cfg, out=tmp_path / "reference", init=init)
    assert reference.resamples  # the resample path ran

    def stop_at_25(record: Mapping[str, Any]) -> None:
        if record["step"] == 25:
            raise _Stop

    torch.set_default_device("meta")
    try:
        with pytest.raises(_Stop):
            train_sae(cache, config=cfg, out=tmp_path / "run", init=init, device="cpu",
                      on_step=stop_at_25)
        resumed = train_sae(cache, config=cfg, out=tmp_path / "run", init=init, device="cpu")
    finally:
        torch.set_default_device(None)
    assert resumed.resumed_from == 20
    assert resumed.sae.W_enc.device == torch.device("cpu")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(resumed.sae, name), getattr(reference.sae, name)), name
    assert resumed.history == reference.history
    saved = json.loads((tmp_path / "run" / TRAINING_FILENAME).read_text())
    assert saved["device"] == "cpu"


def test_load_sae_builds_on_the_asked_device(tmp_path: Path,
                                             meta_default_device: None) -> None:
    with torch.device("cpu"):
        sae = _init_with_dead_latent(1.0)
        sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae", device="cpu")
    assert loaded.W_dec.device == torch.device("cpu")
    assert torch.equal(loaded.W_dec, sae.W_dec)


@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available"),
    ("gpu0", "invalid device"),
])
def test_an_unusable_device_is_refused_before_anything_is_written(
        cache: ActivationCache, tmp_path: Path, device: str, message: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=message) as info:
        train_sae(cache, config=_config(), out=tmp_path / "sae", device=device)
    assert info.value.field == "device"
    assert not (tmp_path / "sae").exists()
