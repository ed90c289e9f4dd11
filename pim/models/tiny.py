"""Tiny random-init models of every architecture in pim/models/architectures.py, with a tokenizer trained on the spot.

Smoke models for the demo and the tests: no download, a fixed seed, a few layers. They say nothing
about real models; they exercise the same code paths (config, from_pretrained, generate, recorder).
"""
from pathlib import Path

from pim.models.architectures import ARCHITECTURES, by_type

# Exact zeros at the recorded site, in every architecture: of each layer's gate rows (the linear before the
# activation), every ZERO_EVERY-th is set to 0, so its pre-activation is exactly 0 and so is its activation
# (neither > 0 nor < 0); the next row is multiplied by STEEP, so its pre-activation is often beyond -90,
# where SiLU and GELU underflow to exactly 0 (and near 0 it stays a small negative value: <= 0, not == 0).
ZERO_EVERY = 8
STEEP = 300.0

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

# Small enough to run in seconds on 2 CPU cores; several layers so that per-layer order matters.
# The configs are the `tiny` fields of pim/models/architectures.py.
TINY_CONFIGS = {a.model_type: a.tiny for a in ARCHITECTURES if a.tiny is not None}


def train_tokenizer(texts, vocab_size=600):
    """A byte-level BPE tokenizer trained on `texts`, left padding, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **SPECIAL_TOKENS)


def build_tiny_model(arch, folder, texts, seed=0, exact_zeros=True, **overrides):
    """Write a random-init `arch` model and its tokenizer to `folder`; return the folder.

    exact_zeros: plant exact zeros at the site (plant_exact_zeros; the tests want them, the demo not)."""
    import torch
    from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

    if arch not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {sorted(TINY_CONFIGS)}")
    tokenizer = train_tokenizer(texts)
    params = {**TINY_CONFIGS[arch], **overrides}
    ids = {name: tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[name])
           for name in ("bos_token", "eos_token", "pad_token")}
    tokens = dict(vocab_size=len(tokenizer), bos_token_id=ids["bos_token"], eos_token_id=ids["eos_token"],
                  pad_token_id=ids["pad_token"])
    if "text_config" in CONFIG_MAPPING[arch].sub_configs:  # a composite config: the token fields are the text model's
        params["text_config"] = {**params.get("text_config", {}), **tokens}
        tokens = {}
    config = AutoConfig.for_model(arch, **{"tie_word_embeddings": True, **tokens, **params})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if exact_zeros:
        plant_exact_zeros(model, arch)
    model.generation_config.pad_token_id = ids["pad_token"]
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def plant_exact_zeros(model, arch):
    """Zero and steepen gate rows of every layer (see ZERO_EVERY, STEEP), in place."""
    import torch
    from transformers.activation_recorder import decoder_layers

    text = model.config.get_text_config()
    width = getattr(text, "intermediate_size", None) or 4 * text.hidden_size  # BLOOM's MLP is 4 x hidden
    for layer in decoder_layers(model)[1]:
        linear = layer.get_submodule(by_type(arch).gate)  # its first `width` rows feed the site
        with torch.no_grad():
            for param in (linear.weight, linear.bias):
                if param is not None:
                    param[0:width:ZERO_EVERY] = 0
                    param[1:width:ZERO_EVERY] *= STEEP
