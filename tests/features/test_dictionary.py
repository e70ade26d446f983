"""The feature dictionary on a tiny random Llama + random SAE, against direct computations.

The reference runs every window alone through the *full* model with
``output_hidden_states=True`` and encodes every content token densely; the dictionary goes
through the extraction pipeline (batched, truncated forward, sparse codes, token shards).
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from auditor.cli.features import features as features_cli
from auditor.errors import ConfigError, CorruptShard, ProvenanceMismatch, StoreError
from auditor.features import (
    DictionaryConfig,
    auto_label,
    build_dictionary,
    describe_feature,
    feature_labels,
    final_norm_gain,
    llm_label,
    load_contexts,
    load_dictionary,
    load_manifest,
    search_features,
    unembedding,
)
from auditor.features.stats import CONTEXT_CLOSE, CONTEXT_OPEN, histogram_quantiles
from auditor.io import Document
from auditor.lm import load_model, tokenize_windows
from auditor.sae import load_sae
from auditor.testing import CORPUS, make_random_sae

LAYER = 1
D_SAE = 64
MAX_LENGTH = 24  # short windows: longer documents are split
TOP = 4
TEXTS = [*CORPUS[:20], "A sparse autoencoder learns an overcomplete dictionary. " * 4,
         CORPUS[0]]  # a duplicate document: its contexts must be de-duplicated
CONFIG = DictionaryConfig(max_length=MAX_LENGTH, top_contexts=TOP, context_tokens=3,
                          logit_tokens=5, exclude_outliers=False, chunk_docs=5)


def _docs(texts: list[str], start: int = 0) -> list[Document]:
    return [Document(row=i, doc_id=f"d{start + i:02d}", text=t, extra={})
            for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> Any:
    return load_model(tiny_llama_dir, device="cpu")


@pytest.fixture(scope="module")
def full_model(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=LAYER, d_sae=D_SAE, k=4, seed=0).save(
        tmp_path_factory.mktemp("sae") / "sae")


@pytest.fixture(scope="module")
def sae(sae_dir: Path) -> Any:
    return load_sae(sae_dir)


@pytest.fixture(scope="module")
def whole(lm: Any, sae: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dict") / "whole"
    build_dictionary(_docs(TEXTS), lm=lm, sae=sae, out=out, config=CONFIG,
                     input_info={"path": "whole.jsonl", "fingerprint": "sha256:whole"})
    return out


@pytest.fixture(scope="module")
def reference(lm: Any, full_model: Any, sae: Any) -> dict[str, Any]:
    """Dense codes of every content token, with its document and position."""
    codes, docs, positions = [], [], []
    for w in tokenize_windows(TEXTS, lm.tokenizer, max_length=MAX_LENGTH):
        with torch.no_grad():
            hs = full_model(torch.tensor([w.input_ids]), output_hidden_states=True).hidden_states
            keep = ~torch.tensor(w.special_mask)
            codes.append(sae.encode(hs[LAYER + 1][0][keep]).numpy())
        t = np.flatnonzero(keep.numpy())
        docs += [w.doc_index] * len(t)
        positions += (w.window_index * MAX_LENGTH + t).tolist()
    return {"codes": np.concatenate(codes), "doc": np.array(docs), "pos": np.array(positions)}


# --------------------------------------------------------------------------- statistics


def test_density_and_max_match_dense_reference(whole: Path, reference: dict[str, Any]) -> None:
    codes, doc = reference["codes"], reference["doc"]
    frame = load_dictionary(whole)
    assert frame.height == D_SAE and frame["feature"].to_list() == list(range(D_SAE))
    fired = codes > 0
    n_docs = len(TEXTS)
    assert frame["n_tokens_fired"].to_list() == fired.sum(0).tolist()
    docs_fired = [len(set(doc[fired[:, f]].tolist())) for f in range(D_SAE)]
    assert frame["n_docs_fired"].to_list() == docs_fired
    np.testing.assert_allclose(frame["density"].to_numpy(), fired.sum(0) / len(codes))
    np.testing.assert_allclose(frame["doc_density"].to_numpy(), np.array(docs_fired) / n_docs)
    np.testing.assert_allclose(frame["max"].to_numpy(), codes.max(0), rtol=1e-4, atol=1e-5)
    manifest = load_manifest(whole)
    assert manifest["totals"]["documents"] == n_docs
    assert manifest["totals"]["tokens"] == len(codes)
    prov = manifest["provenance"]
    assert prov["layer"] == LAYER and prov["hook"] == "layer1.resid_post"
    assert prov["sae"]["sha256_of"] == "file" and len(prov["sae"]["sha256"]) == 64
    assert prov["model"]["weights_sha256"]
    assert manifest["inputs"][0]["fingerprint"] == "sha256:whole"
    # approximate quantiles are ordered, within the range, and close for busy features
    for row in frame.filter(pl.col("n_tokens_fired") > 0).iter_rows(named=True):
        nonzero = codes[:, row["feature"]][fired[:, row["feature"]]]
        assert nonzero.min() * 0.9 <= row["p50"] <= row["p90"] <= row["p99"] <= row["max"]
        if len(nonzero) >= 40:
            assert row["p50"] == pytest.approx(np.median(nonzero), rel=0.15)
    dead = frame.filter(pl.col("n_tokens_fired") == 0)
    assert dead["p50"].null_count() == dead.height


def test_histogram_quantiles_are_close() -> None:
    from auditor.features.stats import HIST_BINS, histogram_bins

    values = np.random.default_rng(0).lognormal(0.0, 1.5, size=20_000)
    hist = np.bincount(histogram_bins(values), minlength=HIST_BINS + 2)
    got = np.array(histogram_quantiles(hist, (0.5, 0.9, 0.99), maximum=float(values.max())),
                   dtype=np.float64)
    expected = np.quantile(values, [0.5, 0.9, 0.99])
    assert np.all(np.abs(got / expected - 1) < 0.04), (got, expected)
    assert histogram_quantiles(np.zeros(HIST_BINS + 2)) == [None, None, None]


def test_contexts_contain_the_firing_token(whole: Path, reference: dict[str, Any],
                                           lm: Any) -> None:
    codes, doc, pos = reference["codes"], reference["doc"], reference["pos"]
    ctx = load_contexts(whole)
    frame = load_dictionary(whole)
    assert ctx.height > 0
    for key, group in ctx.group_by("feature", maintain_order=True):
        f = int(key[0])
        acts = group["activation"].to_list()
        assert acts == sorted(acts, reverse=True) and group.height <= TOP
        assert group["rank"].to_list() == list(range(group.height))
        assert group["text"].n_unique() == group.height  # de-duplicated by text
        assert acts[0] == pytest.approx(frame["max"][f], rel=1e-6)
        for row in group.iter_rows(named=True):
            assert f"{CONTEXT_OPEN}{row['token']}{CONTEXT_CLOSE}" in row["text"]
            assert row["token"] == lm.tokenizer.decode([row["token_id"]])
            assert row["source"] == "whole.jsonl"
            d = int(row["doc_id"][1:])
            i = np.flatnonzero((doc == d) & (pos == row["position"]))
            assert len(i) == 1
            assert codes[i[0], f] == pytest.approx(row["activation"], rel=1e-4, abs=1e-5)
    # the duplicated document never contributes the same text twice
    assert not ctx.group_by("feature", "text").len().filter(pl.col("len") > 1).height


def test_incremental_build_equals_whole(whole: Path, lm: Any, sae: Any, tmp_path: Path) -> None:
    out = tmp_path / "halves"
    half = len(TEXTS) // 2
    first = build_dictionary(_docs(TEXTS[:half]), lm=lm, sae=sae, out=out, config=CONFIG,
                             input_info={"path": "a.jsonl", "fingerprint": "sha256:a"})
    assert not first.merged
    # another chunk size in the second half: chunking must not matter
    second = build_dictionary(_docs(TEXTS[half:], start=half), lm=lm, sae=sae, out=out,
                              config=DictionaryConfig(**{**CONFIG.to_dict(), "chunk_docs": 3}),
                              input_info={"path": "b.jsonl", "fingerprint": "sha256:b"})
    assert second.merged and second.documents == len(TEXTS)
    a, b = load_dictionary(out), load_dictionary(whole)
    for col in ("n_tokens_fired", "n_docs_fired", "max", "hist", "p50", "p90", "p99",
                "density", "doc_density", "promoted_ids"):
        assert a[col].to_list() == b[col].to_list(), col
    np.testing.assert_allclose(a["sum"].to_numpy(), b["sum"].to_numpy(), rtol=1e-9)
    cols = ["feature", "rank", "activation", "doc_id", "position", "token", "text"]
    assert load_contexts(out).select(cols).equals(load_contexts(whole).select(cols))
    assert a["auto_label"].to_list() == b["auto_label"].to_list()
    manifest = load_manifest(out)
    assert [i["fingerprint"] for i in manifest["inputs"]] == ["sha256:a", "sha256:b"]
    assert manifest["totals"] == {**load_manifest(whole)["totals"], "builds": 2}

    # the same input again would be counted twice: refused
    with pytest.raises(ConfigError, match="already in the dictionary") as err:
        build_dictionary(_docs(TEXTS[:2]), lm=lm, sae=sae, out=out, config=CONFIG,
                         input_info={"path": "a.jsonl", "fingerprint": "sha256:a"})
    assert err.value.field == "corpus"
    # counting outlier tokens in one part and not in the other would mix two densities
    with pytest.raises(ConfigError, match="exclude_outliers") as err:
        build_dictionary(_docs(TEXTS[:2]), lm=lm, sae=sae, out=out,
                         config=DictionaryConfig(max_length=MAX_LENGTH, exclude_outliers=True),
                         input_info={"path": "c.jsonl", "fingerprint": "sha256:c"})
    assert err.value.field == "exclude_outliers"


def test_merge_refuses_another_sae(whole: Path, lm: Any, tmp_path: Path) -> None:
    other = load_sae(make_random_sae(layer=LAYER, d_sae=D_SAE, k=4, seed=1).save(tmp_path / "o"))
    before = (whole / "dictionary.json").read_bytes()
    with pytest.raises(ProvenanceMismatch, match=r"sae\.sha256"):
        build_dictionary(_docs(TEXTS[:2]), lm=lm, sae=other, out=whole, config=CONFIG)
    assert (whole / "dictionary.json").read_bytes() == before
    # rebuild=True starts over instead of merging
    copy = shutil.copytree(whole, tmp_path / "copy")
    summary = build_dictionary(_docs(TEXTS[:2]), lm=lm, sae=other, out=copy, config=CONFIG,
                               rebuild=True)
    assert summary.documents == 2 and not summary.merged
    assert load_manifest(copy)["provenance"]["sae"]["sha256"] == other.sha256


def test_corrupted_file_is_detected(whole: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(whole, copy)
    pl.read_parquet(copy / "contexts.parquet").head(1).write_parquet(copy / "contexts.parquet")
    with pytest.raises(CorruptShard, match="does not match the manifest"):
        load_dictionary(copy)
    with pytest.raises(StoreError, match="no feature dictionary"):
        load_dictionary(tmp_path / "nowhere")


# --------------------------------------------------------------------------- logit lens


def test_logit_lens_matches_numpy(whole: Path, full_model: Any, sae: Any, lm: Any) -> None:
    W_U = full_model.lm_head.weight.detach().numpy().astype(np.float64)[: len(lm.tokenizer)]
    gain = full_model.model.norm.weight.detach().numpy().astype(np.float64)
    logits = (sae.W_dec.detach().numpy().astype(np.float64) * gain) @ W_U.T
    frame = load_dictionary(whole)
    top = np.argsort(-logits, axis=1)[:, :5]
    bottom = np.argsort(logits, axis=1)[:, :5]
    assert frame["promoted_ids"].to_list() == top.tolist()
    assert frame["suppressed_ids"].to_list() == bottom.tolist()
    np.testing.assert_allclose(np.array(frame["promoted_logits"].to_list()),
                               np.take_along_axis(logits, top, 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(frame["suppressed_logits"].to_list()),
                               np.take_along_axis(logits, bottom, 1), rtol=1e-4, atol=1e-6)
    assert frame["promoted"][7].to_list() == [lm.tokenizer.decode([i]) for i in top[7]]
    info = load_manifest(whole)["logit_lens"]
    assert info["unembedding"].startswith("lm_head.weight") and "norm" in info["final_norm"]


def test_final_norm_gain_handles_gemma_and_layernorm() -> None:
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    gemma = Gemma3RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        gemma.weight.copy_(torch.linspace(-0.5, 0.5, 6))
    fake = SimpleNamespace(model=SimpleNamespace(norm=gemma), d_model=6, dtype=torch.float32,
                           device=torch.device("cpu"))
    gain, note = final_norm_gain(fake)  # type: ignore[arg-type]
    assert gain is not None and "Gemma3RMSNorm" in note
    np.testing.assert_allclose(gain, 1 + np.linspace(-0.5, 0.5, 6), rtol=1e-5)

    ln = torch.nn.LayerNorm(5)  # odd width: two probes
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1.0, 6.0))
        ln.bias.fill_(3.0)
    fake = SimpleNamespace(model=SimpleNamespace(ln_f=ln), d_model=5, dtype=torch.float32,
                           device=torch.device("cpu"))
    gain, _ = final_norm_gain(fake)  # type: ignore[arg-type]
    np.testing.assert_allclose(gain, np.arange(1.0, 6.0), rtol=1e-5)  # type: ignore[arg-type]


def test_unembedding_uses_tied_input_embeddings() -> None:
    emb = torch.nn.Embedding(11, 4)
    model = SimpleNamespace(config=SimpleNamespace(tie_word_embeddings=True),
                            get_input_embeddings=lambda: emb)
    fake = SimpleNamespace(model=model, model_id="mem", d_model=4)
    W_U, source = unembedding(fake)  # type: ignore[arg-type]
    assert source == "tied input embeddings"
    assert torch.equal(W_U, emb.weight.detach())


# --------------------------------------------------------------------------- labels


def test_auto_label_is_short_and_deterministic() -> None:
    # the logit lens (you, your: 2 of 5 share a stem) is not coherent: left out
    label = auto_label([" insult", " idiot", " insult", " moron"], [" you", " your"])
    assert label == "insult, idiot, moron"
    assert auto_label([], []) == "never fired"
    assert auto_label(["\ufffd", "\ufffd", " a"], ["\x11", " the"]) == "a, �"


def test_overrides_win(whole: Path, tmp_path: Path) -> None:
    auto = load_dictionary(whole)["auto_label"].to_list()
    labels = feature_labels(whole)
    assert labels == dict(enumerate(auto))
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("feature\tlabel\n# mine\n3\tweather words\n\n5\t  shouting  \n")
    got = feature_labels(whole, overrides=tsv)
    assert got[3] == "weather words" and got[5] == "shouting" and got[4] == auto[4]
    js = tmp_path / "labels.json"
    js.write_text(json.dumps({"7": "json label"}))
    assert feature_labels(whole, overrides=js)[7] == "json label"
    assert feature_labels(whole, overrides={8: "mapped"})[8] == "mapped"
    assert load_dictionary(whole, overrides={8: "mapped"})["label"][8] == "mapped"

    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{D_SAE}\tout of range\n")
    with pytest.raises(ConfigError, match="out of range") as err:
        feature_labels(whole, overrides=bad)
    assert err.value.field == "feature" and err.value.row == 1
    bad.write_text("3 no tab\n")
    with pytest.raises(ConfigError, match="TAB"):
        feature_labels(whole, overrides=bad)
    with pytest.raises(ConfigError, match="no such label file"):
        feature_labels(whole, overrides=tmp_path / "missing.tsv")


def test_llm_labeller_posts_to_chat_completions(whole: Path) -> None:
    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["path"] = self.path
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = json.dumps({"choices": [{"message": {"content": '"Weather talk"\nmore'}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        contexts = load_contexts(whole, feature=0)["text"].to_list()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        label = llm_label(contexts, base_url=url, model="tiny", promoted=["rain"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert label == "Weather talk"
    assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "tiny"
    assert contexts[0].split()[0] in seen["body"]["messages"][-1]["content"]
    with pytest.raises(ConfigError, match="http"):
        llm_label(contexts, base_url="ftp://x", model="m")


# --------------------------------------------------------------------------- show / search


def test_show_and_search(whole: Path) -> None:
    report = describe_feature(whole, 2, n_contexts=2)
    assert report.feature == 2 and len(report.contexts) <= 2
    assert len(report.promoted) == 5 and set(report.quantiles) == {"p50", "p90", "p99"}
    # a firing token found in the contexts leads search to that feature
    ctx = load_contexts(whole)
    words = [t.strip() for t in ctx["token"].to_list() if len(t.strip()) >= 3 and t.isascii()]
    word = words[0]
    hits = search_features(whole, word.upper())
    owners = set(ctx.filter(pl.col("token").str.strip_chars().str.to_lowercase()
                            == word.lower())["feature"].to_list())
    assert owners and set(hits["feature"].to_list()) >= owners
    assert hits["score"].to_list() == sorted(hits["score"].to_list(), reverse=True)
    # a label override is found too, and ranks first
    hits = search_features(whole, "zebra", overrides={11: "zebra crossings"})
    assert hits["feature"][0] == 11 and hits["matched"][0].to_list()[0] == "label"
    assert search_features(whole, "qqqqzz").height == 0
    with pytest.raises(ConfigError, match="empty"):
        search_features(whole, "  ")


def test_cli_build_show_search_label(tiny_llama_dir: Path, sae_dir: Path,
                                     tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n"
                              for i, t in enumerate(TEXTS[:8])))
    runner = CliRunner()
    args = ["build", "--corpus", str(corpus), "--model", str(tiny_llama_dir), "--sae",
            str(sae_dir), "--max-length", "24", "--top", "3", "--id-column", "id",
            "--keep-outliers", "--logit-tokens", "4", "--no-progress", "--json"]
    result = runner.invoke(features_cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    where = sae_dir / "dictionary"  # beside the SAE weights by default
    assert summary["out"] == str(where) and summary["documents"] == 8
    assert load_manifest(where)["inputs"][0]["fingerprint"].startswith("sha256:")
    # building again over the same file is refused (it would count twice)
    again = runner.invoke(features_cli, args)
    assert isinstance(again.exception, ConfigError) and again.exception.field == "corpus"

    shown = runner.invoke(features_cli, ["show", "1", "--dictionary", str(where)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("feature 1: ")
    for part in ("density:", "activation: max", "promotes:", "suppresses:"):
        assert part in shown.stdout
    assert CONTEXT_OPEN in shown.stdout or "never fired" in shown.stdout

    ok = runner.invoke(features_cli, ["label", "1", "zebra words", "--dictionary", str(where)])
    assert ok.exit_code == 0, ok.output
    shown = runner.invoke(features_cli, ["show", "1", "--dictionary", str(where), "--json"])
    assert json.loads(shown.stdout)["label"] == "zebra words"
    found = runner.invoke(features_cli, ["search", "ZEBRA", "--dictionary", str(where)])
    assert found.exit_code == 0 and found.stdout.splitlines()[0].split()[0] == "feature"
    assert found.stdout.splitlines()[1].split()[0] == "1"
    found = runner.invoke(features_cli, ["search", "zebra", "--dictionary", str(where), "--json"])
    assert json.loads(found.stdout)[0]["feature"] == 1

    bad = runner.invoke(features_cli, ["show", str(D_SAE), "--dictionary", str(where)])
    assert isinstance(bad.exception, ConfigError) and bad.exception.field == "feature"
    assert "out of range" in str(bad.exception)
    missing = runner.invoke(features_cli, ["show", "1", "--dictionary", str(tmp_path / "no")])
    assert isinstance(missing.exception, StoreError)
    assert "no feature dictionary" in str(missing.exception)
    missing = runner.invoke(features_cli, ["search", "x", "--dictionary", str(tmp_path)])
    assert isinstance(missing.exception, StoreError)


def test_config_round_trips_and_validates() -> None:
    cfg = DictionaryConfig(max_length=64, max_windows=2, top_contexts=5)
    assert DictionaryConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError) as err:
        DictionaryConfig(top_contexts=0)
    assert err.value.field == "top_contexts"
    with pytest.raises(ConfigError, match="unknown"):
        DictionaryConfig.from_dict({"nope": 1})
