"""The files of a run, read and written in one place (formats of the paper's scripts; docs/formats.md).

Their names (pim/runs/names.py: run_paths writes them, split_name reads them):

    <FILE>-result-<MODEL>.txt     one line per prompt: the continuation, newlines escaped as the 2 chars \\n
    <FILE>-ratio-<MODEL>.jsonl    one row per counted step: {"0": [eq_zero, le_zero], "1": ...}
    <FILE>-index-<MODEL>.jsonl    {"0": [count_neuron_0, ...], ...}; several rows are summed on reading
    <FILE>-manifest-<MODEL>.json  how the run was made
    <FILE>-progress-<MODEL>.npz   while a run is going: what is committed (removed when it finishes)

The patched transformers writes the same ratio and index bytes in its `activate_file` mode
(transformers/activation_recorder.py); tests/test_recorder.py checks that the two agree.
"""
import hashlib
import json
import os
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np


class FormatError(ValueError):
    """A file that does not hold what its name says; the message names the file and line."""


def split_lines(text):
    """The lines of a text by the files' rule: \\n, \\r\\n and \\r break lines; nothing else does (not \\v,
    \\x85 or \\u2028, which str.splitlines() would break at)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def line_breaks(raw):
    """The line ends in bytes by the files' rule (\\n, \\r\\n and \\r each one): a byte's line is this of
    the bytes before it, plus 1."""
    return raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")


def escape_newlines(text):
    """One line of a prompt or result file: line breaks (\\n, \\r\\n, \\r) become the two characters \\n."""
    return "\\n".join(split_lines(text))


def unescape_newlines(line):
    return line.replace("\\n", "\n")


MAX_LINE_BYTES = 1_000_000  # a longer line of a prompt or text file is an error: not a prompt


def read_input_lines(path, what="prompt", hint="write one per line there"):
    """The lines of a prompt or text file (one per line, a literal \\n is a newline, stripped), read whole.

    A missing file, bad UTF-8, a line over MAX_LINE_BYTES, an empty line or an empty file is a FormatError
    naming the file and line. CRLF and CR line ends count as line ends."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file. {hint[0].upper() + hint[1:]} (a literal \\n stands for a newline).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = line_breaks(raw[:e.start]) + 1
        raise FormatError(f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#04x}); convert the file to UTF-8") from None
    lines = split_lines(text)
    if lines[-1] == "":
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_BYTES // 4 and len(line.encode()) > MAX_LINE_BYTES:
            raise FormatError(f"{path}:{number}: a line of {len(line.encode()):,} bytes (more than "
                              f"{MAX_LINE_BYTES:,}): not a {what}; is this the right file?")
        item = unescape_newlines(line).strip()
        if not item:
            raise FormatError(f"{path}:{number}: empty line; every line must hold one {what}")
        out.append(item)
    if not out:
        raise FormatError(f"{path}: no {what}s")
    return out


def ratio_lines(zero_counts, width):
    """Ratio rows for int counts [rows, layers, 2] (== 0, <= 0) of `width` neurons; one line per row."""
    shares = np.asarray(zero_counts, dtype=np.int64) / width
    return "".join(json.dumps({str(layer): pair for layer, pair in enumerate(row)}) + "\n"
                   for row in shares.tolist())


def index_line(counts):
    """The one-row index file for int counts [layers, width]."""
    return json.dumps({str(layer): row for layer, row in enumerate(np.asarray(counts).tolist())}) + "\n"


def sha256_file(path, block=1 << 24, progress=None):
    """The sha256 of a file, read in blocks (model weights, GGUF files, wheels); `progress(n)` is called
    with the size of each block read (e.g. a tqdm bar's update)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def write_atomic(path, text):
    """Write a whole file so that a crash leaves either the old file or the new one, never a part: into
    its temporary (temp_path), removed again when writing fails (a full disk), then renamed."""
    path = Path(path)
    with writing_temp(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npz_atomic(path, **arrays):
    """np.savez of `arrays` into `path` as write_atomic writes text: durable on return, and a crash leaves
    either the old file or the new one (a run's progress file)."""
    path = Path(path)
    with writing_temp(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def temp_path(path):
    """The hidden temporary a file is written to before it is renamed over `path`: .<name>.<pid>.tmp beside
    it. The pid tells a later start of the same run whether the writer of a leftover is gone
    (remove_stale_temps)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def writing_temp(path):
    """temp_path(path), removed when the block fails (a full disk, an error, Ctrl-C): nothing is left."""
    tmp = temp_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(paths):
    """Remove the temporaries of these files (temp_path) that a killed process left: those of a pid that no
    longer runs or of this process (call it holding the run's lock, before writing), and those of the names
    of older versions (.<name>.tmp, .<name>.merging.tmp). A live process's are kept. Returns what was removed."""
    removed = []
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        stem = f".{path.name}."
        for tmp in [path.with_name(f"{stem}tmp"), *path.parent.glob(f"{glob_escape(stem)}*.tmp")]:
            middle = tmp.name[len(stem):-len(".tmp")] if tmp.name != f"{stem}tmp" else ""
            stale = middle in ("", "merging") or (middle.isdigit() and (int(middle) == os.getpid()
                                                                     or not process_alive(int(middle))))
            if stale and tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def glob_escape(text):
    """text with glob's special characters ([, *, ?) matched as themselves."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in text)


def process_alive(pid):
    """Whether a process of this pid runs on this machine (this one does; another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_KEYS = {}  # number of layers -> ["0", "1", ...]: built once, compared with every row
_LIST = {list}


def _layer_rows(path):
    """Yield (line number, [per-layer values]) of a JSONL file whose rows map "0".."L-1" to lists."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.isspace():
                raise FormatError(f"{path}:{number}: empty line")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{number}: not JSON ({e.msg})") from None
            except UnicodeDecodeError:
                raise FormatError(f"{path}:{number}: not JSON (not UTF-8 text)") from None
            if not isinstance(row, dict):
                raise FormatError(f"{path}:{number}: expected an object with keys \"0\", \"1\", ... in order")
            keys = _KEYS.get(len(row)) or _KEYS.setdefault(len(row), [str(i) for i in range(len(row))])
            if list(row) != keys:
                at = next(i for i, (key, want) in enumerate(zip(row, keys)) if key != want)
                raise FormatError(f"{path}:{number}: expected an object with keys \"0\", \"1\", ... in order; "
                                  f"key number {at + 1} is {list(row)[at]!r}, not {keys[at]!r}")
            yield number, list(row.values())


def read_index(path):
    """int64 [layers, width]: the per-neuron counts, summed over the rows of the file."""
    total = None
    for number, values in _layer_rows(path):
        try:
            counts = np.asarray(values)
        except (TypeError, ValueError):
            counts = None
        if counts is not None and counts.dtype.kind == "f" and np.all(np.abs(counts) < 2 ** 63) \
                and np.all(np.mod(counts, 1) == 0):  # NaN and inf fail the first test
            counts = counts.astype(np.int64)  # 3.0 is a count, 2.5 is not
        if counts is None or counts.ndim != 2 or counts.dtype.kind not in "iu":
            raise FormatError(f"{path}:{number}: counts must be integers, one list per layer of equal length")
        counts = counts.astype(np.int64, copy=False)
        if counts.size and counts.min() < 0:
            layer, neuron = (int(i[0]) for i in np.nonzero(counts == counts.min()))
            raise FormatError(f"{path}:{number}: layer {layer}, neuron {neuron}: a negative count ({counts.min()}); "
                              "counts are numbers of tokens or steps: the file is damaged or not an index file")
        if total is not None and counts.shape != total.shape:
            raise FormatError(f"{path}:{number}: {counts.shape[0]} layers x {counts.shape[1]} neurons, "
                              f"but earlier rows have {total.shape[0]} x {total.shape[1]}")
        total = counts if total is None else total + counts
    if total is None:
        raise FormatError(f"{path}: empty file")
    return total


def read_ratio(path):
    """float64 [rows, layers, 2]: per counted step and layer the shares (== 0, <= 0).

    200,000 rows x 70 layers take a few seconds and little more memory than the result: the values
    of a few thousand rows at a time are gathered in a flat list and converted to numpy at once.
    """
    blocks, flat, first, layers = [], [], 1, None  # first: the line number of flat's first row
    for number, values in _layer_rows(path):
        if layers is None:
            layers, pairs = len(values), [2] * len(values)
            if not layers:
                raise FormatError(f"{path}:{number}: no layers")
        elif len(values) != layers:
            raise FormatError(f"{path}:{number}: {len(values)} layers, but line 1 has {layers}")
        if set(map(type, values)) != _LIST or list(map(len, values)) != pairs:
            raise FormatError(f"{path}:{number}: each layer must hold [eq_zero, le_zero]")
        flat.extend(chain.from_iterable(values))
        if len(flat) >= _BLOCK_VALUES:
            blocks.append(_ratio_block(path, flat, first, layers))
            flat, first = [], number + 1
    if layers is None:
        raise FormatError(f"{path}: empty file")
    if flat:
        blocks.append(_ratio_block(path, flat, first, layers))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


_BLOCK_VALUES = 1 << 19  # read_ratio converts about this many values to numpy at once


def _ratio_block(path, flat, first, layers):
    """float64 [rows, layers, 2] of the flat values of consecutive rows, the first on line `first`."""
    try:
        block = np.array(flat)
    except (TypeError, ValueError):
        block = None
    if block is None or block.dtype.kind not in "fiub":  # a string, null, list... where a number belongs
        for i, value in enumerate(flat):
            if type(value) not in (float, int, bool):
                raise FormatError(f"{path}:{first + i // (2 * layers)}: each layer must hold [eq_zero, le_zero] "
                                  f"as numbers, not {json.dumps(value)}")
        block = np.array(flat, dtype=np.float64)
    block = block.astype(np.float64, copy=False)
    if not (block.min() >= 0 and block.max() <= 1):  # a NaN fails both
        _refuse_share(path, block, first, layers)
    return block.reshape(-1, layers, 2)


def _refuse_share(path, flat, first, layers):
    """The FormatError of the first value of `flat` (a block of rows from line `first`) outside [0, 1]."""
    at = int(np.argmax(~((flat >= 0) & (flat <= 1))))
    row, rest = divmod(at, 2 * layers)
    raise FormatError(f"{path}:{first + row}: layer {rest // 2}: {('eq_zero', 'le_zero')[rest % 2]} is "
                      f"{float(flat[at])!r}, not a share in [0, 1]: the file is damaged or not a ratio file")


def read_results(path):
    """The continuations of a result file, newlines restored."""
    with open(path, encoding="utf-8") as f:
        return [unescape_newlines(line.rstrip("\n")) for line in f]
