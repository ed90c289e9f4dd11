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

Refused, in one line naming the file: tensors the architecture needs that the file lacks, tensors of the file
that the model of its metadata has no place for (transformers' loader would drop them: more blk.N blocks
than its block_count), NaN or infinite weights. transformers' LOAD REPORT table is held back meanwhile.

A folder is written under a temporary name beside its destination (pim/models/staging.py) and renamed when
complete, by one process at a time (the caller holds the folder's lock): an interrupted conversion or a full
disk leaves nothing that looks like a model, and the next start removes what a killed one left.
"""
import json
import os
import re
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from pim.models.staging import remove_leftovers, staging_folder
from pim.models.weights import file_identity, source_sha256

PROVENANCE = "gguf.json"  # the provenance file in a converted folder
SOURCE_CACHE = ".pim-gguf-source.json"  # in a converted folder: the source file's identity and sha256
NOT_MODEL_WEIGHTS = ("rope_freqs.weight",)  # GGUF tensors that are no parameter of a transformers model (llama.cpp's
#                                            precomputed RoPE frequencies; transformers computes them from the config)
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


def convert_gguf(src, dest, sha256=None, log=print, overwrite=False, extra_files=None):
    """Convert the GGUF file `src` into the folder `dest`; returns dest. The caller holds
    pim.models.staging.folder_lock(dest). dest must not exist, unless `overwrite`: then it is replaced once the
    new folder is complete. sha256: the file's, when the caller has checked it already; extra_files:
    {name: text} written into the folder too (a licence)."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise GGUFError(f"{src}: no such GGUF file")
    if dest.exists() and not overwrite:
        raise GGUFError(f"{dest} exists already: remove it, or convert to another NAME")
    remove_leftovers(dest.parent, holding=dest.name)
    reader = open_gguf(src)
    header = describe(reader)
    identity = file_identity(src)
    log(f"converting {src} ({header['architecture']}, {header['name']}; {src.stat().st_size / 1e6:.0f} MB) "
        f"into {dest}/ (dequantized to float32: about a minute)")
    need = 4 * sum(int(t.n_elements) for t in reader.tensors)  # bytes of float32
    staging = staging_folder(dest)
    try:
        with _writing(dest, need):
            shutil.rmtree(staging, ignore_errors=True)  # this pid's: a process of the same pid was killed
            staging.mkdir(parents=True)
        sha256 = sha256 or source_sha256(src, staging / SOURCE_CACHE)
        model = _dequantized_model(src, reader, header["architecture"])
        tokenizer, built_by = _tokenizer(src, reader, header["tokenizer_model"])
        _set_special_tokens(tokenizer, header["special_token_ids"])
        files = {PROVENANCE: json.dumps(_provenance(src, sha256, header, built_by), indent=1) + "\n",
                 **(extra_files or {})}
        with _writing(dest, need):
            model.save_pretrained(staging)
            del model
            tokenizer.save_pretrained(staging)
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            if file_identity(src) != identity:
                raise GGUFError(f"{src} changed while it was converted: run again when nothing writes to it")
            _move_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


@contextmanager
def _writing(dest, need):
    """A failure to write (a full disk: OSError, or safetensors' SafetensorError) as one GGUFError line."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as e:
        said = " ".join(str(e.strerror if isinstance(e, OSError) and e.strerror else e).split())[:200]
        raise GGUFError(f"{dest}: cannot write the converted model into {dest.parent}/ ({said}); nothing of it is "
                        f"left there: make room (it needs about {_size(need)}) and run again") from None


def _size(n):
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{max(1, round(n / 1e6))} MB"


def _move_into_place(staging, dest):
    """Rename the complete staging folder to dest; an existing dest is renamed away first and then removed."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    old = staging_folder(dest, "replaced")
    os.rename(dest, old)
    os.rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)


def _dequantized_model(src, reader, architecture):
    """The model of a GGUF file in float32, as a plain (not quantized) transformers model."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from pim.models.weights import load_report_held, weights_problem

    transformers.utils.logging.disable_progress_bar()
    with load_report_held() as show_report:
        try:
            loaded, info = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                                output_loading_info=True)
        except Exception as e:  # noqa: BLE001 -- an architecture transformers cannot read from GGUF, a damaged file
            raise GGUFError(f"{src}: transformers cannot load this GGUF ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]})") from None
        problem = weights_problem(info, src) or tensors_problem(loaded, reader, architecture)
        if problem:  # transformers would have filled missing tensors with random numbers, or dropped some
            raise GGUFError(f"{src}: not converted: {problem}")
        show_report()
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


def tensors_problem(loaded, reader, architecture, shown=4):
    """What is wrong with the file's tensors beyond what the loading info says, in one line, or None: tensors
    that transformers' GGUF loader leaves out because the model of the metadata has no place for them (a
    block_count below the blk.N tensors), or tensors that hold NaN or infinite values."""
    import torch
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=loaded.config.to_dict())
    taken = get_gguf_hf_weights_map(loaded, processor)  # GGUF name -> parameter: what the loader kept
    left_out = [t.name for t in reader.tensors if t.name not in taken and t.name not in NOT_MODEL_WEIGHTS]
    if left_out:
        layers = loaded.config.num_hidden_layers
        blocks = sorted({int(m[1]) for n in left_out if (m := re.match(r"blk\.(\d+)\.", n)) and int(m[1]) >= layers})
        why = (f" (its {architecture}.block_count says {layers} layers; the file has tensors of "
               f"block{'s' if len(blocks) > 1 else ''} {', '.join(map(str, blocks))})" if blocks else "")
        return (f"{len(left_out)} tensors that the model of its metadata has no place for "
                f"({_listed(left_out, shown)}){why}: transformers would leave them out. Check the file's metadata, "
                "or where the file came from")
    names = {parameter: name for name, parameter in taken.items()}  # tied parameters: once
    bad = [names.get(k, k) for k, t in loaded.named_parameters() if not bool(torch.isfinite(t).all())]
    if bad:
        return (f"{len(bad)} tensors hold NaN or infinite values ({_listed(bad, shown)}): the activations "
                "of such a model mean nothing. Is the file damaged? Check where it came from")
    return None


def _listed(names, shown):
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


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
