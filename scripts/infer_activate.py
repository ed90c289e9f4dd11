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

# Defaults; every one has a flag of the same name (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (pim/models/names.py, README), or a hub id or path
FILE = "sample-deu2eng"  # reads <DATA_DIR>/<FILE>.txt: one prompt per line, a literal \n is a newline
DATA_DIR = "data"  # where <FILE>.txt lives
RESULTS_DIR = "results"  # where the run's files go
SYS_PROMPT = "auto"  # wrap each prompt in SYS_TEMPLATE: on, off, or auto (on for the Qwen chat aliases)
SYS_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|custom|><|im_end|>\n<|im_start|>assistant\n")  # the paper's; <|custom|> is the prompt
CHAT_TEMPLATE = None  # use the tokenizer's own chat template instead of SYS_TEMPLATE; None: for the aliases
# of instruct models other than Qwen's (pim/models/architectures.py)
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
DEACTIVATE = None  # FILE.json[:LANG]: switch these language-specific neurons off (pim/models/deactivation.py); MODEL gets -off-<LANG>

from pim import cli
from pim.models.names import model_names
from pim.runs.engine import add_run_flags


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="model aliases: " + ", ".join(model_names()), allow_abbrev=False)
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
    p.add_argument("--do-sample", default=DO_SAMPLE, action=bool_flag, help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="sampling temperature")
    p.add_argument("--seed", type=int, default=SEED, help="sampling seed")
    p.add_argument("--sort", default=SORT, action=bool_flag, help="batch prompts by token length (--no-sort: in "
                   "input order); the files are the same either way")
    p.add_argument("--sort-window", type=int, default=SORT_WINDOW, help="with --sort: sort within windows of this "
                   "many batches")
    p.add_argument("--truncate", default=TRUNCATE, action=bool_flag, help="cut prompts longer than the model's "
                   "maximum length from the left, keeping their end (default: such a prompt is an error)")
    add_run_flags(p, dtype=DTYPE, device_map=DEVICE_MAP, max_memory=MAX_MEMORY, offload_folder=OFFLOAD_FOLDER,
                  shard=SHARD, attach=ATTACH, deactivate=DEACTIVATE, overwrite=OVERWRITE)
    args = p.parse_args(argv)
    if args.max_new_tokens < 1 or args.batch_size < 1 or args.sort_window < 1:
        p.error("--max-new-tokens, --batch-size and --sort-window must be at least 1")
    if "<|custom|>" not in args.sys_template:
        p.error("--sys-template must contain <|custom|>, where the prompt goes")
    args.file = args.file or ("interactive" if args.interactive else FILE)
    return args


def main(argv=None):
    args = parse_args(argv)
    from pim.runs.generation import run

    try:
        run(args)
    except cli.UserError as e:  # a RunRefused too
        cli.fail(f"error: {e}")
    except OSError as e:  # a full disk, an unwritable folder, ...
        where = ": ".join(str(x) for x in (e.filename, e.strerror or e) if x)
        cli.fail(f"error: {where} (what was committed before stays; start the same command again to resume)")


if __name__ == "__main__":
    cli.resumable(main, "the batches committed so far")
