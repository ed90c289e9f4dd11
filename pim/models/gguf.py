"""GGUF checkpoints (llama.cpp's format) converted once into a model folder that from_pretrained loads.

`make convert-gguf SRC=<file.gguf> NAME=<name>` and MODEL=<path>.gguf (on first use) write models/<NAME>/:
float32 safetensors dequantized by transformers' GGUF loader, config.json, generation_config.json, a
tokenizer that AutoTokenizer loads, and gguf.json (the provenance: the source's sha256 and size, its
quantization types, the versions that converted it). Recording then goes through the architecture's patch
as for any folder.

The weights are the quantized model's, dequantized: the activations recorded are those of the quantized
model (Q4_K_M, Q4_1, ...), not of the original checkpoint it was quantized from.

Tokenizers: a SentencePiece vocabulary (`tokenizer.ggml.model` "llama": Gemma, Llama-2, ...) is rebuilt by
pim/models/gguf_tokenizer.py, since transformers' GGUF loader splits pieces that are in the vocabulary and drops
BOS; a byte-level BPE vocabulary ("gpt2": SmolLM2, Llama-3, Qwen2) is transformers' own.

A folder is written under a temporary name beside its destination and renamed when complete: an
interrupted conversion leaves nothing that looks like a model.
"""
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from pim.activation_files import sha256_file

PROVENANCE = "gguf.json"  # the provenance file in a converted folder
NOTE = ("the weights are dequantized from a quantized GGUF: activations are those of the quantized model, "
        "not of the original checkpoint")


class GGUFError(Exception):
    """A GGUF file that cannot be converted; the message says which and why."""


def open_gguf(path):
    """A gguf.GGUFReader of the file (memory-mapped); a GGUFError for what is not a readable GGUF file."""
    import gguf

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 -- a damaged or truncated file: one line naming it
        raise GGUFError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); is it complete?") from None


def describe(reader):
    """What the GGUF header says: architecture, name, licence, tokenizer model, tensors per quantization type."""
    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    types = Counter(t.tensor_type.name for t in reader.tensors)
    special = {k: field(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    return {"architecture": field("general.architecture"), "name": field("general.name"),
            "license": field("general.license"), "tokenizer_model": field("tokenizer.ggml.model"),
            "special_token_ids": {k: v for k, v in special.items() if v is not None},
            "tensors": len(reader.tensors), "tensor_types": dict(sorted(types.items()))}


def converted_from(folder):
    """The provenance of a converted folder, or None when it is not one."""
    path = Path(folder) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def gguf_settings(source):
    """The resume settings of a run whose model folder was converted from a GGUF file: that file's sha256 (the
    weights' identity); {} for any other model (so that runs of other models keep resuming as before)."""
    provenance = converted_from(source) if Path(source).is_dir() else None
    return {"gguf_sha256": provenance.get("sha256")} if provenance else {}


def convert_gguf(src, dest, sha256=None, log=print):
    """Convert the GGUF file `src` into the folder `dest` (which must not exist); returns dest.
    sha256: the file's, when the caller has computed it already."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise GGUFError(f"{src}: no such GGUF file")
    if dest.exists():
        raise GGUFError(f"{dest} exists already: remove it, or convert to another NAME")
    reader = open_gguf(src)
    header = describe(reader)
    sha256 = sha256 or sha256_file(src)
    log(f"converting {src} ({header['architecture']}, {header['name']}; {src.stat().st_size / 1e6:.0f} MB) "
        f"into {dest}/ (dequantized to float32: about a minute)")
    staging = dest.parent / f".{dest.name}.converting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model = _dequantized_model(src)
        model.save_pretrained(staging)
        del model
        tokenizer, built_by = _tokenizer(src, reader, header["tokenizer_model"])
        _set_special_tokens(tokenizer, header["special_token_ids"])
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE).write_text(json.dumps(_provenance(src, sha256, header, built_by), indent=1) + "\n")
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _dequantized_model(src):
    """The model of a GGUF file in float32, as a plain (not quantized) transformers model."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from pim.models.weights import weights_problem

    transformers.utils.logging.disable_progress_bar()
    try:
        loaded, info = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                            output_loading_info=True)
    except Exception as e:  # noqa: BLE001 -- an architecture transformers cannot read from GGUF, a damaged file
        raise GGUFError(f"{src}: transformers cannot load this GGUF ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:300]})") from None
    problem = weights_problem(info, src)
    if problem:  # transformers would have filled missing tensors with random numbers
        raise GGUFError(f"{src}: not converted: {problem}")
    fields = loaded.config.to_dict()
    fields.pop("quantization_config", None)
    model_type = fields.pop("model_type")
    config = AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    # strict: every tensor of the architecture must come from the file (tied embeddings are one tensor)
    plain.load_state_dict(state, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    return plain.eval()


def _tokenizer(src, reader, tokenizer_model):
    """(tokenizer, who built it) for a GGUF file (reader: its open GGUFReader)."""
    from pim.models.gguf_tokenizer import (
        SPM_MODEL,
        read_tokenizer_fields,
        spm_tokenizer_from_gguf,
    )

    if tokenizer_model == SPM_MODEL:
        return spm_tokenizer_from_gguf(read_tokenizer_fields(reader)), "pim.models.gguf_tokenizer (SentencePiece BPE)"
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name), "transformers"
    except Exception as e:  # noqa: BLE001
        raise GGUFError(f"{src}: its tokenizer ({tokenizer_model!r}) cannot be loaded by transformers "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None


def _set_special_tokens(tokenizer, ids):
    """BOS, EOS, UNK and PAD as the file says (transformers' GGUF loader took SmolLM2's BOS for its EOS)."""
    names = {"bos": "bos_token", "eos": "eos_token", "unknown": "unk_token", "padding": "pad_token"}
    for key, token_id in ids.items():
        setattr(tokenizer, names[key], tokenizer.convert_ids_to_tokens(int(token_id)))
    tokenizer.clean_up_tokenization_spaces = False  # would strip spaces before punctuation of BPE output


def _provenance(src, sha256, header, built_by):
    from importlib.metadata import version

    return {"source": str(src.resolve()), "file": src.name, "sha256": sha256, "bytes": src.stat().st_size,
            **header, "tokenizer_built_by": built_by, "dtype": "float32", "note": NOTE,
            "versions": {p: version(p) for p in ("gguf", "transformers", "tokenizers", "torch")}}
