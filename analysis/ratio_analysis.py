"""Ratio analysis: per layer, the share of neurons that were zero, negative, and suppressed (<= 0).

For each ratio file (<FILE>-ratio-<MODEL>.jsonl, one row per counted step): per layer the mean over
all steps of eq_zero (activation == 0), lt_zero (< 0, = le_zero - eq_zero) and le_zero (<= 0: the
suppressed neurons), and the mean over layers (the paper's Ratio_anasisly.py). Several files: one
column group per file, and for every file after the first its difference from the first (Δ).
The table is printed and written as CSV (full precision) and Markdown (4 decimals).

    python analysis/ratio_analysis.py --files results/wmt22-deu2eng-ratio-bloom-7b1.jsonl
    python analysis/ratio_analysis.py --files results/wmt22-deu2eng-ratio-bloom-7b1.jsonl \\
        results/wmt22-GPT4-deu_spa_rus_fra2eng-ratio-bloom-7b1.jsonl --name de-en-bloom
"""
from tqdm import tqdm

from pim import cli
from pim.activation_files import read_ratio
from pim.runs.checks import check_comparable, check_run
from pim.runs.names import labels as run_labels
from pim.runs.names import run_of
from pim.stats.neuron_stats import summarize
from pim.stats.ratio_table import write_tables

# ----------------------------------------------------------------------------- defaults (flags override)
FILES = ["results/*-ratio-*.jsonl"]  # ratio files or glob patterns; several: compared with the first
OUT_DIR = "results/tables"  # where <name>.csv and <name>.md go
NAME = None  # output name; None: the first file's name (<FILE>-ratio-<MODEL>), "-and-N-more" if several
QUIET = False  # True: do not print the table
# -----------------------------------------------------------------------------


def default_name(paths):
    stem = paths[0].name.removesuffix(".jsonl")
    return stem if len(paths) == 1 else f"{stem}-and-{len(paths) - 1}-more"


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--files", nargs="+", default=FILES, metavar="PATH",
                   help=f"ratio files or glob patterns; with several, each is compared with the first "
                        f"(default: {' '.join(FILES)})")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"folder for the CSV and Markdown tables (default {OUT_DIR})")
    p.add_argument("--name", default=NAME, help="name of the tables, without .csv/.md (default: the first file's "
                   "name, plus -and-N-more with several files)")
    p.add_argument("--quiet", action="store_true", default=QUIET, help="do not print the table")
    return p


@cli.user_errors("ratio_analysis.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    paths = cli.expand(args.files, "ratio")
    runs = [run_of(p, "ratio") for p in paths]
    labels = run_labels(runs)
    summaries = []
    for run in tqdm(runs, desc="reading ratio files", unit="file", disable=True if len(paths) < 2 else None):
        ratios = read_ratio(run.ratio)
        cli.note(check_run(run, ratio=ratios))  # against its manifest and its other files
        summaries.append(summarize(ratios))
        del ratios
    check_comparable(runs, [(s.layers,) for s in summaries], "ratio files")
    for path in write_tables(summaries, labels, paths, args.out_dir, args.name or default_name(paths), args.quiet):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
