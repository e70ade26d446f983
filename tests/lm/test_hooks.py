"""Hook points and the truncated forward pass, against full-model hidden states."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from auditor.errors import ConfigError, HookError
from auditor.lm import (
    HookPoint,
    LoadedModel,
    TruncatedForward,
    collate,
    load_model,
    tokenize_windows,
)
from auditor.testing import CORPUS

HOOKS = (
    HookPoint(0, "resid_pre"),
    HookPoint(1, "resid_post"),
    HookPoint(2, "resid_pre"),
    HookPoint(2, "resid_post"),
)


def _batch(lm: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [CORPUS[0], CORPUS[5] * 3, CORPUS[30], "", CORPUS[37] + CORPUS[40]]
    windows = tokenize_windows(texts, lm.tokenizer, max_length=48)
    input_ids, attention_mask, _ = collate(
        windows, pad_id=lm.tokenizer.pad_token_id, device=lm.device
    )
    assert attention_mask.sum(dim=1).min() < attention_mask.shape[1]  # some padding
    return input_ids, attention_mask


def _count_calls(module: torch.nn.Module, counter: Counter[str], key: str) -> object:
    def hook(*_: object) -> None:
        counter[key] += 1

    return module.register_forward_hook(hook)


# ---------------------------------------------------------------- HookPoint


def test_hook_point_names() -> None:
    assert HookPoint(9).name == "layer9.resid_post"
    assert HookPoint(0, "resid_pre").name == "layer0.resid_pre"
    for hook in HOOKS:
        assert HookPoint.from_name(hook.name) == hook
    assert HookPoint(3) == HookPoint(3, "resid_post")
    assert len({HookPoint(3), HookPoint(3, "resid_post")}) == 1


@pytest.mark.parametrize("name", ["layer.resid_post", "9.resid_post", "layer9", "layer9.mlp_out"])
def test_hook_point_bad_names(name: str) -> None:
    with pytest.raises(HookError):
        HookPoint.from_name(name)


def test_hook_point_validation() -> None:
    with pytest.raises(HookError, match="unknown hook point"):
        HookPoint(1, "attn_out")  # type: ignore[arg-type]
    with pytest.raises(HookError, match=">= 0"):
        HookPoint(-1)
    with pytest.raises(HookError, match="int"):
        HookPoint(1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- TruncatedForward


@pytest.mark.parametrize("layer", [4, 99])
def test_layer_out_of_range(tiny_lm: LoadedModel, layer: int) -> None:
    with pytest.raises(HookError) as info:
        TruncatedForward(tiny_lm, [HookPoint(1), HookPoint(layer)])
    message = str(info.value)
    assert f"layer {layer}" in message
    assert "n_layers=4" in message


def test_no_hooks(tiny_lm: LoadedModel) -> None:
    with pytest.raises(ConfigError):
        TruncatedForward(tiny_lm, [])


def test_matches_full_model_hidden_states(
    tiny_lm: LoadedModel, arch: str, reference_models: dict[str, torch.nn.Module]
) -> None:
    input_ids, attention_mask = _batch(tiny_lm)
    captured = TruncatedForward(tiny_lm, HOOKS)(input_ids, attention_mask)
    assert list(captured) == list(HOOKS)

    with torch.no_grad():
        hidden = reference_models[arch](
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        ).hidden_states
    assert len(hidden) == tiny_lm.n_layers + 1
    real = attention_mask.bool()
    for hook, acts in captured.items():
        assert acts.shape == (*input_ids.shape, tiny_lm.d_model)
        assert acts.dtype == torch.float32
        expected = hidden[hook.layer + 1 if hook.point == "resid_post" else hook.layer]
        torch.testing.assert_close(acts[real], expected[real], rtol=1e-5, atol=1e-6)
    # resid_post of layer L is resid_pre of layer L + 1.
    torch.testing.assert_close(captured[HOOKS[1]][real], captured[HOOKS[2]][real])
    # Different layers really differ (the comparison above is not vacuous).
    assert not torch.allclose(captured[HOOKS[2]][real], captured[HOOKS[3]][real])


def test_last_layer_resid_post_is_before_final_norm(
    tiny_lm: LoadedModel, arch: str, reference_models: dict[str, torch.nn.Module]
) -> None:
    """transformers' ``hidden_states[-1]`` is after the final norm; the hook is before it."""
    input_ids, attention_mask = _batch(tiny_lm)
    last = HookPoint(tiny_lm.n_layers - 1)
    acts = TruncatedForward(tiny_lm, [last])(input_ids, attention_mask)[last]
    with torch.no_grad():
        hidden = reference_models[arch](
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        ).hidden_states
        normed = tiny_lm.model.norm(acts)
    real = attention_mask.bool()
    torch.testing.assert_close(normed[real], hidden[-1][real], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(acts[real], hidden[-1][real])


@pytest.mark.parametrize(
    ("hooks", "deepest_run"),
    [
        (HOOKS, 2),  # resid_post at layer 2: layer 2 runs, 3 does not
        ((HookPoint(0), HookPoint(2, "resid_pre")), 1),  # only the input of layer 2 is needed
        ((HookPoint(0, "resid_pre"),), -1),  # nothing but the embeddings
    ],
)
def test_stops_after_deepest_hook(
    tiny_dirs: dict[str, Path], arch: str, hooks: tuple[HookPoint, ...], deepest_run: int
) -> None:
    causal = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    lm = load_model(tiny_dirs[arch], model=causal, tokenizer=tokenizer, device="cpu")
    calls: Counter[str] = Counter()
    handles = [_count_calls(layer, calls, f"layer{i}") for i, layer in enumerate(lm.layers)]
    handles.append(_count_calls(causal.lm_head, calls, "lm_head"))
    handles.append(_count_calls(lm.model.norm, calls, "norm"))
    input_ids, attention_mask = _batch(lm)

    forward = TruncatedForward(lm, hooks)
    for _ in range(2):
        captured = forward(input_ids, attention_mask)
        assert set(captured) == set(hooks)
    for i in range(lm.n_layers):
        assert calls[f"layer{i}"] == (2 if i <= deepest_run else 0), (i, calls)
    assert calls["lm_head"] == 0
    assert calls["norm"] == 0

    # Sanity check of the counters: a full forward pass runs everything.
    with torch.no_grad():
        causal(input_ids=input_ids, attention_mask=attention_mask)
    assert calls["lm_head"] == 1 and calls[f"layer{lm.n_layers - 1}"] == 1
    for handle in handles:
        handle.remove()  # type: ignore[attr-defined]


def test_hooks_removed_after_call(tiny_lm: LoadedModel) -> None:
    def hook_counts() -> list[tuple[int, int]]:
        return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_lm.layers]

    before = hook_counts()
    input_ids, attention_mask = _batch(tiny_lm)
    TruncatedForward(tiny_lm, HOOKS)(input_ids, attention_mask)
    assert hook_counts() == before
    with pytest.raises(ConfigError):
        TruncatedForward(tiny_lm, HOOKS)(input_ids, attention_mask[:, :-1])
    assert hook_counts() == before
    # An error inside the model also leaves no hooks behind.
    with pytest.raises(IndexError):
        TruncatedForward(tiny_lm, HOOKS)(input_ids + 10_000, attention_mask)
    assert hook_counts() == before


def test_duplicate_hooks_and_output_order(tiny_lm: LoadedModel) -> None:
    input_ids, attention_mask = _batch(tiny_lm)
    hooks = [HookPoint(2), HookPoint(0, "resid_pre"), HookPoint(2)]
    captured = TruncatedForward(tiny_lm, hooks)(input_ids, attention_mask)
    assert list(captured) == [HookPoint(2), HookPoint(0, "resid_pre")]


def test_outputs_are_inference_tensors_without_grad(tiny_lm: LoadedModel) -> None:
    input_ids, attention_mask = _batch(tiny_lm)
    acts = TruncatedForward(tiny_lm, [HookPoint(1)])(input_ids, attention_mask)[HookPoint(1)]
    assert not acts.requires_grad
    assert torch.isfinite(acts[attention_mask.bool()]).all()
