"""What each language-specific neuron responds to: its top-k activating tokens over the LAPE corpora.

    make examples MODEL=gemma-3-270m
    python scripts/neuron_examples.py --model bloom-7b1 --top-k 50 --window 12
    python scripts/neuron_examples.py --model qwen2.5-7b --neurons results/neurons/qwen2.5-7b-language-neurons.json

Reads the neuron file of `make lape` (results/neurons/<MODEL>-language-neurons.json, --neurons) and the
corpora it was selected from (its "files", --files), each as its corpus run read it: data/<FILE>.txt
(.txt.gz, .jsonl, .jsonl.gz), the same tokenization, cut to the run's max length, the lines the run
counted (checked: the input's sha256, and the tokens read equal the run's). Runs the model over them
teacher-forced and keeps, for every neuron of every language, its --top-k largest activations at the
recorded site with the corpus, line and token position (ties: earlier corpus, line, position first) and
the decoded tokens --window positions either side. Writes results/examples/<MODEL>-neuron-examples.jsonl
and its manifest (docs/formats.md; the report reads it with pim.runs.example_files.read_examples).
Committed once per window of --sort-window lines: a killed run resumes with the same command; a finished
one is made again only with --overwrite.
"""

# Defaults; every one has a flag (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (README), a .gguf file, or a hub id or path
NEURONS = None  # the neuron file; None: <RESULTS_DIR>/neurons/<MODEL>-language-neurons.json
FILES = None  # the corpora (FILE names); None: the neuron file's "files" (the corpus runs LAPE read)
DATA_DIR = "data"  # where the corpora live
RESULTS_DIR = "results"  # the corpus runs and neuron file are read here; examples/ is written here
TOP_K = 20  # activations kept per neuron
WINDOW = 10  # tokens stored on either side of each example's token
BATCH_SIZE = 8  # texts per forward call, left-padded; halved after an out-of-memory error
SORT = True  # batch the texts of a window longest first (less padding); the examples do not depend on it
SORT_WINDOW = 4096  # lines per window: read, tokenized and sorted together; one commit each
DTYPE = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
DEVICE_MAP = "auto"  # auto: on GPUs spread the layers over them; none; balanced; sequential; or a JSON map/file
MAX_MEMORY = None  # with a device map: memory per device, e.g. "0=70GiB,1=70GiB,cpu=200GiB"
OFFLOAD_FOLDER = "offload"  # where layers mapped to "disk" are kept
OVERWRITE = False  # make a finished examples file again (the old one stays until the new one is finished)

from pim import cli


def non_negative_int(text):
    """argparse type of a whole number >= 0."""
    value = int(text)  # ValueError: argparse says "invalid non_negative_int value"
    if value < 0:
        raise ValueError(text)
    return value


def build_parser():
    import argparse

    from pim.runs.engine import add_placement_flags, add_window_flags

    p = cli.argument_parser(__doc__)
    p.add_argument("--model", default=MODEL, help=f"folder models/<MODEL>/, alias, .gguf file, or hub id/path "
                   f"(default {MODEL})")
    p.add_argument("--neurons", default=NEURONS, metavar="FILE.json",
                   help="the neuron file (default <results-dir>/neurons/<MODEL>-language-neurons.json)")
    p.add_argument("--files", nargs="+", default=FILES, metavar="FILE",
                   help="the corpora, FILE names of corpus runs (default: the neuron file's \"files\")")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"folder of the corpora (default {DATA_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs (default {RESULTS_DIR})")
    p.add_argument("--top-k", type=cli.positive_int, default=TOP_K, help=f"examples per neuron (default {TOP_K})")
    p.add_argument("--window", type=non_negative_int, default=WINDOW,
                   help=f"tokens stored on either side of an example's token (default {WINDOW})")
    add_window_flags(p, BATCH_SIZE, SORT, SORT_WINDOW, "committed once")
    add_placement_flags(p, dtype=DTYPE, device_map=DEVICE_MAP, max_memory=MAX_MEMORY, offload_folder=OFFLOAD_FOLDER)
    p.add_argument("--overwrite", default=OVERWRITE, action=argparse.BooleanOptionalAction,
                   help="make a finished examples file again (the old one stays readable until the new one is done)")
    return p


@cli.user_errors("neuron_examples.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from pim.runs.examples import run_examples

    run_examples(args)  # a RunRefused is a cli.UserError: one line, exit 1


if __name__ == "__main__":
    cli.resumable(main, "the windows committed so far")
