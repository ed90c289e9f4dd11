"""The trained models from PyPI (Gemma-3-270M, SmolLM2-135M-Instruct as GGUF): conversion, recording, perplexity,
LAPE. Each is checked against something independent of the code under test: the GGUF's tensors dequantized by
gguf-py, forward hooks on the stock modules, the range of perplexities a working model has, counts by hand."""
import json
import math
import sys

import gguf
import numpy as np
import pytest
import torch
from conftest import ROOT
from hook_reference import HookReference, choose_early_eos
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "analysis"))

# Prompts of unequal length in five languages and three scripts: left padding matters.
PROMPTS = ["Translate into English.\nGerman: Der Zug nach Hamburg fährt um sieben Uhr morgens ab.\nEnglish:",
           "Russian: Товар стоил менее 20 евро.\nEnglish:",
           "中文：今天天气很好。\nEnglish:",
           "The capital of France is",
           "Français : Les enfants jouent dans le parc pendant que leurs parents discutent.\nEnglish:"]
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def real(request):
    """(name, folder) of a converted real model."""
    return request.param, request.getfixturevalue(f"{request.param}_dir")


def test_mlp_weights_are_the_gguf_tensors(gemma_gguf, gemma_dir, smollm2_gguf, smollm2_dir):
    """gate/up/down of the converted folders equal gguf-py's dequantization of ffn_gate/ffn_up/ffn_down: the
    site (act_fn(gate_proj(x))) reads the file's gate, not its up projection."""
    for path, folder, layer in ((gemma_gguf, gemma_dir, 5), (smollm2_gguf, smollm2_dir, 17)):
        tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            for ours, theirs in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")):
                t = tensors[f"blk.{layer}.{theirs}.weight"]
                expected = gguf.quants.dequantize(t.data, t.tensor_type)
                got = f.get_tensor(f"model.layers.{layer}.mlp.{ours}.weight").numpy()
                assert got.shape == expected.shape and np.array_equal(got, expected), (folder.name, ours)


def test_provenance(gemma_dir, smollm2_dir):
    from pim.models.pypi import PYPI_MODELS

    for folder in (gemma_dir, smollm2_dir):
        info = json.loads((folder / "gguf.json").read_text())
        assert info["sha256"] == PYPI_MODELS[folder.name].gguf_sha256
        assert "quantized model" in info["note"] and info["versions"]["gguf"] == "0.19.0"
        assert (folder / "LICENSE.txt").stat().st_size > 1000
    assert json.loads((gemma_dir / "gguf.json").read_text())["tensor_types"]["Q4_K"] > 0
    assert json.loads((gemma_dir / "config.json").read_text())["model_type"] == "gemma3_text"


def test_recording_equals_the_hook_reference(real, tmp_path):
    """The patched Gemma 3 / Llama code records what forward hooks on the stock activation modules see, on
    trained weights, with left padding and an EOS that ends some rows early."""
    name, folder = real
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model = AutoModelForCausalLM.from_pretrained(folder, activate_file=[ratio, index]).eval()
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    eos = choose_early_eos(model, tok, PROMPTS, MAX_NEW_TOKENS)
    assert eos is not None
    ratio.unlink()
    model.activation_recorder.reset()
    reference = HookReference(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos)
    reference.remove()
    rows, counts, counted = reference.expected(out[:, enc.input_ids.shape[1]:], {eos})
    assert min(counted) < MAX_NEW_TOKENS <= max(counted), "some rows end early, some do not"
    assert [json.loads(line) for line in ratio.read_text().splitlines()] == [
        {str(layer): pair for layer, pair in enumerate(row)} for row in rows]
    assert json.loads(index.read_text()) == {str(layer): c for layer, c in enumerate(counts)}
    # trained GELU-tanh / SiLU gates: most activations are negative, few are exactly zero
    le_zero = np.mean([pair[1] for row in rows for pair in row])
    assert 0.3 < le_zero < 0.99, (name, le_zero)


# Plain sentences; a broken tokenizer (Gemma's split pieces, no BOS) or conversion gives thousands.
SENTENCES = {"eng": "The weather is nice today, and the children are playing in the park.",
             "deu": "Das Wetter ist heute schön, und die Kinder spielen im Park.",
             "fra": "Il fait beau aujourd'hui et les enfants jouent dans le parc.",
             "rus": "Сегодня хорошая погода, и дети играют в парке.",
             "zho": "今天天气很好，孩子们在公园里玩。"}
# Measured (float32, this CPU): Gemma 10.4, 43.4, 24.0, 38.4, 54.6; SmolLM2 English 36.8. The bounds leave
# about 2.5x: a tokenizer without BOS or with split pieces, or a wrong weight, lands far above them.
SANE = {"gemma": {"eng": 30, "deu": 100, "fra": 60, "rus": 100, "zho": 140}, "smollm2": {"eng": 100}}


def perplexity(model, tok, text):
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        return math.exp(model(**enc, labels=enc.input_ids).loss.item())


def test_perplexity_of_plain_sentences_is_sane(real):
    name, folder = real
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    got = {lang: perplexity(model, tok, SENTENCES[lang]) for lang in SANE[name]}
    assert all(2 < got[lang] < bound for lang, bound in SANE[name].items()), got
    if name == "gemma":
        assert tok("Der Zug nach Hamburg").input_ids[0] == tok.bos_token_id == 2


LANGS = ["deu", "eng", "spa", "rus", "fra"]


def test_lape_on_real_corpus_runs(gemma_dir, tmp_path):
    """Corpus runs of Gemma over the sample corpora, then LAPE: every language gets neurons, and the neurons
    chosen for a language fire more often on its text than on any other language's (from the index counts)."""
    import corpus_activate
    import language_neurons

    results = tmp_path / "results"
    corpus_activate.main(["--model", str(gemma_dir), "--file", *[f"sample-corpus-{lang}" for lang in LANGS],
                          "--data-dir", str(ROOT / "data"), "--results-dir", str(results), "--max-length", "32"])
    language_neurons.main(["--results-dir", str(results), "--model", "gemma-3-270m", "--prefix", "sample-corpus-",
                           "--top-rate", "0.02"])
    chosen = json.loads((results / "neurons" / "gemma-3-270m-language-neurons.json").read_text())
    probs = {}
    for lang in LANGS:
        counts = json.loads((results / f"sample-corpus-{lang}-index-gemma-3-270m.jsonl").read_text())
        tokens = json.loads((results / f"sample-corpus-{lang}-manifest-gemma-3-270m.json").read_text())["tokens"]
        probs[lang] = np.array([counts[str(layer)] for layer in range(len(counts))]) / tokens
    for lang in LANGS:
        neurons = chosen["neurons"][lang]
        assert len(neurons) >= 5, (lang, len(neurons))
        layers, ids = np.array(neurons).T
        own = probs[lang][layers, ids].mean()
        assert all(own > probs[other][layers, ids].mean() for other in LANGS if other != lang), lang


def test_corpus_shards_of_a_gated_model_merge_to_the_bytes_of_one_process(smollm2_dir, tmp_path):
    """Shards are whole windows, so they batch as one process does: on SmolLM2 (a gated MLP, whose counts
    move with the batching by float rounding) the merged index equals one process's byte for byte, with
    sorted batches, a token budget and an out-of-memory halving in neither."""
    import subprocess

    import corpus_activate

    def run(results, *extra):
        corpus_activate.main(["--model", str(smollm2_dir), "--file", "sample-corpus-fra", "--data-dir",
                              str(ROOT / "data"), "--results-dir", str(results), "--max-tokens", "200",
                              "--sort-window", "5", "--batch-size", "3", *extra])

    run(tmp_path / "one")
    for shard in ("1/2", "0/2"):
        run(tmp_path / "shards", "--shard", shard)
    merged = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_results.py"), "--file", "sample-corpus-fra",
                             "--model", smollm2_dir.name, "--results-dir", str(tmp_path / "shards")],
                            capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    name = f"sample-corpus-fra-index-{smollm2_dir.name}.jsonl"
    assert (tmp_path / "shards" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    one = json.loads((tmp_path / "one" / f"sample-corpus-fra-manifest-{smollm2_dir.name}.json").read_text())
    assert one["stopped"]["budget_reached"] and 200 <= one["tokens"] < 200 + 512 and one["lines"] < 20
