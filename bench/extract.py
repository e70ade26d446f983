"""Extraction throughput: auditor vs the bare truncated forward vs a naive pipeline.

All three run in this one process on the same texts, so the ratios are what to read
(absolute tokens/s depend on the machine and its load):

* **auditor** — :func:`auditor.extract.extract_features` end to end: tokenize into
  windows, length-bucketed batches under a token budget, forward stopped after the hooked
  layer, sparse SAE encode, pooling, Parquet write.
* **bare forward** — only the truncated forward over the same batches (the floor auditor's
  own overhead is measured against).
* **naive** — what a first script does: fixed batches in input order padded to
  ``max_length``, the full ``*ForCausalLM`` forward with ``output_hidden_states=True``
  (every layer and the LM head), dense SAE encode of every position, masked max-pool.

Token counts are content tokens (specials and padding excluded). The naive pipeline
truncates documents at ``max_length`` instead of windowing them, so texts are capped to
fit a window and all three see the same tokens.

Usage::

    .venv/bin/python bench/extract.py                       # random Gemma-3-270M-shaped model
    .venv/bin/python bench/extract.py --model DIR --sae PATH --layer 9
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from auditor.extract import ExtractConfig, extract_features
from auditor.io import Document, read_documents
from auditor.lm import HookPoint, TruncatedForward, collate, load_model, plan_batches
from auditor.lm import tokenize_windows as _tokenize_windows
from auditor.sae import SAE, load_sae
from auditor.testing import make_random_sae, train_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _gemma_shaped_model(directory: Path, *, n_layers: int, vocab: int) -> Path:
    """A random model with Gemma 3 270M's shapes (d_model 640, 4 heads, 1 KV head, …)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    tok = train_tiny_tokenizer(directory, vocab_size=2048)
    cfg = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=640, intermediate_size=2048, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
        max_position_embeddings=32768, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(directory)
    return directory


def _texts(n_docs: int) -> list[str]:
    base = [d.text for d in read_documents(ROOT / "samples" / "sample.jsonl")]
    out = []
    for i in range(n_docs):  # vary lengths: 1–4 concatenated samples
        out.append(" ".join(base[(i + j) % len(base)] for j in range(1 + i % 4)))
    return out


_T = TypeVar("_T")


def _timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="local HF model dir (default: random Gemma-3-270M shape)")
    ap.add_argument("--sae", help="SAE path (default: random TopK 16 x d_model, k=32)")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--docs", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="naive batch size")
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=262144, help="vocab of the random model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model_dir = Path(args.model) if args.model else _gemma_shaped_model(
            tmp / "model", n_layers=max(args.layer + 1, 18), vocab=args.vocab)
        lm = load_model(model_dir, device="cpu")
        sae: SAE = (load_sae(args.sae, layer=args.layer) if args.sae else
                    make_random_sae(d_in=lm.d_model, d_sae=16 * lm.d_model, k=32,
                                    layer=args.layer))
        hook = HookPoint(sae.cfg.hook_layer or 0, sae.cfg.hook_point)

        # cap every text to one window so the naive pipeline sees the same tokens
        texts: list[str] = []
        for t in _texts(args.docs):
            ids = lm.tokenizer(t, add_special_tokens=False)["input_ids"][: args.max_length - 2]
            texts.append(str(lm.tokenizer.decode(ids)))
        windows = [w for w in _tokenize_windows(texts, lm.tokenizer, max_length=args.max_length)
                   if w.window_index == 0]
        n_content = sum(w.n_tokens - sum(w.special_mask) for w in windows)

        # warm-up (allocator, kernels) on a few windows
        fwd = TruncatedForward(lm, [hook])
        ids, attn, _ = collate(windows[:4], pad_id=lm.tokenizer.pad_token_id, device=lm.device)
        fwd(ids, attn)

        def bare() -> int:
            for batch in plan_batches([w.n_tokens for w in windows],
                                      token_budget=args.token_budget, max_batch_size=64):
                i, a, _ = collate([windows[j] for j in batch],
                                  pad_id=lm.tokenizer.pad_token_id, device=lm.device)
                fwd(i, a)
            return n_content

        def ours() -> int:
            docs = [Document(row=i, doc_id=str(i), text=t, extra={}) for i, t in
                    enumerate(texts)]
            s = extract_features(docs, lm=lm, saes={"sae": sae}, out=tmp / "store",
                                 overwrite=True,
                                 config=ExtractConfig(max_length=args.max_length,
                                                      token_budget=args.token_budget))
            return s.tokens

        def naive() -> int:
            from transformers import AutoModelForCausalLM

            full = AutoModelForCausalLM.from_pretrained(model_dir).eval()
            tokens = 0
            for start in range(0, len(texts), args.batch_size):
                enc = lm.tokenizer(texts[start:start + args.batch_size], padding="max_length",
                                   truncation=True, max_length=args.max_length,
                                   return_tensors="pt", return_special_tokens_mask=True)
                out = full(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           output_hidden_states=True)
                h = out.hidden_states[hook.layer + 1]
                z = sae.encode(h)  # dense [B, T, d_sae]
                mask = (enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool())
                z.masked_fill(~mask[..., None], 0).amax(dim=1)
                tokens += int(mask.sum())
            return tokens

        t_bare, s_bare = _timed(bare)
        t_ours, s_ours = _timed(ours)
        t_naive, s_naive = _timed(naive)
        if not (t_bare == t_ours == t_naive == n_content):
            print(f"note: token counts differ: bare {t_bare}, auditor {t_ours}, "
                  f"naive {t_naive}")
        rate = {"auditor": t_ours / s_ours, "bare_forward": t_bare / s_bare,
                "naive": t_naive / s_naive}
        result = {
            "model": str(args.model or "random Gemma-3-270M-shaped"),
            "layer": hook.layer, "d_sae": sae.cfg.d_sae, "docs": len(texts),
            "content_tokens": n_content, "max_length": args.max_length,
            "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
            "auditor_vs_naive": round(rate["auditor"] / rate["naive"], 2),
            "auditor_vs_bare_forward": round(rate["auditor"] / rate["bare_forward"], 3),
        }
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"{len(texts)} docs, {n_content:,} content tokens, layer {hook.layer}, "
              f"d_sae {sae.cfg.d_sae}, max_length {args.max_length}")
        for k, v in rate.items():
            print(f"  {k:<13} {v:>9,.1f} tokens/s")
        print(f"  auditor / naive        = {result['auditor_vs_naive']:.2f}x")
        print(f"  auditor / bare forward = {result['auditor_vs_bare_forward']:.3f}")


if __name__ == "__main__":
    main()
