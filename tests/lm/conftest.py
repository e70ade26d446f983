"""Shared fixtures for the language-model tests: tiny random models of each architecture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from auditor.lm import LoadedModel, load_model
from auditor.testing import make_tiny_model

ARCHS = ("llama", "qwen3", "gemma3")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the weight-hash cache out of the user's home directory."""
    cache = tmp_path_factory.mktemp("auditor-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDITOR_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny model (4 layers, d_model 32) per architecture."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: make_tiny_model(root / arch, arch=arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_lms(tiny_dirs: dict[str, Path], _isolated_cache: Path) -> dict[str, LoadedModel]:
    """Each tiny model loaded through :func:`load_model` on the CPU in float32."""
    return {
        arch: load_model(path, device="cpu", dtype="float32") for arch, path in tiny_dirs.items()
    }


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny_lm(tiny_lms: dict[str, LoadedModel], arch: str) -> LoadedModel:
    return tiny_lms[arch]


@pytest.fixture(scope="session")
def reference_models(tiny_dirs: dict[str, Path]) -> dict[str, AutoModelForCausalLM]:
    """The same checkpoints as full causal LMs (with head), loaded independently."""
    return {
        arch: AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        for arch, path in tiny_dirs.items()
    }
