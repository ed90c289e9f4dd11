"""Count, over a text corpus, which MLP neurons fire at every token (teacher-forced, no generation): for LAPE.

    make corpus FILE=corpus-fra MODEL=bloom-7b1
    python scripts/corpus_activate.py --file corpus-deu corpus-fra --model tiny-bloom --max-length 256
    python scripts/corpus_activate.py --file culturax-deu --model llama-3.1-70b --max-tokens 100000000
    python -m pim.runs.launch --multi_gpu --num_processes 8 scripts/corpus_activate.py --file corpus-deu --model qwen2.5-7b
    python scripts/corpus_activate.py --file corpus-deu --model bloom-7b1 --shard 3/16   # then merge_results.py

Each line of data/<FILE>.txt (or .txt.gz, .jsonl, .jsonl.gz: a JSON line's "text" field) is one text; it is
tokenized, cut to its first --max-length tokens, and run through the model in left-padded batches; every
non-pad position of every text counts (the recorder's positions="all"). The file is read as it is
processed, in windows of --sort-window lines whose texts are batched longest first (--no-sort: in file
order); the counts are the same either way up to float rounding (docs/measures.md). --max-tokens N stops after
the text, in file order, at which N tokens are counted. Writes results/<FILE>-index-<MODEL>.jsonl (per
neuron the counted tokens with activation > 0) and results/<FILE>-manifest-<MODEL>.json (kind "corpus",
tokens, lines, where it stopped, settings). Committed batch by batch: a killed run resumes with the same
command; a finished one is redone only with --overwrite. --shard i/n runs a contiguous part of the lines,
whole windows (merge the shards with scripts/merge_results.py); under accelerate launch each process is a shard and
rank 0 merges. With --deactivate the MODEL part of the names is <MODEL>-off-<lang> (or -off-all).
"""

# Defaults; every one has a flag (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (README), a .gguf file, or a hub id or path
FILES = ["sample-corpus-deu"]  # reads <DATA_DIR>/<FILE>.txt (.txt.gz, .jsonl, .jsonl.gz); several share one model load
DATA_DIR = "data"  # where the inputs live
RESULTS_DIR = "results"  # where the run's files go
MAX_LENGTH = 512  # tokens per text at most (special tokens included); longer texts are cut, and counted as cut
MAX_TOKENS = None  # stop once this many tokens are counted (file order); None: the whole file
BATCH_SIZE = 8  # texts per forward call, left-padded; halved after an out-of-memory error
SORT = True  # batch the texts of a window longest first (less padding); the counts are those of file order
SORT_WINDOW = 4096  # lines per window: sorted together, read and tokenized together (a setting of the run)
DTYPE = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
DEVICE_MAP = "auto"  # auto: on GPUs spread the layers over them; none; balanced; sequential; or a JSON map/file
MAX_MEMORY = None  # with a device map: memory per device, e.g. "0=70GiB,1=70GiB,cpu=200GiB"
OFFLOAD_FOLDER = "offload"  # where layers mapped to "disk" are kept
SHARD = None  # "i/n": only the i-th of n contiguous parts of the lines (separate jobs; merge_results.py)
ATTACH = "auto"  # how the recorder attaches: patch, hooks, auto (patch where there is one)
DEACTIVATE = None  # FILE.json[:LANG]: switch off these language-specific neurons (pim/models/deactivation.py)
OVERWRITE = False  # redo a finished run (the old one stays until the new one is finished)

from pim import cli
from pim.runs.engine import add_run_flags, add_window_flags


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--model", default=MODEL, help=f"folder models/<MODEL>/, alias, .gguf file, or hub id/path "
                   f"(default {MODEL})")
    p.add_argument("--file", nargs="+", default=FILES, metavar="FILE",
                   help=f"input {DATA_DIR}/<FILE>.txt (.txt.gz, .jsonl, .jsonl.gz), one or more "
                        f"(default {' '.join(FILES)})")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"folder of the input files (default {DATA_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the output files (default {RESULTS_DIR})")
    p.add_argument("--max-length", type=cli.positive_int, default=MAX_LENGTH,
                   help=f"tokens per text at most; longer texts are cut (default {MAX_LENGTH})")
    p.add_argument("--max-tokens", type=cli.positive_int, default=MAX_TOKENS,
                   help="stop after the text (in file order) at which this many tokens are counted (default: all)")
    add_window_flags(p, BATCH_SIZE, SORT, SORT_WINDOW, "shards are whole windows; a setting: a run resumes only "
                     "with the window it was started with")
    add_run_flags(p, dtype=DTYPE, device_map=DEVICE_MAP, max_memory=MAX_MEMORY, offload_folder=OFFLOAD_FOLDER,
                  shard=SHARD, attach=ATTACH, deactivate=DEACTIVATE, overwrite=OVERWRITE)
    return p


@cli.user_errors("corpus_activate.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from pim.runs.corpus import run_corpora

    run_corpora(args)  # a RunRefused is a cli.UserError: one line, exit 1


if __name__ == "__main__":
    cli.resumable(main, "the batches committed so far")
