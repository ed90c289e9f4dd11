"""Heatmap: how often each neuron of each layer fired, for one index file per figure.

Layers on the y axis (layer 0 at the bottom), neurons on the x axis, colour = activation count (the
number of counted steps in which the neuron's activation was > 0; the paper's HeatMap_anasisly.py).
A layer has far more neurons than the image has pixels (BLOOM-176B: 57,344), so adjacent neurons are
binned to the plot's width in pixels and each column shows the mean count of its bin (or the
largest: --agg max); the caption says how many neurons a bin holds. The colour scale is the paper's,
linear from the smallest count shown to the largest; --from-zero starts it at 0, --log makes it
logarithmic. Written headless as PNG (the drawing: pim/stats/heatmap.py).

    python analysis/heatmap.py --files results/wmt22-deu2eng-index-bloom-7b1.jsonl
    python analysis/heatmap.py --files 'results/*-index-bloom-7b1.jsonl' --log
"""
from tqdm import tqdm

from pim import cli
from pim.activation_files import read_index
from pim.runs.checks import check_run
from pim.runs.names import run_of
from pim.stats.heatmap import AGG, CMAP, DPI, FROM_ZERO, HEIGHT, LOG, WIDTH, draw, plot_width, title_of

# ----------------------------------------------------------------------------- defaults (flags override)
FILES = ["results/*-index-*.jsonl"]  # index files or glob patterns; one figure each
OUT_DIR = "results/figures"  # where <FILE>-heatmap-<MODEL>.png goes
# the image's size, colour map and scale: the defaults of pim/stats/heatmap.py
# -----------------------------------------------------------------------------


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--files", nargs="+", default=FILES, metavar="PATH",
                   help=f"index files or glob patterns, one figure each (default: {' '.join(FILES)})")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"folder for <FILE>-heatmap-<MODEL>.png (default {OUT_DIR})")
    cli.add_image_flags(p, WIDTH, HEIGHT, DPI, f"; the neurons of a layer are binned into at most the plot's "
                        f"width in pixels ({WIDTH - plot_width(WIDTH)} less)")
    p.add_argument("--cmap", default=CMAP, help=f"matplotlib colour map (default {CMAP}, as the paper)")
    p.add_argument("--log", action="store_true", default=LOG, help="logarithmic colour scale (default: linear from "
                   "the smallest count shown to the largest, as the paper)")
    p.add_argument("--from-zero", action="store_true", default=FROM_ZERO,
                   help="linear colour scale from 0 to the largest count (default: from the smallest count)")
    p.add_argument("--agg", choices=("mean", "max"), default=AGG, help="a column's colour: the mean count of its "
                   f"neurons, or the largest, which shows single hot neurons (default {AGG})")
    return p


@cli.user_errors("heatmap.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    paths = cli.expand(args.files, "index")
    for path in tqdm(paths, desc="heatmaps", unit="file", disable=True if len(paths) < 2 else None):
        run = run_of(path, "index")
        name = run.out_name("heatmap") if run.model else f"{run.file}-heatmap"
        counts = read_index(path)
        cli.note(check_run(run, index=counts))  # against its manifest and its other files
        out = draw(counts, f"{args.out_dir}/{name}.png", title_of(run), args.width, args.height,
                   args.dpi, args.cmap, args.log, args.agg, args.from_zero)
        tqdm.write(f"wrote {out}")


if __name__ == "__main__":
    main()
