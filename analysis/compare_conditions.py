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
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm import tqdm

import common
import heatmap
import peak_analysis
import ratio_analysis
from pim.activation_files import read_index
from pim.neuron_stats import concentration, top_overlap

pct = common.percent

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # where the runs are: <FILE>-index-<MODEL>.jsonl and <FILE>-ratio-<MODEL>.jsonl
FILES = ["wmt22-deu2eng", "wmt22-GPT4-deu_spa2eng", "wmt22-GPT4-deu_spa_rus_fra2eng",
         "wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng"]  # conditions, the first the reference: direct, PiM-1/3/6
MODEL = "bloom-7b1"  # the model whose runs are compared
SELECT_PROPORTION = 0.2  # the peak plot keeps the top 20% of neurons (as peak_analysis.py)
TOP = (0.01, 0.1)  # concentration and overlap are measured on the top 1% and the top 10% of neurons
OUT_DIR = None  # the report and its CSV; None: <RESULTS_DIR>/tables
FIGURES_DIR = None  # its figures; None: <RESULTS_DIR>/figures
NAME = None  # None: compare-<test set>-<model>
HEATMAPS = True  # draw each run's heatmap (make plots draws them once, for all runs, and passes False)
# -----------------------------------------------------------------------------


def load(runs):
    """(index counts, ratio Summary or None) per run."""
    return [(read_index(run.index), ratio_analysis.summarize(run.ratio) if run.ratio else None)
            for run in tqdm(runs, desc="reading runs", unit="run", disable=len(runs) < 2)]


def check_shapes(runs, data):
    if len({counts.shape for counts, _ in data}) > 1:
        raise common.UserError("the runs have index files of different shapes (layers x neurons: "
                               + ", ".join(f"{r.file}: {c.shape[0]} x {c.shape[1]}" for r, (c, _) in zip(runs, data))
                               + "); compare runs of one model")


def measures(data, top=TOP):
    """A dict of numbers per run: steps, suppressed, eq_zero, fired, top shares and overlaps."""
    first = data[0][0]
    out = []
    for counts, summary in data:
        m = {"steps": summary.steps if summary else None,
             "le_zero": summary.overall("le_zero") if summary else None,
             "eq_zero": summary.overall("eq_zero") if summary else None,
             "fired": float((counts > 0).mean())}
        for p in top:
            m[f"top{p:g}"] = concentration(counts, p)
            m[f"jaccard{p:g}"] = top_overlap(first, counts, p)
        out.append(m)
    base = out[0]["le_zero"]
    for m in out:
        m["dle_zero"] = None if m["le_zero"] is None or base is None else m["le_zero"] - base
    return out


def summary_table(runs, labels, ms, top=TOP):
    header = ["condition", "FILE", "counted steps", "suppressed", f"Δ vs {labels[0]}", "eq_zero", "fired"]
    header += [f"top {pct(p)} share" for p in top] + [f"top {pct(p)} overlap" for p in top]
    rows = []
    for run, label, m in zip(runs, labels, ms):
        rows.append([label, f"`{run.file}`", "–" if m["steps"] is None else f"{m['steps']:,}",
                     common.fmt(m["le_zero"]), common.fmt(m["dle_zero"], signed=True), common.fmt(m["eq_zero"]),
                     common.fmt(m["fired"])] + [common.fmt(m[f"top{p:g}"]) for p in top]
                    + [common.fmt(m[f"jaccard{p:g}"]) for p in top])
    return header, rows


def reading(labels, ms, top=TOP):
    """One sentence per condition after the first: what changed, in the paper's terms."""
    lines, base, p = [], ms[0], top[0]
    for label, m in zip(labels[1:], ms[1:]):
        parts = []
        if m["dle_zero"] is not None:
            more = "more" if m["dle_zero"] >= 0 else "fewer"
            parts.append(f"suppresses {abs(m['dle_zero']) * 100:.2f} percentage points {more} neurons "
                         f"({m['le_zero']:.2%} vs {base['le_zero']:.2%})")
        a, b = m[f"top{p:g}"], base[f"top{p:g}"]
        if a == a and b == b:
            parts.append(f"its top {pct(p)} of neurons take {a:.2%} of all activations ({b:.2%})")
        j = m[f"jaccard{p:g}"]
        if j == j:
            parts.append(f"the two top-{pct(p)} sets overlap by {j:.2f} (Jaccard)")
        if parts:
            lines.append(f"- **{label}** vs {labels[0]}: " + "; ".join(parts) + ".")
    return lines


def draw_suppressed(summaries, labels, out, title, width_px=1200, height_px=800, dpi=100):
    """Per layer: the suppressed share per condition (top), and its difference from the first (bottom)."""
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    base = summaries[0]
    for s, label, colour in zip(summaries, labels, common.line_colours(len(summaries))):
        if s is None:
            continue
        layers = np.arange(s.layers)
        top.plot(layers, s.means["le_zero"], color=colour, marker="o", markersize=2.5, label=label)
        if base is not None and s is not base and s.layers == base.layers:
            bottom.plot(layers, (s.means["le_zero"] - base.means["le_zero"]) * 100, color=colour, marker="o",
                        markersize=2.5, label=label)
    fig.suptitle(title, fontsize=13)
    top.set_title("suppressed share per layer: neurons with activation <= 0, mean over the counted steps", fontsize=9)
    top.set_ylabel("suppressed share (le_zero)")
    top.legend(fontsize=9)
    bottom.axhline(0, color="0.5", linewidth=1)
    bottom.set_title(f"difference from {labels[0]}", fontsize=9)
    bottom.set_ylabel("percentage points")
    bottom.set_xlabel("layer")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(bottom.lines) > 1:
        bottom.legend(fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return common.save_figure(fig, out, dpi)


def report(runs, data, name, out_dir, figures_dir, proportion=SELECT_PROPORTION, top=TOP, heatmaps=HEATMAPS):
    """Write the figures, <out_dir>/<name>.md and <name>.csv; returns the paths written, and the summary
    table (header, rows)."""
    check_shapes(runs, data)
    labels = common.labels(runs)
    model = runs[0].model
    sets = list(dict.fromkeys(common.test_set_name(r) for r in runs))
    title = f"{' + '.join(sets) if len(sets) < 3 else 'several test sets'} · {model}: " + ", ".join(labels)
    summaries = [s for _, s in data]
    ms = measures(data, top)
    written = []
    figures = Path(figures_dir)
    peak_png = peak_analysis.draw([peak_analysis.peaks(c, proportion) for c, _ in data], labels,
                                  figures / f"{name}-peak.png", proportion, f"Most activated neurons · {title}")
    written.append(peak_png)
    suppressed_png = None
    if any(s is not None for s in summaries):
        suppressed_png = draw_suppressed(summaries, labels, figures / f"{name}-suppressed.png",
                                         f"Suppressed neurons · {title}")
        written.append(suppressed_png)
    heatmap_pngs = []
    for run, label, (counts, _) in zip(runs, labels, data):
        png = figures / f"{run.out_name('heatmap')}.png"
        if heatmaps:
            heatmap.draw(counts, png, heatmap.title_of(run, label))
            written.append(png)
        heatmap_pngs.append(png)

    def link(path):
        return Path(os.path.relpath(path, out_dir)).as_posix()

    header, rows = summary_table(runs, labels, ms, top)
    md = [f"# {labels[0]} vs {', '.join(labels[1:])}: {' + '.join(f'`{s}`' for s in sets)} · `{model}`\n",
          f"Runs of `{model}` in `{runs[0].index.parent}/`, compared with {labels[0]}. The paper found that "
          f"PiM suppresses more neurons than direct input and concentrates activation on fewer of them.\n",
          "- **suppressed**: the share of neurons with activation <= 0 (le_zero), averaged over the counted steps "
          "and the layers; **eq_zero**: the share == 0;",
          "- **fired**: the share of neurons that fired (activation > 0) in at least one step;",
          "- **top k% share**: the part of all activations (the index counts summed over all neurons) that the k% "
          "most activated neurons take: higher is more concentrated;",
          f"- **top k% overlap**: the Jaccard index |A ∩ B| / |A ∪ B| of the top-k% neuron sets of the condition "
          f"and of {labels[0]} (ranked by count, ties by layer, then neuron).\n",
          "## Summary\n", common.markdown_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)), "",
          *reading(labels, ms, top), ""]
    if suppressed_png:
        layer_header, layer_rows = suppressed_per_layer(summaries, labels)
        md += ["## Suppressed share per layer\n", f"![suppressed share per layer]({link(suppressed_png)})\n",
               "<details><summary>the numbers per layer</summary>\n", common.markdown_table(layer_header, layer_rows),
               "</details>\n"]
    md += [f"## The top {pct(proportion)} of neurons\n", f"![peak plot]({link(peak_png)})\n", "## Heatmaps\n"]
    for label, run, png in zip(labels, runs, heatmap_pngs):
        md += [f"### {label} (`{run.file}`)\n", f"![heatmap of {label}]({link(png)})\n"]
    md += ["## Files\n"] + [f"- {label}: `{run.index}`" + (f", `{run.ratio}`" if run.ratio else " (no ratio file)")
                            for label, run in zip(labels, runs)]
    written.append(common.write_text(Path(out_dir) / f"{name}.md", "\n".join(md) + "\n"))
    csv_rows = [[run.file, label, run.model] + ["" if m[k] is None else repr(m[k]) for k in _csv_keys(top)]
                for run, label, m in zip(runs, labels, ms)]
    written.append(common.write_text(Path(out_dir) / f"{name}.csv",
                                     common.csv_text(["file", "condition", "model", *_csv_keys(top)], csv_rows)))
    return written, (header, rows)


def _csv_keys(top):
    return ["steps", "le_zero", "dle_zero", "eq_zero", "fired"] + [f"{k}{p:g}" for k in ("top", "jaccard") for p in top]


def suppressed_per_layer(summaries, labels):
    """(header, rows): per layer le_zero per condition, and each one's difference from the first."""
    have = [(s, label) for s, label in zip(summaries, labels) if s is not None]
    base = summaries[0]
    header = ["layer"] + [label for _, label in have]
    header += [f"Δ {label}" for s, label in have if base is not None and s is not base]
    rows = []
    for layer in range(max(s.layers for s, _ in have)):
        def value(s):
            return float(s.means["le_zero"][layer]) if s is not None and layer < s.layers else None
        row = [str(layer)] + [common.fmt(value(s)) for s, _ in have]
        row += [common.fmt(None if value(s) is None or value(base) is None else value(s) - value(base), signed=True)
                for s, _ in have if base is not None and s is not base]
        rows.append(row)
    return header, rows


def default_name(runs):
    sets = {common.test_set_name(r) for r in runs}
    return f"compare-{sets.pop() if len(sets) == 1 else runs[0].file + '-and-more'}-{runs[0].model}"


def build_parser():
    p = common.argument_parser(__doc__)
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs (default {RESULTS_DIR})")
    p.add_argument("--files", nargs="+", default=FILES, metavar="FILE",
                   help="the conditions (prompt file names, as `make infer FILE=`), the first the reference "
                        f"(default: {' '.join(FILES)})")
    p.add_argument("--model", default=MODEL, help=f"the model whose runs are compared (default {MODEL})")
    p.add_argument("--select-proportion", type=common.proportion, default=SELECT_PROPORTION, metavar="P",
                   help=f"the peak plot keeps the top P of neurons (default {SELECT_PROPORTION})")
    p.add_argument("--top", type=common.proportion, nargs="+", default=list(TOP), metavar="P",
                   help=f"concentration and overlap on the top P of neurons (default {' '.join(map(str, TOP))})")
    p.add_argument("--out-dir", default=OUT_DIR, help="folder of the report (default <results-dir>/tables)")
    p.add_argument("--figures-dir", default=FIGURES_DIR, help="folder of its figures (default <results-dir>/figures)")
    p.add_argument("--name", default=NAME, help="the report's name without .md (default compare-<test set>-<model>)")
    p.add_argument("--no-heatmaps", dest="heatmaps", action="store_false", default=HEATMAPS,
                   help="do not draw the runs' heatmaps (the report links <FILE>-heatmap-<MODEL>.png all the same)")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with common.user_errors("compare_conditions.py"):
        if len(args.files) < 2:
            raise common.UserError("give at least two conditions to compare (--files A B ...)")
        found = {r.file: r for r in common.find_runs(args.results_dir, args.files, [args.model])}
        runs = [found[f] for f in dict.fromkeys(args.files)]
        name = args.name or default_name(runs)
        written, (header, rows) = report(runs, load(runs), name, args.out_dir or f"{args.results_dir}/tables",
                                         args.figures_dir or f"{args.results_dir}/figures", args.select_proportion,
                                         tuple(args.top), args.heatmaps)
        print(common.text_table(header, [[c.strip("`") for c in row] for row in rows], left=2))
        for path in written:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
