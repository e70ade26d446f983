"""The optimizer state of one SAE training run: parameters, Adam moments, latent statistics.

:class:`Trainer` takes one step on a batch (FVU + AuxK loss, sparse backward through
:mod:`auditor.sae.kernels`, decoder-gradient projection, fused Adam, unit-norm decoder
rows), resamples dead latents, and exports the trained :class:`~auditor.sae.SAE`. The loop
around it (data, schedule, checkpoints, progress, cancel) is :func:`auditor.sae.train_sae`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from auditor.errors import StoreError
from auditor.sae.config import SAEConfig
from auditor.sae.kernels import (
    bag_offsets,
    batch_top,
    gathered_pre,
    geometric_median,
    sparse_decode,
)
from auditor.sae.model import SAE
from auditor.sae.train_config import TrainConfig

__all__ = ["Trainer"]

_BETAS = (0.9, 0.999)
_EPS = 6.25e-10
_PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")
# BatchTopK's inference threshold: a running mean over about the last 100 batches, so it
# tracks the weights as they train (it matched the exact-k threshold of 65,536 training
# tokens to 0.05 % in the shipped candidate's run).
_THRESHOLD_MOMENTUM = 0.99


class Trainer:
    """Parameters, Adam moments and latent statistics of one run."""

    def __init__(self, *, d_in: int, config: TrainConfig,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.d_in = d_in
        # Every tensor of the run lives here; only the data order, the init draw and the
        # resample draw use CPU generators, so a seed means the same run on any device.
        self.device = device = torch.device(device)
        self.params: dict[str, torch.Tensor] = {
            # Stored [d_sae, d_in] (rows = latents) so gathering latents is contiguous;
            # transposed to the canonical [d_in, d_sae] on export.
            "W_enc": torch.zeros(config.d_sae, d_in, device=device),
            "b_enc": torch.zeros(config.d_sae, device=device),
            "W_dec": torch.zeros(config.d_sae, d_in, device=device),
            "b_dec": torch.zeros(d_in, device=device),
        }
        for p in self.params.values():
            p.requires_grad_(True)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.adam_step = 0
        self.since_fired = torch.zeros(config.d_sae, dtype=torch.int64, device=device)
        self.auxk_k = config.resolved_auxk_k(d_in)
        self.dead_tokens = config.resolved_dead_tokens
        self.encoder_dtype: torch.dtype = getattr(torch, config.encoder_dtype)
        # BatchTopK only: running mean of each batch's smallest kept pre-activation.
        self.threshold: float | None = None
        # The dense pre-activations, reused step after step: a fresh [batch, d_sae] tensor
        # each step costs page faults comparable to the relu over it.
        self._pre: torch.Tensor | None = None

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def initialise(self, sample: torch.Tensor) -> None:
        cfg = self.config
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, self.d_in, generator=generator, device="cpu")
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.params["W_dec"].copy_(w_dec)
        self.params["W_enc"].copy_(w_dec)
        self.params["b_enc"].zero_()
        if cfg.b_dec_init == "geometric_median":
            self.params["b_dec"].copy_(geometric_median(sample))
        elif cfg.b_dec_init == "mean":
            self.params["b_dec"].copy_(sample.double().mean(dim=0).float())
        else:
            self.params["b_dec"].zero_()

    @torch.no_grad()
    def load_weights(self, sae: SAE, *, renormalise: bool) -> None:
        for name in _PARAMS:
            value = getattr(sae, name).detach().float()
            self.params[name].copy_(value.T if name == "W_enc" else value)  # to the device
        if self.config.activation == "batchtopk" and sae.cfg.batchtopk_threshold is not None:
            self.threshold = float(sae.cfg.batchtopk_threshold)
        if renormalise:
            self._renormalise()

    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired in ``dead_tokens`` training tokens."""
        return self.since_fired >= self.dead_tokens

    # ------------------------------------------------------------------ step
    def step(self, x: torch.Tensor, *, lr: float) -> dict[str, float]:
        cfg = self.config
        p = self.params
        sae_in = x - p["b_dec"]
        # Select the top k on pre-activations computed without autograd; the selected ones
        # carry a sparse backward (SelectedPre): O(n * k * d_in) instead of two more
        # dense [n, d_in] x [d_in, d_sae] products.
        with torch.no_grad():
            pre = self._dense_pre(sae_in)
            # The top k of pre, not of relu(pre): the same latents wherever k are positive,
            # and where fewer are, the extra picks get value 0 from the relu below (no
            # reconstruction, no gradient, not counted as firing).
            top_idx, rows, offsets, smallest = self._select(pre)
            if smallest is not None:
                self.threshold = smallest if self.threshold is None else (
                    _THRESHOLD_MOMENTUM * self.threshold + (1 - _THRESHOLD_MOMENTUM) * smallest)
        top_vals = torch.relu(gathered_pre(sae_in, top_idx, p["W_enc"], p["b_enc"], pre=pre,
                                            rows=rows))
        x_hat = sparse_decode(top_idx, top_vals, p["W_dec"], offsets=offsets) + p["b_dec"]
        error = x_hat - x
        total_variance = (x - x.mean(dim=0)).pow(2).sum()
        fvu = error.pow(2).sum() / total_variance

        dead = self.dead_mask()
        n_dead = int(dead.sum())
        auxk_loss = torch.zeros((), device=x.device)
        if n_dead > 0 and cfg.auxk_alpha > 0:
            k_aux = min(self.auxk_k, n_dead)
            scale = min(n_dead / self.auxk_k, 1.0)
            dead_idx = dead.nonzero().squeeze(1)
            # Dense only over the dead latents (usually few).
            dead_pre = torch.relu(sae_in @ p["W_enc"][dead_idx].T + p["b_enc"][dead_idx])
            aux_vals, aux_pos = dead_pre.topk(k_aux, dim=-1, sorted=False)
            e_hat = sparse_decode(dead_idx[aux_pos], aux_vals, p["W_dec"])
            auxk_loss = scale * (e_hat + error.detach()).pow(2).sum() / total_variance
        loss = fvu + cfg.auxk_alpha * auxk_loss

        for t in p.values():
            t.grad = None
        loss.backward()
        with torch.no_grad():
            self._project_decoder_grad()
            self._adam(lr)
            self._renormalise()
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x.device)
            fired[top_idx[top_vals > 0]] = True
            self.since_fired += x.shape[0]
            self.since_fired[fired] = 0
        dead_frac = float(self.dead_mask().float().mean())
        return {"loss": float(loss.detach()), "fvu": float(fvu.detach()),
                "auxk_loss": float(auxk_loss.detach()),
                "dead_frac": dead_frac}

    def _select(self, pre: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor | None, torch.Tensor | None, float | None]:
        """The latents a step uses, from the dense pre-activations ``[n, d_sae]``.

        Returns ``(indices, rows, offsets, smallest)``: for TopK ``indices`` is ``[n, k]``
        and the rest ``None``; for BatchTopK a ragged list (entry ``j``: latent
        ``indices[j]`` of token ``rows[j]``), its bag ``offsets`` and the batch's smallest
        kept value.
        """
        cfg = self.config
        top_idx = pre.topk(cfg.candidates_per_token, dim=-1, sorted=False).indices
        if cfg.activation != "batchtopk":
            return top_idx, None, None, None
        # Ragged codes: only the kept entries (batch × k of them), each with its token, so
        # the sparse products cost what TopK's do, not 4x that.
        keep, smallest = batch_top(pre.gather(1, top_idx), cfg.k * pre.shape[0])
        rows, cols = keep.nonzero(as_tuple=True)
        return top_idx[rows, cols], rows, bag_offsets(rows, pre.shape[0]), smallest

    def _dense_pre(self, sae_in: torch.Tensor) -> torch.Tensor:
        """``sae_in @ W_enc.T + b_enc`` in ``encoder_dtype``, into the reused buffer."""
        p, dtype = self.params, self.encoder_dtype
        shape = (sae_in.shape[0], self.config.d_sae)
        if self._pre is None or self._pre.shape != shape:
            self._pre = torch.empty(shape, dtype=dtype, device=sae_in.device)
        return torch.addmm(p["b_enc"].detach().to(dtype), sae_in.detach().to(dtype),
                           p["W_enc"].detach().to(dtype).T, out=self._pre)

    @torch.no_grad()
    def resample_dead(self, x: torch.Tensor, *, generator: torch.Generator) -> int:
        """Re-initialise the dead latents toward ``x``'s worst-reconstructed tokens.

        Returns the number of latents resampled.
        """
        dead = self.dead_mask()
        dead_idx = dead.nonzero().squeeze(1)
        n = int(dead_idx.numel())
        if n == 0 or n == self.config.d_sae:
            return 0
        p = self.params
        sae_in = x - p["b_dec"]
        # The error of the codes a step would use (for BatchTopK: the batch's top, not
        # each token's top k); the threshold is not moved.
        top_idx, rows, offsets, _ = self._select(self._dense_pre(sae_in))
        top_vals = torch.relu(gathered_pre(sae_in, top_idx, p["W_enc"], p["b_enc"], rows=rows))
        error = x - (sparse_decode(top_idx, top_vals, p["W_dec"], offsets=offsets) + p["b_dec"])
        weight = error.pow(2).sum(dim=1).double()
        if not float(weight.sum()) > 0:
            return 0
        # Drawn on the CPU (``generator`` is a CPU generator): the same tokens on any device.
        rows = torch.multinomial(weight.cpu(), n, replacement=n > x.shape[0],
                                 generator=generator).to(x.device)
        direction = error[rows]
        direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        alive = ~dead
        p["W_dec"][dead_idx] = direction
        p["W_enc"][dead_idx] = direction * p["W_enc"][alive].norm(dim=1).mean()
        p["b_enc"][dead_idx] = 0.0
        # Fresh first moments; second moments at the live rows' mean so the first steps
        # are as large as anyone's (zeros would make them ~3x lr).
        for name in ("W_enc", "W_dec", "b_enc"):
            self.exp_avg[name][dead_idx] = 0.0
            self.exp_avg_sq[name][dead_idx] = self.exp_avg_sq[name][alive].mean(dim=0)
        self.since_fired[dead_idx] = 0
        return n

    def _project_decoder_grad(self) -> None:
        w = self.params["W_dec"]
        grad = w.grad
        if grad is None:
            return
        parallel = (grad * w).sum(dim=1, keepdim=True)
        grad -= parallel * w

    def _adam(self, lr: float) -> None:
        beta1, beta2 = _BETAS
        grads = {n: p.grad for n, p in self.params.items() if p.grad is not None}
        names = list(grads)
        if not names:
            return
        # One fused kernel over all tensors (about 3x faster than the per-op update, same
        # formula: lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)), t being
        # this step's 1-based number.
        self.adam_step += 1
        steps = [torch.tensor(float(self.adam_step), device=self.device) for _ in names]
        torch._fused_adam_(
            [self.params[n].data for n in names], [grads[n] for n in names],
            [self.exp_avg[n] for n in names], [self.exp_avg_sq[n] for n in names], [], steps,
            lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=_EPS, amsgrad=False,
            maximize=False,
        )

    def _renormalise(self) -> None:
        w = self.params["W_dec"]
        w.data /= w.data.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------------------ export
    def to_sae(self, *, input_scale: float, model_name: str | None) -> SAE:
        cfg = self.config
        # A BatchTopK SAE without a threshold yet (no step taken) encodes like TopK. The
        # exported SAE lives on the CPU, wherever it was trained.
        with torch.device("cpu"):
            sae = SAE(SAEConfig(
                d_in=self.d_in, d_sae=cfg.d_sae,
                activation=cfg.activation,  # type: ignore[arg-type]
                k=cfg.k, hook_layer=cfg.layer, hook_point=cfg.point,  # type: ignore[arg-type]
                apply_b_dec_to_input=True, normalize_activations="constant",
                input_scale=float(input_scale), relu_before_topk=True, source_format="auditor",
                model_name=model_name,
                batchtopk_threshold=self.threshold if cfg.activation == "batchtopk" else None,
            ))
        with torch.no_grad():
            for name in _PARAMS:
                value = self.params[name].detach()
                getattr(sae, name).copy_(value.T if name == "W_enc" else value)
        sae.eval()
        return sae

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """Copies on the CPU, for a checkpoint."""
        out = {f"exp_avg.{n}": t.to("cpu", copy=True) for n, t in self.exp_avg.items()}
        out.update({f"exp_avg_sq.{n}": t.to("cpu", copy=True)
                    for n, t in self.exp_avg_sq.items()})
        out["since_fired"] = self.since_fired.to("cpu", copy=True)
        return out

    @torch.no_grad()
    def load_optimizer(self, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
        for prefix, target in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for name, value in target.items():
                key = f"{prefix}.{name}"
                _check_tensor(tensors, key, value, path)
                value.copy_(tensors[key])  # from the CPU to the run's device
        _check_tensor(tensors, "since_fired", self.since_fired, path)
        self.since_fired.copy_(tensors["since_fired"])


def _check_tensor(tensors: Mapping[str, torch.Tensor], key: str, like: torch.Tensor,
                  path: Path) -> None:
    value = tensors.get(key)
    if value is None or value.shape != like.shape or value.dtype != like.dtype:
        got = None if value is None else (value.dtype, tuple(value.shape))
        raise StoreError(f"checkpoint tensor does not match the run (got {got})", path=path,
                         tensor=key)

