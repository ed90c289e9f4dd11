"""Which model a MODEL name means: a folder models/<MODEL>/, else an alias below, else a hub id or path."""
from pathlib import Path

SUPPORTED_TYPES = ("bloom", "qwen2", "qwen3")  # model_type values the patched transformers records

# alias: (hub id, chat model: wrap prompts in the paper's system-prompt template by default)
ALIASES = {
    "bloom-560m": ("bigscience/bloom-560m", False),
    "bloom-1b7": ("bigscience/bloom-1b7", False),
    "bloom-7b1": ("bigscience/bloom-7b1", False),
    "bloom-176b": ("bigscience/bloom", False),
    "bloomz-560m": ("bigscience/bloomz-560m", False),
    "bloomz-7b1": ("bigscience/bloomz-7b1", False),
    "bloomz-176b": ("bigscience/bloomz", False),
    "qwen2-7b": ("Qwen/Qwen2-7B", False),
    "qwen2-7b-instruct": ("Qwen/Qwen2-7B-Instruct", True),
    "qwen2-72b-instruct": ("Qwen/Qwen2-72B-Instruct", True),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B", False),
    "qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", True),
    "qwen2.5-14b-instruct": ("Qwen/Qwen2.5-14B-Instruct", True),
    "qwen2.5-72b-instruct": ("Qwen/Qwen2.5-72B-Instruct", True),
    "qwen3-8b": ("Qwen/Qwen3-8B", True),
    "qwen3-14b": ("Qwen/Qwen3-14B", True),
    "qwen3-32b": ("Qwen/Qwen3-32B", True),
}


def resolve_model(name, models_dir="models"):
    """(source for from_pretrained, how it was found, chat model?) for a MODEL name."""
    folder = Path(models_dir) / name
    if folder.is_dir():
        return str(folder), f"folder {folder}", False
    if name in ALIASES:
        hub_id, chat = ALIASES[name]
        return hub_id, f"alias of {hub_id}", chat
    return name, "hub id or path, as given", False
