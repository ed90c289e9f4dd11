"""Teacher-forced passes over a text file (no generation): corpus statistics and perplexity share them.

A text file holds one text per line (a literal \\n is a newline, lines are stripped). Each text is
tokenized as inference tokenizes a prompt (the tokenizer's special tokens included), cut to its first
`max_length` tokens, and batches are left-padded; pad positions are never counted (the recorder's
positions="all" reads the attention mask) nor scored.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import FormatError, read_input_lines
from pim.cli import UserError
from pim.deactivation import DeactivationError, load_deactivation

ROOT = Path(__file__).resolve().parent.parent


def read_texts(path):
    """The texts of a file, one per line; a missing file, bad UTF-8 or an empty line is a UserError naming it."""
    try:
        return read_input_lines(path, "text", "corpora: `make data`; or write one text per line there")
    except FormatError as e:
        raise UserError(str(e)) from None


@dataclass
class Loaded:
    model: object
    tokenizer: object
    source: str  # folder or hub id
    config: object
    dtype: str
    attach: str
    deactivate: dict | None  # {layer: [ids]}
    deactivate_info: dict | None  # what the manifest records (pim/deactivation.py)

    def settings(self):
        """What a run's result depends on, for the manifest (resume only with all equal)."""
        from transformers import activation_patch_info as patch

        from pim.gguf_checkpoints import gguf_settings

        return {"model_source": self.source, "revision": getattr(self.config, "_commit_hash", None),
                "config_sha256": hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode()).hexdigest(),
                "dtype": self.dtype, "attach": self.attach, "deactivate": self.deactivate_info,
                "transformers": patch.TRANSFORMERS_VERSION, "patches_sha256": patch.PATCHES_SHA256,
                **gguf_settings(self.source)}


def load(model_name, dtype="auto", attach="auto", deactivate=None, positions="all", record=True):
    """The model with recording on (positions, and the neurons of `deactivate`, FILE.json[:LANG], switched
    off), its left-padding tokenizer, and what the manifest says about them."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.activation_recorder import start_recording

    from pim.models import NotConverted, resolve_model, weights_problem

    try:
        source, _, _ = resolve_model(model_name, ROOT / "models")
        config = AutoConfig.from_pretrained(source)
    except NotConverted as e:
        raise UserError(str(e)) from None
    except (OSError, ValueError) as e:
        raise UserError(f"model {model_name!r}: not a folder models/{model_name}/, an alias, or a hub id/path: {e}") from None
    off, info = None, None
    if deactivate:
        try:
            off, info = load_deactivation(deactivate, config)
        except DeactivationError as e:
            raise UserError(str(e)) from None
    gpu = torch.cuda.is_available()
    torch_dtype = {"auto": torch.bfloat16 if gpu else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    transformers.utils.logging.disable_progress_bar()
    model, loading = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, device_map="auto" if gpu else None,
                                                          output_loading_info=True)
    problem = weights_problem(loading, source)
    if problem:
        raise UserError(f"model {model_name!r}: {problem}")
    model.eval()
    how = None
    if record or off:
        patched = any(hasattr(type(m), "record_activation") for m in model.modules())
        how = attach if attach != "auto" else "patch" if patched else "hooks"
        try:
            start_recording(model, attach=how, positions=positions, deactivate=off)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"model {model_name!r}: {e}") from None
    tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, source, config, str(torch_dtype).removeprefix("torch."), how, off, info)


def encode(tokenizer, texts, max_length):
    """(token ids per text, each cut to its first max_length tokens; how many texts were cut)."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    cut = sum(len(row) > max_length for row in ids)
    return [row[:max_length] for row in ids], cut


def left_padded(rows, pad_id, device):
    """(input_ids, attention_mask) [batch, longest] of token id lists, padded on the left."""
    import torch

    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, longest - len(row):] = torch.tensor(row)
            mask[i, longest - len(row):] = 1
    return ids.to(device), mask.to(device)


def nll_sum(model, ids, mask):
    """(sum of the token NLL, number of scored tokens): each position predicts the next non-pad token;
    the first token of each text is not scored (nothing predicts it)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits
    target = ids[:, 1:]
    scored = (mask[:, 1:] * mask[:, :-1]).bool()
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, target[..., None])[..., 0]
    return float(-(logp[scored]).double().sum()), int(scored.sum())
