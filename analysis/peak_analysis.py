"""Peak analysis: the most often activated neurons, and the layers they are in, one line per file.

All (layer, neuron, count) of an index file are sorted by count, highest first (ties by layer, then
neuron), and the top SELECT_PROPORTION of them kept (the paper's Peak_anasisly.py; like it, neurons
that never fired are left out). Top panel: the kept counts in rank order. Bottom panel: how many of
the kept neurons each layer holds. One line per file; the legend names the condition.

    python analysis/peak_analysis.py --files results/wmt22-deu2eng-index-bloom-7b1.jsonl \\
        results/wmt22-GPT4-deu_spa_rus_fra2eng-index-bloom-7b1.jsonl --select-proportion 0.1
"""
from tqdm import tqdm

from pim import cli
from pim.activation_files import read_index
from pim.runs.checks import check_comparable, check_run
from pim.runs.names import labels, run_of
from pim.stats.peaks import DPI, HEIGHT, WIDTH, draw, peaks, summary_lines

# ----------------------------------------------------------------------------- defaults (flags override)
FILES = ["results/*-index-*.jsonl"]  # index files or glob patterns: one line each
SELECT_PROPORTION = 0.2  # keep the top 20% of all neurons of a model (the paper's select_proportion)
OUT_DIR = "results/figures"  # where the PNG goes
NAME = None  # the PNG's name; None: <FILE>-peak-<MODEL> of the first file, "-and-N-more" if several
# the image's size: the defaults of pim/stats/peaks.py
# -----------------------------------------------------------------------------


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--files", nargs="+", default=FILES, metavar="PATH",
                   help=f"index files or glob patterns, one line each (default: {' '.join(FILES)})")
    p.add_argument("--select-proportion", type=cli.proportion, default=SELECT_PROPORTION, metavar="P",
                   help=f"keep the top P of all neurons, 0 < P <= 1 (default {SELECT_PROPORTION})")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"folder for the PNG (default {OUT_DIR})")
    p.add_argument("--name", default=NAME, help="the PNG's name without .png (default: <FILE>-peak-<MODEL> of the "
                   "first file, plus -and-N-more with several files)")
    cli.add_image_flags(p, WIDTH, HEIGHT, DPI)
    return p


@cli.user_errors("peak_analysis.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    paths = cli.expand(args.files, "index")
    runs = [run_of(p, "index") for p in paths]
    results, shapes = [], []
    for run in tqdm(runs, desc="reading index files", unit="file", disable=True if len(paths) < 2 else None):
        counts = read_index(run.index)
        cli.note(check_run(run, index=counts))  # against its manifest and its other files
        results.append(peaks(counts, args.select_proportion))
        shapes.append(counts.shape)
        del counts
    check_comparable(runs, shapes, "index files")
    print("\n".join(summary_lines(results, labels(runs))))
    name = args.name or (runs[0].out_name("peak") if runs[0].model else f"{runs[0].file}-peak")
    if not args.name and len(paths) > 1:
        name += f"-and-{len(paths) - 1}-more"
    out = draw(results, labels(runs), f"{args.out_dir}/{name}.png", args.select_proportion, None, args.width,
               args.height, args.dpi)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
