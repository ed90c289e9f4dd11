"""The ratio table of runs: per layer the shares of neurons == 0, < 0 and <= 0 (the paper's Ratio_anasisly.py).

One column group per run (eq_zero, lt_zero, le_zero: means over the counted steps, pim/stats/neuron_stats.py),
and for every run after the first its difference from the first (Δ). Written as CSV (full precision)
and Markdown (4 decimals), and printed.
"""
from pim.tables import csv_text, fmt, markdown_table, text_table, write_text

METRICS = ("eq_zero", "lt_zero", "le_zero")


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
    return [[row[0]] + [fmt(v, signed="Δ" in h) for h, v in zip(header[1:], row[1:])] for row in rows]


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
        print(text_table(legend_header, legend, left=2) + "\n" + text_table(header, shown))
    md = (f"# Ratio analysis: {name}\n\n{what}\n\n" + markdown_table(legend_header, legend, ["l", "l", "r", "r"])
          + "\n" + markdown_table(header, shown))
    csv = csv_text(header, [[row[0]] + ["" if v is None else repr(v) for v in row[1:]] for row in rows])
    return [write_text(f"{out_dir}/{name}.csv", csv), write_text(f"{out_dir}/{name}.md", md)]
