"""Tests for auditor.sae.formats: every layout, written by hand with NumPy, loaded back.

Each writer below produces the exact on-disk layout of one public format from random
NumPy arrays in that format's stored orientation. The reference encoders use the raw
arrays in that orientation too, so a transposition bug in a loader cannot cancel out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from auditor.errors import ConfigError, SAEFormatError
from auditor.sae import FORMATS, SAEConfig, convert_sae, detect_format, load_sae
from tests.sae.test_model import np_activate

D_IN, D_SAE = 20, 80
RNG_SEED = 7


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed + sum(shape))
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def x_batch(n: int = 40) -> np.ndarray:
    return rand(n, D_IN, seed=99, scale=2.0) + 0.3


def check_encode(path: Path, ref: np.ndarray, x: np.ndarray, **kwargs: Any) -> None:
    sae = load_sae(path, **kwargs)
    out = sae.encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert ((out != 0) == (ref != 0)).all()


# --------------------------------------------------------------------------- writers
def write_qwenscope(directory: Path, layer: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Qwen-Scope: plain state dict, W_enc [d_sae, d_in], W_dec [d_in, d_sae]."""
    arrays = {
        "W_enc": rand(D_SAE, D_IN, seed=seed, scale=D_IN**-0.5),
        "W_dec": rand(D_IN, D_SAE, seed=seed + 1),
        "b_enc": rand(D_SAE, seed=seed + 2, scale=0.3),
        "b_dec": rand(D_IN, seed=seed + 3),
    }
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(
        {name: torch.from_numpy(a) for name, a in arrays.items()},
        directory / f"layer{layer}.sae.pt",
    )
    return arrays


def qwen_reference(arrays: dict[str, np.ndarray], x: np.ndarray, k: int) -> np.ndarray:
    pre = x.astype(np.float64) @ arrays["W_enc"].T.astype(np.float64) + arrays["b_enc"]
    return np_activate(pre, activation="topk", k=k)


def write_saelens(
    directory: Path, cfg: dict[str, Any], *, threshold: np.ndarray | None = None, **extra: Any
) -> dict[str, np.ndarray]:
    """SAELens: cfg.json + sae_weights.safetensors, W_enc [d_in, d_sae]."""
    arrays = {
        "W_enc": rand(D_IN, D_SAE, seed=10, scale=D_IN**-0.5),
        "W_dec": rand(D_SAE, D_IN, seed=11),
        "b_enc": rand(D_SAE, seed=12, scale=0.3),
        "b_dec": rand(D_IN, seed=13),
    }
    if threshold is not None:
        arrays["threshold"] = threshold.astype(np.float32)
    arrays.update(extra)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(directory / "sae_weights.safetensors"))
    (directory / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE, **cfg}))
    return arrays


def saelens_pre(
    arrays: dict[str, np.ndarray], x: np.ndarray, *, apply_b_dec: bool, rescale: bool = False
) -> np.ndarray:
    x = x.astype(np.float64)
    if apply_b_dec:
        x = x - arrays["b_dec"]
    pre = x @ arrays["W_enc"] + arrays["b_enc"]
    if rescale:
        pre = pre * np.linalg.norm(arrays["W_dec"].astype(np.float64), axis=1)
    return pre


def write_gemmascope(directory: Path) -> dict[str, np.ndarray]:
    """Gemma Scope: params.npz, W_enc [d_in, d_sae], JumpReLU threshold."""
    arrays = {
        "W_enc": rand(D_IN, D_SAE, seed=20, scale=D_IN**-0.5),
        "W_dec": rand(D_SAE, D_IN, seed=21),
        "b_enc": rand(D_SAE, seed=22, scale=0.3),
        "b_dec": rand(D_IN, seed=23),
        "threshold": np.abs(rand(D_SAE, seed=24, scale=0.5)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "params.npz", **arrays)
    return arrays


def jumprelu_reference(arrays: dict[str, np.ndarray], x: np.ndarray, w_enc: str) -> np.ndarray:
    pre = x.astype(np.float64) @ arrays[w_enc].astype(np.float64) + arrays["b_enc"]
    return np_activate(pre, activation="jumprelu", threshold=arrays["threshold"])


def write_gemmascope2(directory: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gemma Scope 2: params.safetensors (lowercase w_enc [d_in, d_sae]) + config.json."""
    arrays = {
        "w_enc": rand(D_IN, D_SAE, seed=30, scale=D_IN**-0.5),
        "w_dec": rand(D_SAE, D_IN, seed=31),
        "b_enc": rand(D_SAE, seed=32, scale=0.3),
        "b_dec": rand(D_IN, seed=33),
        "threshold": np.abs(rand(D_SAE, seed=34, scale=0.5)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(directory / "params.safetensors"))
    if config is None:
        config = {
            "architecture": "jump_relu",
            "width": D_SAE,
            "model_name": "gemma-3-1b-pt",
            "hf_hook_point_in": "model.layers.7.output",
        }
    (directory / "config.json").write_text(json.dumps(config))
    return arrays


def write_sparsify(directory: Path, k: int = 6, seed: int = 40) -> dict[str, np.ndarray]:
    """sparsify: cfg.json + sae.safetensors, encoder.weight [d_sae, d_in], W_dec [d_sae, d_in]."""
    arrays = {
        "encoder.weight": rand(D_SAE, D_IN, seed=seed, scale=D_IN**-0.5),
        "encoder.bias": rand(D_SAE, seed=seed + 1, scale=0.3),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2),
        "b_dec": rand(D_IN, seed=seed + 3, scale=0.5),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(directory / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "expansion_factor": 4,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
    }
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return arrays


def sparsify_reference(arrays: dict[str, np.ndarray], x: np.ndarray, k: int) -> np.ndarray:
    sae_in = x.astype(np.float64) - arrays["b_dec"]
    pre = sae_in @ arrays["encoder.weight"].T.astype(np.float64) + arrays["encoder.bias"]
    return np_activate(pre, activation="topk", k=k, relu_first=True)


# --------------------------------------------------------------------------- qwenscope
RELEASE = "SAE-Res-Qwen3.5-2B-W32K-L0_5"


def test_qwenscope_file_with_release_name(tmp_path: Path) -> None:
    arrays = write_qwenscope(tmp_path / RELEASE, layer=3)
    path = tmp_path / RELEASE / "layer3.sae.pt"
    assert detect_format(path) == "qwenscope"
    assert detect_format(path.parent) == "qwenscope"
    x = x_batch()
    check_encode(path, qwen_reference(arrays, x, k=5), x)
    sae = load_sae(path)
    assert sae.cfg.k == 5 and sae.cfg.activation == "topk"
    assert sae.cfg.hook_layer == 3 and sae.cfg.hook_point == "resid_post"
    assert not sae.cfg.apply_b_dec_to_input and sae.cfg.normalize_activations == "none"
    assert sae.cfg.source_format == "qwenscope"
    assert sae.cfg.source_name == RELEASE and sae.cfg.model_name == "Qwen3.5-2B"
    assert sae.source_path == str(path)


def test_qwenscope_release_name_in_hf_cache_path(tmp_path: Path) -> None:
    directory = tmp_path / "models--Qwen--SAE-Res-Qwen3.5-2B-W32K-L0_7" / "snapshots" / "abc123"
    arrays = write_qwenscope(directory, layer=11)
    x = x_batch()
    check_encode(directory, qwen_reference(arrays, x, k=7), x)
    assert load_sae(directory).cfg.hook_layer == 11


def test_qwenscope_needs_k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = write_qwenscope(tmp_path / "plain", layer=0)
    with pytest.raises(SAEFormatError, match=r"; set k$") as info:
        load_sae(tmp_path / "plain" / "layer0.sae.pt")
    assert "layer0.sae.pt" in str(info.value) and info.value.field == "k"
    # the command line names its flag instead
    from auditor.cli import main

    assert main(["sae", "info", str(tmp_path / "plain" / "layer0.sae.pt")]) != 0
    err = capsys.readouterr().err
    assert err.rstrip().endswith("; use --k") and "k=" not in err
    x = x_batch()
    check_encode(tmp_path / "plain", qwen_reference(arrays, x, k=9), x, k=9)


def test_qwenscope_explicit_k_overrides_release(tmp_path: Path) -> None:
    arrays = write_qwenscope(tmp_path / RELEASE, layer=3)
    x = x_batch()
    check_encode(tmp_path / RELEASE, qwen_reference(arrays, x, k=2), x, k=2)


def test_qwenscope_directory_with_several_layers(tmp_path: Path) -> None:
    directory = tmp_path / RELEASE
    write_qwenscope(directory, layer=2, seed=0)
    arrays = write_qwenscope(directory, layer=12, seed=50)
    with pytest.raises(SAEFormatError, match=r"; set layer$"):
        load_sae(directory)
    x = x_batch()
    check_encode(directory, qwen_reference(arrays, x, k=5), x, layer=12)
    assert load_sae(directory, layer=12).cfg.hook_layer == 12
    with pytest.raises(SAEFormatError, match="layer5"):
        load_sae(directory, layer=5)
    with pytest.raises(ConfigError):
        load_sae(directory / "layer2.sae.pt", layer=12)


# --------------------------------------------------------------------------- saelens
def test_saelens_topk_v6_config(tmp_path: Path) -> None:
    cfg = {
        "architecture": "topk",
        "k": 6,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "rescale_acts_by_decoder_norm": True,
        "dtype": "float32",
        "meta": {"hook_name": "blocks.9.hook_resid_pre", "model_name": "gpt2"},
    }
    arrays = write_saelens(tmp_path, cfg)
    assert detect_format(tmp_path) == "saelens"
    assert detect_format(tmp_path / "sae_weights.safetensors") == "saelens"
    x = x_batch()
    pre = saelens_pre(arrays, x, apply_b_dec=True, rescale=True)
    check_encode(tmp_path, np_activate(pre, activation="topk", k=6), x)
    sae = load_sae(tmp_path)
    assert sae.cfg.hook_layer == 9 and sae.cfg.hook_point == "resid_pre"
    assert sae.cfg.model_name == "gpt2" and sae.cfg.rescale_acts_by_decoder_norm
    # decode divides the latents by the decoder norms again (SAELens convention)
    z = sae.encode(torch.from_numpy(x)).numpy().astype(np.float64)
    norms = np.linalg.norm(arrays["W_dec"].astype(np.float64), axis=1)
    ref = (z / norms) @ arrays["W_dec"] + arrays["b_dec"]
    np.testing.assert_allclose(sae.decode(torch.from_numpy(z)).numpy(), ref, atol=1e-4)


def test_saelens_jumprelu(tmp_path: Path) -> None:
    threshold = np.abs(rand(D_SAE, seed=3, scale=0.5))
    cfg = {
        "architecture": "jumprelu",
        "apply_b_dec_to_input": False,
        "hook_name": "blocks.4.hook_resid_post",
    }
    arrays = write_saelens(tmp_path, cfg, threshold=threshold)
    x = x_batch()
    pre = saelens_pre(arrays, x, apply_b_dec=False)
    check_encode(tmp_path, np_activate(pre, activation="jumprelu", threshold=threshold), x)
    sae = load_sae(tmp_path)
    assert sae.cfg.activation == "jumprelu" and sae.cfg.hook_layer == 4


def test_saelens_standard_with_layer_norm_and_default_b_dec(tmp_path: Path) -> None:
    cfg = {"architecture": "standard", "normalize_activations": "layer_norm"}
    arrays = write_saelens(tmp_path, cfg)
    x = x_batch().astype(np.float64)
    normed = x - x.mean(axis=1, keepdims=True)
    normed = normed / (normed.std(axis=1, ddof=1, keepdims=True) + 1e-5)
    pre = saelens_pre(arrays, normed, apply_b_dec=True)  # SAELens defaults to True
    check_encode(tmp_path, np_activate(pre, activation="relu"), x.astype(np.float32))
    sae = load_sae(tmp_path, layer=2)
    assert sae.cfg.activation == "relu" and sae.cfg.apply_b_dec_to_input
    assert sae.cfg.hook_layer == 2


def test_saelens_pre_6_topk_config(tmp_path: Path) -> None:
    cfg = {
        "architecture": "standard",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "hook_point": "blocks.1.hook_resid_post",
        "hook_point_layer": 1,
        "apply_b_dec_to_input": False,
        "normalize_activations": False,
    }
    arrays = write_saelens(tmp_path, cfg)
    x = x_batch()
    pre = saelens_pre(arrays, x, apply_b_dec=False)
    check_encode(tmp_path, np_activate(pre, activation="topk", k=4), x)
    assert load_sae(tmp_path).cfg.hook_layer == 1


def test_saelens_batchtopk_saved_with_shared_threshold(tmp_path: Path) -> None:
    threshold = np.full(D_SAE, 0.35, dtype=np.float32)
    cfg = {"architecture": "batchtopk", "k": 5, "apply_b_dec_to_input": False}
    arrays = write_saelens(tmp_path, cfg, threshold=threshold)
    sae = load_sae(tmp_path)
    assert sae.cfg.activation == "batchtopk"
    assert sae.cfg.batchtopk_threshold == pytest.approx(0.35)
    x = x_batch()
    pre = saelens_pre(arrays, x, apply_b_dec=False)
    check_encode(tmp_path, np_activate(pre, activation="jumprelu", threshold=0.35), x)


def test_saelens_batchtopk_without_threshold_runs_topk(tmp_path: Path) -> None:
    cfg = {"architecture": "matryoshka_batchtopk", "k": 3, "apply_b_dec_to_input": True}
    arrays = write_saelens(tmp_path, cfg)
    x = x_batch()
    pre = saelens_pre(arrays, x, apply_b_dec=True)
    check_encode(tmp_path, np_activate(pre, activation="topk", k=3), x)


def test_saelens_norm_scaling_factor_and_finetuning_scale(tmp_path: Path) -> None:
    scale = np.abs(rand(D_SAE, seed=5)) + 0.5
    cfg = {
        "architecture": "standard",
        "normalize_activations": "expected_average_only_in",
        "norm_scaling_factor": 0.25,
        "apply_b_dec_to_input": True,
    }
    arrays = write_saelens(tmp_path, cfg, scaling_factor=scale.astype(np.float32))
    x = x_batch()
    pre = saelens_pre(arrays, x.astype(np.float64) * 0.25, apply_b_dec=True)
    check_encode(tmp_path, np_activate(pre, activation="relu"), x)
    sae = load_sae(tmp_path)
    assert sae.cfg.normalize_activations == "constant" and sae.cfg.input_scale == 0.25
    z = np.maximum(pre, 0)
    ref = ((z * scale) @ arrays["W_dec"] + arrays["b_dec"]) / 0.25
    np.testing.assert_allclose(sae.decode(torch.from_numpy(z)).numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        {"architecture": "gated"},
        {"architecture": "standard", "activation_fn": "tanh-relu"},
        {"architecture": "standard", "normalize_activations": "constant_norm_rescale"},
        {"architecture": "standard", "normalize_activations": "expected_average_only_in"},
        {"architecture": "standard", "hook_name": "blocks.3.hook_mlp_out"},
        {"architecture": "standard", "hook_name": "blocks.3.attn.hook_z"},
    ],
)
def test_saelens_unsupported(tmp_path: Path, cfg: dict[str, Any]) -> None:
    write_saelens(tmp_path, cfg)
    with pytest.raises(SAEFormatError) as info:
        load_sae(tmp_path)
    assert "cfg.json" in str(info.value)


# --------------------------------------------------------------------------- gemma scope
def test_gemmascope_npz(tmp_path: Path) -> None:
    directory = tmp_path / "gemma-scope-2b-pt-res" / "layer_12" / "width_16k" / "average_l0_71"
    arrays = write_gemmascope(directory)
    assert detect_format(directory) == "gemmascope"
    assert detect_format(directory / "params.npz") == "gemmascope"
    x = x_batch()
    check_encode(directory, jumprelu_reference(arrays, x, "W_enc"), x)
    sae = load_sae(directory / "params.npz")
    assert sae.cfg.hook_layer == 12 and sae.cfg.activation == "jumprelu"
    assert sae.cfg.source_name == "gemma-scope-2b-pt-res"
    assert not sae.cfg.apply_b_dec_to_input


def test_gemmascope_without_layer_in_path(tmp_path: Path) -> None:
    write_gemmascope(tmp_path / "sae")
    assert load_sae(tmp_path / "sae").cfg.hook_layer is None
    assert load_sae(tmp_path / "sae", layer=5).cfg.hook_layer == 5


def test_gemmascope_mlp_release_is_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "average_l0_9"
    write_gemmascope(directory)
    with pytest.raises(SAEFormatError, match="residual"):
        load_sae(directory)


def test_gemmascope2_safetensors(tmp_path: Path) -> None:
    directory = tmp_path / "gemma-scope-2-1b-pt" / "resid_post" / "layer_7_width_16k_l0_small"
    arrays = write_gemmascope2(directory)
    assert detect_format(directory) == "gemmascope2"
    assert detect_format(directory / "params.safetensors") == "gemmascope2"
    x = x_batch()
    check_encode(directory, jumprelu_reference(arrays, x, "w_enc"), x)
    sae = load_sae(directory)
    assert sae.cfg.hook_layer == 7 and sae.cfg.hook_point == "resid_post"
    assert sae.cfg.model_name == "gemma-3-1b-pt" and sae.cfg.source_format == "gemmascope2"


def test_gemmascope2_layer_from_config(tmp_path: Path) -> None:
    write_gemmascope2(tmp_path / "sae")
    assert load_sae(tmp_path / "sae").cfg.hook_layer == 7


def test_gemmascope2_width_mismatch_names_shape(tmp_path: Path) -> None:
    write_gemmascope2(tmp_path, {"architecture": "jump_relu", "width": D_IN})
    with pytest.raises(Exception, match=r"w_enc.*\(20, 80\)") as info:
        load_sae(tmp_path)
    assert info.value.tensor == "w_enc"  # type: ignore[attr-defined]


def test_gemmascope2_transcoder_is_rejected(tmp_path: Path) -> None:
    write_gemmascope2(tmp_path)
    arrays = {
        name: np.asarray(t) for name, t in load_sae_raw(tmp_path / "params.safetensors").items()
    }
    arrays["affine_skip_connection"] = np.zeros((D_IN, D_IN), dtype=np.float32)
    save_file(arrays, str(tmp_path / "params.safetensors"))
    with pytest.raises(SAEFormatError, match="transcoder"):
        load_sae(tmp_path)


def load_sae_raw(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# --------------------------------------------------------------------------- sparsify
def test_sparsify_hookpoint_dir(tmp_path: Path) -> None:
    arrays = write_sparsify(tmp_path / "ckpt" / "layers.9", k=6)
    directory = tmp_path / "ckpt" / "layers.9"
    assert detect_format(directory) == "sparsify"
    x = x_batch()
    check_encode(directory, sparsify_reference(arrays, x, k=6), x)
    sae = load_sae(directory)
    assert sae.cfg.hook_layer == 9 and sae.cfg.relu_before_topk
    assert sae.cfg.apply_b_dec_to_input and sae.cfg.k == 6
    assert sae.cfg.source_name == "ckpt"


def test_sparsify_parent_dir_with_layer(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "layers.3", k=4, seed=60)
    arrays = write_sparsify(tmp_path / "layers.9", k=6)
    assert detect_format(tmp_path) == "sparsify"
    with pytest.raises(SAEFormatError, match=r"; set layer$"):
        load_sae(tmp_path)
    x = x_batch()
    check_encode(tmp_path, sparsify_reference(arrays, x, k=6), x, layer=9)
    with pytest.raises(SAEFormatError, match=r"layers\.5"):
        load_sae(tmp_path, layer=5)


def test_sparsify_single_hookpoint_parent(tmp_path: Path) -> None:
    arrays = write_sparsify(tmp_path / "layers.2", k=3)
    x = x_batch()
    check_encode(tmp_path, sparsify_reference(arrays, x, k=3), x)


def test_sparsify_non_residual_hookpoint_is_rejected(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "layers.2.mlp")
    with pytest.raises(SAEFormatError, match="residual"):
        load_sae(tmp_path / "layers.2.mlp")


# --------------------------------------------------------------------------- auditor
def test_auditor_format_and_detection(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "src" / "layers.1")
    sae = load_sae(tmp_path / "src" / "layers.1")
    sae.save(tmp_path / "dst")
    assert detect_format(tmp_path / "dst") == "auditor"
    assert detect_format(tmp_path / "dst" / "sae.safetensors") == "auditor"
    again = load_sae(tmp_path / "dst")
    assert again.cfg == sae.cfg and again.cfg.source_format == "sparsify"


# --------------------------------------------------------------------------- conversion
def _write_each(root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    write_qwenscope(root / RELEASE, layer=3)
    write_saelens(
        root / "saelens",
        {
            "architecture": "topk",
            "k": 6,
            "apply_b_dec_to_input": True,
            "rescale_acts_by_decoder_norm": True,
            "meta": {"hook_name": "blocks.2.hook_resid_post"},
        },
    )
    write_gemmascope(root / "gemma-scope-2b-pt-res" / "layer_4" / "width_16k" / "l0_10")
    write_gemmascope2(root / "resid_post" / "layer_7_width_16k_l0_small")
    write_sparsify(root / "sparsify" / "layers.5")
    return {
        "qwenscope": (root / RELEASE / "layer3.sae.pt", {}),
        "saelens": (root / "saelens", {}),
        "gemmascope": (root / "gemma-scope-2b-pt-res" / "layer_4" / "width_16k" / "l0_10", {}),
        "gemmascope2": (root / "resid_post" / "layer_7_width_16k_l0_small", {}),
        "sparsify": (root / "sparsify", {"layer": 5}),
    }


@pytest.mark.parametrize("fmt", ["qwenscope", "saelens", "gemmascope", "gemmascope2", "sparsify"])
def test_convert_gives_identical_encode(tmp_path: Path, fmt: str) -> None:
    src, kwargs = _write_each(tmp_path / "src")[fmt]
    original = load_sae(src, **kwargs)
    out = convert_sae(src, tmp_path / "out", **kwargs)
    assert out == tmp_path / "out"
    assert detect_format(out) == "auditor"
    converted = load_sae(out)
    assert converted.cfg == original.cfg
    assert converted.cfg.source_format == fmt
    x = torch.from_numpy(x_batch())
    assert torch.equal(converted.encode(x), original.encode(x))
    assert torch.equal(converted.decode(converted.encode(x)), original(x))
    saved = json.loads((out / "config.json").read_text())
    assert saved["source_format"] == fmt and "auditor_version" in saved


@pytest.mark.parametrize("fmt", ["qwenscope", "saelens", "gemmascope", "gemmascope2", "sparsify"])
def test_explicit_format_matches_detection(tmp_path: Path, fmt: str) -> None:
    src, kwargs = _write_each(tmp_path)[fmt]
    assert detect_format(src) == fmt
    assert load_sae(src, format=fmt, **kwargs).cfg == load_sae(src, **kwargs).cfg


def test_formats_registry() -> None:
    assert set(FORMATS) == {
        "qwenscope",
        "saelens",
        "gemmascope",
        "gemmascope2",
        "sparsify",
        "auditor",
    }


def test_loaded_config_is_valid_sae_config(tmp_path: Path) -> None:
    src, _ = _write_each(tmp_path)["saelens"]
    cfg = load_sae(src).cfg
    assert isinstance(cfg, SAEConfig) and SAEConfig.from_dict(cfg.to_dict()) == cfg
