"""Compare conditions: one model's neurons with direct input and with PiM, in one Markdown report.

For runs of one model on one test set (e.g. direct, PiM-1, PiM-3, PiM-6 of wmt22-deu2eng), the report
<out-dir>/compare-<test set>-<model>.md (figures in <figures-dir>, linked relatively) holds per condition:
  - the suppressed share (le_zero: activation <= 0), per layer and over all layers, and eq_zero;
  - concentration: the share of all activations (the sum of the index counts) taken by the top 1% and
    the top 10% of neurons;
  - overlap: the Jaccard index of the top-1% and top-10% neuron sets with those of the first condition;
  - the peak plot of all conditions, a per-layer plot of the suppressed share, and each run's heatmap.
The first condition is the reference that the others are compared with. The paper's finding: PiM
suppresses more neurons and concentrates activation on fewer of them than direct input.

    python analysis/compare_conditions.py --model bloom-7b1 \\
        --files wmt22-deu2eng wmt22-GPT4-deu_spa2eng wmt22-GPT4-deu_spa_rus_fra2eng
"""
from tqdm import tqdm

from pim import cli
from pim.runs.names import finished_runs
from pim.stats.comparison import HEATMAPS, SELECT_PROPORTION, TOP, default_name, report
from pim.stats.neuron_stats import load
from pim.tables import text_table

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # where the runs are: <FILE>-index-<MODEL>.jsonl and <FILE>-ratio-<MODEL>.jsonl
FILES = ["wmt22-deu2eng", "wmt22-GPT4-deu_spa2eng", "wmt22-GPT4-deu_spa_rus_fra2eng",
         "wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng"]  # conditions, the first the reference: direct, PiM-1/3/6
MODEL = "bloom-7b1"  # the model whose runs are compared
OUT_DIR = None  # the report and its CSV; None: <RESULTS_DIR>/tables
FIGURES_DIR = None  # its figures; None: <RESULTS_DIR>/figures
NAME = None  # None: compare-<test set>-<model>
# the peak plot's proportion, the top shares and whether heatmaps are drawn: the defaults of pim/stats/comparison.py
# -----------------------------------------------------------------------------


def progress(runs):
    """tqdm over the runs being read, shown for two or more."""
    return tqdm(runs, desc="reading runs", unit="run", disable=True if len(runs) < 2 else None)


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs (default {RESULTS_DIR})")
    p.add_argument("--files", nargs="+", default=FILES, metavar="FILE",
                   help="the conditions (prompt file names, as `make infer FILE=`), the first the reference "
                        f"(default: {' '.join(FILES)})")
    p.add_argument("--model", default=MODEL, help=f"the model whose runs are compared (default {MODEL})")
    p.add_argument("--select-proportion", type=cli.proportion, default=SELECT_PROPORTION, metavar="P",
                   help=f"the peak plot keeps the top P of neurons (default {SELECT_PROPORTION})")
    p.add_argument("--top", type=cli.proportion, nargs="+", default=list(TOP), metavar="P",
                   help=f"concentration and overlap on the top P of neurons (default {' '.join(map(str, TOP))})")
    p.add_argument("--out-dir", default=OUT_DIR, help="folder of the report (default <results-dir>/tables)")
    p.add_argument("--figures-dir", default=FIGURES_DIR, help="folder of its figures (default <results-dir>/figures)")
    p.add_argument("--name", default=NAME, help="the report's name without .md (default compare-<test set>-<model>)")
    p.add_argument("--no-heatmaps", dest="heatmaps", action="store_false", default=HEATMAPS,
                   help="do not draw the runs' heatmaps (the report links <FILE>-heatmap-<MODEL>.png all the same)")
    return p


@cli.user_errors("compare_conditions.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if len(args.files) < 2:
        raise cli.UserError("give at least two conditions to compare (--files A B ...)")
    found = {r.file: r for r in finished_runs(args.results_dir, args.files, [args.model])}
    runs = [found[f] for f in dict.fromkeys(args.files)]
    name = args.name or default_name(runs)
    notes = []
    data = load(runs, progress, notes)
    for note in notes:
        tqdm.write(note)
    written, (header, rows) = report(runs, data, name, args.out_dir or f"{args.results_dir}/tables",
                                     args.figures_dir or f"{args.results_dir}/figures", args.select_proportion,
                                     tuple(args.top), args.heatmaps)
    print(text_table(header, rows, left=2))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
