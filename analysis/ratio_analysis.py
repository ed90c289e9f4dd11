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
from dataclasses import dataclass

from tqdm import tqdm

import common
from pim.activation_files import read_ratio
from pim.neuron_stats import layer_means

# ----------------------------------------------------------------------------- defaults (flags override)
FILES = ["results/*-ratio-*.jsonl"]  # ratio files or glob patterns; several: compared with the first
OUT_DIR = "results/tables"  # where <name>.csv and <name>.md go
NAME = None  # output name; None: the first file's name (<FILE>-ratio-<MODEL>), "-and-N-more" if several
QUIET = False  # True: do not print the table
# -----------------------------------------------------------------------------

METRICS = ("eq_zero", "lt_zero", "le_zero")


@dataclass
class Summary:
    means: dict  # {"eq_zero"|"lt_zero"|"le_zero": float64 [layers]}: per-layer means over the steps
    steps: int  # counted steps (rows of the file)

    @property
    def layers(self):
        return len(self.means["le_zero"])

    def overall(self, metric):
        """The mean over layers of a per-layer mean (the paper's "all layer" value)."""
        return float(self.means[metric].mean())


def summarize(path):
    """The Summary of one ratio file (the rows themselves are not kept)."""
    ratios = read_ratio(path)
    return Summary(layer_means(ratios), len(ratios))


def table(summaries, labels):
    """(header, rows) of the ratio table: a row per layer and a last row "mean"; cells are floats,
    None where a file has fewer layers. Column groups: per file eq/lt/le_zero, then Δ from the first."""
    header = ["layer"]
    for i, label in enumerate(labels):
        header += [f"{label} {m}" for m in METRICS] + ([f"{label} Δ{m}" for m in METRICS] if i else [])
    first = summaries[0]
    rows = []
    for layer in range(max(s.layers for s in summaries)):
        row = [str(layer)]
        for i, s in enumerate(summaries):
            values = [float(s.means[m][layer]) if layer < s.layers else None for m in METRICS]
            row += values
            if i:
                base = [float(first.means[m][layer]) if layer < first.layers else None for m in METRICS]
                row += [None if v is None or b is None else v - b for v, b in zip(values, base)]
        rows.append(row)
    mean = ["mean"]
    for i, s in enumerate(summaries):
        mean += [s.overall(m) for m in METRICS]
        if i:
            mean += [s.overall(m) - first.overall(m) for m in METRICS]
    return header, rows + [mean]


def formatted(header, rows):
    """The rows as strings: 4 decimals, a sign on differences, '–' where missing."""
    return [[row[0]] + [common.fmt(v, signed="Δ" in h) for h, v in zip(header[1:], row[1:])] for row in rows]


def write_tables(summaries, labels, paths, out_dir, name, quiet=False):
    """Print the table and write <out_dir>/<name>.csv and .md; returns the paths written."""
    header, rows = table(summaries, labels)
    shown = formatted(header, rows)
    legend = [[label, str(path), f"{s.steps:,}", str(s.layers)] for label, path, s in zip(labels, paths, summaries)]
    legend_header = ["run", "ratio file", "counted steps", "layers"]
    what = ("Per layer, the mean over all counted steps of the share of neurons whose activation is == 0 "
            "(eq_zero), < 0 (lt_zero) and <= 0 (le_zero: suppressed); the last row is the mean over layers.")
    if len(summaries) > 1:
        what += f" Δ: the difference from {labels[0]}."
    if not quiet:
        print(common.text_table(legend_header, legend, left=2) + "\n" + common.text_table(header, shown))
    md = (f"# Ratio analysis: {name}\n\n{what}\n\n" + common.markdown_table(legend_header, legend, ["l", "l", "r", "r"])
          + "\n" + common.markdown_table(header, shown))
    csv = common.csv_text(header, [[row[0]] + ["" if v is None else repr(v) for v in row[1:]] for row in rows])
    return [common.write_text(f"{out_dir}/{name}.csv", csv), common.write_text(f"{out_dir}/{name}.md", md)]


def default_name(paths):
    stem = paths[0].name.removesuffix(".jsonl")
    return stem if len(paths) == 1 else f"{stem}-and-{len(paths) - 1}-more"


def build_parser():
    p = common.argument_parser(__doc__)
    p.add_argument("--files", nargs="+", default=FILES, metavar="PATH",
                   help=f"ratio files or glob patterns; with several, each is compared with the first "
                        f"(default: {' '.join(FILES)})")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"folder for the CSV and Markdown tables (default {OUT_DIR})")
    p.add_argument("--name", default=NAME, help="name of the tables, without .csv/.md (default: the first file's "
                   "name, plus -and-N-more with several files)")
    p.add_argument("--quiet", action="store_true", default=QUIET, help="do not print the table")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with common.user_errors("ratio_analysis.py"):
        paths = common.expand(args.files, "ratio")
        labels = common.labels([common.run_of(p, "ratio") for p in paths])
        summaries = [summarize(p) for p in tqdm(paths, desc="reading ratio files", unit="file", disable=len(paths) < 2)]
        for path in write_tables(summaries, labels, paths, args.out_dir, args.name or default_name(paths), args.quiet):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
