"""Checking a run's files against each other and against its manifest: the one place that does it.

Merging (pim/runs/shards.py), the analyses (analysis/, pim/cli.py) and evaluation (pim/eval/evaluation.py) call
`check_run` before they use a run, and `check_comparable` before they put runs side by side. What is
checked (docs/formats.md, "Checks"):

- result lines = the prompts of the manifest (`prompts_done`, else `prompts`);
- ratio rows = the manifest's `counted_steps`;
- the layers of every ratio row = the layers of the index = the manifest's `layers`;
- every index row is as wide in every layer, and as wide as the manifest's `width` where it records one;
- no index count exceeds the manifest's `counted_steps` (corpus runs: `tokens`), where the caller read the index;
- the manifest's `prompt_steps` (counted steps per prompt), where it has them: one count per prompt, adding up
  to `counted_steps`;
- the manifest says `finished` (an index beside a running or merging manifest is no finished run).

Runs without a manifest (the paper's own files: result, ratio and index files only) are checked for
what their files say about each other (ratio and index layers, index widths) and get a note saying so.
A mismatch is a RunMismatch (a FormatError: the callers print it as one line) naming the file.

A file already parsed by the caller is passed in (`ratio=` the array of read_ratio, `index=` the
counts of read_index), so nothing is read twice; a file the caller does not need is only scanned
(`scan_ratio`, `scan_index`: bytes counted in blocks, no JSON parsed), which is fast on big files.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import FormatError
from pim.runs.names import run_paths

BLOCK = 1 << 24  # bytes read at a time by the scans


class RunMismatch(FormatError):
    """A run's files disagree with each other or with the manifest; the message names the file."""


def load_manifest(path):
    """The manifest at path as a dict, None where there is no file; a damaged one is a FormatError."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        said = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a manifest (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not a manifest (not JSON: {e.msg}, line {e.lineno})") from None
    if not isinstance(said, dict):
        raise FormatError(f"{path}: not a manifest (not a JSON object)")
    return said


def count_lines(path):
    """The lines of a text file (a last line without its newline counts), counted in blocks."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


@dataclass
class RatioScan:
    rows: int
    layers: int | None  # of every row, when all rows have as many; None for an empty file


def scan_ratio(path):
    """Rows and layers of a ratio file without parsing it: a row of L layers holds L lists, so the
    file's "[" count must be rows x the first row's layers (a row of another width breaks that)."""
    path = Path(path)
    rows, lists, first, last = 0, 0, 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            if not rows:  # line 1 goes on in this block: its lists are the layers
                first += block.split(b"\n", 1)[0].count(b"[")
            rows += block.count(b"\n")
            lists += block.count(b"[")
            last = block[-1:]
    rows += last != b"\n"
    if rows and (not first or lists != rows * first):
        raise RunMismatch(f"{path}: not every row has the {first} layers of line 1 "
                          f"({lists} layer entries in {rows} rows)")
    return RatioScan(rows, first if rows else None)


def scan_index(path):
    """(layers, width) of an index file without parsing its numbers: per row, the lists ("[") and the
    numbers in each (commas + 1); every row of every layer must be as wide as the first."""
    path = Path(path)
    shape = None
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            pieces = line.split(b"[")[1:]
            widths = {piece.split(b"]", 1)[0].count(b",") + 1 for piece in pieces}
            if not pieces or len(widths) != 1:
                raise RunMismatch(f"{path}:{number}: the layers of the index are not all as wide "
                                  f"({', '.join(map(str, sorted(widths))) or 'no layers'} neurons)")
            row = (len(pieces), widths.pop())
            if shape is not None and row != shape:
                raise RunMismatch(f"{path}:{number}: {row[0]} layers x {row[1]} neurons, "
                                  f"but line 1 has {shape[0]} x {shape[1]}")
            shape = row
    if shape is None:
        raise FormatError(f"{path}: empty file")
    return shape


@dataclass
class Facts:
    """What a run's files say: None for what is not known (a file absent or not looked at)."""
    result_lines: int | None = None
    ratio_rows: int | None = None
    ratio_layers: int | None = None
    index_layers: int | None = None
    index_width: int | None = None
    index_max: int | None = None  # the largest count of the index (only where the caller has read it)


def facts_of(run, ratio=None, index=None, scan=("result", "ratio", "index")):
    """The Facts of a run (pim.runs.names.Run): from the arrays given (ratio: [rows, layers, 2] of read_ratio,
    index: [layers, width] of read_index), else from scans of the files named in `scan`."""
    facts = Facts()
    if run.result is not None and "result" in scan:
        facts.result_lines = count_lines(run.result)
    if ratio is not None:
        facts.ratio_rows, facts.ratio_layers = int(ratio.shape[0]), int(ratio.shape[1])
    elif run.ratio is not None and "ratio" in scan:
        s = scan_ratio(run.ratio)
        facts.ratio_rows, facts.ratio_layers = s.rows, s.layers
    if index is not None:
        facts.index_layers, facts.index_width = int(index.shape[0]), int(index.shape[1])
        facts.index_max = int(index.max()) if index.size else 0
    elif run.index is not None and "index" in scan:
        facts.index_layers, facts.index_width = scan_index(run.index)
    return facts


def manifest_path(run):
    folder = next((p.parent for p in (run.index, run.ratio, run.result) if p is not None), None)
    return run_paths(folder, run.file, run.model)["manifest"] if folder is not None and run.model else None


def verify(facts, manifest, files, where="manifest"):
    """Raise a RunMismatch naming the file where `facts` disagree with each other or with `manifest`
    (a dict or None). files: {"result"|"ratio"|"index": path} for the messages; where: the manifest's name."""
    def number(key):
        value = (manifest or {}).get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    if manifest is not None:
        status = manifest.get("status")
        if status is not None and status != "finished":
            raise RunMismatch(f"{where}: the run is {status}, not finished")
        prompts = number("prompts_done") if number("prompts_done") is not None else number("prompts")
        expect = [("result", facts.result_lines, prompts, "lines", "prompts"),
                  ("ratio", facts.ratio_rows, number("counted_steps"), "rows", "counted steps"),
                  ("ratio", facts.ratio_layers, number("layers"), "layers in every row", "layers"),
                  ("index", facts.index_layers, number("layers"), "layers", "layers"),
                  ("index", facts.index_width, number("width"), "neurons per layer", "neurons per layer")]
        for kind, have, want, unit, their in expect:
            if have is not None and want is not None and have != want:
                raise RunMismatch(f"{files[kind]}: {have} {unit}, but {where} says {want} {their}")
        verify_prompt_steps(manifest.get("prompt_steps"), prompts, number("counted_steps"), where)
        # a neuron fires at most once per counted step (generation) or token (corpus run)
        limit, per = ((number("counted_steps"), "counted steps") if number("counted_steps") is not None
                      else (number("tokens"), "counted tokens"))
        if None not in (facts.index_max, limit) and facts.index_max > limit:
            raise RunMismatch(f"{files['index']}: a neuron fired {facts.index_max} times, but {where} says {limit} "
                              f"{per}: the index is not this run's (copied from another run, or a row duplicated?)")
    if None not in (facts.ratio_layers, facts.index_layers) and facts.ratio_layers != facts.index_layers:
        raise RunMismatch(f"{files['index']}: {facts.index_layers} layers, but the run's ratio file "
                          f"{files['ratio']} has {facts.ratio_layers}")


def verify_prompt_steps(steps, prompts, counted, where):
    """The manifest's counted steps per prompt (absent in older runs) are one count per prompt, and add up
    to its counted steps: the rows of the ratio file that each prompt has."""
    if steps is None:
        return
    if not isinstance(steps, list) or any(type(n) is not int or n < 0 for n in steps):
        raise RunMismatch(f"{where}: prompt_steps is not a list of counted steps per prompt (integers >= 0)")
    if prompts is not None and len(steps) != prompts:
        raise RunMismatch(f"{where}: prompt_steps has {len(steps)} prompts, but the manifest says {prompts}")
    if counted is not None and sum(steps) != counted:
        raise RunMismatch(f"{where}: prompt_steps adds up to {sum(steps)} steps, but the manifest says {counted} "
                          "counted steps")


def check_run(run, ratio=None, index=None, scan=("result", "ratio", "index")):
    """Check a run's files (pim.runs.names.Run) against each other and its manifest; raises RunMismatch or
    FormatError (a damaged manifest) naming the file. ratio, index: arrays the caller has read already;
    scan: which of the other files to scan. Returns a note (str) for a run without a manifest, else None."""
    path = manifest_path(run)
    manifest = load_manifest(path) if path is not None else None
    verify(facts_of(run, ratio, index, scan), manifest,
           {"result": run.result, "ratio": run.ratio, "index": run.index}, str(path))
    if manifest is None:
        name = run.index or run.ratio or run.result
        return (f"note: {Path(name).name} has no manifest ({path.name if path else 'no <FILE>-manifest-<MODEL>.json'}): "
                "checked its files against each other only")
    return None


def check_comparable(runs, shapes, what="runs"):
    """Refuse to compare runs of different models, or of different layer counts or widths.
    runs: pim.runs.names.Run; shapes: per run a tuple (layers,) or (layers, width), None where unknown."""
    models = list(dict.fromkeys(r.model for r in runs if r.model))
    if len(models) > 1:
        raise RunMismatch(f"the {what} are of different models ({', '.join(models)}); compare runs of one model")
    known = [(r, s) for r, s in zip(runs, shapes) if s is not None]
    if len({s for _, s in known}) > 1:
        unit = "layers x neurons" if all(len(s) == 2 for _, s in known) else "layers"
        raise RunMismatch(f"the {what} have different shapes ({unit}: "
                          + ", ".join(f"{r.file}: {' x '.join(map(str, s))}" for r, s in known)
                          + "); compare runs of one model")
