"""Sparse autoencoders: one canonical module, loaders for the public formats.

Examples
--------
>>> import torch
>>> from auditor.sae import SAE, SAEConfig
>>> sae = SAE(SAEConfig(d_in=16, d_sae=64, activation="topk", k=4))
>>> sae.encode_sparse(torch.zeros(3, 16)).values.shape
torch.Size([3, 4])
"""

from auditor.sae.config import SAEConfig
from auditor.sae.formats import FORMATS, convert_sae, detect_format, load_sae
from auditor.sae.model import SAE, SparseCodes, check_compatible

__all__ = [
    "FORMATS",
    "SAE",
    "SAEConfig",
    "SparseCodes",
    "check_compatible",
    "convert_sae",
    "detect_format",
    "load_sae",
]
