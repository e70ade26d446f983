"""What extraction a set of heads needs: the settings every one of them was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditor.errors import ConfigError
from auditor.heads.head import GUARDED_EXTRACT

__all__ = ["heads_extract_settings"]


def heads_extract_settings(heads: Sequence[Any]) -> dict[str, Any]:
    """The extraction settings every head accepts (an :class:`ExtractConfig` dict subset).

    Raises
    ------
    ConfigError
        Two heads were trained on features extracted with different guarded settings.
    """
    settings: dict[str, Any] = {}
    for head in heads:
        for key in GUARDED_EXTRACT:
            if key in head.config.extract:
                value = head.config.extract[key]
                if key in settings and settings[key] != value:
                    raise ConfigError(f"heads disagree on extraction setting {key} "
                                      f"({settings[key]!r} vs {value!r}); classify them "
                                      f"separately", field=key)
                settings[key] = value
    poolings = {h.config.pooling if h.config.representation == "sae" else "mean"
                for h in heads}
    raw = any(h.config.representation == "raw" for h in heads)
    return {**settings, "poolings": sorted(poolings), "raw_mean": raw}
