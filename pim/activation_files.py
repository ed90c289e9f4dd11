"""The files of a run, read and written in one place (formats of the paper's scripts; docs/design.md).

    <FILE>-result-<MODEL>.txt     one line per prompt: the continuation, newlines escaped as the 2 chars \\n
    <FILE>-ratio-<MODEL>.jsonl    one row per counted step: {"0": [eq_zero, le_zero], "1": ...}
    <FILE>-index-<MODEL>.jsonl    {"0": [count_neuron_0, ...], ...}; several rows are summed on reading
    <FILE>-manifest-<MODEL>.json  how the run was made
    <FILE>-progress-<MODEL>.npz   while a run is going: what is committed (removed when it finishes)

The patched transformers writes the same ratio and index bytes in its `activate_file` mode
(transformers/activation_recorder.py); tests/test_recorder.py checks that the two agree.
"""
import json
import os
from pathlib import Path

import numpy as np


class FormatError(ValueError):
    """A file that does not hold what its name says; the message names the file and line."""


def run_paths(results_dir, file, model):
    """{kind: Path} of the files of one run of `model` on data/<file>.txt."""
    return {kind: Path(results_dir) / f"{file}-{kind}-{model}.{ext}"
            for kind, ext in (("result", "txt"), ("ratio", "jsonl"), ("index", "jsonl"), ("manifest", "json"),
                              ("progress", "npz"))}


def escape_newlines(text):
    """One line of a prompt or result file: line breaks (\\n, \\r\\n, \\r) become the two characters \\n."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def unescape_newlines(line):
    return line.replace("\\n", "\n")


def ratio_lines(zero_counts, width):
    """Ratio rows for int counts [rows, layers, 2] (== 0, <= 0) of `width` neurons; one line per row."""
    shares = np.asarray(zero_counts, dtype=np.int64) / width
    return "".join(json.dumps({str(layer): pair for layer, pair in enumerate(row)}) + "\n"
                   for row in shares.tolist())


def index_line(counts):
    """The one-row index file for int counts [layers, width]."""
    return json.dumps({str(layer): row for layer, row in enumerate(np.asarray(counts).tolist())}) + "\n"


def write_atomic(path, text):
    """Write a whole file so that a crash leaves either the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _layer_rows(path):
    """Yield (line number, [per-layer values]) of a JSONL file whose rows map "0".."L-1" to lists."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                raise FormatError(f"{path}:{number}: empty line")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or list(row) != [str(i) for i in range(len(row))]:
                raise FormatError(f"{path}:{number}: expected an object with keys \"0\", \"1\", ... in order")
            yield number, list(row.values())


def read_index(path):
    """int64 [layers, width]: the per-neuron counts, summed over the rows of the file."""
    total = None
    for number, values in _layer_rows(path):
        try:
            counts = np.asarray(values, dtype=np.int64)
        except (TypeError, ValueError):
            raise FormatError(f"{path}:{number}: counts must be integers, one list per layer of equal length") from None
        if counts.ndim != 2:
            raise FormatError(f"{path}:{number}: counts must be integers, one list per layer of equal length")
        if total is not None and counts.shape != total.shape:
            raise FormatError(f"{path}:{number}: {counts.shape[0]} layers x {counts.shape[1]} neurons, "
                              f"but earlier rows have {total.shape[0]} x {total.shape[1]}")
        total = counts if total is None else total + counts
    if total is None:
        raise FormatError(f"{path}: empty file")
    return total


def read_ratio(path):
    """float64 [rows, layers, 2]: per counted step and layer the shares (== 0, <= 0)."""
    rows = []
    for number, values in _layer_rows(path):
        if rows and len(values) != len(rows[0]):
            raise FormatError(f"{path}:{number}: {len(values)} layers, but line 1 has {len(rows[0])}")
        if not all(isinstance(v, list) and len(v) == 2 for v in values):
            raise FormatError(f"{path}:{number}: each layer must hold [eq_zero, le_zero]")
        rows.append(values)
    if not rows:
        raise FormatError(f"{path}: empty file")
    return np.asarray(rows, dtype=np.float64)


def read_results(path):
    """The continuations of a result file, newlines restored."""
    with open(path, encoding="utf-8") as f:
        return [unescape_newlines(line.rstrip("\n")) for line in f]
