"""Tests for auditor.sae.model and auditor.sae.config: encode conventions, sparse codes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from auditor.errors import ConfigError, HookError, SAEModelMismatch
from auditor.sae import SAE, SAEConfig, SparseCodes, check_compatible, load_sae
from auditor.sae.model import CONFIG_FILENAME, WEIGHTS_FILENAME

D_IN, D_SAE = 24, 96


# --------------------------------------------------------------------------- reference
def np_activate(
    pre: np.ndarray,
    *,
    activation: str,
    k: int | None = None,
    threshold: np.ndarray | float | None = None,
    relu_first: bool = False,
) -> np.ndarray:
    """Plain NumPy activation on float64 pre-activations ``[n, d_sae]``."""
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "jumprelu":
        assert threshold is not None
        return np.where(pre > threshold, np.maximum(pre, 0.0), 0.0)
    assert activation == "topk" and k is not None
    if relu_first:
        pre = np.maximum(pre, 0.0)
    out = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, top] = np.maximum(pre[rows, top], 0.0)
    return out


def np_encode(x: np.ndarray, params: dict[str, np.ndarray], cfg: SAEConfig) -> np.ndarray:
    """NumPy reference of the documented encode conventions (canonical orientation)."""
    x = x.astype(np.float64)
    if cfg.normalize_activations == "layer_norm":
        x = x - x.mean(axis=-1, keepdims=True)
        x = x / (x.std(axis=-1, ddof=1, keepdims=True) + 1e-5)
    elif cfg.normalize_activations == "constant":
        x = x * cfg.input_scale
    if cfg.apply_b_dec_to_input:
        x = x - params["b_dec"]
    pre = x @ params["W_enc"] + params["b_enc"]
    if cfg.rescale_acts_by_decoder_norm:
        pre = pre * np.linalg.norm(params["W_dec"], axis=1)
    if cfg.activation == "batchtopk" and cfg.batchtopk_threshold is not None:
        return np_activate(pre, activation="jumprelu", threshold=cfg.batchtopk_threshold)
    activation = "topk" if cfg.activation == "batchtopk" else cfg.activation
    return np_activate(
        pre,
        activation=activation,
        k=cfg.k,
        threshold=params.get("threshold"),
        relu_first=cfg.relu_before_topk,
    )


def random_params(cfg: SAEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {
        "W_enc": rng.standard_normal((cfg.d_in, cfg.d_sae)) / np.sqrt(cfg.d_in),
        "b_enc": rng.standard_normal(cfg.d_sae) * 0.3,
        "W_dec": rng.standard_normal((cfg.d_sae, cfg.d_in)) * rng.uniform(0.2, 2.0, (cfg.d_sae, 1)),
        "b_dec": rng.standard_normal(cfg.d_in) * 0.5,
    }
    if cfg.activation == "jumprelu":
        params["threshold"] = rng.uniform(0.0, 1.0, cfg.d_sae)
    return {name: value.astype(np.float32) for name, value in params.items()}


def build(cfg: SAEConfig, params: dict[str, np.ndarray]) -> SAE:
    sae = SAE(cfg)
    with torch.no_grad():
        for name, tensor in sae.canonical_tensors().items():
            tensor.copy_(torch.from_numpy(params[name]))
    return sae


def dense_from_codes(codes: SparseCodes, d_sae: int) -> torch.Tensor:
    out = torch.zeros(codes.values.shape[0], d_sae, dtype=codes.values.dtype)
    return out.scatter_(1, codes.indices, codes.values)


def inputs(n: int = 50, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, D_IN)) * 2 + 0.5).astype(np.float32)


CONFIGS: dict[str, dict[str, Any]] = {
    "relu": {"activation": "relu"},
    "jumprelu": {"activation": "jumprelu"},
    "topk": {"activation": "topk", "k": 7},
    "topk_relu_first": {"activation": "topk", "k": 7, "relu_before_topk": True},
    "topk_rescale": {"activation": "topk", "k": 5, "rescale_acts_by_decoder_norm": True},
    "batchtopk_plain": {"activation": "batchtopk", "k": 6},
    "batchtopk_threshold": {"activation": "batchtopk", "k": 6, "batchtopk_threshold": 0.4},
    "relu_b_dec": {"activation": "relu", "apply_b_dec_to_input": True},
    "topk_layer_norm": {"activation": "topk", "k": 9, "normalize_activations": "layer_norm"},
    "jumprelu_constant": {
        "activation": "jumprelu",
        "normalize_activations": "constant",
        "input_scale": 0.37,
        "apply_b_dec_to_input": True,
    },
    "topk_all": {
        "activation": "topk",
        "k": 4,
        "apply_b_dec_to_input": True,
        "normalize_activations": "constant",
        "input_scale": 2.5,
        "rescale_acts_by_decoder_norm": True,
    },
    "topk_k_equals_d_sae": {"activation": "topk", "k": D_SAE},
}


@pytest.fixture(params=sorted(CONFIGS))
def case(request: pytest.FixtureRequest) -> tuple[SAEConfig, dict[str, np.ndarray], SAE]:
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, **CONFIGS[request.param])
    params = random_params(cfg)
    return cfg, params, build(cfg, params)


# --------------------------------------------------------------------------- encode
def test_encode_matches_numpy_reference(case: tuple[SAEConfig, dict[str, np.ndarray], SAE]) -> None:
    cfg, params, sae = case
    x = inputs()
    out = sae.encode(torch.from_numpy(x)).numpy()
    ref = np_encode(x, params, cfg)
    assert out.shape == (x.shape[0], D_SAE)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert ((out != 0) == (ref != 0)).all()
    if cfg.k is not None and cfg.batchtopk_threshold is None:
        assert ((out != 0).sum(axis=1) <= cfg.k).all()


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 4096])
def test_encode_sparse_equals_encode(
    case: tuple[SAEConfig, dict[str, np.ndarray], SAE], chunk_size: int
) -> None:
    cfg, _, sae = case
    x = torch.from_numpy(inputs(n=37))
    codes = sae.encode_sparse(x, chunk_size=chunk_size)
    assert codes.indices.dtype == torch.int64
    assert codes.indices.shape == codes.values.shape
    assert codes.values.shape[0] == 37
    assert torch.equal(dense_from_codes(codes, D_SAE), sae.encode(x))
    ordered = codes.indices.sort(dim=1).values
    assert (ordered[:, 1:] != ordered[:, :-1]).all(), "indices within a row must be distinct"
    if cfg.activation == "topk" or (cfg.batchtopk_threshold is None and cfg.k is not None):
        assert codes.values.shape[1] == cfg.k
    else:
        assert codes.values.shape[1] == int((sae.encode(x) != 0).sum(dim=1).max())


def test_encode_sparse_topk_never_builds_dense_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="topk", k=3)
    sae = build(cfg, random_params(cfg))
    original = SAE._pre_activation
    seen: list[int] = []

    def spy(self: SAE, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] <= 2
        seen.append(x.shape[0])
        return original(self, x)

    def no_dense(self: SAE, pre: torch.Tensor) -> torch.Tensor:
        raise AssertionError("encode_sparse must not build dense TopK codes")

    monkeypatch.setattr(SAE, "_pre_activation", spy)
    monkeypatch.setattr(SAE, "_activate_dense", no_dense)
    codes = sae.encode_sparse(torch.randn(64, D_IN), chunk_size=2)
    assert seen == [2] * 32
    assert codes.values.shape == (64, 3)


def test_encode_sparse_relu_pads_with_zeros() -> None:
    cfg = SAEConfig(d_in=4, d_sae=8, activation="relu")
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4, 8))
    x = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, 4.0, 5.0]])
    codes = sae.encode_sparse(x, chunk_size=1)
    assert codes.values.shape == (3, 3)
    assert codes.values[1].tolist() == [0.0, 0.0, 0.0]
    assert codes.values[2].tolist() == [5.0, 4.0, 3.0]
    assert codes.indices[2].tolist() == [3, 2, 0]
    assert torch.equal(dense_from_codes(codes, 8), sae.encode(x))


def test_encode_sparse_empty_input() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu"))
    codes = sae.encode_sparse(torch.zeros(0, D_IN))
    assert codes.values.shape[0] == 0 and codes.indices.dtype == torch.int64


def test_encode_sparse_rejects_bad_arguments() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="topk", k=2))
    with pytest.raises(ConfigError):
        sae.encode_sparse(torch.zeros(2, 3, D_IN))
    with pytest.raises(ConfigError):
        sae.encode_sparse(torch.zeros(2, D_IN), chunk_size=0)


def test_jumprelu_is_strict_at_threshold() -> None:
    cfg = SAEConfig(d_in=4, d_sae=4, activation="jumprelu")
    sae = SAE(cfg)
    with torch.no_grad():
        sae.b_enc.copy_(torch.tensor([0.5, 0.5, 0.25, -1.0]))
        sae.threshold.copy_(torch.tensor([0.5, 0.25, 0.5, -2.0]))
    out = sae.encode(torch.zeros(1, 4))[0]
    # pre == threshold -> off; pre > threshold -> pre; pre below 0 -> off even above threshold
    assert out.tolist() == [0.0, 0.5, 0.0, 0.0]


def test_batchtopk_threshold_is_strict_and_shared() -> None:
    cfg = SAEConfig(d_in=2, d_sae=3, activation="batchtopk", k=1, batchtopk_threshold=0.5)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.b_enc.copy_(torch.tensor([0.5, 0.75, 2.0]))
    assert sae.encode(torch.zeros(1, 2))[0].tolist() == [0.0, 0.75, 2.0]


def test_topk_relu_after_selection_keeps_at_most_k() -> None:
    cfg = SAEConfig(d_in=2, d_sae=4, activation="topk", k=3)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.b_enc.copy_(torch.tensor([1.0, -1.0, -2.0, 3.0]))
    assert sae.encode(torch.zeros(1, 2))[0].tolist() == [1.0, 0.0, 0.0, 3.0]


def test_encode_casts_input_and_keeps_leading_dims() -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="topk", k=3)
    sae = build(cfg, random_params(cfg))
    x = torch.randn(2, 5, D_IN, dtype=torch.float64)
    out = sae.encode(x)
    assert out.shape == (2, 5, D_SAE) and out.dtype == torch.float32
    assert torch.equal(out.reshape(10, D_SAE), sae.encode(x.reshape(10, D_IN)))


def test_encode_works_under_inference_mode() -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="jumprelu")
    sae = build(cfg, random_params(cfg))
    x = torch.randn(5, D_IN)
    with torch.inference_mode():
        dense = sae.encode(x)
        codes = sae.encode_sparse(x, chunk_size=2)
    assert torch.equal(dense_from_codes(codes, D_SAE), dense)


def test_encode_rejects_wrong_width() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu"))
    with pytest.raises(SAEModelMismatch, match="W_enc"):
        sae.encode(torch.zeros(3, D_IN + 1))


# --------------------------------------------------------------------------- decode
def test_decode_and_forward(case: tuple[SAEConfig, dict[str, np.ndarray], SAE]) -> None:
    cfg, params, sae = case
    x = inputs(n=6)
    z = sae.encode(torch.from_numpy(x))
    out = sae.decode(z)
    assert out.shape == (6, D_IN)
    assert torch.equal(sae(torch.from_numpy(x)), out)
    acts = z.numpy().astype(np.float64)
    if cfg.rescale_acts_by_decoder_norm:
        acts = acts / np.linalg.norm(params["W_dec"], axis=1)
    ref = acts @ params["W_dec"] + params["b_dec"]
    if cfg.normalize_activations == "constant":
        ref = ref / cfg.input_scale
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
    assert sae.decode(z.reshape(2, 3, D_SAE)).shape == (2, 3, D_IN)


def test_constant_scale_round_trips_through_identity_sae() -> None:
    cfg = SAEConfig(
        d_in=4, d_sae=4, activation="relu", normalize_activations="constant", input_scale=4.0
    )
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
    x = torch.tensor([[1.0, 2.0, 3.0, 0.5]])
    assert torch.equal(sae.encode(x), x * 4)
    assert torch.equal(sae(x), x)


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_bit_exact(
    case: tuple[SAEConfig, dict[str, np.ndarray], SAE], tmp_path: Path
) -> None:
    cfg, _, sae = case
    directory = sae.save(tmp_path / "sae")
    assert directory == tmp_path / "sae"
    assert (directory / CONFIG_FILENAME).is_file() and (directory / WEIGHTS_FILENAME).is_file()
    loaded = load_sae(directory)
    assert loaded.cfg == cfg
    for name, tensor in sae.canonical_tensors().items():
        assert torch.equal(loaded.canonical_tensors()[name], tensor)
    assert loaded.source_path == str(directory / WEIGHTS_FILENAME)
    assert loaded.sha256 is not None and len(loaded.sha256) == 64
    x = torch.from_numpy(inputs(n=5))
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert sae.sha256 is None and sae.source_path is None


def test_recorded_sha256_is_the_weights_file_hash(
    case: tuple[SAEConfig, dict[str, np.ndarray], SAE], tmp_path: Path
) -> None:
    # Checked against hashlib over the file's bytes, not against auditor's own helper.
    import hashlib

    from auditor.sae.card import write_card

    _, _, sae = case
    directory = sae.save(tmp_path / "sae")
    expected = hashlib.sha256((directory / WEIGHTS_FILENAME).read_bytes()).hexdigest()
    loaded = load_sae(directory)
    assert loaded.sha256 == expected
    assert f"sha256 `{expected}`" in write_card(directory).read_text(encoding="utf-8")
    # Other weights, other hash: a byte of the file changed is seen.
    other = SAE(replace(sae.cfg))
    with torch.no_grad():
        for name, tensor in sae.canonical_tensors().items():
            other.canonical_tensors()[name].copy_(tensor)
        other.W_dec.mul_(2.0)
    changed = other.save(tmp_path / "other")
    assert load_sae(changed).sha256 == hashlib.sha256(
        (changed / WEIGHTS_FILENAME).read_bytes()).hexdigest() != expected


def test_load_with_dtype_and_device(tmp_path: Path) -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="jumprelu")
    build(cfg, random_params(cfg)).save(tmp_path)
    sae = load_sae(tmp_path, dtype=torch.float64, device=torch.device("cpu"))
    assert sae.W_enc.dtype == torch.float64 and sae.threshold.dtype == torch.float64
    assert sae.cfg.dtype == "float64"
    half = load_sae(tmp_path, dtype=torch.bfloat16)
    assert half.encode(torch.randn(3, D_IN)).dtype == torch.bfloat16
    with pytest.raises(ConfigError):
        load_sae(tmp_path, dtype=torch.int32)


def test_parameters_do_not_require_grad() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="jumprelu"))
    assert not any(p.requires_grad for p in sae.parameters())
    assert sae.W_enc.shape == (D_IN, D_SAE) and sae.W_dec.shape == (D_SAE, D_IN)
    assert sae.threshold.shape == (D_SAE,) and "threshold" in dict(sae.named_buffers())
    assert "threshold" not in SAE(SAEConfig(d_in=4, d_sae=8, activation="relu")).state_dict()


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip(name: str) -> None:
    cfg = SAEConfig(
        d_in=D_IN,
        d_sae=D_SAE,
        hook_layer=3,
        hook_point="resid_pre",
        source_format="saelens",
        source_name="release",
        model_name="m",
        dtype="bfloat16",
        **CONFIGS[name],
    )
    data = cfg.to_dict()
    assert data["architecture"] == cfg.activation
    assert "auditor_version" in data
    assert SAEConfig.from_dict(data) == cfg
    data["auditor_version"] = "99.0"
    assert SAEConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"activation": "topk"}, "k"),
        ({"activation": "batchtopk"}, "k"),
        ({"activation": "gated"}, "activation"),
        ({"activation": "topk", "k": D_SAE + 1}, "k"),
        ({"activation": "topk", "k": 0}, "k"),
        ({"activation": "relu", "k": 2.5}, "k"),
        ({"activation": "relu", "normalize_activations": "constant"}, "input_scale"),
        ({"activation": "relu", "normalize_activations": "constant", "input_scale": -1.0}, None),
        ({"activation": "relu", "input_scale": 2.0}, "input_scale"),
        ({"activation": "relu", "normalize_activations": "rms"}, "normalize_activations"),
        ({"activation": "relu", "relu_before_topk": True}, "relu_before_topk"),
        ({"activation": "topk", "k": 2, "batchtopk_threshold": 0.1}, "batchtopk_threshold"),
        ({"activation": "batchtopk", "k": 2, "batchtopk_threshold": float("nan")}, None),
        ({"activation": "relu", "hook_layer": -1}, "hook_layer"),
        ({"activation": "relu", "hook_point": "mlp_out"}, "hook_point"),
        ({"activation": "relu", "dtype": "int8"}, "dtype"),
        ({"activation": "relu", "d_in": 0}, "d_in"),
        ({"activation": "relu", "d_sae": True}, "d_sae"),
        ({"activation": "relu", "source_format": ""}, "source_format"),
    ],
)
def test_config_validation(values: dict[str, Any], field: str | None) -> None:
    kwargs = {"d_in": D_IN, "d_sae": D_SAE, **values}
    with pytest.raises(ConfigError) as info:
        SAEConfig(**kwargs)
    if field is not None:
        assert info.value.field == field


def test_config_from_dict_errors() -> None:
    data = SAEConfig(d_in=4, d_sae=8, activation="relu").to_dict()
    with pytest.raises(ConfigError, match="unknown"):
        SAEConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ConfigError, match="disagrees"):
        SAEConfig.from_dict({**data, "architecture": "topk"})
    with pytest.raises(ConfigError, match="missing"):
        SAEConfig.from_dict({"d_in": 4, "activation": "relu"})
    with pytest.raises(ConfigError):
        SAEConfig.from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]
    minimal = SAEConfig.from_dict({"d_in": 4, "d_sae": 8, "architecture": "relu"})
    assert minimal.activation == "relu"


def test_config_is_frozen() -> None:
    cfg = SAEConfig(d_in=4, d_sae=8, activation="relu")
    with pytest.raises(AttributeError):
        cfg.d_in = 5  # type: ignore[misc]
    assert replace(cfg, hook_layer=2).hook_layer == 2


# --------------------------------------------------------------------------- compatibility
def test_check_compatible() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu", hook_layer=4))
    check_compatible(sae, d_model=D_IN, n_layers=5)
    check_compatible(sae, d_model=D_IN)
    with pytest.raises(HookError) as info:
        check_compatible(sae, d_model=D_IN, n_layers=4)
    assert "layer 4" in str(info.value)
    with pytest.raises(SAEModelMismatch, match="W_enc"):
        check_compatible(sae, d_model=D_IN * 2)
