"""Qwen v1 -> Qwen2 conversion (pim/models/qwen1.py, scripts/convert_qwen1.py), checked against v1's own equations.

A tiny v1 checkpoint is written here with v1's names (two safetensors shards, index, config, qwen.tiktoken).
The references are independent of the converter: a forward pass written from v1's modeling_qwen.py
equations, and tiktoken with v1's pattern, ranks and special tokens after NFC (as QWenTokenizer does).
"""
import base64
import hashlib
import json
import math
import random
import re
import subprocess
import sys
import unicodedata

import pytest
import torch
import torch.nn.functional as F
from conftest import CORPUS, ROOT

from pim.models import qwen1

CONVERT = str(ROOT / "scripts" / "convert_qwen1.py")
INFER = str(ROOT / "scripts" / "infer_activate.py")

# v1's tokenization_qwen.py, written out here rather than imported from the converter
V1_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
V1_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]

TEXTS = CORPUS + [
    "这是一个测试。我们今天去公园玩，天气很好。", "日本語のテキストも少し入れます。東京は大きい都市です。",
    "Привет, как дела? Всё хорошо, спасибо.", "Café Ångström naïve résumé Ελληνικά 한국어 텍스트",
    "Numbers 1234567890 and 3.14159, 2024-03-14; emoji 😀🎉👍🏽 and tabs\tand  spaces   here.",
    "It's we're they've I'm you'll he'd DON'T",
]
HIDDEN, HEADS, LAYERS, WIDTH, SEQ_LENGTH, THETA, EPS = 64, 4, 3, 96, 64, 5000.0, 1e-5


def byte_decoder():
    """GPT-2's printable character -> byte table (the alphabet of byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def write_tiktoken(path, merges_wanted=320):
    """qwen.tiktoken: the 256 bytes (ranks 0-255), then tokens from BPE merges learned on TEXTS, in order."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(V1_PATTERN), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=256 + merges_wanted, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXTS * 2, trainer)
    dec = byte_decoder()
    ranks = {bytes([b]): b for b in range(256)}
    for merge in json.loads(tok.to_str())["model"]["merges"]:
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        left, right = bytes(dec[c] for c in a), bytes(dec[c] for c in b)
        assert left in ranks and right in ranks, "a merge's parts come before it"
        ranks.setdefault(left + right, len(ranks))
    # a whole token that merges cannot reach: in "qzxj" the cheaper "zx" merges first, leaving q|zx|j, yet
    # tiktoken returns a piece that is in the vocabulary as one token (so must the converted tokenizer)
    for token in (b"zx", b"qz", b"xj", b"qzxj"):
        assert token not in ranks
        ranks[token] = len(ranks)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    return len(ranks)


def v1_config(n_ranks, **overrides):
    vocab = -(-(n_ranks + len(V1_SPECIALS)) // 64) * 64
    return {"architectures": ["QWenLMHeadModel"], "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}, "model_type": "qwen",
            "attn_dropout_prob": 0.0, "emb_dropout_prob": 0.0, "bf16": False, "fp16": False, "fp32": False,
            "hidden_size": HIDDEN, "intermediate_size": 2 * WIDTH, "initializer_range": 0.02,
            "kv_channels": HIDDEN // HEADS, "layer_norm_epsilon": EPS, "max_position_embeddings": 8192,
            "no_bias": True, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "onnx_safe": None,
            "rotary_emb_base": THETA, "rotary_pct": 1.0, "scale_attn_weights": True, "seq_length": SEQ_LENGTH,
            "softmax_in_fp32": False, "tie_word_embeddings": False, "tokenizer_class": "QWenTokenizer",
            "transformers_version": "4.32.0", "use_cache": True, "use_cache_kernel": False,
            "use_cache_quantization": False, "use_dynamic_ntk": True, "use_flash_attn": "auto",
            "use_logn_attn": True, "vocab_size": vocab, **overrides}


def v1_weights(config, seed=0):
    """Random v1 weights, scaled so that some SiLU inputs pass -88 (exact zeros) and others stay small.

    Attention stays soft and the MLP output small, so that float32 rounding stays far below the 1e-5 tolerance.
    """
    g = torch.Generator().manual_seed(seed)
    h, v, w3 = config["hidden_size"], config["vocab_size"], config["intermediate_size"] // 2

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    w = {"transformer.wte.weight": randn(v, h), "transformer.ln_f.weight": 1 + randn(h, scale=0.3),
         "lm_head.weight": randn(v, h, scale=0.2)}
    for n in range(config["num_hidden_layers"]):
        p = f"transformer.h.{n}."
        neuron_scale = torch.exp(torch.empty(w3, 1).uniform_(math.log(0.05), math.log(10), generator=g))
        w.update({p + "ln_1.weight": 1 + randn(h, scale=0.3), p + "ln_2.weight": 1 + randn(h, scale=0.3),
                  p + "attn.c_attn.weight": randn(3 * h, h, scale=0.15),
                  p + "attn.c_attn.bias": randn(3 * h, scale=0.5),
                  p + "attn.c_proj.weight": randn(h, h, scale=0.1), p + "mlp.w1.weight": randn(w3, h, scale=0.03),
                  p + "mlp.w2.weight": randn(w3, h) * neuron_scale, p + "mlp.c_proj.weight": randn(h, w3, scale=0.02)})
    last = {k: w.pop(k) for k in ("transformer.ln_f.weight", "lm_head.weight")}
    return {**w, **last}


def write_v1_folder(folder, config, weights, extra_tensors=None):
    """config.json, two shards + index, like the hub's Qwen v1 folders (wte first, ln_f and lm_head last)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = list(weights) + list(extra_tensors or {})
    tensors = {**weights, **(extra_tensors or {})}
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, folder / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def make_v1(folder, tiktoken_src=None, weights=None, extra_tensors=None, **overrides):
    """A complete tiny v1 folder; returns (config, weights, number of BPE ranks)."""
    folder.mkdir(parents=True, exist_ok=True)
    if tiktoken_src is None:
        n_ranks = write_tiktoken(folder / "qwen.tiktoken")
    else:
        (folder / "qwen.tiktoken").write_bytes(tiktoken_src.read_bytes())
        n_ranks = len(tiktoken_src.read_text().splitlines())
    config = v1_config(n_ranks, **overrides)
    weights = weights if weights is not None else v1_weights(config)
    write_v1_folder(folder, config, weights, extra_tensors)
    (folder / "generation_config.json").write_text(json.dumps({
        "chat_format": "raw", "eos_token_id": n_ranks, "pad_token_id": n_ranks, "max_window_size": 6144,
        "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.8, "repetition_penalty": 1.1}))
    return config, weights, n_ranks


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "Qwen-Tiny"
    config, weights, n_ranks = make_v1(folder)
    return folder, config, weights, n_ranks


@pytest.fixture(scope="module")
def converted(v1, tmp_path_factory):
    dest = tmp_path_factory.mktemp("models") / "qwen-tiny"
    qwen1.convert(v1[0], dest)
    return dest


# --- the reference: v1's forward pass (modeling_qwen.py), float32 ---

def v1_forward(w, config, ids):
    """(logits [B, T, V], per layer silu(w2 x) [B, T, width]) for ids without padding."""
    h, nh = config["hidden_size"], config["num_attention_heads"]
    hd, eps = config["kv_channels"], config["layer_norm_epsilon"]
    B, T = ids.shape

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    inv_freq = 1.0 / (config["rotary_emb_base"] ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rotate(x):  # rotate_half
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    mask = torch.full((T, T), float("-inf")).triu(1)
    x = w["transformer.wte.weight"][ids]
    gates = []
    for n in range(config["num_hidden_layers"]):
        p = f"transformer.h.{n}."
        y = rms(x, w[p + "ln_1.weight"])
        qkv = y @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in qkv.split(h, dim=-1))
        q, k = rotate(q), rotate(k)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, h) @ w[p + "attn.c_proj.weight"].T
        y = rms(x, w[p + "ln_2.weight"])
        gate = F.silu(y @ w[p + "mlp.w2.weight"].T)
        gates.append(gate)
        x = x + ((y @ w[p + "mlp.w1.weight"].T) * gate) @ w[p + "mlp.c_proj.weight"].T
    return rms(x, w["transformer.ln_f.weight"]) @ w["lm_head.weight"].T, gates


def random_ids(n_ranks, batch, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_ranks, (batch, length), generator=g)


def qwen2_logits(folder, ids, **kwargs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_converted_config(v1, converted):
    from transformers import AutoConfig

    _, config, _, n_ranks = v1
    c = AutoConfig.from_pretrained(converted)
    assert c.model_type == "qwen2" and c.architectures == ["Qwen2ForCausalLM"]
    assert c.rope_parameters["rope_theta"] == THETA and c.rope_parameters["rope_type"] == "default"
    assert (c.intermediate_size, c.head_dim, c.num_key_value_heads, c.rms_norm_eps) == (WIDTH, 16, HEADS, EPS)
    assert not c.tie_word_embeddings and not c.use_sliding_window
    assert c.eos_token_id == c.pad_token_id == c.bos_token_id == n_ranks
    assert c.qwen1["seq_length"] == SEQ_LENGTH and c.qwen1["use_logn_attn"] and c.qwen1["use_dynamic_ntk"]
    provenance = json.loads((converted / "conversion.json").read_text())
    for name in ("config.json", "qwen.tiktoken", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "model.safetensors.index.json"):
        assert provenance["source_sha256"][name] == hashlib.sha256((v1[0] / name).read_bytes()).hexdigest()
    assert provenance["source"] == str(v1[0].resolve()) and provenance["seq_length"] == SEQ_LENGTH
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]


def test_chat_models_also_stop_at_im_end(v1, converted, tmp_path):
    from transformers import GenerationConfig

    from pim.models.qwen1 import generation_config, load_tokenizer

    n_ranks = v1[3]
    assert GenerationConfig.from_pretrained(converted).eos_token_id == n_ranks  # chat_format "raw": a base model
    (tmp_path / "generation_config.json").write_text(json.dumps({"chat_format": "chatml", "eos_token_id": n_ranks}))
    eos = generation_config(tmp_path, n_ranks).eos_token_id
    assert load_tokenizer(converted).convert_ids_to_tokens(eos) == ["<|endoftext|>", "<|im_end|>"]


def test_logits_equal_v1_reference(v1, converted):
    _, config, weights, n_ranks = v1
    ids = random_ids(n_ranks, 2, SEQ_LENGTH)
    expected, _ = v1_forward(weights, config, ids)
    got = qwen2_logits(converted, ids)
    diff = (got - expected).abs().max().item()
    print(f"max |logit difference| over {SEQ_LENGTH} positions: {diff:.3g} (logits up to {expected.abs().max():.3g})")
    assert expected.std() > 0.5, "the logits are not trivially small"
    assert diff <= 1e-5


SWAPS = {
    "w1<->w2": {"mlp.w2.weight": "mlp.up_proj.weight", "mlp.w1.weight": "mlp.gate_proj.weight"},
    "q<->k": {"attn.c_attn.weight": ("self_attn.k_proj.weight", "self_attn.q_proj.weight", "self_attn.v_proj.weight"),
              "attn.c_attn.bias": ("self_attn.k_proj.bias", "self_attn.q_proj.bias", "self_attn.v_proj.bias")},
}


@pytest.mark.parametrize("swap", list(SWAPS))
def test_a_wrong_mapping_fails_the_comparison(swap, v1, tmp_path, monkeypatch):
    _, config, weights, n_ranks = v1
    for key, target in SWAPS[swap].items():
        monkeypatch.setitem(qwen1.LAYER_MAP, key, target)
    qwen1.convert(v1[0], tmp_path / "wrong")
    ids = random_ids(n_ranks, 2, SEQ_LENGTH)
    expected, _ = v1_forward(weights, config, ids)
    assert (qwen2_logits(tmp_path / "wrong", ids) - expected).abs().max() > 1e-3


def test_a_dropped_rope_theta_fails_the_comparison(v1, converted):
    _, config, weights, n_ranks = v1
    ids = random_ids(n_ranks, 2, SEQ_LENGTH)
    expected, _ = v1_forward(weights, config, ids)
    got = qwen2_logits(converted, ids, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    assert (got - expected).abs().max() > 1e-3


def test_recorded_files_equal_v1_reference(v1, converted, tmp_path):
    from transformers import AutoModelForCausalLM

    _, config, weights, n_ranks = v1
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32, activate_file=[ratio, index]).eval()
    prompt, new = random_ids(n_ranks, 3, 12, seed=2), 5
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False)
    assert out.shape[1] == 12 + new and not (out[:, 12:] == n_ranks).any(), "no EOS: every step counts"

    logits, gates = v1_forward(weights, config, out[:, :-1])
    assert torch.equal(logits[:, 11:].argmax(-1), out[:, 12:]), "greedy tokens of the reference"
    width = WIDTH
    rows, counts = [], torch.zeros(LAYERS, width, dtype=torch.int64)
    for b in range(3):
        for pos in range(11, 11 + new):  # the last position of each forward call: prefill, then each new token
            acts = [g[b, pos] for g in gates]
            rows.append({str(n): [int((a == 0).sum()) / width, int((a <= 0).sum()) / width]
                         for n, a in enumerate(acts)})
            counts += torch.stack([(a > 0).long() for a in acts])
    assert sum(r[str(n)][0] > 0 for r in rows for n in range(LAYERS)) > 0, "some exact zeros"
    assert 0 < counts.sum() < counts.numel() * len(rows)
    assert [json.loads(line) for line in ratio.read_text().splitlines()] == rows
    assert json.loads(index.read_text()) == {str(n): c for n, c in enumerate(counts.tolist())}


# --- tokenizer ---

def fuzz_strings(n=500, seed=0):
    rng = random.Random(seed)
    pieces = ["0", "7", "123", "2024", "3.14", "Hello", " world", "It's", " they'LL", "DON'T", "naïve",
              unicodedata.normalize("NFD", "Café Ångström"), unicodedata.normalize("NFD", "résumé"), "e\u0301",
              "这是", "测试", "日本語", "東京", "Привет", " как", "한국어", "Ελληνικά", "😀", "🎉👍🏽", "👨‍👩‍👧",
              " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "  \n", "...", "!?", "(", ")", "—", "«", "»",
              "qzxj", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra_0|>", "<|extra_204|>", "<|extra_", "|>", "<|"]
    return [("" if rng.random() < 0.5 else " ").join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
            for _ in range(n)]


def test_tokenizer_equals_v1_tiktoken(v1, converted, monkeypatch):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers import AutoTokenizer

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache keyed by path
    folder, _, _, n_ranks = v1
    ranks = load_tiktoken_bpe(str(folder / "qwen.tiktoken"))
    assert len(ranks) == n_ranks
    reference = tiktoken.Encoding("qwen-tiny", pat_str=V1_PATTERN, mergeable_ranks=ranks,
                                  special_tokens={t: n_ranks + i for i, t in enumerate(V1_SPECIALS)})
    tok = qwen1.load_tokenizer(converted)  # what infer_activate.py uses for a converted v1 model
    assert tok.padding_side == "left" and tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id == n_ranks and tok.convert_tokens_to_ids("<|extra_204|>") == n_ranks + 207
    strings = fuzz_strings()
    assert sum(unicodedata.normalize("NFC", s) != s for s in strings) > 50, "NFD text is in the fuzz"
    for s in strings:
        want = reference.encode(unicodedata.normalize("NFC", s), allowed_special="all")
        assert tok(s)["input_ids"] == want, s
        assert tok.decode(want) == unicodedata.normalize("NFC", s)
    assert len(tok("1234")["input_ids"]) == 4, "one digit per token"
    assert tok("qzxj")["input_ids"] == [ranks[b"qzxj"]], "a whole-piece token that merges cannot reach"
    assert AutoTokenizer.from_pretrained(converted)("qzxj")["input_ids"] != [ranks[b"qzxj"]], \
        "AutoTokenizer (Qwen2Tokenizer) splits it: the reason for load_tokenizer"


# --- the length guard ---

def test_length_guard():
    on = {"qwen1": {"seq_length": 64, "use_logn_attn": True, "use_dynamic_ntk": False}}
    qwen1.check_prompt_lengths(on, [10, 59], 5, "p.txt")  # 59 + 5 = 64: within
    with pytest.raises(ValueError, match=r"p\.txt:12: 60 prompt tokens \+ 5 max_new_tokens = 65 > seq_length 64"):
        qwen1.check_prompt_lengths(on, [10, 60], 5, "p.txt", first_line=11)
    off = {"qwen1": {"seq_length": 64, "use_logn_attn": False, "use_dynamic_ntk": False}}
    qwen1.check_prompt_lengths(off, [10, 600], 5, "p.txt")
    qwen1.check_prompt_lengths({}, [10, 600], 5, "p.txt")  # not a converted v1 model


def test_infer_refuses_prompts_beyond_seq_length(converted, tmp_path):
    data, results = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    long = " ".join(["Das Wetter ist heute schön und die Kinder spielen im Park."] * 6)
    (data / "prompts.txt").write_text(f"Hallo Welt\nGerman: Die Ware.\n{long}\n", encoding="utf-8")
    cmd = [sys.executable, INFER, "--model", str(converted), "--file", "prompts", "--data-dir", str(data),
           "--results-dir", str(results), "--max-new-tokens", "4", "--sys-prompt", "off"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"error: {data / 'prompts.txt'}:3: " in res.stderr and "seq_length 64" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not results.exists() or not any(results.iterdir())

    (data / "prompts.txt").write_text("Hallo Welt\nGerman: Die Ware.\n", encoding="utf-8")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len((results / "prompts-ratio-qwen-tiny.jsonl").read_text().splitlines()) <= 2 * 4


# --- refusals and the command line ---

def assert_refused(src, tmp_path, match):
    out = tmp_path / "out"
    with pytest.raises(qwen1.ConversionError, match=match):
        qwen1.convert(src, out / "qwen-x")
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("overrides, match", [
    ({"rotary_pct": 0.5}, "rotary_pct 0.5"),
    ({"use_cache_quantization": True}, "use_cache_quantization"),
    ({"model_type": "qwen2"}, "not a Qwen v1 config"),
])
def test_refuses_settings(overrides, match, v1, tmp_path):
    src = tmp_path / "src"
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=v1[2], **overrides)
    assert_refused(src, tmp_path, match)


def test_refuses_unknown_layouts(v1, tmp_path):
    src, weights = tmp_path / "src", v1[2]
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=weights,
            extra_tensors={"transformer.h.0.attn.rotary_emb.inv_freq": torch.ones(8)})
    assert_refused(src, tmp_path, r"unexpected 1 \(transformer.h.0.attn.rotary_emb.inv_freq\)")

    missing = {k: t for k, t in weights.items() if k != "transformer.h.2.mlp.w1.weight"}
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=missing)
    assert_refused(src, tmp_path, r"missing 1 \(transformer.h.2.mlp.w1.weight\)")

    # a wrong shape in the second shard: found after the first shard was written, still nothing left behind
    bad = dict(weights, **{"lm_head.weight": torch.zeros(weights["lm_head.weight"].shape[0] + 1, HIDDEN)})
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=bad)
    assert json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]["lm_head.weight"].startswith(
        "model-00002")
    assert_refused(src, tmp_path, r"lm_head.weight: shape")

    for f in src.glob("model*"):
        f.unlink()
    (src / "pytorch_model.bin").write_bytes(b"")
    assert_refused(src, tmp_path, r"only PyTorch .bin weights")


def test_a_tensor_the_index_names_but_its_shard_lacks_is_refused(v1, tmp_path):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=v1[2])
    weight_map = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    shard = weight_map["transformer.h.1.mlp.w2.weight"]  # the gate: the very site that is recorded
    tensors = load_file(src / shard)
    del tensors["transformer.h.1.mlp.w2.weight"]
    save_file(tensors, src / shard, metadata={"format": "pt"})
    assert_refused(src, tmp_path, re.escape(f"{src}: {shard} lacks 1 tensor that model.safetensors.index.json puts "
                                            "there (transformer.h.1.mlp.w2.weight); download the shards and the index "
                                            "again"))

    # and a tensor in a shard that the index does not put there (here: in no shard at all)
    tensors["transformer.h.1.mlp.w2.weight"] = v1[2]["transformer.h.1.mlp.w2.weight"]
    tensors["transformer.h.0.attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, src / shard, metadata={"format": "pt"})
    assert_refused(src, tmp_path, re.escape(f"{shard} holds 1 tensor that model.safetensors.index.json does not put "
                                            "there (transformer.h.0.attn.rotary_emb.inv_freq)"))


@pytest.mark.parametrize("keep", [0.5, 0.001])  # the tensors cut off; the header cut off
def test_a_truncated_shard_is_one_line_and_writes_nothing(v1, tmp_path, keep):
    src, out = tmp_path / "src", tmp_path / "models"
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=v1[2])
    shard = src / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:int(len(data) * keep)])
    res = subprocess.run([sys.executable, CONVERT, "--src", str(src), "--name", "q", "--out-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {shard} is damaged or truncated (")
    assert lines[0].endswith("; download it again")
    assert not out.exists() or list(out.iterdir()) == []


def test_cli(v1, tmp_path):
    res = subprocess.run([sys.executable, CONVERT, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--src" in res.stdout and "--overwrite" in res.stdout
    res = subprocess.run([sys.executable, CONVERT, "--src", str(v1[0]), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr
    out = tmp_path / "models"
    res = subprocess.run([sys.executable, CONVERT, "--src", str(tmp_path / "nowhere"), "--out-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such folder"

    src = tmp_path / "src"
    make_v1(src, tiktoken_src=v1[0] / "qwen.tiktoken", weights=v1[2], rotary_pct=0.5)
    res = subprocess.run([sys.executable, CONVERT, "--src", str(src), "--name", "q", "--out-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.startswith("error: cannot convert exactly: rotary_pct 0.5")
    assert "Traceback" not in res.stderr and (not out.exists() or list(out.iterdir()) == [])

    res = subprocess.run([sys.executable, CONVERT, "--src", str(v1[0]), "--name", "q", "--out-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and (out / "q" / "conversion.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["q"]
    res = subprocess.run([sys.executable, CONVERT, "--src", str(v1[0]), "--name", "q", "--out-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "exists; pass --overwrite" in res.stderr
