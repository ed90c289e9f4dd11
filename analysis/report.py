"""One page to open after a run (`make report`): results/report-<MODEL>.html, a self-contained HTML file.

    make report MODEL=gemma-3-270m
    python analysis/report.py --model tiny-bloom --results-dir /tmp/results
    python analysis/report.py                       # one report per model found in results/

Built from the files that make infer, plots, corpus, lape, ppl and eval wrote (results/<FILE>-<kind>-<MODEL>.*,
results/neurons, results/tables, results/figures); it never runs a model. Sections, each where its files
exist: the runs and their provenance, PiM vs direct, heatmaps and peaks per run, language-specific
neurons and each of them with its probabilities, perplexity, evaluation. What is missing is said on the
page. The figures are inside the file (PNG as data URIs), so it opens from disk with no network.
"""
import sys
from pathlib import Path

from pim import cli
from pim.report.build import write_report
from pim.report.neurons import MAX_ENTRIES
from pim.report.sources import models_found

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # the runs; figures/, tables/ and neurons/ inside it
MODELS = []  # the models to report on; []: every model found in RESULTS_DIR
OUT = None  # the page's path (one model only); None: <RESULTS_DIR>/report-<MODEL>.html
MAX_NEURONS = MAX_ENTRIES  # language-specific neurons shown one by one at most (those of lowest LAPE); 0: all
# -----------------------------------------------------------------------------


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs (default {RESULTS_DIR})")
    p.add_argument("--model", "--models", dest="models", nargs="+", default=MODELS, metavar="MODEL",
                   help="the models, as in the runs' names (default: every model found)")
    p.add_argument("--out", default=OUT, help="the page's path, for one model (default <RESULTS_DIR>/report-<MODEL>.html)")
    p.add_argument("--max-neurons", type=int, default=MAX_NEURONS, metavar="N",
                   help=f"show at most N neurons one by one, those of lowest LAPE; 0: all (default {MAX_NEURONS})")
    return p


@cli.user_errors("report.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.max_neurons < 0:
        raise cli.UserError(f"--max-neurons must be 0 (all) or more, not {args.max_neurons}")
    results = Path(args.results_dir)
    found = models_found(results)
    models = args.models or found
    if not models:
        raise cli.UserError(f"no runs, neuron files or perplexity tables in {results}/: run `make infer` (or "
                            "`make demo`) first")
    unknown = [m for m in models if m not in found]
    if unknown:
        raise cli.UserError(f"nothing of {', '.join(unknown)} in {results}/; the models there: "
                            f"{', '.join(found) or 'none'}")
    if args.out and len(models) > 1:
        raise cli.UserError(f"--out names one page, but {len(models)} models are reported on ({', '.join(models)}): "
                            "give one --model")
    for model in models:
        path, seconds, titles = write_report(results, model, args.out, max_neurons=args.max_neurons or None,
                                             progress=lambda line: print(f"  {line}", file=sys.stderr))
        size = path.stat().st_size
        print(f"report of {model}: {path} ({size / 1e6:.1f} MB, {seconds:.1f} s; sections: {', '.join(titles)})")


if __name__ == "__main__":
    main()
