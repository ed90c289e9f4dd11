"""The comparison of conditions: one model's neurons with direct input and with PiM, in one Markdown report.

For runs of one model (e.g. direct, PiM-1, PiM-3, PiM-6 of wmt22-deu2eng) the report <name>.md holds
per condition the suppressed share, eq_zero, the share of neurons that fired, the concentration of
activation on the top neurons and the overlap of the top neurons with the first condition's (the
definitions: docs/measures.md), the peak plot of all conditions, a per-layer plot of the suppressed
share and each run's heatmap; <name>.csv holds the numbers. The first run is the reference.
"""
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pim.figures import line_colours, save_figure
from pim.runs.checks import check_comparable
from pim.runs.names import labels as run_labels
from pim.stats.heatmap import draw as draw_heatmap
from pim.stats.heatmap import title_of
from pim.stats.neuron_stats import concentration, paired_bootstrap, top_overlap
from pim.stats.peaks import draw as draw_peaks
from pim.stats.peaks import peaks
from pim.tables import csv_text, fmt, markdown_table, write_text
from pim.tables import percent as pct

SELECT_PROPORTION = 0.2  # the peak plot keeps the top 20% of neurons (as peak_analysis.py)
TOP = (0.01, 0.1)  # concentration and overlap are measured on the top 1% and the top 10% of neurons
HEATMAPS = True  # draw each run's heatmap (make plots draws them once, for all runs, and passes False)


def check_shapes(runs, data):
    """Refuse runs of different models, or whose index files or ratio files differ in shape."""
    check_comparable(runs, [counts.shape for counts, _ in data], "runs' index files")
    check_comparable(runs, [None if s is None else (s.layers,) for _, s in data], "runs' ratio files")


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
    for m, (_, summary) in zip(out, data):
        m["dle_zero"] = None if m["le_zero"] is None or base is None else m["le_zero"] - base
        paired = paired_bootstrap(data[0][1], summary) if summary is not data[0][1] else None
        m["dle_zero_low"], m["dle_zero_high"], m["prompts_more"], m["prompts"] = paired or (None,) * 4
    return out


def summary_table(runs, labels, ms, top=TOP):
    header = ["condition", "FILE", "counted steps", "suppressed", f"Δ vs {labels[0]}", "Δ 95% CI",
              "prompts more suppressed", "eq_zero", "fired"]
    header += [f"top {pct(p)} share" for p in top] + [f"top {pct(p)} overlap" for p in top]
    rows = []
    for run, label, m in zip(runs, labels, ms):
        rows.append([label, run.file, "–" if m["steps"] is None else f"{m['steps']:,}",
                     fmt(m["le_zero"]), fmt(m["dle_zero"], signed=True), interval(m),
                     "" if m["prompts"] is None else f"{m['prompts_more']}/{m['prompts']}", fmt(m["eq_zero"]),
                     fmt(m["fired"])] + [fmt(m[f"top{p:g}"]) for p in top]
                    + [fmt(m[f"jaccard{p:g}"]) for p in top])
    return header, rows


def interval(m):
    """The paired bootstrap's interval of a Δ as the tables show it: [low, high]; '' for the reference or
    where the runs lack their steps per prompt."""
    if m["dle_zero_low"] is None:
        return ""
    return f"[{fmt(m['dle_zero_low'], signed=True)}, {fmt(m['dle_zero_high'], signed=True)}]"


def reading(labels, ms, top=TOP):
    """One sentence per condition after the first: what changed, in the paper's terms."""
    lines, base, p = [], ms[0], top[0]
    for label, m in zip(labels[1:], ms[1:]):
        parts = []
        if m["dle_zero"] is not None:
            more = "more" if m["dle_zero"] >= 0 else "fewer"
            parts.append(f"suppresses {abs(m['dle_zero']) * 100:.2f} percentage points {more} neurons "
                         f"({m['le_zero']:.2%} vs {base['le_zero']:.2%}"
                         + (f"; 95% CI {m['dle_zero_low'] * 100:+.2f} to {m['dle_zero_high'] * 100:+.2f} points, "
                            f"more suppressed in {m['prompts_more']} of {m['prompts']} prompts"
                            if m["dle_zero_low"] is not None else "") + ")")
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
    for s, label, colour in zip(summaries, labels, line_colours(len(summaries))):
        if s is None:
            continue
        layers = np.arange(s.layers)
        top.plot(layers, s.means["le_zero"] * 100, color=colour, marker="o", markersize=2.5,
                 label=f"{label} ({s.steps:,} counted steps)")
        if base is not None and s is not base and s.layers == base.layers:
            bottom.plot(layers, (s.means["le_zero"] - base.means["le_zero"]) * 100, color=colour, marker="o",
                        markersize=2.5, label=label)
    fig.suptitle(title, fontsize=13)
    top.set_title("suppressed share per layer: neurons with activation <= 0, mean over the counted steps", fontsize=9)
    top.set_ylabel("neurons with activation <= 0 (%)")
    top.legend(fontsize=9)
    bottom.axhline(0, color="0.5", linewidth=1)
    bottom.set_title(f"difference from {labels[0]}: condition minus {labels[0]}", fontsize=9)
    bottom.set_ylabel("percentage points")
    bottom.set_xlabel("layer")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(bottom.lines) > 1:
        bottom.legend(fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return save_figure(fig, out, dpi)


def report(runs, data, name, out_dir, figures_dir, proportion=SELECT_PROPORTION, top=TOP, heatmaps=HEATMAPS):
    """Write the figures, <out_dir>/<name>.md and <name>.csv; returns the paths written, and the summary
    table (header, rows)."""
    check_shapes(runs, data)
    labels = run_labels(runs)
    ms = measures(data, top)
    figures = _draw_figures(runs, labels, data, name, Path(figures_dir), proportion, heatmaps)
    header, rows = summary_table(runs, labels, ms, top)
    md = _markdown(runs, labels, ms, top, (header, rows), figures, [s for _, s in data], proportion, out_dir)
    written = [*figures["written"], write_text(Path(out_dir) / f"{name}.md", md)]
    csv_rows = [[run.file, label, run.model] + ["" if m[k] is None else repr(m[k]) for k in _csv_keys(top)]
                for run, label, m in zip(runs, labels, ms)]
    written.append(write_text(Path(out_dir) / f"{name}.csv",
                              csv_text(["file", "condition", "model", *_csv_keys(top)], csv_rows)))
    return written, (header, rows)


def _title(runs, labels):
    sets = list(dict.fromkeys(r.test_set for r in runs))
    return f"{' + '.join(sets) if len(sets) < 3 else 'several test sets'} · {runs[0].model}: " + ", ".join(labels)


def _draw_figures(runs, labels, data, name, figures, proportion, heatmaps):
    """The peak plot, the suppressed share per layer (where a run has a ratio file) and the heatmaps (drawn
    only with `heatmaps`; their paths are named either way): {"peak", "suppressed", "heatmaps", "written"}."""
    title = _title(runs, labels)
    summaries = [s for _, s in data]
    steps = [s.steps if s is not None else None for s in summaries]
    out = {"peak": draw_peaks([peaks(c, proportion) for c, _ in data], labels, figures / f"{name}-peak.png",
                              proportion, f"Most activated neurons · {title}", steps=steps),
           "suppressed": None, "heatmaps": []}
    out["written"] = [out["peak"]]
    if any(s is not None for s in summaries):
        out["suppressed"] = draw_suppressed(summaries, labels, figures / f"{name}-suppressed.png",
                                            f"Suppressed neurons · {title}")
        out["written"].append(out["suppressed"])
    for run, label, (counts, _), n in zip(runs, labels, data, steps):
        png = figures / f"{run.out_name('heatmap')}.png"
        if heatmaps:
            draw_heatmap(counts, png, title_of(run, label), steps=n)
            out["written"].append(png)
        out["heatmaps"].append(png)
    return out


def _markdown(runs, labels, ms, top, summary, figures, summaries, proportion, out_dir):
    """The text of <name>.md: what the measures are, the summary table, the reading, the figures, the files."""
    model, sets = runs[0].model, list(dict.fromkeys(r.test_set for r in runs))

    def link(path):
        return Path(os.path.relpath(path, out_dir)).as_posix()

    header, rows = summary
    md = [f"# {labels[0]} vs {', '.join(labels[1:])}: {' + '.join(f'`{s}`' for s in sets)} · `{model}`\n",
          f"Runs of `{model}` in `{runs[0].index.parent}/`, compared with {labels[0]}. The paper found that "
          f"PiM suppresses more neurons than direct input and concentrates activation on fewer of them.\n",
          "- **suppressed**: the share of neurons with activation <= 0 (le_zero), averaged over the counted steps "
          "and the layers; **eq_zero**: the share == 0;",
          f"- **Δ 95% CI**: a paired bootstrap over the prompts (2,000 draws of the prompts with replacement, the "
          f"same ones in both runs) of the difference in suppressed share; **prompts more suppressed**: the prompts "
          f"whose own suppressed share (over their steps) is higher than with {labels[0]};",
          "- **fired**: the share of neurons that fired (activation > 0) in at least one step;",
          "- **top k% share**: the part of all activations (the index counts summed over all neurons) that the k% "
          "most activated neurons take: higher is more concentrated;",
          f"- **top k% overlap**: the Jaccard index |A ∩ B| / |A ∪ B| of the top-k% neuron sets of the condition "
          f"and of {labels[0]} (ranked by count, ties by layer, then neuron).\n",
          "## Summary\n", markdown_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2), code={1}), "",
          *reading(labels, ms, top), ""]
    if figures["suppressed"]:
        layer_header, layer_rows = suppressed_per_layer(summaries, labels)
        md += ["## Suppressed share per layer\n", f"![suppressed share per layer]({link(figures['suppressed'])})\n",
               "<details><summary>the numbers per layer</summary>\n", markdown_table(layer_header, layer_rows),
               "</details>\n"]
    md += [f"## The top {pct(proportion)} of neurons\n", f"![peak plot]({link(figures['peak'])})\n", "## Heatmaps\n"]
    for label, run, png in zip(labels, runs, figures["heatmaps"]):
        md += [f"### {label} (`{run.file}`)\n", f"![heatmap of {label}]({link(png)})\n"]
    md += ["## Files\n"] + [f"- {label}: `{run.index}`" + (f", `{run.ratio}`" if run.ratio else " (no ratio file)")
                            for label, run in zip(labels, runs)]
    return "\n".join(md) + "\n"


def _csv_keys(top):
    return ["steps", "le_zero", "dle_zero", "dle_zero_low", "dle_zero_high", "prompts_more", "prompts", "eq_zero",
            "fired"] + [f"{k}{p:g}" for k in ("top", "jaccard") for p in top]


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
        row = [str(layer)] + [fmt(value(s)) for s, _ in have]
        row += [fmt(None if value(s) is None or value(base) is None else value(s) - value(base), signed=True)
                for s, _ in have if base is not None and s is not base]
        rows.append(row)
    return header, rows


def default_name(runs):
    sets = {r.test_set for r in runs}
    return f"compare-{sets.pop() if len(sets) == 1 else runs[0].file + '-and-more'}-{runs[0].model}"
