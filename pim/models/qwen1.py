"""Qwen v1 checkpoints (Qwen/Qwen-7B, -14B, -72B and their -Chat models) converted exactly to Qwen2.

Qwen v1 ships remote code (`QWenLMHeadModel`, `modeling_qwen.py`) that does not run on transformers 5.x.
Its network is Qwen2's with the weights renamed, which `convert` does without loading the model:

    transformer.wte / ln_f / lm_head         -> model.embed_tokens / model.norm / lm_head (untied)
    transformer.h.N.ln_1 / ln_2              -> model.layers.N.input_layernorm / post_attention_layernorm
    attn.c_attn (fused, q|k|v rows, bias)    -> self_attn.q_proj / k_proj / v_proj (with bias)
    attn.c_proj                              -> self_attn.o_proj
    mlp.w2 (the one through SiLU), w1, c_proj -> mlp.gate_proj, up_proj, down_proj

v1 computes `c_proj(w1(x) * silu(w2(x)))`, so the paper's measured site silu(w2 x) is Qwen2's act_fn(gate_proj(x)).
The tokenizer (`qwen.tiktoken`) becomes a tokenizer.json with Qwen's pre-tokenizer, NFC normalisation and
v1's special tokens. The result equals v1 up to `seq_length` tokens; beyond it v1's use_logn_attn /
use_dynamic_ntk change the logits, so `check_prompt_lengths` refuses such runs. In bfloat16 v1 applies
rotary in float32 and Qwen2 in the model dtype: agreement there is statistical, not bitwise.
"""
import base64
import json
import os
import shutil
from pathlib import Path

from pim.activation_files import sha256_file

# v1's pre-tokenizer (tokenization_qwen.py PAT_STR): like cl100k's but one digit per token
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
ENDOFTEXT = "<|endoftext|>"
# v1's special tokens, in id order, right after the last BPE rank (151643 in the real vocabulary)
SPECIAL_TOKENS = (ENDOFTEXT, "<|im_start|>", "<|im_end|>") + tuple(f"<|extra_{i}|>" for i in range(205))
TIKTOKEN_FILE = "qwen.tiktoken"
INDEX_FILE = "model.safetensors.index.json"

# v1 name -> Qwen2 name; a tuple: the v1 tensor's rows split in equal parts, in this order
TOP_MAP = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
LAYER_MAP = {  # under transformer.h.N. -> under model.layers.N.
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_attn.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.c_attn.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.w2.weight": "mlp.gate_proj.weight",  # w2 goes through SiLU: the gate
    "mlp.w1.weight": "mlp.up_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}


class ConversionError(ValueError):
    """A source folder that cannot be converted exactly; the message says why."""


class PromptTooLong(ValueError):
    """A prompt plus max_new_tokens beyond the seq_length up to which a converted v1 model is exact."""


# --- config ---

def check_is_v1(v1):
    if v1.get("model_type") != "qwen" or "QWenLMHeadModel" not in (v1.get("architectures") or []):
        raise ConversionError(f"not a Qwen v1 config (model_type {v1.get('model_type')!r}, architectures "
                              f"{v1.get('architectures')}; expected 'qwen' and QWenLMHeadModel)")


def convert_config(v1, special_start):
    """(Qwen2Config kwargs, provenance flags) of a v1 config.json dict; ConversionError if not exact."""
    check_is_v1(v1)
    need = ["hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "kv_channels",
            "layer_norm_epsilon", "rotary_emb_base", "rotary_pct", "seq_length", "vocab_size"]
    missing = [k for k in need if k not in v1]
    if missing:
        raise ConversionError(f"config.json lacks {', '.join(missing)}: an older or unknown Qwen v1 layout")
    refusals = [
        (v1["rotary_pct"] != 1.0, f"rotary_pct {v1['rotary_pct']} rotates part of each head; Qwen2 rotates all"),
        (v1.get("use_cache_quantization", False), "use_cache_quantization quantizes the KV cache; Qwen2 does not"),
        (v1.get("quantization_config"), "a quantized checkpoint (quantization_config)"),
        (not v1.get("no_bias", True), "no_bias false: v1 then has biases on c_proj and the MLP, Qwen2 has none"),
        (not v1.get("scale_attn_weights", True), "scale_attn_weights false: Qwen2 always scales by 1/sqrt(head_dim)"),
        (v1.get("tie_word_embeddings", False), "tie_word_embeddings true: v1 checkpoints have a separate lm_head"),
        (v1["kv_channels"] * v1["num_attention_heads"] != v1["hidden_size"],
         f"kv_channels {v1['kv_channels']} x {v1['num_attention_heads']} heads != hidden_size {v1['hidden_size']}"),
        (v1["intermediate_size"] % 2, f"odd intermediate_size {v1['intermediate_size']} (v1's is twice the MLP width)"),
        (v1["vocab_size"] < special_start + len(SPECIAL_TOKENS),
         f"vocab_size {v1['vocab_size']} < {special_start + len(SPECIAL_TOKENS)} (BPE ranks + special tokens)"),
    ]
    reasons = [why for bad, why in refusals if bad]
    if reasons:
        raise ConversionError("cannot convert exactly: " + "; ".join(reasons))
    flags = {"seq_length": int(v1["seq_length"]), "use_logn_attn": bool(v1.get("use_logn_attn", False)),
             "use_dynamic_ntk": bool(v1.get("use_dynamic_ntk", False)), "rotary_emb_base": v1["rotary_emb_base"]}
    qwen2 = dict(
        vocab_size=v1["vocab_size"], hidden_size=v1["hidden_size"], intermediate_size=v1["intermediate_size"] // 2,
        num_hidden_layers=v1["num_hidden_layers"], num_attention_heads=v1["num_attention_heads"],
        num_key_value_heads=v1["num_attention_heads"], head_dim=v1["kv_channels"], hidden_act="silu",
        max_position_embeddings=v1.get("max_position_embeddings") or v1["seq_length"],
        initializer_range=v1.get("initializer_range", 0.02), rms_norm_eps=v1["layer_norm_epsilon"],
        rope_parameters={"rope_type": "default", "rope_theta": float(v1["rotary_emb_base"])},
        tie_word_embeddings=False, use_sliding_window=False, attention_dropout=0.0, use_cache=True,
        bos_token_id=special_start, eos_token_id=special_start, pad_token_id=special_start,
        architectures=["Qwen2ForCausalLM"], qwen1=flags)
    return qwen2, flags


# --- weights ---

def expected_keys(num_layers):
    return set(TOP_MAP) | {f"transformer.h.{n}.{k}" for n in range(num_layers) for k in LAYER_MAP}


def convert_tensor(name, tensor):
    """{Qwen2 name: tensor} for one v1 tensor."""
    if name in TOP_MAP:
        return {TOP_MAP[name]: tensor}
    _, _, layer, rest = name.split(".", 3)  # transformer.h.N.<rest>
    target = LAYER_MAP[rest]
    prefix = f"model.layers.{layer}."
    if isinstance(target, str):
        return {prefix + target: tensor}
    if tensor.shape[0] % len(target):
        raise ConversionError(f"{name}: {tensor.shape[0]} rows do not split in {len(target)}")
    return {prefix + t: part.clone() for t, part in zip(target, tensor.chunk(len(target), dim=0))}


def source_shards(src):
    """{v1 tensor name: shard file name} of a source folder (index json, or one model.safetensors)."""
    if (src / INDEX_FILE).is_file():
        weight_map = json.loads((src / INDEX_FILE).read_text())["weight_map"]
        absent = sorted({f for f in weight_map.values() if not (src / f).is_file()})
        if absent:
            raise ConversionError(f"{src}: shards named in {INDEX_FILE} are missing: {', '.join(absent[:5])}")
        return weight_map
    if (src / "model.safetensors").is_file():
        return {k: "model.safetensors" for k in shard_keys(src / "model.safetensors")}
    if any(src.glob("*.bin")):
        raise ConversionError(f"{src}: only PyTorch .bin weights; download the safetensors files "
                              f"(model-*.safetensors and {INDEX_FILE}), which the hub's Qwen v1 folders ship")
    raise ConversionError(f"{src}: no {INDEX_FILE} or model.safetensors")


def shard_keys(path):
    """The tensor names in the header of a safetensors file; ConversionError naming a damaged file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:
        raise ConversionError(f"{path} is damaged or truncated ({e}); download it again") from None


def check_shards(src, weight_map):
    """Refuse shards that are damaged or do not hold exactly the tensors the index assigns to them."""
    named = {}
    for name, shard in weight_map.items():
        named.setdefault(shard, set()).add(name)
    problems = []
    for shard in sorted(named):
        have = set(shard_keys(src / shard))
        missing, extra = sorted(named[shard] - have), sorted(have - named[shard])
        if missing:
            problems.append(f"{shard} lacks {len(missing)} tensor{'s' * (len(missing) > 1)} that {INDEX_FILE} "
                            f"puts there ({listed(missing)})")
        if extra:
            problems.append(f"{shard} holds {len(extra)} tensor{'s' * (len(extra) > 1)} that {INDEX_FILE} "
                            f"does not put there ({listed(extra)})")
    if problems:
        raise ConversionError(f"{src}: " + "; ".join(problems) + "; download the shards and the index again")


def check_keys(weight_map, num_layers):
    got, want = set(weight_map), expected_keys(num_layers)
    missing, unexpected = sorted(want - got), sorted(got - want)
    if missing or unexpected:
        parts = ([f"missing {len(missing)} ({listed(missing)})"] if missing else []) + (
            [f"unexpected {len(unexpected)} ({listed(unexpected)})"] if unexpected else [])
        raise ConversionError("the weights are not the known Qwen v1 layout: " + "; ".join(parts))


def listed(names, shown=4):
    """The first `shown` names, comma-separated, with ', ...' when there are more."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def check_shapes(converted, qwen2):
    h, width = qwen2["hidden_size"], qwen2["intermediate_size"]
    want = {"model.embed_tokens.weight": (qwen2["vocab_size"], h), "lm_head.weight": (qwen2["vocab_size"], h),
            "model.norm.weight": (h,), "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
            "q_proj.weight": (h, h), "k_proj.weight": (h, h), "v_proj.weight": (h, h), "q_proj.bias": (h,),
            "k_proj.bias": (h,), "v_proj.bias": (h,), "o_proj.weight": (h, h), "gate_proj.weight": (width, h),
            "up_proj.weight": (width, h), "down_proj.weight": (h, width)}
    for name, t in converted.items():
        key = name if name in want else name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]
        if tuple(t.shape) != want[key]:
            raise ConversionError(f"{name}: shape {tuple(t.shape)}, expected {want[key]} from config.json")


# --- tokenizer ---

def load_ranks(path):
    """{token bytes: rank} of a .tiktoken file, read as v1 reads it; the ranks must be 0..n-1."""
    ranks = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line:
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise ConversionError(f"{path}:{number}: not '<base64> <rank>' ({e})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConversionError(f"{path}: the ranks are not 0..{len(ranks) - 1} without gaps or repeats")
    return ranks


def convert_tokenizer(tiktoken_path):
    """A PreTrainedTokenizerFast equal to v1's QWenTokenizer (NFC, Qwen's regex, specials anywhere)."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = load_ranks(tiktoken_path)

    class Converter(TikTokenConverter):  # reads the ranks as above (no tiktoken needed)
        @staticmethod
        def load_tiktoken_bpe(url):
            return ranks

    tok = Converter(vocab_file=str(tiktoken_path), pattern=QWEN_PATTERN,
                    extra_special_tokens=list(SPECIAL_TOKENS)).converted()
    tok.normalizer = normalizers.NFC()  # v1: unicodedata.normalize("NFC", text) before encoding
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(ranks), len(ranks) + len(SPECIAL_TOKENS))):
        raise ConversionError(f"{tiktoken_path}: special tokens did not get ids {len(ranks)}... (a token clash?)")
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", eos_token=ENDOFTEXT,
                                   pad_token=ENDOFTEXT), len(ranks)


def load_tokenizer(folder):
    """The converted tokenizer exactly as saved. Not AutoTokenizer: for a qwen2 folder it builds Qwen2Tokenizer,
    which rebuilds the BPE from vocab and merges without `ignore_merges`, so a piece that is one v1 token but
    that merges cannot reach comes out split (v1/tiktoken returns the whole piece)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder, padding_side="left")


# --- the whole folder ---

def convert(src, dest, overwrite=False, progress=None):
    """Convert the v1 folder `src` into the Qwen2 folder `dest`; return the provenance dict.

    Writes into a temporary folder beside `dest` and renames it at the end: a failure leaves nothing.
    `progress(iterable, total)` wraps the loop over shards (e.g. tqdm).
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    if not (src / "config.json").is_file():
        raise ConversionError(f"{src}: no config.json (not a downloaded model folder)")
    try:
        v1 = json.loads((src / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{src / 'config.json'}: not JSON ({e})") from None
    check_is_v1(v1)
    if not (src / TIKTOKEN_FILE).is_file():
        raise ConversionError(f"{src}: no {TIKTOKEN_FILE} (Qwen v1's tokenizer)")
    if dest.exists() and not overwrite:
        raise ConversionError(f"{dest} exists; pass --overwrite to replace it")
    from transformers import Qwen2Config

    tokenizer, special_start = convert_tokenizer(src / TIKTOKEN_FILE)
    qwen2, flags = convert_config(v1, special_start)
    weight_map = source_shards(src)
    check_keys(weight_map, v1["num_hidden_layers"])
    check_shards(src, weight_map)  # before anything is written

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.converting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        hashes, dtype = convert_shards(src, tmp, weight_map, qwen2, progress)
        Qwen2Config(**qwen2, dtype=dtype).save_pretrained(tmp)
        generation_config(src, special_start).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in ("config.json", "generation_config.json", TIKTOKEN_FILE, INDEX_FILE, "model.safetensors"):
            if (src / name).is_file() and name not in hashes:
                hashes[name] = sha256_file(src / name)
        provenance = {"source": str(src.resolve()), "converter": "pim/models/qwen1.py", **flags,
                      "source_sha256": dict(sorted(hashes.items())),
                      "note": f"exact up to seq_length {flags['seq_length']} tokens (prompt + new tokens)"}
        (tmp / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
        if dest.exists():
            old = dest.parent / f".{dest.name}.replaced-{os.getpid()}"
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old)
        else:
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return provenance


def convert_shards(src, tmp, weight_map, qwen2, progress=None):
    """Convert the weights one source shard at a time into `tmp`; returns (sha256 per shard, dtype name)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shards = sorted(set(weight_map.values()))
    new_map, total, dtypes, hashes = {}, 0, set(), {}
    for shard in progress(shards, len(shards)) if progress else shards:
        converted = {}
        with safe_open(src / shard, "pt") as f:
            for name in f.keys():
                converted.update(convert_tensor(name, f.get_tensor(name)))
        check_shapes(converted, qwen2)
        save_file(converted, tmp / shard, metadata={"format": "pt"})
        for name, t in converted.items():
            new_map[name] = shard
            total += t.numel() * t.element_size()
            dtypes.add(str(t.dtype).removeprefix("torch."))
        del converted
        hashes[shard] = sha256_file(src / shard)
    if len(dtypes) != 1:
        raise ConversionError(f"tensors of several dtypes ({', '.join(sorted(dtypes))})")
    (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                              "weight_map": dict(sorted(new_map.items()))}, indent=2) + "\n")
    return hashes, dtypes.pop()


def generation_config(src, special_start):
    """Greedy by default; EOS is <|endoftext|>, and for chat models (v1's chat_format "chatml") also
    <|im_end|>, where v1's chat() stops: the end of the assistant's turn."""
    from transformers import GenerationConfig

    path = src / "generation_config.json"
    v1 = json.loads(path.read_text()) if path.is_file() else {}
    eos = [special_start, special_start + 2] if v1.get("chat_format") == "chatml" else special_start
    return GenerationConfig(bos_token_id=special_start, eos_token_id=eos, pad_token_id=special_start, do_sample=False)


# --- inference ---

def check_prompt_lengths(config, lengths, max_new_tokens, path, first_line=1):
    """Refuse prompts that a converted v1 model would not compute as v1 does.

    `config`: a config object or dict with the `qwen1` block of a converted model (else nothing to check);
    `lengths`: prompt lengths in tokens, the prompt of line `first_line + i` of `path` at index i.
    """
    flags = config.get("qwen1") if isinstance(config, dict) else getattr(config, "qwen1", None)
    if not flags or not (flags.get("use_logn_attn") or flags.get("use_dynamic_ntk")):
        return
    limit = flags["seq_length"]
    for i, n in enumerate(lengths):
        if n + max_new_tokens > limit:
            on = " and ".join(k for k in ("use_logn_attn", "use_dynamic_ntk") if flags.get(k))
            raise PromptTooLong(
                f"{path}:{first_line + i}: {n} prompt tokens + {max_new_tokens} max_new_tokens = "
                f"{n + max_new_tokens} > seq_length {limit} of this converted Qwen v1 model: beyond seq_length "
                f"v1's {on} change the logits, which Qwen2 does not reproduce; shorten the prompt or lower "
                "--max-new-tokens")
