"""The sparse arithmetic of SAE training: TopK / BatchTopK selection with a sparse backward
pass, sparse decoding, and the geometric median that starts the decoder bias.

Every function is pure (tensors in, tensors out): the trainer (:mod:`auditor.sae.trainer`)
holds the state.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["SelectedPre", "bag_offsets", "batch_top", "gathered_pre", "geometric_median",
           "sparse_decode", "transposed_sparse"]


class SelectedPre(torch.autograd.Function):
    """Pre-activations of the selected latents, with a sparse backward pass.

    The selection is ``indices`` ``[n, k]`` (k latents per token) or, with ``rows``, a
    ragged list: entry ``j`` is latent ``indices[j]`` of token ``rows[j]`` (sorted by
    token). The forward pass only gathers from the dense pre-activations that were computed
    without autograd to pick the latents. The backward pass needs three products with the
    sparse ``[n, d_sae]`` matrix ``G`` of output gradients (one non-zero per entry):
    ``G.T @ sae_in`` for ``W_enc`` (a CSR matrix product), ``G @ W_enc`` for the input
    (an ``embedding_bag``) and the column sums of ``G`` for ``b_enc``. Gathering ``[n, k,
    d_in]`` encoder rows instead, as plain autograd does, was 60 % of a step's time.
    """

    @staticmethod
    def forward(
        ctx: Any, pre: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor | None,
        sae_in: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
    ) -> torch.Tensor:
        if rows is None:  # k per token: a ragged list in which every token has k entries
            values = pre.gather(1, indices)
            rows = torch.arange(sae_in.shape[0], device=indices.device).repeat_interleave(
                indices.shape[1])
        else:
            values = pre[rows, indices]
        ctx.save_for_backward(indices, rows, sae_in, w_enc)
        return values.to(sae_in.dtype)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[None, None, None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        indices, rows, sae_in, w_enc = ctx.saved_tensors
        d_sae, n = w_enc.shape[0], sae_in.shape[0]
        flat, flat_grad = indices.reshape(-1), grad.reshape(-1)
        grad_in = grad_w = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_in = torch.nn.functional.embedding_bag(
                flat, w_enc, bag_offsets(rows, n), per_sample_weights=flat_grad, mode="sum")
        if ctx.needs_input_grad[4]:
            grad_w = transposed_sparse(rows, flat, flat_grad, d_sae, n) @ sae_in
        if ctx.needs_input_grad[5]:
            grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(
                0, flat, flat_grad)
        return None, None, None, grad_in, grad_w, grad_b


def batch_top(candidates: torch.Tensor, budget: int) -> tuple[torch.Tensor, float]:
    """BatchTopK's choice among each token's candidate pre-activations ``[n, c]``.

    Returns the mask of the ``budget`` largest positive values of the whole batch (ties
    at the boundary all kept) and the smallest kept value (0 when fewer than ``budget``
    are positive), the batch's threshold.
    """
    flat = candidates.reshape(-1).float()
    if budget < flat.numel():
        boundary = float(flat.topk(budget, sorted=False).values.min())
    else:
        boundary = float(flat.min())
    boundary = max(boundary, 0.0)
    return (candidates >= boundary) & (candidates > 0), boundary


def bag_offsets(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Where each of ``n`` tokens' entries start in a ragged list sorted by token ``rows``."""
    offsets = torch.zeros(n, dtype=torch.int64, device=rows.device)
    offsets[1:] = torch.bincount(rows, minlength=n)[:-1].cumsum(0)
    return offsets


def transposed_sparse(rows: torch.Tensor, latents: torch.Tensor, values: torch.Tensor,
                       width: int, n: int) -> torch.Tensor:
    """``[width, n]`` CSR matrix whose entry ``(latents[j], rows[j])`` is ``values[j]``."""
    order = torch.argsort(latents, stable=True)
    crow = torch.zeros(width + 1, dtype=torch.int64, device=latents.device)
    crow[1:] = torch.bincount(latents, minlength=width).cumsum(0)
    with warnings.catch_warnings():  # "CSR support is in beta": the product below is stable
        warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
        return torch.sparse_csr_tensor(crow, rows[order], values[order],
                                       size=(width, n), check_invariants=False)


def gathered_pre(
    sae_in: torch.Tensor, indices: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
    *, pre: torch.Tensor | None = None, rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pre-activations of the latents ``indices``; ``w_enc`` is ``[d_sae, d_in]``.

    ``indices`` is ``[n, k]``, or with ``rows`` a ragged list (entry ``j``: latent
    ``indices[j]`` of token ``rows[j]``). ``pre`` is the dense ``sae_in @ w_enc.T + b_enc``
    when it is already at hand (computed without autograd); otherwise the selected rows
    are gathered.
    """
    if pre is not None:
        return SelectedPre.apply(pre, indices, rows, sae_in, w_enc, b_enc)
    enc = torch.nn.functional.embedding(indices, w_enc)  # [n, k, d_in] or [m, d_in]
    if rows is not None:
        return (enc * sae_in[rows]).sum(dim=1) + b_enc[indices]
    return (enc * sae_in.unsqueeze(1)).sum(dim=2) + b_enc[indices]


def sparse_decode(
    indices: torch.Tensor, values: torch.Tensor, w_dec: torch.Tensor,
    *, offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_j values[:, j] * w_dec[indices[:, j]]`` without a dense ``[n, d_sae]`` tensor.

    With ``offsets``, ``indices`` and ``values`` are ragged lists sorted by token and
    token ``i``'s entries start at ``offsets[i]``.
    """
    return torch.nn.functional.embedding_bag(
        indices, w_dec, offsets, per_sample_weights=values, mode="sum"
    )



def geometric_median(points: torch.Tensor, *, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Geometric median of ``[n, d]`` points by Weiszfeld's algorithm (float64 inside).

    Parameters
    ----------
    points : torch.Tensor
        ``[n, d]`` points, ``n >= 1``.
    iters : int, default 100
        Maximum iterations.
    tol : float, default 1e-6
        Stop when the estimate moves less than ``tol`` × its norm (plus ``tol``).

    Returns
    -------
    torch.Tensor
        ``[d]`` float32 median.

    Examples
    --------
    For four points in convex position it is where the diagonals cross:

    >>> geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]))
    tensor([0.5000, 0.5000])
    """
    x = points.double()
    guess = x.mean(dim=0)
    for _ in range(iters):
        dist = (x - guess).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        moved = float((new - guess).norm())
        guess = new
        if moved <= tol * (float(guess.norm()) + 1.0):
            break
    return guess.float()
