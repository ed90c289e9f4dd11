"""Loading a model for a run, with recording on: the part of the run engine that generation runs
(scripts/infer_activate.py), corpus runs (scripts/corpus_activate.py) and perplexity share.

`load_model(options)` resolves MODEL (pim/models/names.py), refuses what cannot be recorded (an unconverted
Qwen v1, weights that do not fit their config, a whole model on disk), places the model (--device-map,
--max-memory, --offload-folder), switches the neurons of --deactivate off, starts the recorder and
loads the left-padding tokenizer. Every failure is one line (pim.cli.UserError). `model_settings` is
what a run's result depends on about the model: a run resumes, and shards merge, only with all equal.
"""
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pim.cli import UserError
from pim.models.architectures import CONVERSION, HOOKS, PATCH, by_type, recorded_by
from pim.models.names import NotConverted, model_names, resolve_model
from pim.models.weights import load_report_held, weights_problem

ROOT = Path(__file__).resolve().parents[2]  # the repository: models/ is beside pim/ (installed in editable mode)
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bfloat16 on a GPU, float32 on the CPU


@dataclass
class LoadOptions:
    """What load_model needs: the flags the run scripts share (pim/run_engine.add_model_flags)."""
    model: str
    dtype: str = "auto"
    attach: str = "auto"  # patch, hooks, auto
    device_map: str = "auto"  # auto, none, balanced, sequential, or a JSON map or file
    max_memory: str | None = None  # "0=70GiB,cpu=200GiB"
    offload_folder: str = "offload"
    deactivate: str | None = None  # FILE.json[:LANG]
    deactivate_other_model: bool = False  # take a neuron file made for another model of this shape


@dataclass
class Loaded:
    """A model loaded with recording on, and what a run's manifest says about it."""
    model: object
    tokenizer: object
    source: str  # the folder or hub id it was loaded from
    found: str  # how MODEL was found (pim/models/names.py)
    prompt_format: str  # the alias's prompt format (pim/models/architectures.py)
    config: object
    dtype: object
    device_map: object
    attach: str  # patch or hooks
    deactivate: dict | None  # {layer: [neuron ids]} switched off
    deactivate_info: dict | None  # what the manifest records about them (pim/models/deactivation.py)
    identity: dict  # model_identity: the config, weights and GGUF hashes
    use_sys: bool = False  # generation runs: the prompts are wrapped in --sys-template (pim/runs/generation.py)


def load_model(options, positions=None, record=True):
    """The Loaded model of `options` (LoadOptions or argparse flags of the same names); the recorder counts
    `positions` (None: the generated steps; "all": every non-pad token). record=False loads it without
    a recorder (unless neurons are switched off)."""
    if importlib.util.find_spec("transformers.activation_recorder") is None:
        raise UserError("the installed transformers is not the patched one: run `make patch`")
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.activation_recorder import start_recording

    source, found, fmt = resolve(options.model)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 -- whatever the config holds, a one-line error naming the folder
        raise UserError(not_loadable(options.model, source, found, "config", e)) from None
    attach = choose_attach(config.model_type, options.attach, options.model) if record or options.deactivate else None
    gpu = torch.cuda.is_available()
    dtype = {"auto": torch.bfloat16 if gpu else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}[options.dtype]
    device_map, max_memory = placement(options, gpu)
    identity, off, info = model_identity(source, config), None, None
    if options.deactivate:  # checked before the weights are loaded
        from pim.models.deactivation import DeactivationError, load_deactivation
        try:
            off, info = load_deactivation(options.deactivate, config, identity=identity,
                                          other_model=getattr(options, "deactivate_other_model", False))
        except DeactivationError as e:
            raise UserError(str(e)) from None
    transformers.utils.logging.disable_progress_bar()  # one progress bar: ours
    model = load_weights(options, source, found, dtype, device_map, max_memory)
    if attach:
        try:
            start_recording(model, attach=attach, deactivate=off, **({"positions": positions} if positions else {}))
        except (ValueError, RuntimeError) as e:
            raise UserError(f"model {options.model!r}: {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(not_loadable(options.model, source, found, "tokenizer", e)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, source, found, fmt, config, dtype, device_map, attach, off, info, identity)


def resolve(model):
    """(source, how it was found, prompt format) of MODEL; refuses a downloaded Qwen v1 folder before its
    config (which needs remote code) is parsed."""
    try:
        source, found, fmt = resolve_model(model, ROOT / "models")
    except NotConverted as e:
        raise UserError(str(e)) from None
    local = Path(source) / "config.json"
    if local.is_file():
        try:
            refuse_unconverted(json.loads(local.read_text()).get("model_type"), model)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise UserError(f"{local}: not a JSON model config ({e})") from None
    return source, found, fmt


def model_identity(source, config):
    """The hashes that tell models of one shape apart: config, weights (a local folder), GGUF source."""
    from pim.models.gguf import gguf_settings
    from pim.models.weights import weights_settings

    return {"config_sha256": hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest(),
            **weights_settings(source), **gguf_settings(source)}


def model_settings(loaded, max_memory=None):
    """What a run's counts depend on about the model: a run resumes, and shards merge, only with all equal."""
    from transformers import activation_patch_info as patch

    return {"model_source": loaded.source, "revision": getattr(loaded.config, "_commit_hash", None),
            **loaded.identity, "dtype": str(loaded.dtype).removeprefix("torch."), "device_map": loaded.device_map,
            "max_memory": max_memory, "transformers": patch.TRANSFORMERS_VERSION,
            "patches_sha256": patch.PATCHES_SHA256, "deactivate": loaded.deactivate_info}


def placement(options, gpu):
    """(device_map, max_memory) for from_pretrained."""
    spec = options.device_map
    if spec.lstrip().startswith("{") or spec.endswith(".json"):
        try:
            device_map = json.loads(Path(spec).read_text() if spec.endswith(".json") else spec)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--device-map {spec!r}: not a JSON device map ({e})") from None
    elif spec == "none" or (spec == "auto" and not gpu):
        device_map = None
    elif spec in ("auto", "balanced", "balanced_low_0", "sequential"):
        device_map = spec
        local = os.environ.get("LOCAL_WORLD_SIZE")
        if local and int(local) > 1:  # one process per GPU: each rank keeps the whole model on its own GPU
            device_map = {"": f"cuda:{os.environ['LOCAL_RANK']}"}
    else:
        raise UserError(f"--device-map {spec!r}: use auto, none, balanced, sequential or a JSON map")
    if options.max_memory is None:
        return device_map, None
    try:
        max_memory = {(int(k) if k.isdigit() else k): v for k, v in
                      (item.split("=", 1) for item in options.max_memory.split(","))}
    except ValueError:
        raise UserError(f"--max-memory {options.max_memory!r}: use device=size pairs, e.g. 0=70GiB,cpu=200GiB") from None
    return device_map or "auto", max_memory


def refuse_unconverted(model_type, model):
    if recorded_by(model_type) == CONVERSION:
        raise UserError(f"model {model!r} is a {by_type(model_type).family} checkpoint ({model_type}), which is "
                        f"converted before use: `make convert-qwen1 SRC=<its folder> NAME=<name>` (README)")


def choose_attach(model_type, requested, model):
    """patch or hooks for a model type (pim/models/architectures.py), with a notice when hooks stand in for a patch."""
    refuse_unconverted(model_type, model)
    how = recorded_by(model_type)
    if requested == PATCH and how != PATCH:
        raise UserError(f"model {model!r} is a {model_type} model, which has no patch: use --attach hooks or auto")
    if requested == "auto" and how != PATCH:
        print(f"note: {model_type} has no patch in this project: recording by forward hooks on its MLP activation "
              "modules (the same files; see pim/models/architectures.py)", file=sys.stderr)
    return PATCH if requested == "auto" and how == PATCH else (requested if requested != "auto" else HOOKS)


def load_weights(options, source, found, dtype, device_map, max_memory):
    """from_pretrained with one-line errors: missing weights, a device that is not there, too little memory."""
    from transformers import AutoModelForCausalLM

    try:
        with load_report_held() as release:  # a refusal below is one line, without transformers' table above it
            model, info = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, device_map=device_map, max_memory=max_memory,
                offload_folder=options.offload_folder, output_loading_info=True)
            problem = weights_problem(info, source)
            if not problem:
                release()
    except Exception as e:  # noqa: BLE001 -- whatever goes wrong while loading, one line naming the model
        if is_oom(e):
            raise UserError(f"model {options.model!r} does not fit into memory ({one_line(e)}): give it more devices "
                            "or --max-memory, or a smaller --dtype") from None
        where = f" with --device-map {options.device_map!r}" + (f" --max-memory {options.max_memory!r}"
                                                                if options.max_memory else "")
        raise UserError(not_loadable(options.model, source, found, "weights" + where, e)) from None
    if problem:
        raise UserError(f"model {options.model!r}: {problem}")
    model.eval()
    placed = set(getattr(model, "hf_device_map", {}).values())
    if placed and placed <= {"disk"}:
        raise UserError(f"model {options.model!r}: the device map puts the whole model on disk"
                        f"{' (--max-memory ' + options.max_memory + ')' if options.max_memory else ''}, where it cannot "
                        "run: give a device room for at least its embeddings (more --max-memory)")
    return model


def one_line(e):
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def not_loadable(model, source, found, what, e):
    """The one-line message for a model whose config, weights or tokenizer cannot be loaded."""
    if Path(source).is_dir():
        return f"model {model!r}: the {what} of the folder {source} cannot be loaded: {one_line(e)}"
    if found.startswith("alias"):
        return (f"model {model!r} is an alias ({found}), whose {what} could not be loaded (no network and not in "
                f"the Hugging Face cache? not allowed to download it?): {one_line(e)}")
    return (f"model {model!r}: not a folder models/{model}/, not an alias ({', '.join(model_names())}), and its {what} "
            f"could not be loaded as a hub id or path: {one_line(e)}")


def is_oom(e):
    """An out-of-memory error of torch: on a GPU, or the CPU allocator's."""
    import torch

    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and (
        "out of memory" in text or "DefaultCPUAllocator: can't allocate" in text))
