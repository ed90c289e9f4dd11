"""Peak analysis: the most often activated neurons, and the layers they are in, one line per file.

All (layer, neuron, count) of an index file are sorted by count, highest first (ties by layer, then
neuron), and the top SELECT_PROPORTION of them kept (the paper's Peak_anasisly.py; like it, neurons
that never fired are left out). Top panel: the kept counts in rank order. Bottom panel: how many of
the kept neurons each layer holds. One line per file; the legend names the condition.

    python analysis/peak_analysis.py --files results/wmt22-deu2eng-index-bloom-7b1.jsonl \\
        results/wmt22-GPT4-deu_spa_rus_fra2eng-index-bloom-7b1.jsonl --select-proportion 0.1
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter
from tqdm import tqdm

import common
from pim.activation_files import read_index
from pim.neuron_stats import top_count, top_neurons

# ----------------------------------------------------------------------------- defaults (flags override)
FILES = ["results/*-index-*.jsonl"]  # index files or glob patterns: one line each
SELECT_PROPORTION = 0.2  # keep the top 20% of all neurons of a model (the paper's select_proportion)
OUT_DIR = "results/figures"  # where the PNG goes
NAME = None  # the PNG's name; None: <FILE>-peak-<MODEL> of the first file, "-and-N-more" if several
WIDTH, HEIGHT = 1200, 900  # image size in pixels
DPI = 100  # pixels per inch: sets the size of the text relative to the image
# -----------------------------------------------------------------------------

POINTS = 4000  # the top panel draws at most this many points per line (the counts fall monotonically)


def peaks(counts, proportion):
    """(counts of the kept neurons in rank order, per-layer number of kept neurons, neurons in all)."""
    layers, _, values = top_neurons(counts, proportion)
    return values, np.bincount(layers, minlength=counts.shape[0]), counts.size


def draw(results, labels, out, proportion, title=None, width_px=WIDTH, height_px=HEIGHT, dpi=DPI):
    """results: a peaks() triple per file. Writes the PNG `out` of exactly width_px x height_px pixels."""
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    top, bottom = fig.subplots(2, 1)
    sizes = sorted({n for _, _, n in results})
    for (values, per_layer, n), label, colour in zip(results, labels, common.line_colours(len(results))):
        kept = f"{len(values):,} of {n:,} neurons" if len(sizes) > 1 else f"{len(values):,} neurons"
        ranks = np.unique(np.linspace(0, len(values) - 1, min(len(values), POINTS)).astype(np.int64))
        top.plot(ranks + 1, values[ranks], color=colour, linewidth=1.5, label=f"{label} ({kept})")
        bottom.plot(np.arange(len(per_layer)), per_layer, color=colour, linewidth=1.5, marker="o",
                    markersize=2.5, label=label)
    share = common.percent(proportion)
    of = f"{top_count(sizes[0], proportion):,} of {sizes[0]:,}" if len(sizes) == 1 else "per model"
    fig.suptitle(title or f"The top {share} of neurons by activation count", fontsize=13)
    top.set_title(f"top {share} ({of}) sorted by count; ties by layer, then neuron; neurons that never fired "
                  "left out", fontsize=9)
    top.set_xlabel("rank")
    top.set_ylabel("times activated (> 0)")
    top.set_xlim(left=0)
    top.set_ylim(bottom=0)
    top.legend(fontsize=9)
    bottom.set_title(f"how many of the top {share} each layer holds", fontsize=9)
    bottom.set_xlabel("layer")
    bottom.set_ylabel("top neurons in the layer")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    top.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    return common.save_figure(fig, out, dpi)


def summary_lines(results, labels):
    """One printed line per file: what was kept, and the layers holding most of it."""
    lines = []
    for (values, per_layer, n), label in zip(results, labels):
        if len(values) == 0:
            lines.append(f"{label}: no neuron fired")
            continue
        busiest = ", ".join(f"{layer} ({per_layer[layer]:,})" for layer in np.argsort(-per_layer, kind="stable")[:3])
        lines.append(f"{label}: {len(values):,} of {n:,} neurons kept, counts {values[0]:,} down to {values[-1]:,}; "
                     f"most in layers {busiest}")
    return lines


def build_parser():
    p = common.argument_parser(__doc__)
    p.add_argument("--files", nargs="+", default=FILES, metavar="PATH",
                   help=f"index files or glob patterns, one line each (default: {' '.join(FILES)})")
    p.add_argument("--select-proportion", type=common.proportion, default=SELECT_PROPORTION, metavar="P",
                   help=f"keep the top P of all neurons, 0 < P <= 1 (default {SELECT_PROPORTION})")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"folder for the PNG (default {OUT_DIR})")
    p.add_argument("--name", default=NAME, help="the PNG's name without .png (default: <FILE>-peak-<MODEL> of the "
                   "first file, plus -and-N-more with several files)")
    common.add_image_flags(p, WIDTH, HEIGHT, DPI)
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with common.user_errors("peak_analysis.py"):
        paths = common.expand(args.files, "index")
        runs = [common.run_of(p, "index") for p in paths]
        labels = common.labels(runs)
        results = [peaks(read_index(p), args.select_proportion)
                   for p in tqdm(paths, desc="reading index files", unit="file", disable=len(paths) < 2)]
        print("\n".join(summary_lines(results, labels)))
        name = args.name or (runs[0].out_name("peak") if runs[0].model else f"{runs[0].file}-peak")
        if not args.name and len(paths) > 1:
            name += f"-and-{len(paths) - 1}-more"
        out = draw(results, labels, f"{args.out_dir}/{name}.png", args.select_proportion, None, args.width,
                   args.height, args.dpi)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
