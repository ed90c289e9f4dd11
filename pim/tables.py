"""Tables and text files the analyses write: CSV, Markdown, terminal tables, and number formats.

Cells are plain text everywhere; Markdown markup (code spans) is added by `markdown_table(code=...)`
when the table is written, never stored in the cells.
"""
import csv
import io
from pathlib import Path

from pim.activation_files import FormatError, write_atomic


def write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def csv_text(header, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def markdown_table(header, rows, align=None, code=()):
    """A Markdown table; align: one of "l"/"r" per column (default: first left, others right); code: the
    numbers of the columns whose cells are shown as code (`name`)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    body = [[f"`{cell}`" if i in code else str(cell) for i, cell in enumerate(row)] for row in rows]
    lines = [header, rule] + body
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def text_table(header, rows, left=1):
    """A plain table for the terminal, columns padded; the first `left` columns left aligned, the others right."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells) + "\n"


def percent(p):
    """0.2 -> '20%', 0.015 -> '1.5%'."""
    return f"{p * 100:.4g}%"


def fmt(value, digits=4, signed=False):
    """A share for a table: 4 decimals; '–' for missing (NaN or None)."""
    if value is None or value != value:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def read_csv(path):
    """(header, rows) of a CSV table the analyses wrote; a FormatError naming the file where it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FormatError(f"{path}: not a readable CSV table ({e})") from None
    if not rows:
        raise FormatError(f"{path}: empty, no header")
    return rows[0], rows[1:]
