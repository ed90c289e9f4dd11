"""The perplexity matrix of `make ppl` (docs/lape.md): its CSV, written by scripts/perplexity.py and read by the
report, the ratios perplexity off / as is, and the cells as the Markdown table, the figure and the report show
them. Rows: none (as is) and each deactivated language; columns: the evaluated languages."""
from dataclasses import dataclass

from pim.activation_files import FormatError
from pim.tables import read_csv

HEADER = ["deactivated", "evaluated", "tokens", "mean NLL", "perplexity", "change", "ratio"]


@dataclass
class Perplexity:
    languages: list  # evaluated, in the table's order
    base: dict  # {evaluated: perplexity as is}
    off: dict  # {deactivated: {evaluated: perplexity with its neurons off}}
    tokens: dict  # {evaluated: scored tokens}


def ratio_matrix(table):
    """[[perplexity with D off / as is]], rows D (deactivated), columns E (evaluated); None where not measured."""
    return [[None if table.off[d].get(e) is None else table.off[d][e] / table.base[e] for e in table.languages]
            for d in table.off]


def times(ratio):
    """A ratio as the figure and the tables write it: ×0.97, ×4.15, ×13, ×1,030."""
    return f"×{ratio:,.0f}" if ratio >= 10 else f"×{ratio:.2f}"


def shown_rows(table):
    """The matrix as the Markdown table and the report show it: the perplexity, the ratio in brackets."""
    rows = [["none"] + [f"{table.base[e]:.4f}" for e in table.languages]]
    for d, ratios in zip(table.off, ratio_matrix(table)):
        rows.append([d] + ["–" if r is None else f"{table.off[d][e]:.4f} ({times(r)})"
                           for e, r in zip(table.languages, ratios)])
    return rows


def csv_rows(table, nll):
    """The CSV's rows (HEADER); nll: {(deactivated or 'none', evaluated): mean negative log-likelihood}."""
    rows = [["none", e, table.tokens[e], repr(nll["none", e]), repr(table.base[e]), repr(0.0), repr(1.0)]
            for e in table.languages]
    for d in table.off:
        for e in table.languages:
            ppl = table.off[d][e]
            rows.append([d, e, table.tokens[e], repr(nll[d, e]), repr(ppl), repr(ppl - table.base[e]),
                         repr(ppl / table.base[e])])
    return rows


def read_perplexity(path):
    """The Perplexity of results/tables/<MODEL>-perplexity.csv; a FormatError naming the file and line."""
    header, rows = read_csv(path)
    if header[:6] != HEADER[:6]:
        raise FormatError(f"{path}: not a perplexity table (header {','.join(header)})")
    table = Perplexity([], {}, {}, {})
    for number, row in enumerate(rows, start=2):
        try:
            off, lang, tokens, ppl = row[0], row[1], int(row[2]), float(row[4])
        except (IndexError, ValueError):
            raise FormatError(f"{path}:{number}: not a row of a perplexity table") from None
        if off == "none":
            table.languages.append(lang)
            table.base[lang], table.tokens[lang] = ppl, tokens
        else:
            table.off.setdefault(off, {})[lang] = ppl
    return table
