"""Which model a MODEL name means: a folder models/<MODEL>/, else an alias, else a hub id or path.

The aliases are the rows of pim/architectures.py.
"""
from pathlib import Path

from pim.architectures import CONVERSION, PLAIN, aliases, by_type

ALIASES = aliases()  # alias -> (hub id, prompt format (pim/architectures.py), model type)


class NotConverted(LookupError):
    """An alias of a checkpoint that must be converted first (Qwen v1); the message says how."""


def resolve_model(name, models_dir="models"):
    """(source for from_pretrained, how it was found, prompt format) for a MODEL name."""
    folder = Path(models_dir) / name
    if folder.is_dir():
        return str(folder), f"folder {folder}", ALIASES[name][1] if name in ALIASES else PLAIN
    if name in ALIASES:
        hub_id, fmt, model_type = ALIASES[name]
        if by_type(model_type).recorded_by == CONVERSION:
            raise NotConverted(
                f"{name} is {hub_id}, a checkpoint that is converted before use and {folder}/ does not exist: "
                f"download it (`hf download {hub_id} --local-dir ~/hf/{hub_id.split('/')[-1]}`, or "
                f"`huggingface-cli download ...` with an older huggingface_hub), then "
                f"`make convert-qwen1 SRC=~/hf/{hub_id.split('/')[-1]} NAME={name}`")
        return hub_id, f"alias of {hub_id}", fmt
    return name, "hub id or path, as given", PLAIN
