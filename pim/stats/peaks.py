"""The peak analysis of runs: the most often activated neurons, and the layers they are in (the paper's
Peak_anasisly.py; the ranking: pim/neuron_stats.top_neurons).

Top panel: the counts of the kept neurons in rank order. Bottom panel: how many of the kept neurons
each layer holds. One line per run; the legend names the condition.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from pim.figures import line_colours, save_figure
from pim.stats.neuron_stats import top_count, top_neurons
from pim.tables import percent

WIDTH, HEIGHT = 1200, 900  # image size in pixels
DPI = 100  # pixels per inch: sets the size of the text relative to the image
POINTS = 4000  # the top panel draws at most this many points per line (the counts fall monotonically)


def peaks(counts, proportion):
    """(counts of the kept neurons in rank order, per-layer number of kept neurons, neurons in all)."""
    layers, _, values = top_neurons(counts, proportion)
    return values, np.bincount(layers, minlength=counts.shape[0]), counts.size


def draw(results, labels, out, proportion, title=None, width_px=WIDTH, height_px=HEIGHT, dpi=DPI, steps=None):
    """results: a peaks() triple per file; steps: the counted steps of each (None where not known), which the
    legend names: a count is out of them. Writes the PNG `out` of exactly width_px x height_px pixels."""
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    top, bottom = fig.subplots(2, 1)
    sizes = sorted({n for _, _, n in results})
    steps = list(steps) if steps is not None else [None] * len(results)
    for (values, per_layer, n), label, colour, counted in zip(results, labels, line_colours(len(results)), steps):
        kept = f"{len(values):,} of {n:,} neurons" if len(sizes) > 1 else f"{len(values):,} neurons"
        kept += "" if counted is None else f"; of {counted:,} counted steps"
        ranks = np.unique(np.linspace(0, len(values) - 1, min(len(values), POINTS)).astype(np.int64))
        top.plot(ranks + 1, values[ranks], color=colour, linewidth=1.5, label=f"{label} ({kept})")
        bottom.plot(np.arange(len(per_layer)), per_layer, color=colour, linewidth=1.5, marker="o",
                    markersize=2.5, label=label)
    share = percent(proportion)
    of = f"{top_count(sizes[0], proportion):,} of {sizes[0]:,}" if len(sizes) == 1 else "per model"
    fig.suptitle(title or f"The top {share} of neurons by activation count", fontsize=13)
    top.set_title(f"top {share} ({of}) sorted by count; ties by layer, then neuron; neurons that never fired "
                  "left out", fontsize=9)
    top.set_xlabel("rank")
    top.set_ylabel("counted steps with activation > 0")
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
    return save_figure(fig, out, dpi)


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
