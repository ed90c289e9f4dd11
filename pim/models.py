"""Which model a MODEL name means: a folder models/<MODEL>/, else an alias, else a hub id or path.

The aliases are the rows of pim/architectures.py.
"""
from pathlib import Path

from pim.architectures import CONVERSION, aliases, by_type

ALIASES = aliases()  # alias -> (hub id, chat model: the paper's system prompt by default, model type)


class NotConverted(LookupError):
    """An alias of a checkpoint that must be converted first (Qwen v1); the message says how."""


def resolve_model(name, models_dir="models"):
    """(source for from_pretrained, how it was found, chat model?) for a MODEL name."""
    folder = Path(models_dir) / name
    if folder.is_dir():
        chat = ALIASES[name][1] if name in ALIASES else False
        return str(folder), f"folder {folder}", chat
    if name in ALIASES:
        hub_id, chat, model_type = ALIASES[name]
        if by_type(model_type).recorded_by == CONVERSION:
            raise NotConverted(
                f"{name} is {hub_id}, a checkpoint that is converted before use and {folder}/ does not exist: "
                f"download it (`hf download {hub_id} --local-dir ~/hf/{hub_id.split('/')[-1]}`, or "
                f"`huggingface-cli download ...` with an older huggingface_hub), then "
                f"`make convert-qwen1 SRC=~/hf/{hub_id.split('/')[-1]} NAME={name}`")
        return hub_id, f"alias of {hub_id}", chat
    return name, "hub id or path, as given", False
