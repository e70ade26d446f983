"""An archive cache for corpus tests that never reaches a registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.corpora import fetch


def offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``AUDITOR_DATA_CACHE`` under ``tmp_path``; any registry client call fails the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("AUDITOR_DATA_CACHE", str(root))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"registry client called: {args}")

    monkeypatch.setattr(fetch, "_run", no_network)
    return root
