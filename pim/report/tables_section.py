"""The report's sections built from the tables that make lape, make ppl and make eval wrote: the
language-specific neurons (per layer and language, overlaps), the perplexity matrix, the evaluation scores."""
from pim.activation_files import FormatError
from pim.eval.evaluation import shown_table
from pim.report.charts import figure
from pim.report.html import esc, key_values, note, table
from pim.stats.perplexity_table import shown_rows
from pim.tables import read_csv


def csv_table(path, missing_hint, **options):
    """A table of one of the analyses' CSV files as it is (cells as written), or a note where it is absent."""
    if not path.is_file():
        return note(f"no table {path}: {missing_hint}")
    try:
        header, rows = read_csv(path)
    except FormatError as e:
        return note(str(e), "error")
    return table(header, rows, **options)


def lape_overview(data, tables_dir, figures_dir, neuron_file):
    """What make lape selected: its settings, neurons per language and layer, overlaps, its figure."""
    model = data.get("model", "?")
    kept = len(data.get("kept") or [])
    total = (data.get("layers") or 0) * (data.get("width") or 0)
    settings = data.get("settings") or {}
    facts = [("file", neuron_file), ("kept", f"{kept:,} of {total:,} neurons" if total else f"{kept:,}"),
             ("languages", ", ".join(data.get("languages") or data["neurons"])),
             ("corpus runs", ", ".join(data.get("files") or [])),
             ("counted tokens", ", ".join(f"{k} {v:,}" for k, v in (data.get("tokens") or {}).items())),
             ("top rate", settings.get("top_rate")), ("filter quantile", settings.get("filter_quantile")),
             ("bar quantile", settings.get("bar_quantile")),
             ("filter value", fmt_p(data.get("filter_value"))), ("bar value", fmt_p(data.get("bar_value"))),
             ("model identity", ", ".join(f"{k} {v}" for k, v in (data.get("model_identity") or {}).items()) or None)]
    stem = f"{model}-language-neurons"
    return "\n".join([
        key_values(facts),
        "<h3>Neurons per language and layer</h3>",
        csv_table(tables_dir / f"{stem}.csv", "run `make lape`"),
        "<h3>Neurons shared by two languages</h3>",
        "<p>The diagonal holds each language's own count.</p>",
        csv_table(tables_dir / f"{stem}-overlap.csv", "run `make lape`", sortable=False),
        figure(figures_dir / f"{stem}.png", "language-specific neurons per layer", "run `make lape`")])


def fmt_p(value):
    return None if value is None else f"{value:.4g}"


def perplexity_section(perplexity, path, figures_dir, model):
    """The matrix of make ppl as its Markdown shows it: rows the deactivated language (none: as is),
    columns the evaluated text; the ratio to as is in brackets, a language's own cell bold."""
    langs = perplexity.languages
    rows = shown_rows(perplexity)
    bold = {(i, j) for i, d in enumerate(perplexity.off, start=1) for j, e in enumerate(langs, start=1) if d == e}
    tokens = ", ".join(f"{e} {perplexity.tokens[e]:,}" for e in langs)
    return "\n".join([
        f"<p>Perplexity of each language's corpus (columns) as is and with each language's neurons switched "
        f"off (rows); in brackets the ratio to the perplexity as is. Scored tokens: {esc(tokens)}. From <code>{esc(path)}</code>.</p>",
        table(["deactivated \\ evaluated"] + langs, rows, sortable=False, bold=bold),
        figure(figures_dir / f"{model}-perplexity.png", "change in perplexity", "run `make ppl`")])


def evaluation_section(tables):
    """One table per evaluation CSV (make eval), as its Markdown shows it, with its references and signatures."""
    parts = []
    for path, header, rows in tables:
        if header is None:
            parts.append(note(f"{path}: not a readable table", "error"))
            continue
        first = dict(zip(header, rows[0])) if rows else {}
        parts.append(f"<h3>{esc(first.get('test_set', path.stem))} · {esc(first.get('model', ''))}</h3>")
        shown_header, shown_rows = shown_table(header, rows)
        parts.append(table(shown_header, shown_rows))
        refs = sorted({r[header.index("reference")] for r in rows if "reference" in header and len(r) == len(header)})
        sigs = sorted({s for r in rows if "signatures" in header and len(r) == len(header)
                       for s in r[header.index("signatures")].split(" ") if s})
        extra = ([f"references: {', '.join(refs)}"] if refs else []) + sigs
        parts.append("".join(f"<div><code>{esc(x)}</code></div>" for x in extra)
                     + f"<p>Δ: the difference from direct. From <code>{esc(path)}</code>.</p>")
    return "\n".join(parts)
