"""Fixtures shared across the test suite: tiny random models and SAEs, built offline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from auditor.testing import make_random_sae, make_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep weight-hash sidecars and other caches out of the user's ~/.cache."""
    old = os.environ.get("AUDITOR_CACHE_DIR")
    os.environ["AUDITOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("AUDITOR_CACHE_DIR", None)
    else:
        os.environ["AUDITOR_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _private_heads_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the user's own heads (data home, $AUDITOR_HEADS_PATH) out of the search path."""
    old = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "AUDITOR_HEADS_PATH")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    os.environ.pop("AUDITOR_HEADS_PATH", None)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer, d_model 32 random Llama with a trained BPE tokenizer, saved to disk."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", n_layers=4,
                           d_model=32, seed=0)


@pytest.fixture
def random_sae() -> Callable[..., object]:
    """Factory: ``random_sae(layer=1, d_sae=96, ...)`` → an in-memory SAE."""
    return make_random_sae
