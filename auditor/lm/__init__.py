"""Language models: loading, tokenisation into windows, batching and activation capture.

The only part of auditor that imports torch and transformers at module level.

See Also
--------
auditor.lm.loading : :func:`load_model`, :func:`resolve_device_dtype`, :class:`LoadedModel`,
    :func:`transformers_bars`.
auditor.lm.hooks : :class:`HookPoint`, :class:`TruncatedForward`.
auditor.lm.batching : :class:`Window`, :func:`tokenize_windows`, :func:`plan_batches`,
    :func:`collate`.
"""

from auditor.lm.batching import Window, collate, plan_batches, special_affixes, tokenize_windows
from auditor.lm.hooks import HookPoint, PointName, TruncatedForward
from auditor.lm.loading import (
    LoadedModel,
    cache_dir,
    find_layers,
    load_model,
    native_bfloat16,
    resolve_device_dtype,
    transformers_bars,
    weights_sha256,
)

__all__ = [
    "HookPoint",
    "LoadedModel",
    "PointName",
    "TruncatedForward",
    "Window",
    "cache_dir",
    "collate",
    "find_layers",
    "load_model",
    "native_bfloat16",
    "plan_batches",
    "resolve_device_dtype",
    "special_affixes",
    "tokenize_windows",
    "transformers_bars",
    "weights_sha256",
]
