"""Tests for the errors auditor.sae raises on bad, corrupt, unsafe or mismatched SAEs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from auditor.errors import (
    ConfigError,
    SAEError,
    SAEFormatError,
    SAEModelMismatch,
    SAEWeightsError,
    UnsafeFileError,
    exit_code_for,
)
from auditor.sae import check_compatible, convert_sae, detect_format, load_sae
from tests.sae.test_formats import (
    D_IN,
    D_SAE,
    RELEASE,
    write_gemmascope,
    write_gemmascope2,
    write_qwenscope,
    write_saelens,
    write_sparsify,
)


class Payload:
    """A custom class: torch.save of an instance can only be loaded by unpickling."""

    def __init__(self) -> None:
        self.weights = torch.zeros(3)


def _saelens(tmp_path: Path) -> Path:
    write_saelens(tmp_path, {"architecture": "standard", "hook_name": "blocks.1.hook_resid_post"})
    return tmp_path / "sae_weights.safetensors"


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    arrays = dict(load_file(str(path)))
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    save_file(arrays, str(path))


# --------------------------------------------------------------------------- tensors
def test_missing_tensor_safetensors(tmp_path: Path) -> None:
    weights = _saelens(tmp_path)
    _rewrite(weights, b_enc=None)
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    assert info.value.path == str(weights)
    assert info.value.tensor == "b_enc"
    assert "b_enc" in str(info.value) and str(weights) in str(info.value)


def test_missing_tensor_qwenscope(tmp_path: Path) -> None:
    arrays = write_qwenscope(tmp_path / RELEASE)
    path = tmp_path / RELEASE / "layer3.sae.pt"
    del arrays["W_dec"]
    torch.save({name: torch.from_numpy(a) for name, a in arrays.items()}, path)
    with pytest.raises(SAEWeightsError) as info:
        load_sae(path)
    assert info.value.path == str(path) and info.value.tensor == "W_dec"


def test_missing_threshold_jumprelu(tmp_path: Path) -> None:
    write_gemmascope2(tmp_path)
    _rewrite(tmp_path / "params.safetensors", threshold=None)
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    assert info.value.tensor == "threshold"


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path: Path) -> None:
    weights = _saelens(tmp_path)
    _rewrite(weights, W_dec=np.zeros((D_IN, D_SAE), dtype=np.float32))
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    message = str(info.value)
    assert info.value.tensor == "W_dec"
    assert f"({D_SAE}, {D_IN})" in message and f"({D_IN}, {D_SAE})" in message


def test_wrong_shape_qwenscope_transposed_decoder(tmp_path: Path) -> None:
    arrays = write_qwenscope(tmp_path / RELEASE)
    arrays["W_dec"] = arrays["W_dec"].T.copy()
    path = tmp_path / RELEASE / "layer3.sae.pt"
    torch.save({name: torch.from_numpy(a) for name, a in arrays.items()}, path)
    with pytest.raises(SAEWeightsError, match=r"W_dec.*\(20, 80\).*\(80, 20\)"):
        load_sae(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path: Path, bad: float) -> None:
    weights = _saelens(tmp_path)
    w_enc = load_file(str(weights))["W_enc"].copy()
    w_enc[3, 5] = bad
    _rewrite(weights, W_enc=w_enc)
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    assert info.value.tensor == "W_enc" and "NaN" in str(info.value)


def test_non_finite_values_npz(tmp_path: Path) -> None:
    arrays = write_gemmascope(tmp_path)
    arrays["threshold"][0] = np.nan
    np.savez(tmp_path / "params.npz", **arrays)
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    assert info.value.tensor == "threshold"


def test_overflow_when_casting_to_half(tmp_path: Path) -> None:
    weights = _saelens(tmp_path)
    w_enc = load_file(str(weights))["W_enc"].copy()
    w_enc[0, 0] = 1e30
    _rewrite(weights, W_enc=w_enc)
    load_sae(tmp_path)  # fine in float32
    with pytest.raises(SAEWeightsError, match="float16"):
        load_sae(tmp_path, dtype=torch.float16)


# --------------------------------------------------------------------------- corrupt files
@pytest.mark.parametrize("mode", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(tmp_path: Path, mode: str) -> None:
    weights = _saelens(tmp_path)
    data = weights.read_bytes()
    corrupted = {"truncate": data[: len(data) // 2], "garbage": b"\x00\xff" * 64, "empty": b""}
    weights.write_bytes(corrupted[mode])
    with pytest.raises(SAEWeightsError) as info:
        load_sae(tmp_path)
    assert info.value.path == str(weights)


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
def test_corrupt_npz(tmp_path: Path, mode: str) -> None:
    write_gemmascope(tmp_path)
    path = tmp_path / "params.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if mode == "truncate" else b"not a zip file at all")
    with pytest.raises(SAEWeightsError) as info:
        load_sae(path)
    assert info.value.path == str(path)


def test_npz_with_object_array_is_unsafe(tmp_path: Path) -> None:
    arrays = write_gemmascope(tmp_path)
    with (tmp_path / "params.npz").open("wb") as handle:
        np.savez(handle, **arrays, extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeFileError) as info:
        load_sae(tmp_path)
    assert info.value.path == str(tmp_path / "params.npz")


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
def test_corrupt_pt(tmp_path: Path, mode: str) -> None:
    write_qwenscope(tmp_path / RELEASE)
    path = tmp_path / RELEASE / "layer3.sae.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if mode == "truncate" else b"\x80\x02garbage")
    with pytest.raises(SAEWeightsError) as info:
        load_sae(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("payload", ["instance", "nested"])
def test_pickled_object_is_unsafe(tmp_path: Path, payload: str) -> None:
    directory = tmp_path / RELEASE
    directory.mkdir()
    path = directory / "layer3.sae.pt"
    obj: object = Payload() if payload == "instance" else {"W_enc": Payload()}
    torch.save(obj, path)
    with pytest.raises(UnsafeFileError) as info:
        load_sae(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_pt_that_is_not_a_state_dict(tmp_path: Path) -> None:
    directory = tmp_path / RELEASE
    directory.mkdir()
    torch.save([torch.zeros(2)], directory / "layer3.sae.pt")
    with pytest.raises(SAEWeightsError, match="state dict"):
        load_sae(directory)


# --------------------------------------------------------------------------- layouts/configs
def test_unknown_directory_layout(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"123")
    with pytest.raises(SAEFormatError) as info:
        detect_format(tmp_path)
    assert info.value.path == str(tmp_path)
    with pytest.raises(SAEFormatError):
        load_sae(tmp_path)
    with pytest.raises(SAEFormatError):
        load_sae(tmp_path / "weights.bin")
    with pytest.raises(SAEFormatError):
        convert_sae(tmp_path, tmp_path / "out")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SAEFormatError, match="no such file"):
        load_sae(tmp_path / "nope")
    with pytest.raises(SAEFormatError, match="no such file"):
        load_sae(tmp_path / "nope", format="saelens")


def test_format_mismatch_reports_missing_file(tmp_path: Path) -> None:
    write_gemmascope(tmp_path)
    with pytest.raises(SAEFormatError):
        load_sae(tmp_path, format="saelens")


def test_invalid_json_config(tmp_path: Path) -> None:
    _saelens(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(SAEFormatError) as info:
        load_sae(tmp_path)
    assert info.value.path == str(tmp_path / "cfg.json")


def test_bad_auditor_config(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "src" / "layers.0")
    load_sae(tmp_path / "src").save(tmp_path / "dst")
    data = json.loads((tmp_path / "dst" / "config.json").read_text())
    data["surprise"] = 1
    (tmp_path / "dst" / "config.json").write_text(json.dumps(data))
    with pytest.raises(SAEFormatError, match="surprise"):
        load_sae(tmp_path / "dst")


def test_sparsify_config_disagrees_with_weights(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "layers.0")
    cfg = json.loads((tmp_path / "layers.0" / "cfg.json").read_text())
    cfg["num_latents"] = D_SAE * 2
    (tmp_path / "layers.0" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEWeightsError, match=r"encoder\.weight"):
        load_sae(tmp_path / "layers.0")


def test_bad_arguments(tmp_path: Path) -> None:
    _saelens(tmp_path)
    with pytest.raises(ConfigError, match="unknown SAE format"):
        load_sae(tmp_path, format="onnx")
    with pytest.raises(ConfigError):
        load_sae(tmp_path, k=0)
    with pytest.raises(ConfigError):
        load_sae(tmp_path, layer=-1)
    with pytest.raises(ConfigError, match="layer"):
        load_sae(tmp_path, layer=2)  # cfg says blocks.1


def test_k_larger_than_width_is_a_format_error(tmp_path: Path) -> None:
    write_qwenscope(tmp_path / RELEASE)
    with pytest.raises(SAEFormatError, match="k"):
        load_sae(tmp_path / RELEASE, k=D_SAE + 1)


# --------------------------------------------------------------------------- model mismatch
def test_width_mismatch_names_file_and_tensor(tmp_path: Path) -> None:
    weights = _saelens(tmp_path)
    sae = load_sae(tmp_path)
    with pytest.raises(SAEModelMismatch) as info:
        check_compatible(sae, d_model=D_IN + 8, n_layers=4)
    message = str(info.value)
    assert str(weights) in message and "W_enc" in message
    assert str(D_IN) in message and str(D_IN + 8) in message
    assert info.value.tensor == "W_enc" and info.value.path == str(weights)
    check_compatible(sae, d_model=D_IN, n_layers=4)


def test_all_sae_errors_share_the_exit_code(tmp_path: Path) -> None:
    with pytest.raises(SAEError) as info:
        load_sae(tmp_path / "missing")
    assert exit_code_for(info.value) == 5
