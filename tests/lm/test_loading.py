"""Loading models, the device/dtype decision, layer discovery and weight hashing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

from auditor.errors import ConfigError, HookError, ModelLoadError
from auditor.lm import LoadedModel, find_layers, load_model, resolve_device_dtype, weights_sha256
from auditor.testing import make_tiny_model, train_tiny_tokenizer

# ---------------------------------------------------------------- resolve_device_dtype


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, int]]:
    """Pretend a CUDA device is present; tests set its compute capability."""
    state = {"capability": (8, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device=None: state["capability"]
    )
    monkeypatch.setattr(torch.version, "hip", None)
    return state


def test_defaults_on_cpu(no_cuda: None) -> None:
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu") == (torch.device("cpu"), torch.float32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float16", torch.float16),
    ],
)
def test_dtype_names(name: str, expected: torch.dtype) -> None:
    assert resolve_device_dtype("cpu", name) == (torch.device("cpu"), expected)


@pytest.mark.parametrize("name", ["float64", "int8", "half-ish", ""])
def test_unknown_dtype(name: str) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        resolve_device_dtype("cpu", name)


def test_invalid_device() -> None:
    with pytest.raises(ConfigError, match="device"):
        resolve_device_dtype("gpu-please")


def test_cuda_requested_without_cuda(no_cuda: None) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device_dtype("cuda")


def test_cuda_default_bf16_on_ampere(fake_cuda: dict[str, tuple[int, int]]) -> None:
    fake_cuda["capability"] = (8, 6)
    assert resolve_device_dtype() == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device_dtype("cuda:1") == (torch.device("cuda:1"), torch.bfloat16)


def test_cuda_default_fp16_before_ampere(fake_cuda: dict[str, tuple[int, int]]) -> None:
    fake_cuda["capability"] = (7, 5)
    assert resolve_device_dtype() == (torch.device("cuda"), torch.float16)


def test_cuda_explicit_dtype_and_cpu_override(fake_cuda: dict[str, tuple[int, int]]) -> None:
    assert resolve_device_dtype(None, "float32") == (torch.device("cuda"), torch.float32)
    assert resolve_device_dtype("cpu") == (torch.device("cpu"), torch.float32)


# ---------------------------------------------------------------- load_model


def test_load_each_arch(tiny_lm: LoadedModel, arch: str, tiny_dirs: dict[str, Path]) -> None:
    lm = tiny_lm
    assert lm.model_id == str(tiny_dirs[arch])
    assert lm.n_layers == 4
    assert lm.d_model == 32
    assert lm.max_positions == 128
    assert lm.device == torch.device("cpu")
    assert lm.dtype == torch.float32
    assert lm.layers is lm.model.layers
    assert len(lm.layers) == lm.n_layers
    assert not lm.model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in lm.model.parameters())
    # The base decoder only: no LM head anywhere in the kept module.
    assert type(lm.model).__name__.endswith("Model")
    assert not hasattr(lm.model, "lm_head")
    assert not any("lm_head" in name for name, _ in lm.model.named_modules())
    assert lm.tokenizer.is_fast
    assert lm.tokenizer.pad_token_id is not None
    assert lm.weights_sha256 is not None and len(lm.weights_sha256) == 64


def test_converted_directory_names_its_gguf(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from auditor.lm.gguf import COMPLETE_MARKER

    assert load_model(tiny_dirs["llama"], device="cpu").converted_from is None
    converted = tmp_path / "converted"
    shutil.copytree(tiny_dirs["llama"], converted)
    record = {"source": "/x/m.gguf", "source_name": "m.gguf", "source_sha256": "cd" * 32,
              "source_size": 123, "format_version": 1}
    (converted / COMPLETE_MARKER).write_text(json.dumps(record), encoding="utf-8")
    lm = load_model(converted, device="cpu")
    assert lm.converted_from == {"name": "m.gguf", "sha256": "cd" * 32, "size": 123}
    (converted / COMPLETE_MARKER).write_text("{not json", encoding="utf-8")
    assert load_model(converted, device="cpu").converted_from is None


def test_gemma3_text_decoder(tiny_lms: dict[str, LoadedModel]) -> None:
    assert type(tiny_lms["gemma3"].model).__name__ == "Gemma3TextModel"


def test_load_with_dtype(tiny_dirs: dict[str, Path]) -> None:
    lm = load_model(tiny_dirs["llama"], device="cpu", dtype="bf16")
    assert lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())


def test_prebuilt_model_and_tokenizer(tiny_dirs: dict[str, Path]) -> None:
    causal = AutoModelForCausalLM.from_pretrained(tiny_dirs["qwen3"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["qwen3"])
    lm = load_model("not/a/real/dir", model=causal, tokenizer=tokenizer, device="cpu")
    assert lm.model is causal.model
    assert lm.tokenizer is tokenizer
    assert lm.model_id == "not/a/real/dir"
    assert lm.weights_sha256 is None


def test_prebuilt_base_model_is_kept(tiny_dirs: dict[str, Path]) -> None:
    causal = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    lm = load_model("base", model=causal.model, tokenizer=tokenizer)
    assert lm.model is causal.model
    assert lm.n_layers == 4


def test_gemma3_multimodal_language_model(tmp_path: Path) -> None:
    tokenizer = train_tiny_tokenizer(tmp_path)
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer) + 3,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    n = len(tokenizer)
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=n,
        eoi_token_index=n + 1,
        image_token_index=n + 2,
    )
    model = Gemma3ForConditionalGeneration(config)
    lm = load_model("gemma3-mm", model=model, tokenizer=tokenizer)
    assert type(lm.model).__name__ == "Gemma3TextModel"
    assert lm.n_layers == 3
    assert lm.d_model == 32
    assert not any("vision" in name for name, _ in lm.model.named_modules())


def test_max_positions_capped_by_sane_tokenizer_limit(tiny_dirs: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    tokenizer.model_max_length = 64
    assert load_model(tiny_dirs["llama"], tokenizer=tokenizer).max_positions == 64
    tokenizer.model_max_length = 4096  # above the config's 128: the config wins
    assert load_model(tiny_dirs["llama"], tokenizer=tokenizer).max_positions == 128


def test_pad_token_falls_back_to_eos(tiny_dirs: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    lm = load_model(tiny_dirs["llama"], tokenizer=tokenizer)
    assert lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id


def test_slow_tokenizer_rejected(tiny_dirs: dict[str, Path]) -> None:
    not_fast = SimpleNamespace(is_fast=False, pad_token_id=0)
    with pytest.raises(ModelLoadError, match="fast"):
        load_model(tiny_dirs["llama"], tokenizer=not_fast)  # type: ignore[arg-type]


def test_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError) as info:
        load_model(missing)
    assert str(missing) in str(info.value)
    assert info.value.path == str(missing)


def test_file_instead_of_dir(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model(path)


def test_broken_config(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_dirs["llama"].iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "config.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        load_model(broken)
    assert str(broken) in str(info.value)


def test_missing_weights(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    partial = tmp_path / "no-weights"
    partial.mkdir()
    for item in tiny_dirs["llama"].iterdir():
        if item.suffix != ".safetensors":
            (partial / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelLoadError) as info:
        load_model(partial)
    assert str(partial) in str(info.value)


def test_missing_tokenizer(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    partial = tmp_path / "no-tokenizer"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        (partial / name).write_bytes((tiny_dirs["llama"] / name).read_bytes())
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(partial)


# ---------------------------------------------------------------- find_layers


def test_find_layers_nested() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = Block()

    outer = Outer()
    assert find_layers(outer) is outer.transformer.h


def test_find_layers_missing() -> None:
    with pytest.raises(HookError, match="decoder layers"):
        find_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------- weights_sha256


def _sidecars(cache: Path) -> list[Path]:
    return sorted((cache / "hashes").glob("*.json"))


def test_weights_hash_stable_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dirs: dict[str, Path]
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(cache))
    first = load_model(tiny_dirs["llama"]).weights_sha256
    sidecars = _sidecars(cache)
    assert len(sidecars) == 1
    record = json.loads(sidecars[0].read_text())
    weights = (tiny_dirs["llama"] / "model.safetensors").resolve()
    assert record["path"] == str(weights)
    assert record["size"] == weights.stat().st_size
    assert record["mtime_ns"] == weights.stat().st_mtime_ns

    assert load_model(tiny_dirs["llama"]).weights_sha256 == first
    assert weights_sha256(tiny_dirs["llama"]) == first
    # Same answer without any cache.
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "other-cache"))
    assert weights_sha256(tiny_dirs["llama"]) == first


def _independent_weights_hash(files: dict[str, bytes]) -> str:
    """The documented digest, by hand: per weight file in name order, its name, NUL and
    the 32-byte SHA-256 of its bytes."""
    outer = hashlib.sha256()
    for name in sorted(files):
        outer.update(name.encode("utf-8") + b"\0" + hashlib.sha256(files[name]).digest())
    return outer.hexdigest()


def test_weights_hash_matches_an_independent_computation(
    tmp_path: Path, tiny_dirs: dict[str, Path]
) -> None:
    weights = tiny_dirs["llama"] / "model.safetensors"
    expected = _independent_weights_hash({"model.safetensors": weights.read_bytes()})
    assert weights_sha256(tiny_dirs["llama"]) == expected
    assert load_model(tiny_dirs["llama"]).weights_sha256 == expected
    # Several weight files in name order (one over the 1 MiB read chunk); config files and
    # subdirectories are not hashed.
    files = {"b.safetensors": b"second" * 400_000, "a.bin": b"first", "c.gguf": bytes(range(256))}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "consolidated.pth").write_bytes(b"not loaded")
    assert weights_sha256(tmp_path) == _independent_weights_hash(files)


def test_weights_hash_sidecar_is_used_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(cache))
    model_dir = make_tiny_model(tmp_path / "model", arch="llama", n_layers=1, seed=3)
    real = weights_sha256(model_dir)
    (sidecar,) = _sidecars(cache)

    # A planted per-file digest is trusted while (path, size, mtime_ns) match: no re-hash.
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "sha256": "ab" * 32}))
    planted = weights_sha256(model_dir)
    assert planted != real

    # Touching the file (new mtime) invalidates the cached entry.
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert weights_sha256(model_dir) == real


def test_weights_hash_changes_with_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = make_tiny_model(tmp_path / "m", arch="qwen3", n_layers=1, seed=0)
    same_dir = make_tiny_model(tmp_path / "m-again", arch="qwen3", n_layers=1, seed=0)
    assert weights_sha256(model_dir) == weights_sha256(same_dir)  # deterministic build
    before = weights_sha256(model_dir)
    make_tiny_model(model_dir, arch="qwen3", n_layers=1, seed=1)  # overwrite in place
    after = weights_sha256(model_dir)
    assert after is not None and after != before


def test_weights_hash_no_weight_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert weights_sha256(tmp_path) is None
    assert weights_sha256(tmp_path / "missing") is None


def test_read_only_cache_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dirs: dict[str, Path]
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(blocker))  # cannot mkdir below a file
    assert weights_sha256(tiny_dirs["llama"]) is not None


def test_progress_off_silences_the_loading_bar(tiny_llama_dir: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    """``--no-progress`` jobs pass progress=False: transformers' own bar stays quiet."""
    from transformers.utils import logging as hf_logging

    load_model(tiny_llama_dir, progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored after the call
    load_model(tiny_llama_dir)  # a library caller keeps transformers' default
    assert "Loading weights" in capfd.readouterr().err
