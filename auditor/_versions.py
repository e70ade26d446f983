"""Versions of the libraries that shape numeric results, recorded in provenance.

The same GGUF de-quantised by another ``transformers``/``gguf`` release, or run through
another ``torch``, can give measurably different activations (the default model's clean
next-token loss moved from 4.33 to 4.03 between two transformers releases). Feature
stores, activation caches, SAE training and evaluation records therefore say which
versions produced them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

__all__ = ["NUMERIC_LIBRARIES", "libraries_text", "library_versions"]

#: Distributions whose release can change activations, SAE codes or probe outputs.
NUMERIC_LIBRARIES: tuple[str, ...] = (
    "torch", "transformers", "gguf", "safetensors", "numpy", "scikit-learn", "lightgbm",
)


def library_versions(names: Iterable[str] = NUMERIC_LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` where it is not installed.

    Parameters
    ----------
    names : iterable of str
        Distribution names as pip knows them.

    Returns
    -------
    dict
        ``name -> version``, in the order given.

    Examples
    --------
    >>> library_versions(["no-such-distribution-xyz"])
    {'no-such-distribution-xyz': None}
    """
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def libraries_text(libraries: Any) -> str:
    """``"numpy 2.4.6, torch 2.13.0, …"`` from a provenance ``libraries`` map: installed
    ones only, by name (stored maps may come back key-sorted); ``"–"`` for stores written
    before versions were recorded."""
    if not isinstance(libraries, Mapping):
        return "–"
    return ", ".join(f"{name} {version}" for name, version in sorted(libraries.items())
                     if version) or "–"
