"""Explain a linear probe on raw activations in SAE features.

A head may read mean raw residual activations ``x̄`` when they classify better than the SAE
features. Its decisions are still explained in SAE features: the SAE reconstructs each
token as ``x ≈ (z·W_dec + b_dec) / c`` (``c`` the stored input scale), and reconstruction
is linear, so the document mean obeys ``x̄ ≈ (z̄·W_dec + b_dec) / c`` with ``z̄`` the
mean-pooled codes over the same tokens. For a linear score ``w·x̄ + b``, feature ``f``
contributes ``z̄_f · (W_dec[f]·w) / c``; the decoder bias adds ``(b_dec·w) / c`` and the
reconstruction error ``w·(x̄ − x̂̄)`` is kept apart as the residual, so how much of each
decision the features cover is reported, not assumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor.errors import ConfigError
from auditor.explain.contributions import Contributions, base_probe

__all__ = ["decoder_projection", "raw_contributions"]


def decoder_projection(
    weights: np.ndarray, W_dec: np.ndarray, b_dec: np.ndarray, *, input_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Project raw-space weights onto the SAE decoder.

    Parameters
    ----------
    weights : ndarray of shape (n_outputs, d_model)
        Weights of the linear score on raw activations.
    W_dec : ndarray of shape (d_sae, d_model)
    b_dec : ndarray of shape (d_model,)
    input_scale : float, default 1.0
        The SAE's constant input scale (activations are multiplied by it before encoding).

    Returns
    -------
    per_feature : ndarray of shape (d_sae, n_outputs)
        ``W_dec @ weights.T / input_scale``: the score change per unit of each feature.
    bias : ndarray of shape (n_outputs,)
        ``b_dec @ weights.T / input_scale``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != W_dec.shape[1]:
        raise ConfigError(f"weights of shape {w.shape} do not match a decoder of width "
                          f"{W_dec.shape[1]}", field="weights")
    per_feature = np.asarray(W_dec, dtype=np.float64) @ w.T / input_scale
    bias = np.asarray(b_dec, dtype=np.float64) @ w.T / input_scale
    return per_feature, bias


def raw_contributions(
    probe: Any, raw: np.ndarray, sae_mean: Any, *, per_feature: np.ndarray,
    decoder_bias: np.ndarray,
) -> Contributions:
    """Contributions of SAE features to a linear probe that reads raw mean activations.

    Parameters
    ----------
    probe : LinearProbe or CalibratedProbe of one
        Fitted on raw mean activations with ``feature_transform='none'``.
    raw : ndarray of shape (n_docs, d_model)
        The raw mean activations it scores.
    sae_mean : sparse matrix of shape (n_docs, d_sae)
        Mean-pooled SAE codes over the same tokens.
    per_feature, decoder_bias
        From :func:`decoder_projection` of the probe's ``feature_weights_``.

    Returns
    -------
    Contributions
        ``values`` the features' part, ``bias`` the intercept + decoder-bias part, and
        ``residual`` the reconstruction error's part; their sum is the probe's score.
    """
    base = base_probe(probe)
    if getattr(base, "feature_transform", None) != "none" or not hasattr(base,
                                                                         "feature_weights_"):
        raise ConfigError("only a linear probe on untransformed raw activations decomposes "
                          "into SAE features", field="probe")
    Z = sp.csr_matrix(sae_mean, dtype=np.float64)
    if per_feature.shape[0] != Z.shape[1]:
        raise ConfigError(f"{Z.shape[1]} SAE features but a projection for "
                          f"{per_feature.shape[0]}", field="sae_mean")
    values = [sp.csr_matrix(Z.multiply(per_feature[:, k][None, :]))
              for k in range(per_feature.shape[1])]
    for v in values:
        v.sort_indices()
    score = np.asarray(base.decision_function(raw), dtype=np.float64).reshape(len(raw), -1)
    bias = np.tile(base.feature_intercept_ + decoder_bias, (len(raw), 1))
    feats = np.column_stack([np.asarray(v.sum(axis=1)).ravel() for v in values])
    classes = list(base.classes_)
    outputs = [classes[1]] if len(values) == 1 else classes
    return Contributions(outputs=outputs, values=values, bias=bias,
                         residual=score - feats - bias)
