"""The report's sections on generation runs: PiM vs direct (the comparisons of make plots, computed by
pim/stats/comparison.py's own functions) and each run's heatmap, peak plot and ratio table."""
import html
import re

from pim.activation_files import FormatError
from pim.cli import UserError
from pim.report.charts import COLOURS, figure, line_chart
from pim.report.html import esc, note, table
from pim.runs.names import comparison_groups, labels
from pim.stats import comparison, ratio_table
from pim.stats.neuron_stats import load
from pim.tables import percent

PLOTS_HINT = "run `make plots`"


class Loaded:
    """Each run's (index counts, ratio Summary) read once and checked (pim.stats.neuron_stats.load), or the
    one line saying why it could not be."""

    def __init__(self, progress=None):
        self.data, self.problems = {}, {}
        self.progress = progress

    def __call__(self, run):
        key = (run.file, run.model)
        if key not in self.data and key not in self.problems:
            if self.progress:
                self.progress(f"reading {run.file} · {run.model}")
            try:
                self.data[key] = load([run])[0]
            except (UserError, FormatError, OSError) as e:
                self.problems[key] = str(e)
        return self.data.get(key)

    def problem(self, run):
        return self.problems.get((run.file, run.model))


def bold_markdown(text):
    """The comparison's reading sentences (Markdown with **bold**) as HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def comparisons(runs, loaded, figures_dir):
    """HTML per group of runs compared (one test set and model, direct first, as `make plots` groups them),
    and the number of groups."""
    parts = []
    groups = comparison_groups(runs)
    for (test_set, model), members in groups.items():
        data = [loaded(r) for r in members]
        names = labels(members)
        parts.append(f"<h3>{esc(test_set)} · {esc(model)}: {esc(', '.join(names))}</h3>")
        broken = [f"{r.file}: {loaded.problem(r)}" for r, d in zip(members, data) if d is None]
        if broken:
            parts.append(note("not compared, a run could not be read: " + "; ".join(broken), "error"))
            continue
        try:
            comparison.check_shapes(members, data)
        except FormatError as e:
            parts.append(note(f"not compared: {e}", "error"))
            continue
        parts.append(comparison_html(members, names, data, figures_dir / f"compare-{test_set}-{model}-peak.png"))
    return "\n".join(parts), len(groups)


def comparison_html(runs, names, data, peak_png):
    ms = comparison.measures(data)
    header, rows = comparison.summary_table(runs, names, ms)
    parts = ["<p><b>suppressed</b>: share of neurons with activation &lt;= 0 (le_zero), mean over the counted steps "
             "and layers; <b>fired</b>: share of neurons active in at least one step; <b>top k% share</b>: the part "
             "of all activations the k% most active neurons take (concentration); <b>top k% overlap</b>: Jaccard "
             f"index of the top-k% neuron sets of the condition and of {esc(names[0])}.</p>",
             table(header, rows),
             "<ul>" + "".join(f"<li>{bold_markdown(line[2:])}</li>" for line in comparison.reading(names, ms)) + "</ul>"]
    summaries = [s for _, s in data]
    if any(s is not None for s in summaries):
        have = [(s, n) for s, n in zip(summaries, names) if s is not None]
        parts.append("<h4>Suppressed share per layer</h4>")
        parts.append(line_chart([s.means["le_zero"].tolist() for s, _ in have], [n for _, n in have],
                                "suppressed share (le_zero)"))
        base = summaries[0]
        others = [(k, s, n) for k, (s, n) in enumerate(have) if base is not None and s is not base
                  and s.layers == base.layers]
        if others:
            parts.append(f"<p>The difference from {esc(names[0])}, in percentage points:</p>")
            parts.append(line_chart([((s.means["le_zero"] - base.means["le_zero"]) * 100).tolist() for _, s, _ in others],
                                    [n for *_, n in others], f"Δ vs {names[0]} (pp)", height=220, zero=True,
                                    colours=[COLOURS[k % len(COLOURS)] for k, *_ in others]))
        layer_header, layer_rows = comparison.suppressed_per_layer(summaries, names)
        parts.append(f"<details><summary>the numbers per layer</summary>{table(layer_header, layer_rows)}</details>")
    parts.append(figure(peak_png, f"the top {percent(comparison.SELECT_PROPORTION)} of neurons of each condition",
                        PLOTS_HINT))
    return "\n".join(parts)


def per_run(runs, loaded, figures_dir):
    """HTML per finished generation run: its heatmap and peak plot (make plots) and its ratio table."""
    parts = []
    for run in runs:
        c = run.condition
        label = c.label + (f" ({', '.join(c.aux)})" if c.aux else "") if c is not None else run.file
        parts.append(f"<h3>{esc(label)} · <code>{esc(run.file)}</code> · {esc(run.model)}</h3>")
        parts.append('<div class="pair">'
                     + figure(figures_dir / f"{run.out_name('heatmap')}.png", "heatmap: activation count per neuron",
                              PLOTS_HINT)
                     + figure(figures_dir / f"{run.out_name('peak')}.png", "peak plot: the most activated neurons",
                              PLOTS_HINT) + "</div>")
        data = loaded(run)
        if data is None:
            parts.append(note(f"not read: {loaded.problem(run)}", "error"))
        elif data[1] is not None:
            header, rows = ratio_table.table([data[1]], [label])
            parts.append("<details><summary>ratio table: per layer the shares == 0, &lt; 0, &lt;= 0</summary>"
                         + table(header, ratio_table.formatted(header, rows)) + "</details>")
    return "\n".join(parts)
