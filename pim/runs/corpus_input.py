"""The input of a corpus run, read as it is processed: memory does not grow with the file.

FILE names data/<FILE>.txt, .txt.gz, .jsonl or .jsonl.gz (exactly one of them must exist). A .txt line
is one text (a literal \\n is a newline; \\n, \\r\\n and \\r end lines, as in the result files); a .jsonl
line is a JSON object whose "text" field is the text. Texts are stripped; an empty one is skipped and
counted (the manifest's `empty_lines`). Lines are numbered from 0 in the code and from 1 in messages.

`scan` reads the whole file once before a model is loaded: it counts the lines, computes the sha256 of
the file's bytes (compressed ones for .gz) and refuses bad UTF-8, bad JSON or a missing "text" field,
naming the file and line, so that a run never fails hours in. `texts` then yields the texts of a range
of lines, and `token_windows` their token ids in windows of lines, for length-sorted batches.
"""
import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import line_breaks, split_lines, unescape_newlines
from pim.cli import UserError

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")  # the forms of data/<FILE>.*, in the order looked for
TEXT_FIELD = "text"  # a JSONL line's text
TOKENIZE_AT_ONCE = 64  # texts tokenized per tokenizer call (their full token lists exist only until cut)
READ_BLOCK = 1 << 20  # bytes read at a time (decompressed for .gz): whole lines of them are decoded together


def find_corpus(data_dir, file):
    """The one input file data/<FILE><suffix>; a UserError when there is none or more than one."""
    found = [Path(data_dir) / f"{file}{s}" for s in SUFFIXES if (Path(data_dir) / f"{file}{s}").is_file()]
    if not found:
        raise UserError(f"{Path(data_dir) / file}.txt: no such file (nor {', '.join(s for s in SUFFIXES[1:])}): "
                        "corpora come from `make data`, or write one text per line there")
    if len(found) > 1:
        raise UserError(f"{file}: several inputs ({', '.join(map(str, found))}): keep one of them")
    return found[0]


class _Hashing:
    """A binary file object that feeds what is read through it into a sha256."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, n=-1):
        data = self.raw.read(n)
        self.sha.update(data)
        return data

    def readinto(self, buffer):
        n = self.raw.readinto(buffer)
        self.sha.update(memoryview(buffer)[:n])
        return n


def _raw_lines(path, sink=None):
    """(line number from 0, decoded line) of a file; `sink` receives the number of bytes read so far."""
    path = Path(path)
    raw = open(path, "rb")
    hashing = _Hashing(raw)
    stream = gzip.GzipFile(fileobj=hashing) if path.name.endswith(".gz") else hashing
    jsonl = ".jsonl" in path.name
    number = 0
    try:
        pending = b""
        while True:
            chunk = stream.read(READ_BLOCK)
            if sink:
                sink(raw.tell(), hashing)
            if not chunk:
                break
            block = pending + chunk
            cut = _last_line_end(block, jsonl)
            pending = block[cut:]
            for line in _decode(block[:cut], path, number, jsonl):
                yield number, line
                number += 1
        for line in _decode(pending, path, number, jsonl) if pending else ():
            yield number, line
            number += 1
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: damaged or truncated ({type(e).__name__}: {e}); fetch or build it again") from None
    finally:
        raw.close()


def _last_line_end(block, jsonl):
    """Where the whole lines of a block end: after its last \\n (.jsonl), or its last \\n or \\r (.txt) but
    not a \\r that ends the block, whose \\n may come with the next one (\\r\\n is one line end)."""
    if jsonl:
        return block.rfind(b"\n") + 1
    return max(block.rfind(b"\n"), block.rfind(b"\r", 0, len(block) - 1)) + 1


def _decode(block, path, first, jsonl):
    """The lines of a block of whole lines: UTF-8 (a bad byte is an error naming the line), split at \\n
    (.jsonl) or at \\n, \\r\\n and \\r (.txt)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        head = block[:e.start]
        line = first + (head.count(b"\n") if jsonl else line_breaks(head)) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte {block[e.start]:#04x}); convert the file to UTF-8") from None
    if first == 0:
        text = text.removeprefix("\ufeff")
    lines = text.split("\n") if jsonl else split_lines(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def text_of(line, path, number):
    """The text of a line: a .txt line unescaped and stripped, a .jsonl line's "text" field stripped."""
    if ".jsonl" not in Path(path).name:
        return unescape_newlines(line).strip()
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise UserError(f"{path}:{number + 1}: not a JSON line ({e}); each line must be an object with a "
                        f"\"{TEXT_FIELD}\" field") from None
    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
        raise UserError(f"{path}:{number + 1}: no \"{TEXT_FIELD}\" string in this JSON line; each line must be an "
                        f"object with a \"{TEXT_FIELD}\" field")
    return record[TEXT_FIELD].strip()


@dataclass
class Scan:
    path: Path
    lines: int  # physical lines
    texts: int  # non-empty texts
    sha256: str  # of the file's bytes


def scan(path, bar=True):
    """Check every line of the file (UTF-8, JSON, a "text" field), count lines and texts, hash the bytes."""
    from tqdm import tqdm

    path = Path(path)
    lines = texts = 0
    state = {}
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"checking {path.name}",
              disable=not bar or path.stat().st_size < 1 << 26, leave=False) as progress:
        def sink(done, hashing):
            progress.update(done - progress.n)
            state["hashing"] = hashing
        for number, line in _raw_lines(path, sink):
            lines += 1
            texts += bool(text_of(line, path, number))
    if not texts:
        raise UserError(f"{path}: no texts (every line is empty)")
    return Scan(path, lines, texts, state["hashing"].sha.hexdigest())


def texts(path, first=0, last=None):
    """(line number, text) of the non-empty texts of lines [first, last), read as they are needed."""
    for number, line in _raw_lines(path):
        if last is not None and number >= last:
            return
        if number >= first:
            text = text_of(line, path, number)
            if text:
                yield number, text


@dataclass
class Window:
    """Lines [start, end) of the input, tokenized: the texts of a run's next batches."""
    start: int
    end: int  # exclusive; where a --max-tokens budget was reached: the line after the last text counted
    rows: list  # (line number, token ids cut to max_length, was cut)
    budget_reached: bool = False


def token_windows(path, tokenizer, max_length, first, last, window, budget=None, spent=0):
    """Windows of `window` lines from line `first` to `last` (exclusive), tokenized as corpus runs tokenize
    (special tokens included, cut to max_length). With a token `budget`: texts are taken in file order
    while fewer than `budget` tokens were counted (`spent` of them before `first`), so that a run stops at
    the same line whatever the batch size; the window that reaches it ends after that text."""
    if budget is not None and spent >= budget:
        return
    source = texts(path, first, last)
    held = next(source, None)
    for start in range(first, last, window):
        end = min(start + window, last)
        chunk = []
        while held is not None and held[0] < end:
            chunk.append(held)
            held = next(source, None)
        rows = []
        for n, row, cut in _cut_ids(tokenizer, chunk, max_length):
            rows.append((n, row, cut))
            spent += len(row)
            if budget is not None and spent >= budget:
                yield Window(start, n + 1, rows, True)
                return
        yield Window(start, end, rows)


def _cut_ids(tokenizer, chunk, max_length, at_once=TOKENIZE_AT_ONCE):
    """(line number, its first max_length token ids, whether it was cut) of (line number, text) pairs,
    tokenized a few at a time and cut at once: long documents never pile up as whole token lists."""
    for first in range(0, len(chunk), at_once):
        part = chunk[first:first + at_once]
        ids = tokenizer([t for _, t in part], add_special_tokens=True, return_attention_mask=False)["input_ids"]
        for (n, _), row in zip(part, ids):
            yield n, row[:max_length], len(row) > max_length
