"""Draw everything for the runs in results/ (`make plots`): per run and per comparison of conditions.

Per run (results/<FILE>-index-<MODEL>.jsonl, with its <FILE>-ratio-<MODEL>.jsonl):
  figures/<FILE>-heatmap-<MODEL>.png, figures/<FILE>-peak-<MODEL>.png, tables/<FILE>-ratio-<MODEL>.{csv,md}
Per test set and model with two conditions or more (direct, PiM-1, PiM-3, ...; pim/data/conditions.py):
  tables/compare-<test set>-<MODEL>.md, the report (compare_conditions.py), with its .csv and figures,
  and tables/compare-<test set>-<MODEL>-ratio.{csv,md}, the ratio tables side by side.
With --files (make plots FILES="a b c") only those FILE names are drawn, and they are compared with
each other per model, in the order given, whatever their test sets.

    python analysis/plot_all.py
    python analysis/plot_all.py --files wmt22-deu2eng wmt22-GPT4-deu_spa_rus_fra2eng --models bloom-7b1
"""
from pathlib import Path

from tqdm import tqdm

from pim import cli
from pim.activation_files import FormatError
from pim.runs.corpus_files import is_corpus_run
from pim.runs.names import comparison_groups, find_runs, finished_runs, labels
from pim.stats.comparison import report
from pim.stats.heatmap import draw as draw_heatmap
from pim.stats.heatmap import title_of
from pim.stats.neuron_stats import load
from pim.stats.peaks import draw as draw_peaks
from pim.stats.peaks import peaks
from pim.stats.ratio_table import write_tables
from pim.tables import percent, text_table

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # where the runs are; figures/ and tables/ are written inside it
FILES = []  # FILE names to draw and compare, in order; []: every run, compared per test set and model
MODELS = []  # models to draw; []: all
SELECT_PROPORTION = 0.2  # the peak plots keep the top 20% of neurons (the paper's select_proportion)
TOP = (0.01, 0.1)  # the comparison's concentration and overlap: the top 1% and 10% of neurons
# -----------------------------------------------------------------------------


def plot_all(results_dir, files=(), models=(), proportion=SELECT_PROPORTION, top=TOP):
    """Draw and write everything; returns the paths written, the comparisons' summary tables, and what
    went wrong (a run or comparison that fails is skipped, the others are still drawn)."""
    results = Path(results_dir)
    if not results.is_dir():
        raise cli.UserError(f"{results}/ does not exist: run `make infer` (or `make demo`) first")
    runs = finished_runs(results, files, models)
    corpus = [r for r in runs if is_corpus_run(r)]  # corpus statistics (make corpus): LAPE's, not these analyses'
    if corpus:
        tqdm.write(f"skipped {len(corpus)} corpus runs (make lape reads them): " + ", ".join(r.file for r in corpus))
        runs = [r for r in runs if not is_corpus_run(r)]
    if not runs:
        raise cli.UserError(f"no finished runs in {results}/ (no <FILE>-index-<MODEL>.jsonl): "
                               "run `make infer` (or `make demo`) first")
    for run in find_runs(results, "ratio", files, models):
        if run.index is None:
            tqdm.write(f"skipped {run.ratio.name}: no index file yet (the run is not finished)")
    groups = comparison_groups(runs, together=bool(files))
    grouped = {id(r) for members in groups.values() for r in members}
    units = [(key, members) for key, members in groups.items()] + [(None, [r]) for r in runs if id(r) not in grouped]
    figures, tables = results / "figures", results / "tables"
    written, summaries, errors, notes = [], {}, [], []
    with tqdm(total=len(runs), desc="runs", unit="run", disable=None) as bar:  # no bar where stderr is no terminal
        for key, members in units:  # a comparison's runs are read once, for their own figures and for it
            data = []
            for run in members:
                bar.set_postfix_str(f"{run.file} · {run.model}")
                try:
                    data.append(load([run], notes=notes)[0])
                    for note in notes:
                        tqdm.write(note)
                    notes.clear()
                    written += draw_run(run, data[-1], figures, tables, proportion)
                except (cli.UserError, FormatError) as e:
                    errors.append(f"{run.file} · {run.model}: {e}")
                bar.update()
            if key is None or len(data) < len(members):
                continue
            name = f"compare-{key[0]}-{key[1]}"
            try:
                paths, summaries[name] = report(members, data, name, tables, figures, proportion, top, heatmaps=False)
            except (cli.UserError, FormatError) as e:
                errors.append(f"{name}: {e}")
                continue
            written += paths
            if all(s is not None for _, s in data):
                written += write_tables([s for _, s in data], labels(members), [r.ratio for r in members], tables,
                                      f"{name}-ratio", True)
    return written, summaries, errors


def draw_run(run, data, figures, tables, proportion):
    counts, summary = data
    label = labels([run])[0]
    steps = summary.steps if summary is not None else None
    written = [draw_heatmap(counts, figures / f"{run.out_name('heatmap')}.png", title_of(run, label), steps=steps),
               draw_peaks([peaks(counts, proportion)], [label], figures / f"{run.out_name('peak')}.png", proportion,
                          f"The top {percent(proportion)} of neurons by activation count · {run.file} · {run.model}",
                          steps=[steps])]
    if summary is not None:
        written += write_tables([summary], [label], [run.ratio], tables, run.out_name("ratio"), True)
    return written


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs; figures/ and tables/ go inside "
                   f"(default {RESULTS_DIR})")
    p.add_argument("--files", nargs="+", default=FILES, metavar="FILE",
                   help="only these FILE names (prompt files, as `make infer FILE=`), compared with each other per "
                        "model in this order, the first the reference (default: every run, compared per test set)")
    p.add_argument("--models", nargs="+", default=MODELS, metavar="MODEL", help="only these models (default: all)")
    p.add_argument("--select-proportion", type=cli.proportion, default=SELECT_PROPORTION, metavar="P",
                   help=f"the peak plots keep the top P of neurons, 0 < P <= 1 (default {SELECT_PROPORTION})")
    p.add_argument("--top", type=cli.proportion, nargs="+", default=list(TOP), metavar="P",
                   help=f"the comparisons' concentration and overlap on the top P of neurons "
                        f"(default {' '.join(map(str, TOP))})")
    return p


@cli.user_errors("plot_all.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    written, summaries, errors = plot_all(args.results_dir, args.files, args.models, args.select_proportion,
                                          tuple(args.top))
    for name, (header, rows) in summaries.items():
        print(f"\n{name}:\n" + text_table(header, rows, left=2))
    print(f"wrote {len(written)} files under {args.results_dir}/figures and {args.results_dir}/tables")
    for name in summaries:
        print(f"  comparison: {args.results_dir}/tables/{name}.md")
    if len(errors) == 1:
        raise cli.UserError(f"could not draw {errors[0]}")
    if errors:
        raise cli.UserError(f"{len(errors)} could not be drawn:\n  " + "\n  ".join(errors))


if __name__ == "__main__":
    main()
