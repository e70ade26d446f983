"""Sparse autoencoders: one canonical module, loaders for the public formats, training.

Examples
--------
>>> import torch
>>> from auditor.sae import SAE, SAEConfig
>>> sae = SAE(SAEConfig(d_in=16, d_sae=64, activation="topk", k=4))
>>> sae.encode_sparse(torch.zeros(3, 16)).values.shape
torch.Size([3, 4])
"""

from auditor.sae.activations import (
    ActivationCache,
    ActivationCacheWriter,
    collect_activations,
    open_cache,
    texts_fingerprint,
)
from auditor.sae.config import SAEConfig
from auditor.sae.evaluate import CEMetrics, SAEMetrics, delta_ce, evaluate_sae
from auditor.sae.formats import FORMATS, convert_sae, detect_format, load_sae
from auditor.sae.model import SAE, SparseCodes, check_compatible
from auditor.sae.stream import ModelStream, StreamSettings
from auditor.sae.train import TrainConfig, TrainResult, train_sae

__all__ = [
    "FORMATS",
    "SAE",
    "ActivationCache",
    "ActivationCacheWriter",
    "CEMetrics",
    "ModelStream",
    "SAEConfig",
    "SAEMetrics",
    "SparseCodes",
    "StreamSettings",
    "TrainConfig",
    "TrainResult",
    "check_compatible",
    "collect_activations",
    "convert_sae",
    "delta_ce",
    "detect_format",
    "evaluate_sae",
    "load_sae",
    "open_cache",
    "texts_fingerprint",
    "train_sae",
]
