"""The one table of architectures: how each is recorded, where, its aliases, tiny and benchmark configs.

Everything that lists architectures reads this table: model aliases (pim/models/names.py), the tiny test and
demo models (pim/models/tiny.py), the benchmark's presets (scripts/benchmark.py), inference's choice of
recording (scripts/infer_activate.py), the tests' parametrisation and the README's table. Adding an
architecture is one patched modeling file (patches/, modeling/) plus one row here (docs/architectures.md).

How a model type is recorded:
- "patch": the patched modeling file calls the recorder at the site (small, marked hunks);
- "conversion": the checkpoint is converted to another row's type first (Qwen v1 -> Qwen2);
- "hooks": forward hooks on each decoder layer's MLP activation module (any other dense causal LM; a
  model type not in this table is recorded this way, with a notice).
"""
from dataclasses import dataclass, field

PATCH, CONVERSION, HOOKS = "patch", "conversion", "hooks"
# How an alias's prompts are wrapped by default: as given, in the paper's ChatML system-prompt template
# (the Qwen chat models), or in the tokenizer's own chat template (other instruct models).
PLAIN, CHATML, TEMPLATE = "plain", "chatml", "template"

# Shared shapes of the configs below (fields of transformers' config classes).
_TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2)
_CPU_SMALL = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
                  tie_word_embeddings=True)  # about 100M parameters
_GEMMA = dict(hidden_activation="gelu_pytorch_tanh")
# tiny Gemma: a sliding window shorter than the test prompts, so that both attention types matter; untied
# embeddings (tied ones, scaled by sqrt(hidden) at the input, make a random Gemma repeat its last token)
_TINY_GEMMA = dict(_TINY, **_GEMMA, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"], tie_word_embeddings=False)


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.model_type
    family: str  # the name researchers know it by
    recorded_by: str  # PATCH, CONVERSION or HOOKS
    site: str  # the measured activation, in words
    models: str  # which released models it covers
    activation: str = "mlp.act_fn"  # the site's module inside a decoder layer (hooks, the tests' reference)
    gate: str = "mlp.gate_proj"  # the linear whose first `width` output rows feed the site (tiny models' zeros)
    tiny: dict = None  # the tiny random-init test model: config fields (AutoConfig.for_model); None: none
    bench: dict = field(default_factory=dict)  # benchmark preset name -> config fields
    aliases: dict = field(default_factory=dict)  # alias -> (hub id, prompt format: PLAIN, CHATML, TEMPLATE)
    converted_to: str = None  # CONVERSION: the model type the checkpoint becomes


ARCHITECTURES = [
    Architecture(
        "bloom", "BLOOM", PATCH, "`gelu_impl(dense_h_to_4h(x))`, the GELU output (width 4 x hidden)",
        "BLOOM, BLOOMZ (the paper's BLOOM-176B)", activation="mlp.gelu_impl", gate="mlp.dense_h_to_4h",
        tiny=dict(hidden_size=64, n_layer=3, n_head=4, initializer_range=0.2),
        bench={"tiny": dict(hidden_size=64, n_layer=3, n_head=4, vocab_size=512),
               "cpu-small": dict(hidden_size=768, n_layer=12, n_head=12, vocab_size=32000),  # 110M
               "7b": dict(hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880)},  # BLOOM-7b1
        aliases={"bloom-560m": ("bigscience/bloom-560m", PLAIN), "bloom-1b7": ("bigscience/bloom-1b7", PLAIN),
                 "bloom-7b1": ("bigscience/bloom-7b1", PLAIN), "bloom-176b": ("bigscience/bloom", PLAIN),
                 "bloomz-560m": ("bigscience/bloomz-560m", PLAIN), "bloomz-7b1": ("bigscience/bloomz-7b1", PLAIN),
                 "bloomz-176b": ("bigscience/bloomz", PLAIN)}),
    Architecture(
        "qwen2", "Qwen2", PATCH, "`act_fn(gate_proj(x))`, the SiLU of the gate alone, before `* up_proj(x)`",
        "Qwen1.5, Qwen2, Qwen2.5", tiny=_TINY,
        bench={"tiny": dict(_TINY, vocab_size=512, initializer_range=0.02), "cpu-small": _CPU_SMALL,
               "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                          rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)},  # Qwen2-7B
        aliases={"qwen2-7b": ("Qwen/Qwen2-7B", PLAIN), "qwen2-7b-instruct": ("Qwen/Qwen2-7B-Instruct", CHATML),
                 "qwen2-72b-instruct": ("Qwen/Qwen2-72B-Instruct", CHATML), "qwen2.5-7b": ("Qwen/Qwen2.5-7B", PLAIN),
                 "qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", CHATML),
                 "qwen2.5-14b-instruct": ("Qwen/Qwen2.5-14B-Instruct", CHATML),
                 "qwen2.5-72b-instruct": ("Qwen/Qwen2.5-72B-Instruct", CHATML)}),
    Architecture(
        "qwen3", "Qwen3", PATCH, "`act_fn(gate_proj(x))`, the SiLU of the gate alone", "Qwen3 (dense)",
        tiny=dict(_TINY, head_dim=16),
        bench={"tiny": dict(_TINY, head_dim=16, vocab_size=512, initializer_range=0.02),
               "cpu-small": dict(_CPU_SMALL, head_dim=64),
               "7b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                          num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                          rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)},  # Qwen3-8B
        aliases={"qwen3-8b": ("Qwen/Qwen3-8B", CHATML), "qwen3-14b": ("Qwen/Qwen3-14B", CHATML),
                 "qwen3-32b": ("Qwen/Qwen3-32B", CHATML)}),
    Architecture(
        "llama", "Llama", PATCH, "`act_fn(gate_proj(x))`, the SiLU of the gate alone, before `* up_proj(x)`",
        "Llama-2/3.x, ALMA-13B, Yi-34B", tiny=_TINY,
        bench={"tiny": dict(_TINY, vocab_size=512, initializer_range=0.02), "cpu-small": _CPU_SMALL,
               "7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                          rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)},  # Llama-3.1-8B
        aliases={"alma-13b": ("haoranxu/ALMA-13B", PLAIN), "yi-34b": ("01-ai/Yi-34B", PLAIN),
                 "llama-3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", TEMPLATE),
                 "llama-3.3-70b-instruct": ("meta-llama/Llama-3.3-70B-Instruct", TEMPLATE)}),
    Architecture(
        "mistral", "Mistral", PATCH, "`act_fn(gate_proj(x))`, the SiLU of the gate alone, before `* up_proj(x)`",
        "Mistral-7B", tiny=_TINY,
        bench={"tiny": dict(_TINY, vocab_size=512, initializer_range=0.02), "cpu-small": _CPU_SMALL,
               "7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=32768, max_position_embeddings=32768,
                          rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)},  # Mistral-7B-v0.3
        aliases={"mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.3", TEMPLATE)}),
    Architecture(
        "gemma2", "Gemma 2", PATCH, "`act_fn(gate_proj(x))`, the GELU-tanh of the gate alone, before `* up_proj(x)`",
        "Gemma-2", tiny=_TINY_GEMMA,
        bench={"tiny": dict(_TINY, **_GEMMA, head_dim=16, vocab_size=512, initializer_range=0.02),
               "cpu-small": dict(_CPU_SMALL, **_GEMMA, head_dim=64),
               "7b": dict(**_GEMMA, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                          vocab_size=256000, max_position_embeddings=8192)},  # Gemma-2-9B
        aliases={"gemma-2-9b-it": ("google/gemma-2-9b-it", TEMPLATE),
                 "gemma-2-27b-it": ("google/gemma-2-27b-it", TEMPLATE)}),
    Architecture(
        "gemma3_text", "Gemma 3 (text only)", PATCH,
        "`act_fn(gate_proj(x))`, the GELU-tanh of the gate alone, before `* up_proj(x)`", "Gemma-3-1B",
        tiny=_TINY_GEMMA,
        bench={"tiny": dict(_TINY, **_GEMMA, head_dim=16, vocab_size=512, initializer_range=0.02),
               "cpu-small": dict(_CPU_SMALL, **_GEMMA, head_dim=64),
               "7b": dict(**_GEMMA, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                          vocab_size=262208, max_position_embeddings=131072)},  # Gemma-3-12B's text model
        aliases={"gemma-3-1b-it": ("google/gemma-3-1b-it", TEMPLATE)}),
    Architecture(
        "gemma3", "Gemma 3 (text of the multimodal models)", PATCH,
        "`act_fn(gate_proj(x))` of the language model, the GELU-tanh of the gate alone", "Gemma-3-4B/12B/27B",
        activation="mlp.act_fn",
        # a composite config: the text model's fields in text_config, a tiny SigLIP vision tower (2 x 2 patches)
        tiny=dict(text_config=_TINY_GEMMA, initializer_range=_TINY["initializer_range"], tie_word_embeddings=False,
                  mm_tokens_per_image=4,
                  vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=28, patch_size=14)),
        aliases={"gemma-3-12b-it": ("google/gemma-3-12b-it", TEMPLATE),
                 "gemma-3-27b-it": ("google/gemma-3-27b-it", TEMPLATE)}),
    Architecture(
        "qwen", "Qwen v1", CONVERSION,
        "`silu(w2(x))` before `* w1(x)`, which is `act_fn(gate_proj(x))` after conversion to Qwen2",
        "the paper's Qwen-7B/14B/72B(-Chat)", converted_to="qwen2",
        aliases={"qwen-7b": ("Qwen/Qwen-7B", PLAIN), "qwen-7b-chat": ("Qwen/Qwen-7B-Chat", CHATML),
                 "qwen-14b": ("Qwen/Qwen-14B", PLAIN), "qwen-14b-chat": ("Qwen/Qwen-14B-Chat", CHATML),
                 "qwen-72b": ("Qwen/Qwen-72B", PLAIN), "qwen-72b-chat": ("Qwen/Qwen-72B-Chat", CHATML)}),
    Architecture(
        "gpt_neox", "GPT-NeoX (hooks example)", HOOKS, "`act(dense_h_to_4h(x))`, the GELU output", "Pythia, GPT-NeoX",
        activation="mlp.act", gate="mlp.dense_h_to_4h",
        tiny=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, initializer_range=0.2)),
    Architecture(
        "phi3", "Phi-3 (hooks example)", HOOKS, "`activation_fn(gate)`, the SiLU of the gate half of `gate_up_proj(x)`",
        "Phi-3, Phi-4", activation="mlp.activation_fn", gate="mlp.gate_up_proj", tiny=_TINY),
]


def by_type(model_type):
    """The row of a model type, or None (such a model is recorded by hooks)."""
    return next((a for a in ARCHITECTURES if a.model_type == model_type), None)


def recorded_by(model_type):
    """PATCH, CONVERSION or HOOKS for a model type; types without a row are recorded by hooks."""
    arch = by_type(model_type)
    return arch.recorded_by if arch else HOOKS


def tiny_types(how=None):
    """Model types with a tiny test model, in table order; only those recorded `how` (PATCH, HOOKS) if given."""
    return [a.model_type for a in ARCHITECTURES if a.tiny is not None and how in (None, a.recorded_by)]


def bench_types():
    return [a.model_type for a in ARCHITECTURES if a.bench]


def aliases():
    """{alias: (hub id, prompt format, model type)} over all rows."""
    return {alias: (hub, fmt, a.model_type) for a in ARCHITECTURES for alias, (hub, fmt) in a.aliases.items()}


def alias_table():
    """The README's table of aliases."""
    rows = ["| alias | hub id | model type | prompts by default |", "|---|---|---|---|"]
    formats = {PLAIN: "as given", CHATML: "the paper's system-prompt template",
               TEMPLATE: "the tokenizer's chat template"}
    rows += [f"| `{alias}` | `{hub}` | `{t}` | {formats[fmt]} |" for alias, (hub, fmt, t) in aliases().items()]
    return "\n".join(rows)


def markdown_table():
    """The README's table of architectures."""
    rows = ["| model type | family | how recorded | site | models |", "|---|---|---|---|---|"]
    for a in ARCHITECTURES:
        how = f"converted to `{a.converted_to}`, then its patch" if a.recorded_by == CONVERSION else a.recorded_by
        rows.append(f"| `{a.model_type}` | {a.family} | {how} | {a.site} | {a.models} |")
    rows.append("| any other | dense causal LMs | hooks | the output of each layer's MLP activation module "
                "(`act_fn`, `act`, `activation_fn`, ...) | mixture-of-experts and fused MLPs are refused |")
    return "\n".join(rows)
