"""What the analysis scripts share: finding runs in results/, naming them, writing outputs safely.

A run is one model on one prompt file: results/<FILE>-{result,ratio,index,manifest}-<MODEL>.*
(pim.activation_files.run_paths). The computations themselves live in pim/neuron_stats.py.
"""
import argparse
import csv
import glob
import io
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed, and no GUI toolkit is ever imported

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # pim/, also without `pip install -e .`
from pim.activation_files import FormatError, run_paths, write_atomic  # noqa: E402
from pim.conditions import Condition, parse_condition  # noqa: E402

INDEX_INFIX, RATIO_INFIX = "-index-", "-ratio-"
PAPER_RATIO_INFIX = "-proportion-"  # the paper's infer_activate.py named the ratio file so


class UserError(Exception):
    """Something the user can fix (a missing file, a bad flag value); printed without a traceback."""


@contextmanager
def user_errors(program):
    """Turn user errors into a one-line message on stderr and exit status 1."""
    try:
        yield
    except (UserError, FormatError) as e:
        sys.exit(f"{program}: error: {e}")
    except OSError as e:  # unreadable file, full disk, ...
        sys.exit(f"{program}: error: " + ": ".join(str(x) for x in (e.filename, e.strerror or e) if x))


def argument_parser(doc):
    """A parser whose --help shows the script's docstring (summary, then examples); flags that are
    unknown or abbreviated are errors."""
    return argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc.split("\n", 1)[1], allow_abbrev=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_image_flags(p, width, height, dpi, width_help=""):
    p.add_argument("--width", type=positive_int, default=width, help=f"image width in pixels (default {width})"
                   + width_help)
    p.add_argument("--height", type=positive_int, default=height, help=f"image height in pixels (default {height})")
    p.add_argument("--dpi", type=positive_int, default=dpi, help=f"pixels per inch: larger makes the text larger "
                   f"(default {dpi})")


def proportion(text):
    """argparse type of a proportion in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise ValueError(text)  # argparse says "invalid proportion value"
    return value


def positive_int(text):
    """argparse type of a whole number > 0."""
    value = int(text)  # ValueError: argparse says "invalid positive_int value"
    if value <= 0:
        raise ValueError(text)
    return value


def expand(patterns, what):
    """Existing files named by paths or glob patterns, in order, without repeats."""
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"no file matches {pattern} (run `make infer` first, or pass --files)")
        for path in matches:
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such {what} file (run `make infer` first, or pass --files)")
            if path not in found:
                found.append(path)
    return [Path(p) for p in found]


# --- runs -----------------------------------------------------------------------------------------

@dataclass
class Run:
    file: str  # the prompt file's name: data/<file>.txt
    model: str
    index: Path | None = None
    ratio: Path | None = None

    @property
    def condition(self):
        return parse_condition(self.file)

    def out_name(self, kind):
        """<FILE>-<kind>-<MODEL>, the name of this run's figure or table of that kind."""
        return f"{self.file}-{kind}-{self.model}"


def split_name(name, infix, results_dir=None):
    """(FILE, MODEL) of a file name such as <FILE>-index-<MODEL>.jsonl.

    FILE and MODEL may contain hyphens, and even the infix. Each place the infix occurs gives a
    candidate; a candidate is preferred when its manifest says so, then when the run's other file
    exists, then when FILE is one of the paper's conditions; else the last place (a user's FILE name
    is likelier to contain "-index-" than a model name is).
    """
    stem = name[:-len(".jsonl")] if name.endswith(".jsonl") else name
    starts = [i for i in range(len(stem)) if stem.startswith(infix, i) and 0 < i < len(stem) - len(infix)]
    candidates = [(stem[:i], stem[i + len(infix):]) for i in starts]
    if len(candidates) <= 1 or results_dir is None:
        return candidates[-1] if candidates else None
    other = RATIO_INFIX if infix == INDEX_INFIX else INDEX_INFIX

    def score(candidate):
        file, model = candidate
        manifest = run_paths(results_dir, file, model)["manifest"]
        try:
            said = json.loads(manifest.read_text()) if manifest.is_file() else {}
        except (OSError, ValueError):
            said = {}
        return (isinstance(said, dict) and (said.get("file"), said.get("model")) == candidate,
                (Path(results_dir) / f"{file}{other}{model}.jsonl").is_file(),
                parse_condition(file) is not None)

    return max(reversed(candidates), key=score)  # max keeps the first best: the last place on ties


def run_of(path, kind):
    """The Run that an index or ratio file (kind) belongs to, from its name, with its partner file
    where that exists; a file named otherwise is a run of its own, FILE its name, MODEL empty."""
    path = Path(path)
    infixes = [INDEX_INFIX] if kind == "index" else [RATIO_INFIX, PAPER_RATIO_INFIX]
    for infix in infixes:
        split = split_name(path.name, infix, path.parent)
        if split:
            run = Run(*split, **{kind: path})
            _add_partners(run, path.parent)
            return run
    return Run(path.name.removesuffix(".jsonl"), "", **{kind: path})


def _add_partners(run, results_dir):
    if run.index is None and (path := Path(results_dir) / f"{run.file}{INDEX_INFIX}{run.model}.jsonl").is_file():
        run.index = path
    for infix in (RATIO_INFIX, PAPER_RATIO_INFIX):
        if run.ratio is None and (path := Path(results_dir) / f"{run.file}{infix}{run.model}.jsonl").is_file():
            run.ratio = path


def find_runs(results_dir, files=(), models=()):
    """The finished runs in results_dir (those with an index file), sorted by model, then test set and
    condition, or in the order of `files` where given; restricted to the FILE and MODEL names given.
    A name without a run is an error."""
    runs = []
    for path in sorted(Path(results_dir).glob(f"*{INDEX_INFIX}*.jsonl")):
        run = run_of(path, "index")
        if run.model and (not files or run.file in files) and (not models or run.model in models):
            runs.append(run)
    for names, have, what in ((files, {r.file for r in runs}, "FILE"), (models, {r.model for r in runs}, "MODEL")):
        missing = [n for n in names if n not in have]
        if missing:
            raise UserError(f"no finished run of {what} {', '.join(missing)} in {results_dir}/ (no "
                            f"{results_dir}/<FILE>{INDEX_INFIX}<MODEL>.jsonl; run `make infer FILE=.. MODEL=..` first)")
    if files:  # in the order given: the first is the reference of the comparison
        return sorted(runs, key=lambda r: (r.model, list(files).index(r.file)))
    return sorted(runs, key=lambda r: (r.model, condition_order(r)))


def condition_order(run):
    """Sort key: by test set, then direct, pivot, PiM-1, PiM-2, ...; files that are no condition last."""
    c = run.condition
    if c is None:
        return (1, (run.file,), 0, 0, run.file)
    rank = 0 if c.kind == "direct" else 1 if c.kind == "pivot" else 1 + len(c.aux)
    return (0, tuple(x or "" for x in c.test_set), rank, c.shots, run.file)


def test_set_name(run):
    """wmt22-deu2eng for every condition of that test set; the FILE name for others."""
    c = run.condition
    return run.file if c is None else Condition(task=c.task, source=c.source, target=c.target).name


def comparison_groups(runs, together=False):
    """{(name, model): [runs]} of the runs to compare: one group per test set and model, or, with
    together=True (the FILES were named), all runs of a model in the order given."""
    groups = {}
    for run in runs:
        groups.setdefault(run.model if together else (test_set_name(run), run.model), []).append(run)
    if together:
        named = {}
        for model, members in groups.items():
            sets = {test_set_name(r) for r in members}
            name = sets.pop() if len(sets) == 1 else f"{members[0].file}-and-{len(members) - 1}-more"
            named[(name, model)] = members
        groups = named
    return {key: members for key, members in groups.items() if len(members) > 1}


def labels(runs):
    """A short, unique legend label per run: the condition (direct, PiM-3, ...), else more of the name."""
    def attempt(make):
        names = [make(r) for r in runs]
        return names if len(set(names)) == len(names) else None

    def condition(r):
        c = r.condition
        if c is None:
            return r.file
        extra = f" ({','.join(c.aux)})" if c.aux else ""
        return c.label + extra

    return (attempt(lambda r: r.condition.label if r.condition else r.file) or attempt(condition)
            or attempt(lambda r: r.file) or [f"{r.file} · {r.model}" for r in runs])


def line_colours(n):
    """n distinct line colours: tab10, or tab20 for more than 10 lines."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --- outputs --------------------------------------------------------------------------------------

def save_figure(fig, path, dpi):
    """Write a PNG so that a crash leaves the old file or the new one, never a part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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


def markdown_table(header, rows, align=None):
    """A Markdown table; align: one of "l"/"r" per column (default: first left, others right)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule] + [[str(cell) for cell in row] for row in rows]
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
