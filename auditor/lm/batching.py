"""Turn documents into fixed-size token windows and pack them into padded batches.

:func:`tokenize_windows` splits every document into consecutive windows that fit the
model's context, each wrapped with the tokenizer's own special prefix/suffix.
:func:`plan_batches` groups windows of similar length under a token budget and
:func:`collate` pads one group into tensors (right padding).

Right padding keeps real tokens at positions ``0..n-1`` and, with the causal mask, real
tokens never attend to the padding after them, so their activations equal those of the
same window run alone (tested for Llama, Qwen3 and Gemma 3, including Gemma 3's
sliding-window layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from auditor.errors import ConfigError, ModelLoadError

__all__ = ["Window", "collate", "plan_batches", "special_affixes", "tokenize_windows"]

_PROBE_TEXT = "x"


@dataclass(frozen=True)
class Window:
    """One model input: a slice of a document wrapped with the tokenizer's special tokens.

    Attributes
    ----------
    doc_index : int
        Position of the document in the input list (plus ``doc_offset``).
    window_index : int
        ``0, 1, ...`` within the document.
    input_ids : tuple of int
        Token ids, special prefix and suffix included.
    special_mask : tuple of bool
        ``True`` where the token is a special token (BOS, EOS, pad, ...), to be excluded
        from pooling.
    """

    doc_index: int
    window_index: int
    input_ids: tuple[int, ...]
    special_mask: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.special_mask):
            raise ConfigError(
                f"input_ids has {len(self.input_ids)} tokens but special_mask has "
                f"{len(self.special_mask)}"
            )

    @property
    def n_tokens(self) -> int:
        """Number of tokens, specials included."""
        return len(self.input_ids)


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Find the special tokens the tokenizer adds before and after a text.

    Compares ``tokenizer("x")`` with ``tokenizer("x", add_special_tokens=False)``.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase

    Returns
    -------
    tuple of (list of int, list of int)
        Prefix ids (e.g. ``[<bos>]`` for Llama and Gemma) and suffix ids (often empty).
        Both are empty for tokenizers that add nothing (Qwen).

    Raises
    ------
    ModelLoadError
        If the tokenization with specials does not contain the one without.
    """
    with_specials = list(tokenizer(_PROBE_TEXT, add_special_tokens=True)["input_ids"])
    content = list(tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"])
    n = len(content)
    for start in range(len(with_specials) - n + 1):
        if with_specials[start : start + n] == content:
            return with_specials[:start], with_specials[start + n :]
    raise ModelLoadError(
        f"cannot infer the special-token template of {type(tokenizer).__name__}: "
        f"{with_specials} does not contain {content}"
    )


def tokenize_windows(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    doc_offset: int = 0,
) -> list[Window]:
    """Tokenize documents and split them into windows of at most ``max_length`` tokens.

    Parameters
    ----------
    texts : sequence of str
        The documents.
    tokenizer : PreTrainedTokenizerBase
        A fast tokenizer (the texts are tokenized in one batched call).
    max_length : int
        Maximum tokens per window, special tokens included.
    doc_offset : int, default 0
        Added to every ``doc_index`` (for shards of a larger input).

    Returns
    -------
    list of Window
        Ordered by document, then window.  A document of ``n`` content tokens gives
        ``max(1, ceil(n / c))`` windows where ``c = max_length - len(prefix) - len(suffix)``;
        an empty document gives one window holding only the special prefix/suffix (which
        is empty for tokenizers that add no special tokens).

    Raises
    ------
    ConfigError
        If ``max_length`` leaves no room for content tokens.

    Notes
    -----
    Documents are tokenized with ``add_special_tokens=False`` and every window is wrapped
    with the tokenizer's own prefix/suffix (see :func:`special_affixes`), so each window
    looks like a fresh input to the model.  Windows do not overlap: concatenating their
    content tokens gives back the document's tokenization.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(
            f"max_length must be a positive int, got {max_length!r}", field="max_length"
        )
    prefix, suffix = special_affixes(tokenizer)
    content_size = max_length - len(prefix) - len(suffix)
    if content_size < 1:
        raise ConfigError(
            f"max_length={max_length} leaves no room for content tokens after "
            f"{len(prefix) + len(suffix)} special tokens",
            field="max_length",
        )
    if len(texts) == 0:
        return []
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )["input_ids"]
    special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
    prefix_t, suffix_t = tuple(prefix), tuple(suffix)
    prefix_mask, suffix_mask = (True,) * len(prefix), (True,) * len(suffix)

    windows: list[Window] = []
    for doc_index, ids in enumerate(encoded, start=doc_offset):
        ids = list(ids)
        starts = range(0, len(ids), content_size) if ids else range(1)
        for window_index, start in enumerate(starts):
            chunk = tuple(ids[start : start + content_size])
            windows.append(
                Window(
                    doc_index=doc_index,
                    window_index=window_index,
                    input_ids=prefix_t + chunk + suffix_t,
                    special_mask=prefix_mask
                    + tuple(token in special_ids for token in chunk)
                    + suffix_mask,
                )
            )
    return windows


def plan_batches(
    lengths: Sequence[int], *, token_budget: int, max_batch_size: int = 256
) -> list[list[int]]:
    """Group items of similar length into batches under a padded-token budget.

    Parameters
    ----------
    lengths : sequence of int
        Token count of each item (e.g. ``Window.n_tokens``).
    token_budget : int
        Maximum ``len(batch) * max(lengths in batch)``: the padded size of a batch.  An
        item longer than the budget gets a batch of its own.
    max_batch_size : int, default 256
        Maximum items per batch.

    Returns
    -------
    list of list of int
        Indices into ``lengths``; every index appears exactly once.  Items are taken in
        order of increasing length (ties in input order) and packed greedily, so each batch
        only pads to its own longest item.  Deterministic.

    Raises
    ------
    ConfigError
        If ``token_budget`` or ``max_batch_size`` is below 1 or a length is negative.

    Examples
    --------
    >>> plan_batches([5, 1, 3, 2], token_budget=6)
    [[1, 3], [2], [0]]
    """
    if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1:
        raise ConfigError(
            f"token_budget must be an int >= 1, got {token_budget!r}", field="token_budget"
        )
    if (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise ConfigError(
            f"max_batch_size must be an int >= 1, got {max_batch_size!r}", field="max_batch_size"
        )
    if any(length < 0 for length in lengths):
        raise ConfigError("lengths must be >= 0", field="lengths")

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Ascending order: the newest item is the longest, so it sets the padded width.
        width = max(int(lengths[index]), 1)
        if current and (
            len(current) >= max_batch_size or (len(current) + 1) * width > token_budget
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def collate(
    windows: Sequence[Window], *, pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad windows into model inputs.

    Parameters
    ----------
    windows : sequence of Window
        One batch (see :func:`plan_batches`).
    pad_id : int
        Token id written at padded positions (they are masked out anyway).
    device : torch.device or str, default 'cpu'
        Where the tensors are placed.

    Returns
    -------
    input_ids : Tensor
        ``[B, T]`` int64, ``T`` the longest window (at least 1).
    attention_mask : Tensor
        ``[B, T]`` int64, 1 for real tokens, 0 for padding.
    keep_mask : Tensor
        ``[B, T]`` bool, ``True`` for real tokens that are not special tokens: the
        positions to pool over.

    Raises
    ------
    ConfigError
        If ``windows`` is empty.
    """
    if len(windows) == 0:
        raise ConfigError("cannot collate an empty batch", field="windows")
    width = max(1, max(window.n_tokens for window in windows))
    input_ids = torch.full((len(windows), width), int(pad_id), dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    keep_mask = torch.zeros((len(windows), width), dtype=torch.bool)
    for row, window in enumerate(windows):
        n = window.n_tokens
        if n == 0:
            continue
        input_ids[row, :n] = torch.tensor(window.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        keep_mask[row, :n] = ~torch.tensor(window.special_mask, dtype=torch.bool)
    target = torch.device(device)
    return input_ids.to(target), attention_mask.to(target), keep_mask.to(target)
