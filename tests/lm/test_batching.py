"""Windowing, batch planning, collation, and padded-batch equivalence on real models."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from auditor.errors import ConfigError
from auditor.lm import (
    HookPoint,
    LoadedModel,
    TruncatedForward,
    Window,
    collate,
    load_model,
    plan_batches,
    special_affixes,
    tokenize_windows,
)
from auditor.testing import CORPUS, train_tiny_tokenizer

# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def bos_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """Adds ``<bos>`` in front, like Llama and Gemma."""
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok-bos"))


@pytest.fixture(scope="module")
def plain_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """Adds nothing, like Qwen."""
    tokenizer = train_tiny_tokenizer(tmp_path_factory.mktemp("tok-plain"))
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A $B:1", special_tokens=[]
    )
    return tokenizer


@pytest.fixture(scope="module")
def wrap_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """Adds ``<bos>`` in front and ``<eos>`` at the end."""
    tokenizer = train_tiny_tokenizer(tmp_path_factory.mktemp("tok-wrap"))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B:1 <eos>:1",
        special_tokens=[("<bos>", bos), ("<eos>", eos)],
    )
    return tokenizer


@pytest.fixture(params=["bos", "plain", "wrap"])
def any_tokenizer(
    request: pytest.FixtureRequest,
    bos_tokenizer: PreTrainedTokenizerBase,
    plain_tokenizer: PreTrainedTokenizerBase,
    wrap_tokenizer: PreTrainedTokenizerBase,
) -> PreTrainedTokenizerBase:
    return {"bos": bos_tokenizer, "plain": plain_tokenizer, "wrap": wrap_tokenizer}[request.param]


def test_special_affixes(
    bos_tokenizer: PreTrainedTokenizerBase,
    plain_tokenizer: PreTrainedTokenizerBase,
    wrap_tokenizer: PreTrainedTokenizerBase,
) -> None:
    bos, eos = bos_tokenizer.bos_token_id, bos_tokenizer.eos_token_id
    assert special_affixes(bos_tokenizer) == ([bos], [])
    assert special_affixes(plain_tokenizer) == ([], [])
    assert special_affixes(wrap_tokenizer) == ([bos], [eos])


# ---------------------------------------------------------------- tokenize_windows


@pytest.mark.parametrize("max_length", [4, 7, 16, 64, 1000])
def test_windows_cover_each_document(
    any_tokenizer: PreTrainedTokenizerBase, max_length: int
) -> None:
    texts = [CORPUS[0], CORPUS[16] * 3, CORPUS[37], " ".join(CORPUS[:8]), "a", "é"]
    prefix, suffix = special_affixes(any_tokenizer)
    content_size = max_length - len(prefix) - len(suffix)
    windows = tokenize_windows(texts, any_tokenizer, max_length=max_length, doc_offset=10)

    by_doc: dict[int, list[Window]] = {}
    for window in windows:
        by_doc.setdefault(window.doc_index, []).append(window)
    assert sorted(by_doc) == list(range(10, 10 + len(texts)))
    # Ordered by document then window.
    assert [(w.doc_index, w.window_index) for w in windows] == sorted(
        (w.doc_index, w.window_index) for w in windows
    )

    for doc_index, text in enumerate(texts, start=10):
        reference = any_tokenizer(text, add_special_tokens=False)["input_ids"]
        doc_windows = by_doc[doc_index]
        assert len(doc_windows) == math.ceil(len(reference) / content_size)
        assert [w.window_index for w in doc_windows] == list(range(len(doc_windows)))
        content: list[int] = []
        for window in doc_windows:
            assert 0 < window.n_tokens <= max_length
            assert len(window.special_mask) == window.n_tokens
            ids = list(window.input_ids)
            assert ids[: len(prefix)] == prefix
            assert ids[len(ids) - len(suffix) :] == suffix
            assert all(window.special_mask[: len(prefix)])
            assert all(window.special_mask[window.n_tokens - len(suffix) :])
            body = ids[len(prefix) : len(ids) - len(suffix)]
            assert not any(window.special_mask[len(prefix) : window.n_tokens - len(suffix)])
            content.extend(body)
        # All windows but the last are full.
        assert all(w.n_tokens == max_length for w in doc_windows[:-1])
        assert content == reference


def test_window_count_for_long_text(bos_tokenizer: PreTrainedTokenizerBase) -> None:
    text = " ".join(CORPUS)
    n_content = len(bos_tokenizer(text, add_special_tokens=False)["input_ids"])
    windows = tokenize_windows([text], bos_tokenizer, max_length=32)
    assert len(windows) == math.ceil(n_content / 31) > 5
    assert sum(w.n_tokens for w in windows) == n_content + len(windows)  # one <bos> each
    assert all(w.input_ids[0] == bos_tokenizer.bos_token_id for w in windows)


def test_empty_document(
    bos_tokenizer: PreTrainedTokenizerBase, plain_tokenizer: PreTrainedTokenizerBase
) -> None:
    (window,) = tokenize_windows([""], bos_tokenizer, max_length=8)
    assert window.input_ids == (bos_tokenizer.bos_token_id,)
    assert window.special_mask == (True,)
    (window,) = tokenize_windows([""], plain_tokenizer, max_length=8)
    assert window.n_tokens == 0
    assert tokenize_windows([], bos_tokenizer, max_length=8) == []


def test_special_tokens_inside_text_are_masked(bos_tokenizer: PreTrainedTokenizerBase) -> None:
    (window,) = tokenize_windows(["hello <eos> world<pad>"], bos_tokenizer, max_length=64)
    eos, pad = bos_tokenizer.eos_token_id, bos_tokenizer.pad_token_id
    assert eos in window.input_ids and pad in window.input_ids
    for token, special in zip(window.input_ids, window.special_mask, strict=True):
        assert special == (token in bos_tokenizer.all_special_ids)
    assert not all(window.special_mask)


@pytest.mark.parametrize("max_length", [0, -3, 1])
def test_max_length_too_small(bos_tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    # With a <bos> prefix, max_length=1 leaves no room for content.
    with pytest.raises(ConfigError, match="max_length"):
        tokenize_windows(["hello"], bos_tokenizer, max_length=max_length)


def test_max_length_one_without_specials(plain_tokenizer: PreTrainedTokenizerBase) -> None:
    windows = tokenize_windows(["hello world"], plain_tokenizer, max_length=1)
    reference = plain_tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert [w.input_ids for w in windows] == [(token,) for token in reference]


def test_window_masks_must_match() -> None:
    with pytest.raises(ConfigError):
        Window(doc_index=0, window_index=0, input_ids=(1, 2), special_mask=(True,))


# ---------------------------------------------------------------- plan_batches


def _check_plan(lengths: list[int], batches: list[list[int]], budget: int, max_size: int) -> None:
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    # Batches are consecutive buckets of the stable length order.
    assert flat == sorted(range(len(lengths)), key=lambda i: lengths[i])
    for batch in batches:
        assert 1 <= len(batch) <= max_size
        width = max(max(lengths[i] for i in batch), 1)
        assert len(batch) * width <= budget or len(batch) == 1


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("budget", "max_size"), [(64, 256), (512, 8), (100, 1), (3, 256)])
def test_plan_batches_properties(seed: int, budget: int, max_size: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, 2, 5, 17, 40, 64, 128, 300]) for _ in range(rng.randint(0, 200))]
    batches = plan_batches(lengths, token_budget=budget, max_batch_size=max_size)
    _check_plan(lengths, batches, budget, max_size)
    assert batches == plan_batches(lengths, token_budget=budget, max_batch_size=max_size)


def test_plan_batches_greedy_and_small_padding() -> None:
    assert plan_batches([5, 1, 3, 2], token_budget=6) == [[1, 3], [2], [0]]
    assert plan_batches([], token_budget=10) == []
    # A long item does not make the short ones pad to its length.
    lengths = [100] + [4] * 10
    batches = plan_batches(lengths, token_budget=100)
    assert batches == [list(range(1, 11)), [0]]
    # Items over budget get their own batch.
    assert plan_batches([50, 60, 10], token_budget=40) == [[2], [0], [1]]
    # Greedy packing fills batches up to the budget.
    assert plan_batches([10] * 9, token_budget=30) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert plan_batches([10] * 9, token_budget=1000, max_batch_size=4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8],
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"token_budget": 0}, {"token_budget": 10, "max_batch_size": 0}, {"token_budget": 2.5}],
)
def test_plan_batches_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        plan_batches([1, 2], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        plan_batches([1, -2], token_budget=10)


# ---------------------------------------------------------------- collate


def test_collate_right_pads_and_masks() -> None:
    windows = [
        Window(0, 0, (7, 8, 9), (True, False, False)),
        Window(1, 0, (5,), (False,)),
        Window(2, 0, (), ()),
        Window(3, 0, (4, 3, 2, 1), (True, False, True, False)),
    ]
    input_ids, attention_mask, keep_mask = collate(windows, pad_id=99, device=torch.device("cpu"))
    assert input_ids.dtype == torch.long and attention_mask.dtype == torch.long
    assert keep_mask.dtype == torch.bool
    assert input_ids.tolist() == [[7, 8, 9, 99], [5, 99, 99, 99], [99] * 4, [4, 3, 2, 1]]
    assert attention_mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0] * 4, [1, 1, 1, 1]]
    assert keep_mask.tolist() == [
        [False, True, True, False],
        [True, False, False, False],
        [False] * 4,
        [False, True, False, True],
    ]
    assert input_ids.device == torch.device("cpu")


def test_collate_all_empty_and_no_windows() -> None:
    input_ids, attention_mask, keep_mask = collate([Window(0, 0, (), ())], pad_id=0, device="cpu")
    assert input_ids.shape == attention_mask.shape == keep_mask.shape == (1, 1)
    assert attention_mask.sum() == 0
    with pytest.raises(ConfigError):
        collate([], pad_id=0, device="cpu")


def test_collate_from_tokenizer(bos_tokenizer: PreTrainedTokenizerBase) -> None:
    windows = tokenize_windows([CORPUS[0], "hi", CORPUS[3]], bos_tokenizer, max_length=12)
    input_ids, attention_mask, keep_mask = collate(
        windows, pad_id=bos_tokenizer.pad_token_id, device="cpu"
    )
    for row, window in enumerate(windows):
        n = window.n_tokens
        assert input_ids[row, :n].tolist() == list(window.input_ids)
        assert (input_ids[row, n:] == bos_tokenizer.pad_token_id).all()
        assert attention_mask[row].sum() == n
        assert keep_mask[row].sum() == n - sum(window.special_mask)
        assert not keep_mask[row, 0]  # <bos>


# ---------------------------------------------------------------- padding equivalence


def _padding_texts() -> list[str]:
    # Very different lengths: 1-3 token windows padded to 40 (beyond Gemma 3's sliding
    # window of 8, so some padded query rows see no real key at all), and full windows.
    return ["", "ok", CORPUS[2], CORPUS[16] * 4, CORPUS[36], " ".join(CORPUS[10:20]), "é"]


def _assert_batched_equals_alone(lm: LoadedModel, hooks: list[HookPoint]) -> None:
    windows = tokenize_windows(_padding_texts(), lm.tokenizer, max_length=40)
    assert min(w.n_tokens for w in windows) <= 2 and max(w.n_tokens for w in windows) == 40
    forward = TruncatedForward(lm, hooks)
    pad_id = lm.tokenizer.pad_token_id

    batches = plan_batches([w.n_tokens for w in windows], token_budget=10_000)
    assert len(batches) == 1  # everything in one padded batch
    input_ids, attention_mask, _ = collate(windows, pad_id=pad_id, device=lm.device)
    batched = forward(input_ids, attention_mask)

    for row, window in enumerate(windows):
        alone_ids, alone_mask, _ = collate([window], pad_id=pad_id, device=lm.device)
        alone = forward(alone_ids, alone_mask)
        n = window.n_tokens
        for hook in hooks:
            expected = alone[hook][0, :n]
            got = batched[hook][row, :n]
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


def test_padded_batch_equals_alone(tiny_lm: LoadedModel) -> None:
    _assert_batched_equals_alone(
        tiny_lm, [HookPoint(0, "resid_pre"), HookPoint(1), HookPoint(3, "resid_post")]
    )


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_gemma3_padding_with_both_attention_kernels(
    tiny_dirs: dict[str, Path], attn_implementation: str
) -> None:
    causal = AutoModelForCausalLM.from_pretrained(
        tiny_dirs["gemma3"], attn_implementation=attn_implementation
    )
    assert causal.config._attn_implementation == attn_implementation
    assert "sliding_attention" in causal.config.layer_types
    lm = load_model(
        tiny_dirs["gemma3"],
        model=causal,
        tokenizer=AutoTokenizer.from_pretrained(tiny_dirs["gemma3"]),
        device="cpu",
    )
    _assert_batched_equals_alone(lm, [HookPoint(1), HookPoint(3)])


def test_equivalence_check_is_sensitive(tiny_lms: dict[str, LoadedModel]) -> None:
    """Guard that the comparison can fail: unmasked padding before the tokens changes them."""
    lm = tiny_lms["llama"]
    (window,) = tokenize_windows([CORPUS[2]], lm.tokenizer, max_length=64)
    hook = HookPoint(1)
    forward = TruncatedForward(lm, [hook])
    ids, mask, _ = collate([window], pad_id=lm.tokenizer.pad_token_id, device="cpu")
    alone = forward(ids, mask)[hook][0]
    pad = torch.full((1, 5), lm.tokenizer.pad_token_id, dtype=torch.long)
    left_ids = torch.cat([pad, ids], dim=1)
    unmasked = forward(left_ids, torch.ones_like(left_ids))[hook][0, 5:]
    assert unmasked.shape == alone.shape
    assert not torch.allclose(unmasked, alone, rtol=1e-3, atol=1e-3)


def test_all_padding_row_is_harmless(tiny_lm: LoadedModel) -> None:
    """A zero-token window (empty document, tokenizer without specials) gives an all-pad row."""
    (real,) = tokenize_windows([CORPUS[4]], tiny_lm.tokenizer, max_length=40)
    empty = Window(doc_index=1, window_index=0, input_ids=(), special_mask=())
    hook = HookPoint(3)
    forward = TruncatedForward(tiny_lm, [hook])
    pad_id = tiny_lm.tokenizer.pad_token_id
    ids, mask, keep = collate([empty, real], pad_id=pad_id, device=tiny_lm.device)
    assert mask[0].sum() == 0 and not keep[0].any()
    batched = forward(ids, mask)[hook]
    alone = forward(*collate([real], pad_id=pad_id, device=tiny_lm.device)[:2])[hook]
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-5)
