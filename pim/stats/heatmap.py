"""The heatmap of one run: how often each neuron of each layer fired (the paper's HeatMap_anasisly.py).

Layers on the y axis (layer 0 at the bottom), neurons on the x axis, colour = activation count (the
number of counted steps in which the neuron's activation was > 0). A layer has far more neurons than
the image has pixels (BLOOM-176B: 57,344), so adjacent neurons are binned to the plot's width in
pixels and each column shows the mean count of its bin (or the largest: agg="max"); the caption says
how many neurons a bin holds. The colour scale is the paper's by default: linear from the smallest
value shown to the largest (seaborn's default in the paper's script); from_zero=True starts it at 0,
log=True makes it logarithmic; the colour bar's label says which.
"""
import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from pim.cli import UserError
from pim.figures import save_figure
from pim.stats.neuron_stats import binned_means

WIDTH, HEIGHT = 1600, 900  # image size in pixels; neurons are binned to the plot's width in pixels
DPI = 100  # pixels per inch: sets the size of the text relative to the image
CMAP = "hot"  # colour map (the paper's); any matplotlib name, e.g. viridis
LOG = False  # True: logarithmic colour scale
FROM_ZERO = False  # False: linear from the data's minimum to its maximum (the paper's); True: from 0
AGG = "mean"  # a column's colour: the mean count of its neurons, or "max" (shows single hot neurons)

THOUSANDS = StrMethodFormatter("{x:,.0f}")
# the layout, in pixels: margins around the plot, and the colour bar to its right
LEFT, RIGHT, TOP, BOTTOM, BAR, GAP = 80, 140, 80, 100, 20, 20


def plot_width(width_px):
    """Width of the plot area in pixels: the number of bins of neurons."""
    return width_px - LEFT - RIGHT - BAR - GAP


def draw(counts, out, title, width_px=WIDTH, height_px=HEIGHT, dpi=DPI, cmap=CMAP, log=LOG, agg=AGG,
         from_zero=FROM_ZERO, steps=None):
    """Draw counts [layers, width] to the PNG `out` of exactly width_px x height_px pixels; the colour scale
    runs from the smallest to the largest value shown (the paper's), from 0 with from_zero, or is log.
    steps: the run's counted steps, which the subtitle names (the largest count a neuron can have)."""
    layers, width = counts.shape
    if width == 0 or layers == 0:
        raise UserError(f"{title}: the index file holds no neurons")
    plot_px = plot_width(width_px)
    if plot_px < 50 or height_px - TOP - BOTTOM < 50:
        raise UserError(f"an image of {width_px} x {height_px} pixels leaves no room for the plot")
    means, smallest, largest = binned_means(counts, plot_px, agg)
    bins = means.shape[1]
    if largest == 1:
        binning = "Each column is one neuron."
    else:
        size = f"{smallest}" if smallest == largest else f"{smallest} to {largest}"
        binning = (f"Each column is the {'mean' if agg == 'mean' else 'largest'} count of {size} adjacent neurons "
                   f"({width:,} neurons in {bins:,} columns).")

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    w, h = width_px, height_px
    ax = fig.add_axes((LEFT / w, BOTTOM / h, plot_px / w, (h - TOP - BOTTOM) / h))
    bar = fig.add_axes(((LEFT + plot_px + GAP) / w, BOTTOM / h, BAR / w, (h - TOP - BOTTOM) / h))
    colour_map = matplotlib_cmap(cmap)
    if log:
        positive = means[means > 0]
        norm = colors.LogNorm(vmin=positive.min() if positive.size else 1, vmax=max(positive.max(initial=1), 1))
        shown = np.ma.masked_less_equal(means, 0)  # zero: drawn in the colour of the lowest value
        colour_map = colour_map.with_extremes(bad=colour_map(0.0))
    else:  # the paper's scale runs from the data's smallest value to its largest; from_zero: from 0
        low = 0.0 if from_zero else float(means.min())
        norm = colors.Normalize(vmin=low, vmax=max(float(means.max()), low + 1e-12))
        shown = means
    image = ax.imshow(shown, cmap=colour_map, norm=norm, origin="lower", aspect="auto", interpolation="nearest",
                      extent=(0, width, -0.5, layers - 0.5))
    ax.set_xlabel("neuron")
    ax.set_ylabel("layer")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.xaxis.set_major_formatter(THOUSANDS)
    colorbar = fig.colorbar(image, cax=bar)
    if not log:
        colorbar.formatter = THOUSANDS
    of = "" if largest == 1 else f"; {'mean' if agg == 'mean' else 'largest'} of a column's neurons"
    scale = ", log scale" if log else ", scale from 0" if from_zero else ", scale from the smallest to the largest"
    colorbar.set_label("counted steps with activation > 0" + of + scale)
    fig.text(0.5, 1 - 28 / h, title, ha="center", va="center", fontsize=13)
    of_steps = "" if steps is None else f" of the run's {steps:,}"
    fig.text(0.5, 1 - 56 / h, f"{layers} layers x {width:,} neurons: in how many counted steps{of_steps} each "
             f"neuron's activation was > 0", ha="center", va="center", fontsize=10)
    start = "" if log or from_zero or norm.vmin <= 0 else \
        f" The colour scale starts at the smallest value shown, {norm.vmin:,.4g} (black), not at 0."
    fig.text(LEFT / w, 22 / h, binning + " Layer 0 at the bottom." + start, ha="left", va="center", fontsize=10)
    return save_figure(fig, out, dpi)


def matplotlib_cmap(name):
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise UserError(f"no colour map {name!r}; try hot, viridis, magma, inferno") from None


def title_of(run, label=None):
    label = label or (run.condition.label if run.condition else None)
    where = f"{run.file} · {run.model}" if run.model else run.file
    return f"{label}: {where}" if label and label != run.file else where
