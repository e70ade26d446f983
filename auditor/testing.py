"""Tiny random language models, tokenizers and SAEs for tests, demos and benchmarks.

Nothing here touches the network: the tokenizer is trained in-process with the ``tokenizers``
library on a small built-in corpus, and the models are built from a ``transformers`` config
with random weights.  Both are saved into a directory so that tests can exercise the same
``from_pretrained`` path as real models.

Examples
--------
>>> from pathlib import Path
>>> import tempfile
>>> directory = make_tiny_model(Path(tempfile.mkdtemp()), arch="qwen3")
>>> (directory / "model.safetensors").is_file(), (directory / "tokenizer.json").is_file()
(True, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
)

if TYPE_CHECKING:
    from auditor.sae import SAE

__all__ = [
    "CORPUS",
    "EMULATED_BF16_WARNING",
    "SPECIAL_TOKENS",
    "make_random_sae",
    "make_tiny_model",
    "train_tiny_tokenizer",
]

SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<eos>", "<pad>", "<unk>")

#: A ``pytest.mark.filterwarnings`` filter for the warning that bfloat16 training gives on a
#: CPU without native bfloat16 products (machine-dependent, so tests of bf16 training that
#: run under ``-W error`` ignore it; the warning itself is tested where it is raised).
EMULATED_BF16_WARNING = "ignore:encoder_dtype='bfloat16' on a device:RuntimeWarning"

CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A sparse autoencoder learns an overcomplete dictionary of features.",
    "Language models read text one token at a time.",
    "She sold sea shells by the sea shore on a sunny Sunday.",
    "The committee approved the budget after a long debate.",
    "Rain is expected tomorrow morning, with clearing skies by noon.",
    "He opened the window and let the cold air into the room.",
    "Our dataset contains reviews, questions, and short stories.",
    "Please return the library books before the end of the month.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Scientists measured the temperature of the lake every hour.",
    "I think the movie was too long, but the music was wonderful.",
    "The train to the city leaves at seven fifteen every weekday.",
    "Children played football in the park until it got dark.",
    "The museum exhibits paintings from the nineteenth century.",
    "Write a function that returns the sum of two integers.",
    "def add(a, b):\n    return a + b",
    "for i in range(10):\n    print(i * i)",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "The price rose by 12.5% in 2023, from $40 to $45.",
    "Call me at 555-0100 or email hello@example.com tomorrow.",
    "Is this review positive or negative? I loved every minute!",
    "This product broke after two days. Terrible quality, avoid it.",
    "The patient reported mild headaches and occasional dizziness.",
    "Stocks fell sharply as investors worried about inflation.",
    "The spacecraft entered orbit around Mars after a seven month journey.",
    "Photosynthesis converts light energy into chemical energy.",
    "The old lighthouse keeper climbed the stairs every night.",
    "Translate the following sentence into French, please.",
    "Le chat dort sur le canapé près de la fenêtre.",
    "Où est la gare ? Elle est à côté du musée.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Die Straße ist nass, weil es geregnet hat.",
    "El niño comió una manzana y bebió jugo de naranja.",
    "¿Dónde está la biblioteca? Está cerca de la plaza.",
    "Сегодня хорошая погода, и мы пойдём гулять.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "今日はいい天気ですね。散歩に行きましょう。",
    "我喜欢学习新的语言和阅读书籍。",
    "Καλημέρα, τι κάνεις σήμερα;",
    "The café served crème brûlée and a naïve little espresso.",
    "Emojis like 🙂 and 🚀 appear in social media posts.",
    "Mathematics: the integral of x squared is x cubed over three.",
    "α + β = γ, and the angle θ is measured in radians.",
    "The contract must be signed by both parties before Friday.",
    "Our team shipped the new release with many bug fixes.",
    "Birds migrate south in the autumn when the days get shorter.",
    "The violinist tuned her instrument before the concert began.",
    "A gentle breeze moved the leaves of the tall oak tree.",
    "Remember to save your work often and to back up your files.",
    "The detective examined the footprints near the garden gate.",
    "Tokenizers split words into smaller pieces called subwords.",
    "   Leading spaces, trailing spaces, and\ttabs\tmatter too.   ",
    "UPPER CASE, lower case, and MiXeD cAsE words.",
)


def train_tiny_tokenizer(directory: Path, *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on :data:`CORPUS` and save it into ``directory``.

    Parameters
    ----------
    directory : Path
        Where ``tokenizer.json`` and the tokenizer config are written (created if missing).
    vocab_size : int, default 512
        Target vocabulary size, special tokens included.  Training may stop earlier when the
        corpus runs out of merges.

    Returns
    -------
    PreTrainedTokenizerFast
        The tokenizer, with ``<bos>``, ``<eos>``, ``<pad>`` and ``<unk>`` set; encoding with
        ``add_special_tokens=True`` prepends ``<bos>`` (like Llama and Gemma tokenizers).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(CORPUS), trainer=trainer)
    bos_id = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A $B:1",
        special_tokens=[("<bos>", bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(directory)
    return fast


def _config(
    arch: str,
    *,
    vocab_size: int,
    n_layers: int,
    d_model: int,
    max_positions: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> PretrainedConfig:
    n_heads = 4 if d_model % 4 == 0 else 2
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": d_model,
        "intermediate_size": 64,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": 2,
        "head_dim": d_model // n_heads,
        "max_position_embeddings": max_positions,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        # Larger than the default 0.02 so attention is far from uniform and tests are sensitive.
        "initializer_range": 0.1,
    }
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if arch == "qwen3":
        return Qwen3Config(**common, tie_word_embeddings=True)
    if arch == "gemma3":
        # Alternate local (sliding) and global layers and keep the window short, so that
        # windows in tests are longer than the sliding window and both mask kinds are used.
        layer_types = [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)
        ]
        return Gemma3TextConfig(
            **common,
            sliding_window=8,
            layer_types=layer_types,
            query_pre_attn_scalar=d_model // n_heads,
            tie_word_embeddings=True,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}")


def make_tiny_model(
    directory: Path,
    *,
    arch: Literal["qwen3", "llama", "gemma3"] = "llama",
    n_layers: int = 4,
    d_model: int = 32,
    seed: int = 0,
    max_positions: int = 128,
) -> Path:
    """Build a tiny random causal LM and save it, with its tokenizer, into ``directory``.

    Parameters
    ----------
    directory : Path
        Output directory (created if missing).  Receives ``config.json``,
        ``model.safetensors`` and the tokenizer files.
    arch : {'qwen3', 'llama', 'gemma3'}, default 'llama'
        Architecture; ``'gemma3'`` is the text-only ``Gemma3ForCausalLM`` with alternating
        sliding-window (window 8) and global attention layers.
    n_layers : int, default 4
        Number of decoder layers.
    d_model : int, default 32
        Hidden size.
    seed : int, default 0
        Seed for the random weights; the same seed gives the same weights.
    max_positions : int, default 128
        ``max_position_embeddings`` of the config.

    Returns
    -------
    Path
        ``directory``.
    """
    directory = Path(directory)
    tokenizer = train_tiny_tokenizer(directory)
    config = _config(
        arch,
        vocab_size=len(tokenizer),
        n_layers=n_layers,
        d_model=d_model,
        max_positions=max_positions,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def make_random_sae(
    *,
    d_in: int = 32,
    d_sae: int = 96,
    layer: int = 1,
    point: Literal["resid_post", "resid_pre"] = "resid_post",
    activation: Literal["topk", "batchtopk", "jumprelu", "relu"] = "topk",
    k: int | None = 6,
    seed: int = 0,
) -> SAE:
    """An SAE with random weights, scaled so that its latents fire on random-model activations.

    Parameters
    ----------
    d_in, d_sae
        Input width (the model's d_model) and number of latents.
    layer, point
        The hook it declares it reads.
    activation, k
        Activation function; ``k`` is used by TopK / BatchTopK only.
    seed
        Seed of the weights.
    """
    from auditor.sae import SAE, SAEConfig

    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation,
                    k=k if activation in ("topk", "batchtopk") else None,
                    hook_layer=layer, hook_point=point)
    sae = SAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.01)
        if activation == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae, generator=g) * 0.2)
    return sae
