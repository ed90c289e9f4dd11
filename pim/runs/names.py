"""Runs: one model on one prompt file, the names of its files, and finding the runs in a folder.

A run of MODEL on data/<FILE>.txt has the files (docs/formats.md)

    <FILE>-<kind>-<MODEL>.<ext>      kind and ext: KINDS (result .txt, ratio/index .jsonl, manifest .json,
                                     progress .npz); the paper's own ratio files are <FILE>-proportion-<MODEL>.jsonl

run_paths writes these names and split_name reads them back; nothing else takes a name apart.

The rule that parses a name. FILE and MODEL may both contain dashes, and FILE may even contain
"-index-" or "-result-" (MODEL too), so a name can have several places where `-<kind>-` occurs.
Each place with a non-empty FILE and MODEL is a candidate split. The candidate chosen is, in order
of preference: the one the run's manifest names (its "file" and "model" fields); then one whose
partner file exists (the ratio file of an index file, the index file of any other); then one whose
FILE is a condition name (pim/data/conditions.py); and among equals the LAST place, so that MODEL holds
no further `-<kind>-` (a user's FILE name is likelier to contain "-index-" than a model name is).
Without a folder to look in only the last two preferences apply. Before that, a candidate whose MODEL
holds the marker of another kind with the same extension is dropped unless its manifest names it:
notes-index-x-ratio-m.jsonl is the ratio file of (notes-index-x, m), not an index file of (notes, x-ratio-m).
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import write_atomic
from pim.cli import UserError
from pim.data.conditions import parse_condition

KINDS = {"result": "txt", "ratio": "jsonl", "index": "jsonl", "manifest": "json", "progress": "npz"}
PAPER_RATIO = "proportion"  # the paper's infer_activate.py named the ratio file so; read, never written
EXTENSIONS = {**KINDS, PAPER_RATIO: "jsonl"}
# every <kind> a name <FILE>-<kind>-<MODEL> can hold: run files, the paper's ratio files, and the tables and
# figures named by Run.out_name (ratio, heatmap, peak); FILE and MODEL may not have one as a part (name_problem)
NAME_KINDS = (*KINDS, PAPER_RATIO, "heatmap", "peak")


def run_paths(results_dir, file, model):
    """{kind: Path} of the files of one run of `model` on data/<file>.txt."""
    return {kind: Path(results_dir) / f"{file}-{kind}-{model}.{ext}" for kind, ext in KINDS.items()}


def name_problem(file, model, data_dir="data"):
    """None, or the one-line error for a FILE or MODEL that has a kind of NAME_KINDS as a part between dashes
    (case ignored). Such names can collide: FILE x-ratio-y with MODEL m and FILE x with MODEL y-ratio-m both
    write x-ratio-y-ratio-m.jsonl. Without such parts a name splits at exactly one place."""
    for what, name in (("FILE", file), ("MODEL", model)):
        kind = next((part for part in name.split("-") if part.lower() in NAME_KINDS), None)
        if kind is None:
            continue
        fix = (f"rename {Path(data_dir) / f'{file}.txt'}, e.g. to {Path(data_dir) / f'{unreserved(file)}.txt'}"
               if what == "FILE" else f"put the model in a folder of another name, e.g. models/{unreserved(model)}/")
        return (f"{what} {name!r} has {kind!r} as a part, a <kind> of the file names <FILE>-<kind>-<MODEL>.<ext> "
                f"({', '.join(NAME_KINDS)}), so this run's files could be another run's; {fix}")
    return None


def unreserved(name):
    """`name` with the dashes beside a kind of NAME_KINDS made underscores: x-ratio-y -> x_ratio_y."""
    parts = name.split("-")
    out = parts[0]
    for before, part in zip(parts, parts[1:]):
        out += ("_" if {before.lower(), part.lower()} & set(NAME_KINDS) else "-") + part
    return out if len(parts) > 1 else f"{name}_run"


def split_name(name, kind, results_dir=None):
    """(FILE, MODEL) of a file name <FILE>-<kind>-<MODEL>.<ext>, or None if it is not one; the rule is
    the module's docstring. results_dir: the folder the file is in, where manifests and partner files
    decide between several places of `-<kind>-`."""
    infix, ext = f"-{kind}-", "." + EXTENSIONS[kind]
    stem = name[:-len(ext)] if name.endswith(ext) else name
    starts = [i for i in range(len(stem)) if stem.startswith(infix, i) and 0 < i < len(stem) - len(infix)]
    candidates = [(stem[:i], stem[i + len(infix):]) for i in starts]
    others = [f"-{k}-" for k, e in EXTENSIONS.items() if e == EXTENSIONS[kind] and k != kind]

    def said(candidate):  # the run's manifest names this split
        if results_dir is None:
            return False
        manifest = read_manifest(run_paths(results_dir, *candidate)["manifest"]) or {}
        return (manifest.get("file"), manifest.get("model")) == candidate

    # a MODEL holding the marker of another kind of the same extension (notes-index-x-ratio-m.jsonl as an
    # index file) is that other kind's file, unless the manifest says otherwise
    candidates = [c for c in candidates if not any(o in c[1] for o in others) or said(c)]
    if len(candidates) <= 1:
        return candidates[-1] if candidates else None
    partner = "ratio" if kind == "index" else "index"

    def score(candidate):
        has_partner = results_dir is not None and run_paths(results_dir, *candidate)[partner].is_file()
        return (said(candidate), has_partner, parse_condition(candidate[0]) is not None)

    return max(reversed(candidates), key=score)  # max keeps the first best: the last place on ties


# a list of numbers as json.dumps(indent=2) writes it, one number a line: the newlines are outside any string
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]")


def write_manifest(path, manifest):
    """Write a manifest (JSON, indented, UTF-8; a list of numbers on one line) atomically."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(n.strip() for n in m[1].split(",")) + "]", text)
    write_atomic(path, text + "\n")


def read_manifest(path):
    """A manifest as a dict, or None where there is none (or it is not a JSON object)."""
    try:
        said = json.loads(Path(path).read_text()) if Path(path).is_file() else None
    except (OSError, ValueError):
        return None
    return said if isinstance(said, dict) else None


@dataclass
class Run:
    """One model on one prompt file, and those of its files that exist (None where absent)."""
    file: str  # the prompt file's name: data/<file>.txt
    model: str  # "" for a file whose name does not follow the grammar
    index: Path | None = None
    ratio: Path | None = None
    result: Path | None = None

    @property
    def condition(self):
        return parse_condition(self.file)

    @property
    def test_set(self):
        """The name of the test set (wmt22-deu2eng for all its conditions); the FILE name for others."""
        c = self.condition
        return self.file if c is None else c.test_set_name

    def out_name(self, kind):
        """<FILE>-<kind>-<MODEL>, the name of this run's figure or table of that kind."""
        return f"{self.file}-{kind}-{self.model}"


def run_of(path, kind):
    """The Run that a file of `kind` (index, ratio, result) belongs to, from its name, with its other
    files where they exist; a file named otherwise is a run of its own, FILE its name, MODEL empty."""
    path = Path(path)
    for infix in [kind] + ([PAPER_RATIO] if kind == "ratio" else []):
        split = split_name(path.name, infix, path.parent)
        if split:
            return with_files(Run(*split, **{kind: path}), path.parent)
    return Run(path.name.removesuffix("." + KINDS[kind]), "", **{kind: path})


def with_files(run, results_dir):
    """The run with the paths of its index, ratio (or the paper's proportion) and result files that exist."""
    paths = run_paths(results_dir, run.file, run.model)
    paper_ratio = Path(results_dir) / f"{run.file}-{PAPER_RATIO}-{run.model}.jsonl"
    for kind, candidates in (("index", [paths["index"]]), ("ratio", [paths["ratio"], paper_ratio]),
                             ("result", [paths["result"]])):
        if getattr(run, kind) is None:
            setattr(run, kind, next((p for p in candidates if p.is_file()), None))
    return run


def find_runs(results_dir, kind="index", files=(), models=()):
    """The runs in results_dir that have a file of `kind` (index: the finished runs the analyses read;
    result: the generations evaluation scores), restricted to the FILE and MODEL names given, in the
    order of the file names. Hidden files (.name) and files not named by the grammar are left out."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    runs = []
    for path in sorted(results_dir.glob(f"*-{kind}-*.{KINDS[kind]}")):
        if path.name.startswith("."):
            continue
        run = run_of(path, kind)
        if run.model and (not files or run.file in files) and (not models or run.model in models):
            runs.append(run)
    return runs


def missing_names(runs, files=(), models=()):
    """[("FILE" or "MODEL", [names])] of the names asked for that no run has."""
    out = []
    for names, have, what in ((files, {r.file for r in runs}, "FILE"), (models, {r.model for r in runs}, "MODEL")):
        missing = [n for n in names if n not in have]
        if missing:
            out.append((what, missing))
    return out


def condition_order(run):
    """Sort key: by test set, then direct, pivot, PiM-1, PiM-2, ...; files that are no condition last."""
    c = run.condition
    if c is None:
        return (1, (run.file,), 0, 0, run.file)
    rank = 0 if c.kind == "direct" else 1 if c.kind == "pivot" else 1 + len(c.aux)
    return (0, tuple(x or "" for x in c.test_set), rank, c.shots, run.file)


def comparison_groups(runs, together=False):
    """{(name, model): [runs]} of the runs to compare: one group per test set and model, or, with
    together=True (the FILES were named), all runs of a model in the order given."""
    groups = {}
    for run in runs:
        groups.setdefault(run.model if together else (run.test_set, run.model), []).append(run)
    if together:
        named = {}
        for model, members in groups.items():
            sets = {r.test_set for r in members}
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


def finished_runs(results_dir, files=(), models=()):
    """The finished runs in results_dir (those with an index file), sorted by model, then test set and
    condition, or in the order of `files` where given; restricted to the FILE and MODEL names given.
    A name without a run is an error."""
    runs = find_runs(results_dir, "index", files, models)
    for what, missing in missing_names(runs, files, models):
        raise UserError(f"no finished run of {what} {', '.join(missing)} in {results_dir}/ (no "
                        f"{results_dir}/<FILE>-index-<MODEL>.jsonl; run `make infer FILE=.. MODEL=..` first)")
    if files:  # in the order given: the first is the reference of the comparison
        return sorted(runs, key=lambda r: (r.model, list(files).index(r.file)))
    return sorted(runs, key=lambda r: (r.model, condition_order(r)))
