"""`auditor sae train` / `auditor sae eval` end to end on a tiny model and corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from auditor.cli import main
from auditor.io import count_documents, input_fingerprint
from auditor.jobs.sae import read_corpus_texts, write_card
from auditor.sae import load_sae, open_cache, texts_fingerprint
from auditor.testing import EMULATED_BF16_WARNING

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.jsonl"


def test_train_then_eval_writes_a_card(tiny_llama_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["sae", "train", "--out", str(run), "--layer", "2", "--width", "128", "--k", "8",
            "--corpus", str(SAMPLE), "--model", str(tiny_llama_dir), "--tokens", "20000",
            "--batch-size", "512", "--max-length", "64", "--device", "cpu", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] > 20000 - 512 and result["fvu"] < 1.0  # whole steps of 512
    sae = load_sae(run)
    assert (sae.cfg.hook_layer, sae.cfg.d_sae, sae.cfg.k) == (2, 128, 8)
    assert sae.cfg.normalize_activations == "constant" and sae.cfg.input_scale
    # the record names the text: the corpus file and a fingerprint of the texts read
    training = json.loads((run / "training.json").read_text())
    fingerprint = input_fingerprint(SAMPLE)
    assert training["cache_input"] == {"path": str(SAMPLE), "fingerprint": fingerprint}
    assert training["cache_texts"] == {"sha256": texts_fingerprint(read_corpus_texts(SAMPLE)),
                                       "docs": count_documents(SAMPLE)}
    assert training["device"] == "cpu"

    # the activation cache is reused: a second run resumes and collects nothing new
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == result["tokens"]

    assert main(["sae", "eval", str(run), "--cache", str(run / "activations"),
                 "--corpus", str(SAMPLE), "--model", str(tiny_llama_dir), "--ce-docs", "8",
                 "--max-length", "64", "--groups-from", str(SAMPLE), "--group-column", "genre",
                 "--whole-cache", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert 0 <= record["metrics"]["fvu"] < 1.5 and record["metrics"]["l0"] <= 8
    genres = {json.loads(line)["genre"] for line in SAMPLE.read_text().splitlines()}
    by_genre = record["metrics"]["fvu_by_group"]
    assert by_genre and set(by_genre) <= genres  # held-out documents only: some genres
    assert all(g["n_tokens"] > 0 for g in by_genre.values())
    whole = record["whole_cache"]
    assert whole["n_tokens"] > record["metrics"]["n_tokens"]
    assert whole["dead_frac"] <= record["metrics"]["dead_frac"]  # more tokens, fewer dead
    assert record["ce"]["docs"] == 8 and record["ce"]["ce_clean"] > 0
    card = (run / "CARD.md").read_text()
    assert "FVU" in card and "ΔCE" in card and sae.sha256 in card
    assert "FVU by genre" in card and "cached tokens (training split included)" in card
    assert (f"- text: `sample.jsonl` ({fingerprint[:19]}…, "
            f"{count_documents(SAMPLE):,} documents)") in card
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["sae_sha256"] == sae.sha256
    assert evaluation["libraries"]["transformers"] == transformers.__version__
    libraries = f"torch {torch.__version__}, transformers {transformers.__version__}"
    assert "- libraries: gguf " in card and "| libraries | gguf " in card
    assert card.count(libraries) == 2


@pytest.mark.filterwarnings(EMULATED_BF16_WARNING)
def test_train_continues_from_an_init_sae(tiny_llama_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    common = ["--layer", "1", "--width", "64", "--k", "4", "--batch-size", "256",
              "--warmup-steps", "2", "--json"]
    assert main(["sae", "train", "--out", str(first), "--corpus", str(SAMPLE), "--model",
                 str(tiny_llama_dir), "--tokens", "12800", "--max-length", "32",
                 "--checkpoint-every", "20", *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    base = json.loads((first / "training.json").read_text())
    cache = first / "activations"

    second = tmp_path / "second"
    assert main(["sae", "train", "--out", str(second), "--cache", str(cache), "--tokens", "2560",
                 "--init", str(first), "--auxk-alpha", "0.5", "--checkpoint-every", "5",
                 "--decay-start", "0.5", "--resample-every", "2", "--dead-tokens", "512",
                 "--encoder-dtype", "bfloat16", *common]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    cont = json.loads((second / "training.json").read_text())
    assert cont["init"]["sha256"] == load_sae(first).sha256
    assert cont["config"]["auxk_alpha"] == 0.5 and cont["config"]["warmup_steps"] == 2
    assert cont["config"]["decay_start"] == 0.5 and cont["config"]["resample_every"] == 2
    assert cont["config"]["dead_tokens"] == 512
    assert cont["config"]["encoder_dtype"] == "bfloat16"
    assert base["config"]["encoder_dtype"] == "float32"
    # every latent fires in this tiny run, so the card's resample line is fed by hand
    assert cont["resamples"] == []
    cont["resamples"] = [{"step": 2, "latents": 3}, {"step": 4, "latents": 1}]
    (second / "training.json").write_text(json.dumps(cont))
    assert cont["input_scale"] == pytest.approx(base["input_scale"])
    # a warm start begins where the first run ended, far below a fresh run's first steps
    # (a fresh start logs ~0.62 here; the first run ended at ~0.47)
    assert cont["history"][0]["fvu"] < min(base["history"][0]["fvu"], 1.1 * base["fvu"])
    assert cont["init"]["training"]["tokens"] == base["tokens"]  # the first run's record
    card = write_card(second).read_text()
    assert "dead latents resampled 2 times (4 latents in all, steps 2–4)" in card
    assert f"continued from SAE `{base['sae_sha256'][:12]}" in card
    assert "(lr 0.0032, the default) on `sample.jsonl` (sha256:" in card  # the init run's text
    assert f"in total: {base['tokens'] + cont['tokens']:,} training tokens" in card

    # from checkpoints: of the first run (a random start), and of the second run, whose
    # chain goes on through it back to the first run
    for name, ckpt, links, before in (("third", first / "checkpoints" / "step-40", 1, 0),
                                      ("fourth", second / "checkpoints" / "step-5", 2,
                                       base["tokens"])):
        out = tmp_path / name
        assert main(["sae", "train", "--out", str(out), "--cache", str(cache), "--tokens",
                     "2560", "--init", str(ckpt), *common]) == 0
        capsys.readouterr()
        record = json.loads((out / "training.json").read_text())["init"]["training"]
        steps = int(ckpt.name.split("-")[1])
        assert (record["steps"], record["tokens"]) == (steps, steps * 256)
        assert record["checkpoint"] == str(ckpt) and record["seconds"] > 0
        card = write_card(out).read_text()
        assert card.count("- continued from SAE") == links
        assert f"checkpoint at step {steps} ({steps * 256:,} tokens) of a run" in card
        assert card.count(f"on texts {base['cache_texts']['sha256'][:19]}…") == 1
        assert f"in total: {before + steps * 256 + 2560:,} training tokens" in card

    # an init of another width is refused, naming both shapes
    assert main(["sae", "train", "--out", str(tmp_path / "bad"), "--cache", str(cache),
                 "--layer", "1", "--width", "128", "--k", "4", "--tokens", "512",
                 "--batch-size", "256", "--init", str(first)]) != 0
    assert "init SAE is" in capsys.readouterr().err


def test_train_batchtopk_from_a_topk_sae(tiny_llama_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    common = ["--layer", "1", "--width", "64", "--k", "4", "--batch-size", "256",
              "--warmup-steps", "2", "--checkpoint-every", "0", "--json"]
    assert main(["sae", "train", "--out", str(first), "--corpus", str(SAMPLE), "--model",
                 str(tiny_llama_dir), "--tokens", "5120", "--max-length", "32",
                 *common]) == 0, capsys.readouterr().err
    second = tmp_path / "second"
    assert main(["sae", "train", "--out", str(second), "--cache", str(first / "activations"),
                 "--tokens", "2560", "--init", str(first), "--activation", "batchtopk",
                 "--batchtopk-max-k", "8", *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    config = json.loads((second / "training.json").read_text())["config"]
    assert (config["activation"], config["batchtopk_max_k"]) == ("batchtopk", 8)
    sae = load_sae(second)
    assert sae.cfg.activation == "batchtopk" and sae.cfg.batchtopk_threshold
    card = write_card(second).read_text()
    assert (f"| architecture | batchtopk, trained at k = 4 on average per batch, inference "
            f"threshold {sae.cfg.batchtopk_threshold:.6g}, width 64 ") in card
    # BatchTopK's cap is checked against k
    assert main(["sae", "train", "--out", str(tmp_path / "bad"), "--cache",
                 str(first / "activations"), "--tokens", "512", "--activation", "batchtopk",
                 "--batchtopk-max-k", "2", *common]) != 0
    assert "batchtopk_max_k" in capsys.readouterr().err


def test_train_needs_one_data_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sae", "train", "--out", str(tmp_path), "--layer", "1", "--width", "64",
                 "--k", "4"]) == 2
    assert "exactly one of --cache or --corpus" in capsys.readouterr().err


def test_collect_caches_several_layers_in_one_pass(
        tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cache"
    args = ["sae", "collect", str(SAMPLE), "--out", str(out), "--layer", "1", "--layer", "3",
            "--max-length", "32", "--model", str(tiny_llama_dir)]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["hooks"]) == {"layer1.resid_post", "layer3.resid_post"}
    cache = open_cache(out)
    assert cache.hook_tokens("layer1.resid_post") == cache.hook_tokens("layer3.resid_post") > 0
    assert cache.manifest["input"] == {"path": str(SAMPLE),
                                       "fingerprint": input_fingerprint(SAMPLE)}
    assert cache.manifest["texts"]["docs"] == count_documents(SAMPLE)
    # A rerun with the same options returns the recorded cache without recomputing it; a
    # finished cache is not replaced by one of other options unless asked; --max-tokens
    # caps a new one.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == info
    assert main([*args, "--max-tokens", "100"]) == 7
    assert "overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--max-tokens", "100"]) == 0
    capsys.readouterr()
    again = open_cache(out)  # checked after each forward batch: at least 100 tokens
    assert again.manifest["settings"]["max_tokens"] == 100
    assert again.hook_tokens("layer1.resid_post") >= 100
    assert main(["sae", "collect", str(tmp_path / "missing.jsonl"), "--out",
                 str(tmp_path / "c2"), "--layer", "1", "--model", str(tiny_llama_dir)]) == 3
    assert "missing.jsonl" in capsys.readouterr().err


def test_train_streamed_from_the_model_writes_no_cache(
        tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--layer", "1", "--width", "64", "--k", "4", "--batch-size", "256",
              "--max-length", "32", "--model", str(tiny_llama_dir)]
    assert main(["sae", "train", "--out", str(run), *common, "--corpus", str(SAMPLE),
                 "--stream", "--chunk-tokens", "1024", "--tokens", "4096", "--progress",
                 "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "activations, chunk 0" in captured.err  # the bar while a chunk is computed
    assert result["steps"] == 16 and result["fvu"] < 1.0
    assert not (run / "activations").exists()
    training = json.loads((run / "training.json").read_text())
    assert training["cache"] is None and training["stream"]["chunk_tokens"] == 1024
    assert training["cache_input"] == {"path": str(SAMPLE),
                                       "fingerprint": input_fingerprint(SAMPLE)}
    assert load_sae(run).cfg.hook_layer == 1
    # A cache of the same corpus scores the held-out documents the stream skipped; one of
    # just those documents scores the same tokens.
    cached, heldout = tmp_path / "cached", tmp_path / "heldout"
    for out, extra in ((cached, []), (heldout, ["--heldout-only"])):
        assert main(["sae", "collect", str(SAMPLE), "--out", str(out), "--layer", "1",
                     "--max-length", "32", "--model", str(tiny_llama_dir), *extra]) == 0
    capsys.readouterr()
    scores = []
    for out in (cached, heldout):
        assert main(["sae", "eval", str(run), "--cache", str(out), "--no-card"]) == 0
        scores.append(json.loads(capsys.readouterr().out)["metrics"])
    assert scores[0]["n_tokens"] == scores[1]["n_tokens"] > 0
    assert scores[0]["fvu"] == pytest.approx(scores[1]["fvu"], rel=1e-6)
    assert open_cache(heldout).hook_tokens("layer1.resid_post") == scores[1]["n_tokens"]
    # ... but not all of it as unseen text: the stream's record names the corpus's texts.
    assert main(["sae", "eval", str(run), "--cache", str(cached), "--no-card", "--split",
                 "all"]) == 2
    assert "trained on" in capsys.readouterr().err
    # A stream needs a corpus, and reads it as training needs: no --collect-tokens.
    assert main(["sae", "train", "--out", str(tmp_path / "x"), *common, "--cache",
                 str(cached), "--stream"]) == 2
    assert "give --corpus" in capsys.readouterr().err
    assert main(["sae", "train", "--out", str(tmp_path / "y"), *common, "--corpus",
                 str(SAMPLE), "--stream", "--collect-tokens", "100"]) == 2
    assert "--collect-tokens caps a cache" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_and_eval_refuse_cuda_where_there_is_none(
        tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--layer", "1", "--width", "64", "--k", "4", "--batch-size", "512"]
    assert main(["sae", "train", "--out", str(run), *common, "--corpus", str(SAMPLE),
                 "--model", str(tiny_llama_dir), "--tokens", "2048", "--max-length", "32"]) == 0
    capsys.readouterr()
    # Training on a cache (no collection) is refused before a step or a file is written.
    again = tmp_path / "again"
    assert main(["sae", "train", "--out", str(again), *common, "--cache",
                 str(run / "activations"), "--tokens", "2048", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not again.exists()
    assert main(["sae", "eval", str(run), "--cache", str(run / "activations"), "--corpus",
                 str(SAMPLE), "--model", str(tiny_llama_dir), "--ce-docs", "2",
                 "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_eval_group_column_must_exist(tiny_llama_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["sae", "train", "--out", str(run), "--layer", "1", "--width", "64", "--k", "4",
                 "--corpus", str(SAMPLE), "--model", str(tiny_llama_dir), "--tokens", "2048",
                 "--batch-size", "512", "--max-length", "32"]) == 0
    capsys.readouterr()
    assert main(["sae", "eval", str(run), "--cache", str(run / "activations"),
                 "--groups-from", str(SAMPLE), "--group-column", "missing"]) != 0
    err = capsys.readouterr().err
    assert "missing" in err and "sample.jsonl" in err


def test_eval_whole_cache_of_unseen_text(tiny_llama_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # --split all scores every token of a cache, which is right only for text that no run
    # of the SAE's chain read: the held-out documents of an earlier corpus collected alone
    lines = SAMPLE.read_text().splitlines()
    parts = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b", "c")}
    for i, path in enumerate(parts.values()):
        path.write_text("\n".join(lines[i::3]) + "\n")
    common = ["--layer", "1", "--width", "64", "--k", "4", "--batch-size", "256",
              "--max-length", "32", "--model", str(tiny_llama_dir), "--tokens", "2560"]
    runs = {name: tmp_path / f"run-{name}" for name in parts}
    assert main(["sae", "train", "--out", str(runs["a"]), "--corpus", str(parts["a"]),
                 *common]) == 0
    assert main(["sae", "train", "--out", str(runs["b"]), "--corpus", str(parts["b"]),
                 "--init", str(runs["a"]), *common]) == 0
    assert main(["sae", "train", "--out", str(runs["c"]), "--corpus", str(parts["c"]),
                 *common]) == 0
    capsys.readouterr()

    for cache, which in ((runs["b"], "its last run"), (runs["a"], "run -1 of its training")):
        assert main(["sae", "eval", str(runs["b"]), "--cache", str(cache / "activations"),
                     "--split", "all"]) != 0
        err = capsys.readouterr().err
        assert which in err and "--split heldout" in err and str(cache / "activations") in err

    unseen = runs["c"] / "activations"
    assert main(["sae", "eval", str(runs["b"]), "--cache", str(unseen), "--split", "all",
                 "--groups-from", str(parts["c"]), "--group-column", "genre"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["cache"]["split"] == "all"
    assert record["metrics"]["n_tokens"] == open_cache(unseen).n_tokens
    genres = {json.loads(line)["genre"] for line in parts["c"].read_text().splitlines()}
    assert set(record["metrics"]["fvu_by_group"]) == genres  # every document, not 5 %
    card = (runs["b"] / "CARD.md").read_text()
    assert (f"## Evaluation (every token of a cache of `c.jsonl` "
            f"({input_fingerprint(parts['c'])[:19]}…), {len(lines[2::3]):,} documents: text "
            "no run of this SAE trained on)") in card
    # the held-out split of the SAE's own cache is still allowed, and headed as such
    assert main(["sae", "eval", str(runs["b"]), "--cache", str(runs["b"] / "activations")]) == 0
    assert "## Evaluation (held-out documents)" in (runs["b"] / "CARD.md").read_text()
    assert main(["sae", "eval", str(runs["b"]), "--cache", str(runs["b"] / "activations"),
                 "--split", "train"]) == 0
    assert ("## Evaluation (training documents: not unseen text)"
            in (runs["b"] / "CARD.md").read_text())
