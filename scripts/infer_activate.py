"""Generate for every line of data/<FILE>.txt and record which MLP neurons fire (Mu et al. 2024).

    make infer FILE=wmt22-deu2eng MODEL=bloom-176b BATCH=16
    python scripts/infer_activate.py --file wmt22-deu2eng --model bloom-176b --batch-size 16
    python scripts/infer_activate.py --model qwen2.5-7b-instruct --interactive

Writes results/<FILE>-result-<MODEL>.txt (the continuations), -ratio-<MODEL>.jsonl (per counted step and
layer the shares of neurons == 0 and <= 0), -index-<MODEL>.jsonl (per neuron the steps with activation
> 0) and -manifest-<MODEL>.json (how the run was made). A run that was killed resumes where it stopped
when started again with the same settings; a finished run is only redone with --overwrite.
"""
import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Defaults; every one has a flag of the same name (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (pim/models.py, README), or a hub id or path
FILE = "sample-deu2eng"  # reads <DATA_DIR>/<FILE>.txt: one prompt per line, a literal \n is a newline
DATA_DIR = "data"  # where <FILE>.txt lives
RESULTS_DIR = "results"  # where the run's files go
SYS_PROMPT = "auto"  # wrap each prompt in SYS_TEMPLATE: on, off, or auto (on for the Qwen chat aliases)
SYS_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|custom|><|im_end|>\n<|im_start|>assistant\n")  # the paper's; <|custom|> is the prompt
CHAT_TEMPLATE = None  # use the tokenizer's own chat template instead of SYS_TEMPLATE; None: for the aliases
# of instruct models other than Qwen's (pim/architectures.py)
INTERACTIVE = False  # read prompts from standard input and print each continuation
MAX_NEW_TOKENS = 100  # tokens generated per prompt at most
BATCH_SIZE = 8  # prompts per generate call, left-padded
DTYPE = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
DEVICE_MAP = "auto"  # auto: on GPUs spread the layers over them; none; balanced; sequential; or a JSON map/file
MAX_MEMORY = None  # with a device map: memory per device, e.g. "0=70GiB,1=70GiB,cpu=200GiB"
OFFLOAD_FOLDER = "offload"  # where layers mapped to "disk" are kept
SHARD = None  # "i/n": only the i-th of n contiguous parts of the prompts (separate jobs; merge_results.py)
DO_SAMPLE = False  # greedy decoding; the paper sampled at temperature 0.01
TEMPERATURE = 0.01  # used with --do-sample
SEED = 42  # sampling seed; each batch uses SEED + the index of its first prompt
OVERWRITE = False  # redo a finished run, or replace files that are not an unfinished run of this project
SORT = True  # batch the prompts by token length (less padding); the files stay in input order and unchanged
SORT_WINDOW = 8  # with SORT: sort within windows of SORT_WINDOW batches of prompts in input order (bounds
# the finished prompts that wait in the progress file for their predecessors)
TRUNCATE = False  # cut prompts longer than the model's maximum length from the left (keeping the end,
# where a PiM prompt's "English:" cue is); else such a prompt is an error
ATTACH = "auto"  # how the recorder attaches: patch, hooks (any dense causal LM), auto (patch where there is one)
DEACTIVATE = None  # FILE.json[:LANG]: switch these language-specific neurons off (pim/deactivation.py); MODEL gets -off-<LANG>

from pim.activation_files import FormatError, escape_newlines, ratio_lines, read_input_lines, unescape_newlines
from pim.architectures import CHATML, CONVERSION, HOOKS, PATCH, TEMPLATE, by_type, recorded_by
from pim.deactivation import mlp_shape
from pim.gguf_checkpoints import gguf_settings
from pim.models import NotConverted, model_names, resolve_model, run_model_name, weights_problem
from pim.run_lock import RunLock
from pim.run_writer import RunRefused, RunWriter
from pim.runs import read_manifest, run_paths
from pim.shards import find_shard_manifests, merge_shards, parse_shard, shard_dir, shard_model_name, shard_range

ROOT = Path(__file__).resolve().parent.parent


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="model aliases: " + ", ".join(model_names()))
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--model", default=MODEL, help=f"folder models/<MODEL>/, alias, a .gguf file (converted on first use), or hub id/path (default {MODEL})")
    p.add_argument("--file", default=None, help=f"input {DATA_DIR}/<FILE>.txt (default {FILE}; "
                   "'interactive' with --interactive)")
    p.add_argument("--data-dir", default=DATA_DIR, help="folder of the input file")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="folder of the output files")
    p.add_argument("--sys-prompt", default=SYS_PROMPT, choices=["auto", "on", "off"],
                   help="wrap prompts in --sys-template (auto: on for the Qwen chat aliases)")
    p.add_argument("--sys-template", default=SYS_TEMPLATE, help="template with <|custom|> where the prompt goes")
    p.add_argument("--chat-template", default=CHAT_TEMPLATE, action=bool_flag,
                   help="use the tokenizer's chat template (replaces --sys-prompt; default: on for the aliases of "
                        "Llama, Mistral and Gemma instruct models)")
    p.add_argument("--interactive", default=INTERACTIVE, action=bool_flag,
                   help="prompts from standard input, one per line; prints each continuation")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="tokens generated per prompt at most")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prompts per generate call")
    p.add_argument("--dtype", default=DTYPE, choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--device-map", default=DEVICE_MAP, help="auto (spread over the GPUs; the CPU alone without "
                   "GPUs), none, balanced, sequential, or an explicit map as JSON or a JSON file, "
                   "e.g. '{\"transformer.h.0\": 0, \"transformer.h.1\": \"cpu\", ...}'")
    p.add_argument("--max-memory", default=MAX_MEMORY, help="memory per device for the device map, "
                   "e.g. 0=70GiB,cpu=200GiB")
    p.add_argument("--offload-folder", default=OFFLOAD_FOLDER, help="folder for layers mapped to disk")
    p.add_argument("--shard", default=SHARD, help="i/n: run only shard i (0-based) of n; under accelerate "
                   "launch / torchrun the shard is the process rank and rank 0 merges at the end")
    p.add_argument("--do-sample", default=DO_SAMPLE, action=bool_flag, help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="sampling temperature")
    p.add_argument("--seed", type=int, default=SEED, help="sampling seed")
    p.add_argument("--overwrite", default=OVERWRITE, action=bool_flag, help="redo a finished run (the old run "
                   "stays until the new one has committed its first batch)")
    p.add_argument("--sort", default=SORT, action=bool_flag, help="batch prompts by token length (--no-sort: in "
                   "input order); the files are the same either way")
    p.add_argument("--sort-window", type=int, default=SORT_WINDOW, help="with --sort: sort within windows of this "
                   "many batches")
    p.add_argument("--truncate", default=TRUNCATE, action=bool_flag, help="cut prompts longer than the model's "
                   "maximum length from the left, keeping their end (default: such a prompt is an error)")
    p.add_argument("--attach", default=ATTACH, choices=["auto", PATCH, HOOKS],
                   help="record through the patched modeling code, or forward hooks on the MLP activation modules "
                        "(same files; auto: the patch where pim/architectures.py has one, else hooks with a notice)")
    p.add_argument("--deactivate", default=DEACTIVATE, metavar="FILE.json[:LANG]",
                   help="switch off the neurons of a language-neurons file (make lape; all languages, or LANG's): "
                        "the results' MODEL part becomes <MODEL>-off-<LANG> (or -off-all)")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1 or args.batch_size < 1 or args.sort_window < 1:
        p.error("--max-new-tokens, --batch-size and --sort-window must be at least 1")
    if "<|custom|>" not in args.sys_template:
        p.error("--sys-template must contain <|custom|>, where the prompt goes")
    args.file = args.file or ("interactive" if args.interactive else FILE)
    return args


def check_args(args):
    """User errors in the arguments that argparse does not see; before anything is read or written."""
    for what, name in (("FILE", args.file), ("MODEL", run_name(args.model))):
        if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name:
            raise UserError(f"{what} {name!r}: give a name, not a path: the run's files are "
                            f"{args.results_dir}/<FILE>-<kind>-<MODEL>.* (another input folder: --data-dir)")
    if args.shard is not None:
        try:
            parse_shard(args.shard)
        except ValueError as e:
            raise UserError(str(e)) from None
    if args.do_sample and not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: sampling needs a temperature > 0 "
                        "(greedy decoding: leave out --do-sample)")
    results = Path(args.results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"--results-dir {results}: not a folder")


def read_prompts(path):
    """The prompts of an input file; any problem is reported with file and line before a model is loaded."""
    try:
        return read_input_lines(path, "prompt", "build the prompt files with `make data`, or write one prompt "
                                               "per line there")
    except FormatError as e:
        raise UserError(str(e)) from None


def placement(args, gpu):
    """(device_map, max_memory) for from_pretrained."""
    spec = args.device_map
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
    if args.max_memory is None:
        return device_map, None
    try:
        max_memory = {(int(k) if k.isdigit() else k): v for k, v in
                      (item.split("=", 1) for item in args.max_memory.split(","))}
    except ValueError:
        raise UserError(f"--max-memory {args.max_memory!r}: use device=size pairs, e.g. 0=70GiB,cpu=200GiB") from None
    return device_map or "auto", max_memory


def refuse_unconverted(model_type, model):
    if recorded_by(model_type) == CONVERSION:
        raise UserError(f"model {model!r} is a {by_type(model_type).family} checkpoint ({model_type}), which is "
                        f"converted before use: `make convert-qwen1 SRC=<its folder> NAME=<name>` (README)")


def choose_attach(model_type, requested, model):
    """patch or hooks for a model type (pim/architectures.py), with a notice when hooks stand in for a patch."""
    refuse_unconverted(model_type, model)
    how = recorded_by(model_type)
    if requested == PATCH and how != PATCH:
        raise UserError(f"model {model!r} is a {model_type} model, which has no patch: use --attach hooks or auto")
    if requested == "auto" and how != PATCH:
        print(f"note: {model_type} has no patch in this project: recording by forward hooks on its MLP activation "
              "modules (the same files; see pim/architectures.py)", file=sys.stderr)
    return PATCH if requested == "auto" and how == PATCH else (requested if requested != "auto" else HOOKS)


@dataclass
class Loaded:
    """A model loaded with recording on, and what the run's manifest says about it (run_manifest)."""
    model: object
    tokenizer: object
    source: str  # the folder or hub id it was loaded from
    found: str  # how MODEL was found (pim/models.py)
    config: object
    dtype: object
    device_map: object
    attach: str  # patch or hooks
    use_sys: bool  # the prompts are wrapped in --sys-template


def load_model(args):
    """The Loaded model, tokenizer and facts about them, recording on; clear errors for what cannot be
    recorded. Sets args.chat_template where it was left to the alias (None)."""
    if importlib.util.find_spec("transformers.activation_recorder") is None:
        raise UserError("the installed transformers is not the patched one: run `make patch`")
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.activation_recorder import start_recording

    try:
        source, found, fmt = resolve_model(args.model, ROOT / "models")
    except NotConverted as e:
        raise UserError(str(e)) from None
    local = Path(source) / "config.json"
    if local.is_file():  # a downloaded Qwen v1 folder: its config needs remote code, refuse before parsing it
        try:
            refuse_unconverted(json.loads(local.read_text()).get("model_type"), args.model)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise UserError(f"{local}: not a JSON model config ({e})") from None
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 -- whatever the config holds, a one-line error naming the folder
        raise UserError(not_loadable(args.model, source, found, "config", e)) from None
    attach = choose_attach(config.model_type, args.attach, args.model)
    gpu = torch.cuda.is_available()
    dtype = {"auto": torch.bfloat16 if gpu else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device_map, max_memory = placement(args, gpu)
    transformers.utils.logging.disable_progress_bar()  # one progress bar: ours
    model = load_weights(args, source, found, dtype, device_map, max_memory)
    args.deactivate_info, off = None, None
    if getattr(args, "deactivate", None):
        from pim.deactivation import DeactivationError, load_deactivation
        try:
            off, args.deactivate_info = load_deactivation(args.deactivate, config)
        except DeactivationError as e:
            raise UserError(str(e)) from None
    try:
        start_recording(model, attach=attach, deactivate=off)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"model {args.model!r}: {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(not_loadable(args.model, source, found, "tokenizer", e)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if args.chat_template is None:
        args.chat_template = fmt == TEMPLATE
    if args.chat_template and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {args.model!r}: its tokenizer has no chat template, so --chat-template cannot be "
                        "used; leave it out (or --sys-prompt on for the paper's template)")
    use_sys = (args.sys_prompt == "on" or (args.sys_prompt == "auto" and fmt == CHATML)) and not args.chat_template
    return Loaded(model, tokenizer, source, found, config, dtype, device_map, attach, use_sys)


def load_weights(args, source, found, dtype, device_map, max_memory):
    """from_pretrained with one-line errors: missing weights, a device that is not there, too little memory."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device_map,
                                                           max_memory=max_memory, offload_folder=args.offload_folder,
                                                           output_loading_info=True)
    except Exception as e:  # noqa: BLE001 -- whatever goes wrong while loading, one line naming the model
        if is_oom(e):
            raise UserError(f"model {args.model!r} does not fit into memory ({one_line(e)}): give it more devices "
                            "or --max-memory, or a smaller --dtype") from None
        where = f" with --device-map {args.device_map!r}" + (f" --max-memory {args.max_memory!r}"
                                                             if args.max_memory else "")
        raise UserError(not_loadable(args.model, source, found, "weights" + where, e)) from None
    problem = weights_problem(info, source)
    if problem:
        raise UserError(f"model {args.model!r}: {problem}")
    model.eval()
    placed = set(getattr(model, "hf_device_map", {}).values())
    if placed and placed <= {"disk"}:
        raise UserError(f"model {args.model!r}: the device map puts the whole model on disk"
                        f"{' (--max-memory ' + args.max_memory + ')' if args.max_memory else ''}, where it cannot run: "
                        "give a device room for at least its embeddings (more --max-memory)")
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


def use_qwen1_tokenizer(loaded, args, prompts, input_path, first):
    """A converted Qwen v1 (pim/qwen1.py): its exact tokenizer, and prompts that fit v1's seq_length."""
    from pim.qwen1 import PromptTooLong, check_prompt_lengths, load_tokenizer

    loaded.tokenizer = load_tokenizer(loaded.model.name_or_path)
    wrap = Generator(loaded, args).wrap
    try:  # interactive prompts are not checked
        check_prompt_lengths(loaded.config, [len(loaded.tokenizer(wrap(p), add_special_tokens=not args.chat_template)
                                                 ["input_ids"]) for p in prompts or []],
                             args.max_new_tokens, input_path, first_line=first + 1)
    except PromptTooLong as e:
        raise UserError(str(e)) from None


def run_manifest(args, loaded, input_path, prompts, shard=None, prompt_range=None, total=None):
    """(settings, info) of the run's manifest, all of it: the settings must be equal to resume a run;
    info says what else the run was made with. prompts: the prompts of this process (None: interactive)."""
    import torch
    from transformers import activation_patch_info as patch

    config, model = loaded.config, loaded.model
    interactive = prompts is None
    settings = {  # a run resumes only with all of these unchanged
        "model_source": loaded.source, "revision": getattr(config, "_commit_hash", None),
        "config_sha256": hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest(),
        "dtype": str(loaded.dtype).removeprefix("torch."), "device_map": loaded.device_map,
        "max_memory": args.max_memory,
        "max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample,
        "temperature": args.temperature if args.do_sample else None, "seed": args.seed,
        "sys_template": args.sys_template if loaded.use_sys else None, "chat_template": args.chat_template,
        "transformers": patch.TRANSFORMERS_VERSION, "patches_sha256": patch.PATCHES_SHA256,
        "input": "stdin" if interactive else str(input_path),
        "input_sha256": None if interactive else hashlib.sha256(input_path.read_bytes()).hexdigest(),
        "deactivate": getattr(args, "deactivate_info", None),
    }
    info = {"model": run_name(args.model, getattr(args, "deactivate", None)), "found_as": loaded.found,
            "torch": torch.__version__,
            "attach": loaded.attach,
            "devices": {k: str(v) for k, v in getattr(model, "hf_device_map", {"": model.device}).items()},
            "layers": config.num_hidden_layers, "width": mlp_shape(config)[1],
            "generation_config": model.generation_config.to_diff_dict(),
            "model_argument": args.model, "file": args.file, "prompts": None if interactive else len(prompts),
            "batch_size": args.batch_size, "sorted": bool(args.sort and not interactive),
            "command": shlex.join([sys.executable] + sys.argv)}
    settings.update(gguf_settings(loaded.source))  # converted from a GGUF: resume only with the same file
    if args.truncate:  # only when on, so that runs made before the flag existed still resume
        settings["truncate"] = "left"
    if shard:
        settings["shard"] = list(shard)
        info.update(shard=list(shard), prompt_range=list(prompt_range), prompts_total=total)
    return settings, info


class Generator:
    """Generates one batch with recording on and returns what the run files need."""

    def __init__(self, loaded, args):
        self.model, self.tokenizer, self.args, self.use_sys = loaded.model, loaded.tokenizer, args, loaded.use_sys
        eos = self.model.generation_config.eos_token_id
        self.eos = set([eos] if isinstance(eos, int) else (eos or []))

    def wrap(self, prompt):
        if self.args.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return self.args.sys_template.replace("<|custom|>", prompt) if self.use_sys else prompt

    def encode(self, prompts):
        """The token ids of each prompt, wrapped as it is generated from."""
        return self.tokenizer([self.wrap(p) for p in prompts],
                              add_special_tokens=not self.args.chat_template)["input_ids"]

    def __call__(self, ids, seed):
        """Generate for a batch of token id lists; (texts, ratio text, index counts, counted steps per prompt)."""
        import torch

        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True).to(self.model.device)
        sampling = {"do_sample": True, "temperature": self.args.temperature} if self.args.do_sample else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed)
        with injected_oom(self.model, len(ids), self.args.max_new_tokens):
            out = self.model.generate(**enc, max_new_tokens=self.args.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        stats = self.model.activation_recorder.take()
        new = out[:, enc.input_ids.shape[1]:].cpu().tolist()
        steps = stats.steps.tolist()
        for b, row in enumerate(new):
            ends = [i for i, t in enumerate(row) if t in self.eos]
            if steps[b] != (ends[0] + 1 if ends else len(row)):
                raise RuntimeError(f"the recorder counted {steps[b]} steps for prompt {b} of the batch, the tokens "
                                   "say otherwise: a bug, please report it with the manifest")
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new, steps)]
        return texts, ratio_lines(stats.zero_counts, stats.width), stats.active_counts.numpy(), steps


class injected_oom:
    """Testing OOM recovery on any machine: with PIM_FAULT_OOM_AT_BATCH=<n> in the environment, a generate call
    of n prompts raises torch.OutOfMemoryError at its first decode step (after real work)."""

    def __init__(self, model, batch, max_new_tokens):
        self.handle = None
        if os.environ.get("PIM_FAULT_OOM_AT_BATCH", "") == str(batch):
            import torch

            calls = []

            def hook(module, args, kwargs):
                calls.append(1)
                if len(calls) == min(2, max_new_tokens):
                    raise torch.OutOfMemoryError(f"CUDA out of memory (fault injected by PIM_FAULT_OOM_AT_BATCH="
                                                 f"{batch})")
            self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


def model_max_length(config, tokenizer):
    """Tokens a sequence may have: the config's position limit, or the tokenizer's when smaller and sane;
    None where neither says (BLOOM's ALiBi has no limit)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = [getattr(text, k, None) for k in ("max_position_embeddings", "n_positions", "seq_length")]
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10_000_000]
    return min(limits) if limits else None


def check_lengths(ids, limit, max_new_tokens, path, first_line, truncate):
    """Prompts (token ids) that, with max_new_tokens, exceed the model's limit: an error naming file:line, or
    with truncate cut from the left, keeping their end. Returns the ids and the lines cut."""
    if limit is None:
        return ids, []
    room = limit - max_new_tokens
    if room < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt: the model takes at most "
                        f"{limit} tokens")
    too_long = [i for i, x in enumerate(ids) if len(x) > room]
    if not too_long:
        return ids, []
    if not truncate:
        i = too_long[0]
        more = f" (and {len(too_long) - 1} more lines)" if len(too_long) > 1 else ""
        raise UserError(f"{path}:{first_line + i}: {len(ids[i])} prompt tokens + {max_new_tokens} max_new_tokens > "
                        f"{limit}, the model's maximum length{more}: shorten it, lower --max-new-tokens, or pass "
                        "--truncate to cut such prompts from the left (keeping their end)")
    cut = [x[len(x) - room:] if len(x) > room else x for x in ids]
    print(f"note: --truncate: cut {len(too_long)} prompts from the left to {room} tokens (first: "
          f"{path}:{first_line + too_long[0]})", file=sys.stderr)
    return cut, [first_line + i for i in too_long]


def run_name(model, deactivate=None):
    """The <MODEL> part of the file names: the alias or folder name, the last part of a hub id or path;
    with --deactivate, plus -off-<LANG> (pim/deactivation.run_suffix)."""
    from pim.deactivation import run_suffix
    return run_model_name(model) + run_suffix(deactivate)


def launched():
    """The accelerate PartialState when started by `accelerate launch` or torchrun with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # ranks finish their shards at different times: wait for the slowest up to a week
    return PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(days=7))


def run(args):
    check_args(args)
    interactive = args.interactive
    input_path = Path(args.data_dir) / f"{args.file}.txt"
    prompts = None if interactive else read_prompts(input_path)
    state = launched()
    shard = process_shard(args, state)
    name, results_dir, first, total = run_name(args.model, args.deactivate), Path(args.results_dir), 0, None
    merged = read_manifest(run_paths(results_dir, args.file, name)["manifest"])
    if state and not args.overwrite and merged and merged.get("status") == "finished":
        raise RunRefused(f"{run_paths(results_dir, args.file, name)['manifest']} is a finished run; "
                         "pass --overwrite to run it again")
    if shard:
        if shard[1] > len(prompts):
            raise UserError(f"{shard[1]} shards for {len(prompts)} prompts: use at most one shard per prompt")
        check_split(results_dir, args.file, name, shard, args.overwrite, state)
        first, last = shard_range(len(prompts), *shard)
        total, prompts = len(prompts), prompts[first:last]
        name, results_dir = shard_model_name(name, *shard), shard_dir(args.results_dir)
    with RunLock(results_dir, args.file, name):
        loaded = load_model(args)
        if getattr(loaded.config, "qwen1", None):
            use_qwen1_tokenizer(loaded, args, prompts, input_path, first)
        generate = Generator(loaded, args)
        ids = None
        if not interactive:
            ids, _ = check_lengths(generate.encode(prompts), model_max_length(loaded.config, loaded.tokenizer),
                                   args.max_new_tokens, input_path, first + 1, args.truncate)
        settings, info = run_manifest(args, loaded, input_path, prompts, shard, (first, first + len(prompts or ())),
                                      total)
        writer = RunWriter(results_dir, args.file, name, settings, overwrite=args.overwrite)
        try:
            if interactive:
                finished = run_interactive(generate, writer, info, args)
            else:
                run_file(generate, writer, ids, writer.open(info), first, args)
                finished = True
            if finished:
                writer.finish()
        except BaseException:
            writer.abandon()
            raise
    if not finished:
        return
    print(f"{writer.done} prompts, {writer.steps} counted steps: " +
          ", ".join(str(writer.paths[k]) for k in ("result", "ratio", "index", "manifest")), file=sys.stderr)
    if state:
        merge_ranks(state, args, shard, info["command"])


def process_shard(args, state):
    """(i, n) of this process: the rank under accelerate launch / torchrun, --shard, or None."""
    if state and args.shard:
        raise UserError("--shard is for separate jobs; under accelerate launch / torchrun each rank is a shard")
    shard = (state.process_index, state.num_processes) if state else parse_shard(args.shard) if args.shard else None
    if shard and args.interactive:
        raise UserError("--interactive runs in one process, without --shard")
    return shard


def check_split(results_dir, file, model, shard, overwrite, state):
    """Before the model is loaded: a launch of n processes (or --shard i/n) must fit what is on disk, so that
    the merge at the end cannot fail: no shards of another split of this run (for --shard jobs: no
    unfinished ones), and no unfinished run of one process (which NPROC would silently leave behind)."""
    how = "NPROC" if state else "--shard i/"
    target = run_paths(results_dir, file, model)["manifest"]
    single = read_manifest(target)
    if single and single.get("status") == "running" and "shards" not in single and not overwrite:
        raise UserError(f"{target} is an unfinished run of one process ({single.get('prompts_done', 0)} prompts "
                        f"done): resume it as it was started (without NPROC or --shard), or pass --overwrite")
    for path in find_shard_manifests(results_dir, file, model):
        m = read_manifest(path) or {}
        index, count = (m.get("shard") or [None, None])[:2]
        status = "finished" if m.get("status") == "finished" else "unfinished"
        # separate jobs may name the shards to merge (merge_results.py --manifests); a launch merges all
        if count is not None and count != shard[1] and (state or status == "unfinished"):
            raise UserError(f"{path} is a{'n' if status == 'unfinished' else ''} {status} shard {index}/{count} of a split into {count}, which the merge "
                            f"of a split into {shard[1]} would refuse: {'resume with ' + how + str(count) if status == 'unfinished' else 'remove it'}"
                            f", or remove {shard_dir(results_dir)}/{file}-*-{model}-shard*of{count}.* first")


def merge_ranks(state, args, shard, command):
    """Launched with several processes: when all are done, rank 0 merges their shards."""
    state.wait_for_everyone()
    if state.is_main_process:
        name = run_name(args.model, args.deactivate)
        with RunLock(args.results_dir, args.file, name):
            merged = merge_shards(args.results_dir, args.file, name, overwrite=args.overwrite, command=command)
        print(f"merged {shard[1]} shards into {merged['result'].parent}/{args.file}-*-{name}.*",
              file=sys.stderr)
    state.wait_for_everyone()


def plan_batches(lengths, batch_size, sort, window):
    """The generate calls of a run: lists of prompt indices. In input order, or with `sort` longest first
    within windows of `window` prompts (in input order), so that a batch holds prompts of similar length."""
    order = range(len(lengths))
    if not sort:
        return [list(order[i:i + batch_size]) for i in range(0, len(lengths), batch_size)]
    batches = []
    for start in range(0, len(lengths), window):
        chunk = sorted(order[start:start + window], key=lambda i: (-lengths[i], i))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def split_records(batch, texts, ratio_text, steps):
    """(prompt index, result line, ratio rows, steps) per prompt of a batch; its ratio rows are in batch order."""
    rows = ratio_text.splitlines(keepends=True)
    records, at = [], 0
    for index, text, n in zip(batch, texts, steps):
        records.append((index, escape_newlines(text), "".join(rows[at:at + n]), n))
        at += n
    return records


def run_file(generate, writer, ids, done, offset, args):
    from collections import deque

    from tqdm import tqdm

    if done:
        print(f"resuming {writer.paths['manifest']}: {done} of {len(ids)} prompts are done", file=sys.stderr)
    completed = writer.completed
    plan = plan_batches([len(x) for x in ids], args.batch_size, args.sort, args.batch_size * args.sort_window)
    queue = deque(b for b in ([i for i in batch if i not in completed] for batch in plan) if b)
    size, tokens, start = args.batch_size, 0, time.perf_counter()
    desc = f"{args.file} [shard {writer.settings['shard'][0]}/{writer.settings['shard'][1]}]" \
        if "shard" in writer.settings else args.file
    with tqdm(total=len(ids), initial=done, unit="prompt", desc=desc, dynamic_ncols=True) as bar:
        while queue:
            batch = queue.popleft()
            if len(batch) > size:  # smaller batches since an out-of-memory error
                queue.extendleft(reversed([batch[i:i + size] for i in range(0, len(batch), size)]))
                continue
            try:
                texts, ratio_text, counts, steps = generate([ids[i] for i in batch], args.seed + offset + min(batch))
            except Exception as e:  # noqa: BLE001 -- only out-of-memory errors are handled
                if not is_oom(e) or len(batch) == 1:
                    raise
                size = len(batch) // 2
                print(f"note: out of memory with a batch of {len(batch)} prompts ({one_line(e)}): going on with "
                      f"batches of {size}", file=sys.stderr)
                writer.note("batch_size_changes", {"from": len(batch), "to": size, "why": "out of memory"})
                writer.manifest["batch_size"] = size
                free_memory()
                queue.appendleft(batch)
                continue
            writer.commit_prompts(split_records(batch, texts, ratio_text, steps), counts)
            tokens += sum(steps)
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.1f}")
            bar.update(len(texts))


def free_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_interactive(generate, writer, info, args):
    """Prompts from standard input; the run's files are made with the first prompt. Returns whether any
    prompt was recorded."""
    print("type a prompt per line (a literal \\n is a newline); Ctrl-D ends and writes the index file",
          file=sys.stderr)
    opened = False
    for line in sys.stdin:
        prompt = unescape_newlines(line.rstrip("\n")).strip()
        if not prompt:
            continue
        if not opened:
            writer.open(info)
            opened = True
        index = len(writer.completed)
        texts, ratio_text, counts, steps = generate(generate.encode([prompt]), args.seed + index)
        print(texts[0], flush=True)
        writer.commit_prompts(split_records([index], texts, ratio_text, steps), counts)
    if not opened:
        print("no prompt was given: nothing written", file=sys.stderr)
    return opened


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (UserError, RunRefused) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk, an unwritable folder, ...
        where = ": ".join(str(x) for x in (e.filename, e.strerror or e) if x)
        sys.exit(f"error: {where} (what was committed before stays; start the same command again to resume)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the batches committed so far stay, and the same command resumes after them
        sys.exit("\ninterrupted: the batches committed so far are kept; start the same command again to resume")
