"""pytest configuration for the doctests of the ``auditor`` package.

The test command runs the examples in every module's docstrings (``--doctest-modules`` over
``testpaths = ["tests", "auditor"]`` in ``pyproject.toml``). They run on a CPU, offline and
without the real default model; an example that needs any of these is marked
``# doctest: +SKIP``. ``auditor/__main__.py`` is never imported (pytest skips it).

``collect_ignore`` is the one place to leave a module's doctests out, with the reason next
to it (a module that cannot be imported without an optional dependency, or whose examples
are broken and owned elsewhere). It is empty: every module imports and its examples pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

collect_ignore: list[str] = []


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep what an example caches (weight hashes, calibration, corpora) out of ~/.cache."""
    root: Path = tmp_path_factory.getbasetemp() / "doctest-cache"
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(root / "auditor"))
    monkeypatch.setenv("AUDITOR_DATA_CACHE", str(root / "data"))
