"""Train a TopK (or BatchTopK) sparse autoencoder on cached activations.

The recipe follows Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") and
EleutherAI's ``sparsify``:

* inputs are multiplied by a constant ``input_scale = sqrt(d_model) / mean_norm`` measured
  on the training split and stored in the SAE's config (``normalize_activations='constant'``);
* encode: ``z = topk(relu((x * s - b_dec) @ W_enc + b_enc))``; decode ``z @ W_dec + b_dec``
  (so the trained SAE has ``apply_b_dec_to_input=True`` and ``relu_before_topk=True``);
* init: random unit-norm decoder rows, ``W_enc = W_dec.T``, ``b_enc = 0``, ``b_dec`` the
  geometric median of a sample of scaled inputs;
* loss: FVU (squared error over the batch's total variance) plus ``auxk_alpha`` × AuxK,
  which reconstructs the residual error from the top ``auxk_k`` *dead* latents;
* Adam (0.9, 0.999, eps 6.25e-10), linear warm-up then linear decay to zero; the decoder
  gradient's component parallel to each row is removed before the step and the rows are
  renormalised to unit norm after it.

BatchTopK (Bussmann et al. 2024, ``activation='batchtopk'``) keeps the ``batch × k``
largest pre-activations of the whole batch instead of ``k`` per token, so a token may use
more or fewer latents while the mean stays ``k``; at inference a single global threshold
(a running mean of each batch's smallest kept value, saved as ``batchtopk_threshold``)
replaces the batch, so a token's code does not depend on its batch.

Checkpoints (``out/checkpoints/step-N/``) hold the SAE in auditor's format, the optimizer
moments and latent statistics as safetensors, and ``state.json`` (step, data position,
history). Nothing is pickled. The data order is a function of the seed and the position
only, so resuming from a checkpoint gives the same final weights as an uninterrupted run.
A run whose cancel token is set stops at the next step boundary after writing a checkpoint
there, so a rerun resumes from it.

The pieces live by concern: :mod:`auditor.sae.train_config` (the settings),
:mod:`auditor.sae.sources` (where tokens come from, behind the ``TrainingSource``
protocol), :mod:`auditor.sae.trainer` (the optimizer state and one step),
:mod:`auditor.sae.kernels` (the sparse TopK / BatchTopK arithmetic) and
:mod:`auditor.sae.checkpoints`; this module is the loop that joins them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from auditor import __version__
from auditor._files import sha256_file
from auditor._versions import library_versions
from auditor.cancel import CancelToken
from auditor.errors import ConfigError, JobCancelled, StoreError
from auditor.progress import Stage
from auditor.sae.activations import ActivationCache
from auditor.sae.checkpoints import (
    checkpoint_dirs,
    load_checkpoint,
    save_checkpoint,
    write_record,
)
from auditor.sae.kernels import geometric_median
from auditor.sae.model import SAE, WEIGHTS_FILENAME
from auditor.sae.sources import TrainingSource, training_source
from auditor.sae.train_config import TrainConfig
from auditor.sae.trainer import Trainer

if TYPE_CHECKING:
    from auditor.sae.stream import ModelStream

__all__ = ["TRAINING_FILENAME", "TrainConfig", "TrainResult", "geometric_median", "train_sae"]

#: Summary of a finished run written next to the SAE: config, metrics, history.
TRAINING_FILENAME = "training.json"

StepCallback = Callable[[Mapping[str, Any]], None]



@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    sae : SAE
        The trained SAE (also saved in ``out``).
    out : str
        Output directory.
    steps, tokens : int
        Steps taken and training tokens seen, in total (over all resumed parts).
    loss, fvu, auxk_loss, dead_frac : float
        Metrics of the last step (``dead_frac``: share of latents that had not fired in
        ``dead_tokens`` tokens).
    input_scale : float
        The constant the inputs are multiplied by.
    history : list of dict
        ``step, tokens, loss, fvu, auxk_loss, dead_frac, lr`` every ``log_every`` steps.
    seconds : float
        Wall time of this call.
    resumed_from : int or None
        Step of the checkpoint this call resumed from.
    resamples : list of dict
        ``step, latents`` of every dead-latent resample (``config.resample_every``).
    config : TrainConfig
    """

    sae: SAE
    out: str
    steps: int
    tokens: int
    loss: float
    fvu: float
    auxk_loss: float
    dead_frac: float
    input_scale: float
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None
    resamples: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the SAE itself)."""
        return {
            "out": self.out, "steps": self.steps, "tokens": self.tokens, "loss": self.loss,
            "fvu": self.fvu, "auxk_loss": self.auxk_loss, "dead_frac": self.dead_frac,
            "input_scale": self.input_scale, "config": self.config.to_dict(),
            "history": list(self.history), "seconds": self.seconds,
            "resumed_from": self.resumed_from, "resamples": list(self.resamples),
        }


# --------------------------------------------------------------------------- public API
def train_sae(
    data: ActivationCache | ModelStream | TrainingSource,
    *,
    config: TrainConfig,
    out: str | Path,
    resume: bool = True,
    init: SAE | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
    device: torch.device | str | None = None,
    stage: Stage | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train a TopK or BatchTopK SAE on cached or streamed activations; save it into ``out``.

    Parameters
    ----------
    data : ActivationCache, ModelStream or TrainingSource
        A cache (:func:`auditor.sae.activations.collect_activations`), whose training split
        (``config.heldout_fraction``) of hook ``config.hook`` is loaded into memory in fp16;
        or a :class:`auditor.sae.stream.ModelStream`, which runs the model over a corpus as
        training goes (its held-out documents skipped), one shuffled chunk in memory. A
        fresh run's input scale is the mean norm over the cache's training split, or over
        the stream's first chunk. Any other :class:`auditor.sae.sources.TrainingSource`
        is read as is.
    config : TrainConfig
        The run's settings.
    out : str or Path
        Output directory: the SAE (``config.json`` + ``sae.safetensors``, loadable with
        :func:`auditor.sae.load_sae`), ``training.json`` and ``checkpoints/step-N/``.
    resume : bool, default True
        Continue from the latest checkpoint in ``out`` if there is one (its settings must
        match ``config`` except for ``checkpoint_every``/``keep_checkpoints``).
    init : SAE or None
        Start from these weights instead of a random init (same ``d_sae``; its
        ``input_scale`` is kept when it uses ``'constant'`` normalisation).
    progress : bool, default False
        Show a tqdm bar with loss, FVU and dead fraction.
    on_step : callable or None
        Called after every step with ``step`` (1-based), ``steps``, ``tokens``, ``loss``,
        ``fvu``, ``auxk_loss``, ``dead_frac`` and ``lr``.
    device : torch.device, str or None
        Where the weights, optimizer state and batches live (``'cpu'``, ``'cuda'``,
        ``'cuda:1'`` …); ``None`` is CUDA when available, else the CPU
        (:func:`auditor.lm.resolve_device_dtype`). The training split stays in CPU memory
        and each batch is moved over; the data order, the init and the resample draws come
        from CPU generators, so a seed gives the same run on any device (up to floating
        point). Checkpoints and the saved SAE are on the CPU, so a run may resume on
        another device. Recorded in ``training.json``.
    stage : Stage or None
        Progress of the run as events of this stage (:mod:`auditor.progress`): ``done``
        steps out of ``config.steps``, with ``tokens``, ``loss``, ``fvu`` and ``dead_frac``
        counters. The caller closes it.
    cancel : CancelToken or None
        Checked before every step; when it is set the run writes a checkpoint at that
        step (whatever ``checkpoint_every`` says) and raises
        :class:`~auditor.errors.JobCancelled`, so a rerun with ``resume`` goes on from
        there and ends with the weights an uninterrupted run gives.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        The hook is not in the cache, ``d_sae``/``k`` do not fit, ``init`` does not match,
        a checkpoint in ``out`` was made with other settings, or ``device`` is not a
        device or is CUDA where there is none.
    StoreError
        The training split is empty, or a cache shard or checkpoint is missing or corrupt.
    JobCancelled
        ``cancel`` was set (a checkpoint of the last whole step is in ``out``).
    """
    from tqdm.auto import tqdm

    from auditor.lm.loading import native_bfloat16, resolve_device_dtype

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    run_device, _ = resolve_device_dtype(None if device is None else str(device), "float32")
    if config.encoder_dtype == "bfloat16" and not native_bfloat16(run_device):
        warnings.warn(
            f"encoder_dtype='bfloat16' on a device ({run_device}) without native bfloat16 "
            "matrix products (a CPU needs AVX512-BF16/AMX, a GPU compute capability 8.0+): "
            "the encoder product is emulated and several times slower than float32",
            RuntimeWarning, stacklevel=2)
    out = Path(out)
    started = time.perf_counter()
    source = training_source(data, config)
    source.plan(steps=config.steps, batch_size=config.batch_size)
    d_in = source.d_model
    record = source.record()
    model = record.get("cache_model")
    model_name = model.get("id") if isinstance(model, dict) else None
    trainer = Trainer(d_in=d_in, config=config, device=run_device)
    identity = {"config": config.to_dict(include_runtime=False), "d_model": d_in,
                **source.identity()}
    if init is not None:  # a resume must continue from the same starting weights
        identity["init_sha256"] = init.sha256

    checkpoints = checkpoint_dirs(out) if resume else []
    start_step, history, resumed_from = 0, [], None
    resamples: list[dict[str, int]] = []
    if checkpoints:
        step_found, path = checkpoints[-1]
        state = load_checkpoint(path, trainer)
        saved = state.get("identity")
        if saved != json.loads(json.dumps(identity)):
            raise ConfigError(
                "the checkpoint in this directory was made with other settings or data; "
                "use another output directory or resume=False",
                path=path,
            )
        start_step, history = int(state["step"]), list(state["history"])
        resamples = list(state.get("resamples", []))
        source.restore(state.get("data") or {})
        input_scale = float(state["input_scale"])
        resumed_from = step_found
    else:
        input_scale = _input_scale(source, d_in, init)
        sample = source.first_tokens(config.init_tokens) * input_scale
        if init is not None:
            if init.cfg.d_in != d_in or init.cfg.d_sae != config.d_sae:
                raise ConfigError(
                    f"init SAE is {init.cfg.d_in}x{init.cfg.d_sae}, the run needs "
                    f"{d_in}x{config.d_sae}", field="init")
            trainer.load_weights(init, renormalise=True)
        else:
            trainer.initialise(sample)

    steps = config.steps
    metrics = {"loss": math.nan, "fvu": math.nan, "auxk_loss": math.nan, "dead_frac": 0.0}
    saved_at = resumed_from

    def checkpoint(done: int) -> None:
        nonlocal saved_at
        state = {"step": done, "tokens": done * config.batch_size,
                 "adam_step": trainer.adam_step, "threshold": trainer.threshold,
                 "input_scale": input_scale, "history": history,
                 "resamples": resamples, "identity": identity,
                 "data": source.state(),
                 "auditor_version": __version__,
                 "seconds": time.perf_counter() - started}
        save_checkpoint(out, trainer, step=done, state=state, input_scale=input_scale,
                        model_name=model_name, keep=config.keep_checkpoints)
        saved_at = done

    def stop(step: int) -> JobCancelled:
        """Checkpoint the last whole step (unless it is on disk already) and say so."""
        if step > 0 and saved_at != step:
            checkpoint(step)
        return JobCancelled(f"cancelled at training step {step} of {steps} (a checkpoint "
                            "of that step is kept; a rerun resumes from it)", path=out)

    if stage is not None:
        stage.set_total(steps)
        stage.update(start_step, tokens=float(start_step * config.batch_size))
    bar = tqdm(total=steps, initial=start_step, unit="step", disable=not progress,
               dynamic_ncols=True, desc="train sae")
    try:
        for step in range(start_step, steps):
            if cancel is not None and cancel.cancelled:
                raise stop(step)
            try:
                batch = source.batch(step, config.batch_size)
            except JobCancelled:  # a stream stopped between two of its chunks
                raise stop(step) from None
            # Moved in fp16 (half the bytes), widened on the device.
            x = batch.to(run_device, non_blocking=True)
            x = x.float() * input_scale
            lr = config.lr_at(step)
            metrics = trainer.step(x, lr=lr)
            done = step + 1
            if config.resamples_at(done):
                # Seeded by step so a resumed run draws the same tokens.
                generator = torch.Generator(device="cpu").manual_seed(
                    config.seed * 1_000_003 + done)
                n = trainer.resample_dead(x, generator=generator)
                if n:
                    resamples.append({"step": done, "latents": n})
                    metrics["dead_frac"] = float(trainer.dead_mask().float().mean())
            tokens = done * config.batch_size
            record = {"step": done, "tokens": tokens, **metrics, "lr": lr}
            if done % config.log_every == 0 or done == steps:
                history.append(record)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", fvu=f"{metrics['fvu']:.4f}",
                                dead=f"{metrics['dead_frac']:.3f}", refresh=False)
            bar.update(1)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < steps:
                checkpoint(done)
            if stage is not None:
                stage.update(done, tokens=float(tokens), loss=metrics["loss"],
                             fvu=metrics["fvu"], dead_frac=metrics["dead_frac"])
            if on_step is not None:
                on_step({**record, "steps": steps})
    finally:
        bar.close()

    sae = trainer.to_sae(input_scale=input_scale, model_name=model_name)
    sae.save(out)
    sae.source_path = str(out / WEIGHTS_FILENAME)
    sae.sha256 = sha256_file(out / WEIGHTS_FILENAME)
    if resumed_from is not None and start_step >= steps:
        last = history[-1] if history else {}
        metrics = {k: float(last.get(k, math.nan)) for k in metrics}
    result = TrainResult(
        sae=sae, out=str(out), steps=steps, tokens=steps * config.batch_size,
        loss=metrics["loss"], fvu=metrics["fvu"], auxk_loss=metrics["auxk_loss"],
        dead_frac=metrics["dead_frac"], input_scale=input_scale, config=config,
        history=history, seconds=time.perf_counter() - started, resumed_from=resumed_from,
        resamples=resamples,
    )
    write_record(out / TRAINING_FILENAME, {
        **result.to_dict(), "auditor_version": __version__,
        "libraries": library_versions(), **source.record(), "hook": config.hook,
        "sae_sha256": sae.sha256, "device": str(run_device),
        "init": None if init is None else {"path": init.source_path, "sha256": init.sha256},
    })
    return result


def _input_scale(source: TrainingSource, d_in: int, init: SAE | None) -> float:
    if init is not None:
        if init.cfg.normalize_activations == "constant":
            assert init.cfg.input_scale is not None
            return float(init.cfg.input_scale)
        if init.cfg.normalize_activations == "none":
            return 1.0
        raise ConfigError("init SAE must use 'constant' or no input normalisation",
                          field="init")
    acts = source.scale_sample()
    total = 0.0
    for start in range(0, acts.shape[0], 65536):
        total += float(acts[start : start + 65536].float().norm(dim=1).double().sum())
    mean_norm = total / acts.shape[0]
    if not mean_norm > 0 or not math.isfinite(mean_norm):
        raise StoreError(f"activations have mean norm {mean_norm}; cannot scale them")
    return math.sqrt(d_in) / mean_norm
