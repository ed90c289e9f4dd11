"""The branches of the code that reads inputs which no other test took (issue 27; `make coverage`): a corpus
file's lines and texts (pim/runs/corpus_input.py), prompt, ratio and index files (pim/activation_files.py),
and the scans and manifest checks (pim/runs/checks.py). Each expectation is computed here from the file's
bytes (a whole-file decode, re.split for line ends, json.loads per row), not by the code under test."""
import gzip
import hashlib
import io
import json
import re

import numpy as np
import pytest

from pim import activation_files
from pim.activation_files import FormatError, read_index, read_input_lines, read_ratio
from pim.cli import UserError
from pim.runs import checks
from pim.runs.checks import RunMismatch, load_manifest, scan_index, scan_ratio, verify
from pim.runs.corpus_input import _Hashing, scan, texts, token_windows

CHUNK = 1 << 20  # corpus_input reads this many (decompressed) bytes at a time


def reference_texts(raw, jsonl):
    """[(line number, text)] of a corpus file's bytes, read whole: the independent reading of the format."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    lines = text.split("\n") if jsonl else re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()
    out = []
    for number, line in enumerate(lines):
        value = (json.loads(line)["text"] if line.strip() else "") if jsonl else line.replace("\\n", "\n")
        out.append((number, value.strip()))
    return len(lines), [(n, t) for n, t in out if t]


def big_corpus():
    """A .txt corpus over two read blocks: a BOM first, CRLF, CR and LF line ends, whitespace-only lines,
    an escaped newline, a line across the block boundary that starts with U+FEFF (kept: only the file's first
    character is a BOM), multi-byte characters, and no newline after the last line."""
    head = "\ufeffErste Zeile\r\n   \r\nzweite\\nmit Umbruch\rдритте\n"
    filler, size, i = [], len(head.encode()), 0
    while size < CHUNK - 40:
        filler.append(f"Satz {i} über Größe und Maß{'!' * (i % 7)}" + ("\r\n" if i % 3 else "\n"))
        size += len(filler[-1].encode())
        i += 1
    before = head + "".join(filler)
    straddle = "\ufeffüber die Grenze " + "x" * 100 + "\n"  # starts a few bytes before the boundary
    assert len(before.encode()) < CHUNK < len((before + straddle).encode())
    tail = "".join(f"noch {j}\r" if j % 2 else f"  Zeile {j}  \n" for j in range(50)) + "\t\n" + "letzte ohne Umbruch"
    return (before + straddle + tail).encode("utf-8")


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_a_corpus_over_two_blocks_and_without_a_last_newline_reads_as_the_whole_file(tmp_path, suffix):
    raw = big_corpus()
    path = tmp_path / f"c{suffix}"
    stored = gzip.compress(raw) if suffix.endswith(".gz") else raw
    path.write_bytes(stored)
    lines, expected = reference_texts(raw, jsonl=False)
    found = scan(path, bar=False)
    assert (found.lines, found.texts) == (lines, len(expected))
    assert found.sha256 == hashlib.sha256(stored).hexdigest()  # of the stored (compressed) bytes
    assert list(texts(path)) == expected
    assert expected[-1] == (lines - 1, "letzte ohne Umbruch") and expected[0] == (0, "Erste Zeile")
    assert any(t.startswith("\ufeffüber die Grenze") for _, t in expected)
    # a range of lines [first, last): the texts of exactly those lines
    assert list(texts(path, 2, 5)) == [(n, t) for n, t in expected if 2 <= n < 5]


def test_a_jsonl_corpus_without_a_last_newline_and_with_blank_lines(tmp_path):
    rows = ['{"text": "  eins "}', "   ", '{"text": "zwei\\nZeilen", "id": 3}', "", '{"text": "   "}',
            '{"text": "drei"}']
    raw = ("\n".join(rows)).encode()  # no newline after the last line
    path = tmp_path / "c.jsonl"
    path.write_bytes(raw)
    lines, expected = reference_texts(raw, jsonl=True)
    assert expected == [(0, "eins"), (2, "zwei\nZeilen"), (5, "drei")]
    found = scan(path, bar=False)
    assert (found.lines, found.texts) == (lines, 3) == (6, 3)
    assert list(texts(path)) == expected


def test_bad_json_and_a_corpus_of_blank_lines_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "gut"}\n\n{"text": "kaputt"\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: not a JSON line .*\"text\" field"):
        scan(bad, bar=False)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\\n\n\t\r\n")
    with pytest.raises(UserError, match=r"blank\.txt: no texts \(every line is empty\)"):
        scan(blank, bar=False)


def test_the_hashing_reader_hashes_what_readinto_reads():
    data = bytes(range(256)) * 5
    hashing = _Hashing(io.BytesIO(data))
    buffer = bytearray(1000)
    got = b""
    while n := hashing.readinto(buffer):
        got += bytes(buffer[:n])
    assert got == data and hashing.sha.hexdigest() == hashlib.sha256(data).hexdigest()


class WordTokenizer:
    """A tokenizer of whitespace-separated words: the ids are the word lengths, after a BOS id 0."""

    def __call__(self, batch, add_special_tokens, return_attention_mask):
        assert add_special_tokens and not return_attention_mask
        return {"input_ids": [[0] + [len(w) for w in text.split()] for text in batch]}


def test_a_budget_spent_before_the_first_line_gives_no_window(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b c\nd e\n\nf g h i\n")
    tok = WordTokenizer()
    assert list(token_windows(path, tok, 10, 0, 4, 2, budget=9, spent=9)) == []
    assert list(token_windows(path, tok, 10, 0, 4, 2, budget=9, spent=12)) == []
    # one token short of the budget: the first text (4 tokens) reaches it, its window ends after line 0
    (window,) = token_windows(path, tok, 10, 0, 4, 2, budget=9, spent=8)
    assert (window.start, window.end, window.budget_reached) == (0, 1, True)
    assert window.rows == [(0, [0, 1, 1, 1], False)]


# ----------------------------------------------------------------------------- prompt files
def test_a_prompt_file_without_a_last_newline_and_an_empty_one(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffeins\r\nzwei\\ndrei\rvier ".encode())
    assert read_input_lines(path) == ["eins", "zwei\ndrei", "vier"]
    path.write_bytes(b"")
    with pytest.raises(FormatError, match=r"p\.txt: no prompts"):
        read_input_lines(path)
    with pytest.raises(FormatError, match=r"p\.txt: no texts"):
        read_input_lines(path, what="text")


# ----------------------------------------------------------------------------- ratio files read in blocks
def ratio_row(values):
    return json.dumps({str(i): pair for i, pair in enumerate(values)}) + "\n"


def test_ratio_rows_that_fill_the_blocks_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(activation_files, "_BLOCK_VALUES", 8)  # 2 rows of 2 layers per block
    rows = [[[0.25, 0.5], [0.0, 1.0]], [[0.125, 0.75], [1, 1]], [[0.5, 0.5], [0.0, 0.25]], [[0, 0], [0.5, 1.0]]]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(ratio_row(r) for r in rows))
    got = read_ratio(path)
    assert got.dtype == np.float64 and got.shape == (4, 2, 2)
    assert got.tolist() == [[[float(v) for v in pair] for pair in row] for row in rows]


@pytest.mark.parametrize("bad, shown", [([0.5, [1, 2]], "[1, 2]"), ([0.5, None], "null"), (["0.5", 0.5], '"0.5"')])
def test_a_value_that_is_no_number_names_its_line_in_a_later_block(tmp_path, monkeypatch, bad, shown):
    monkeypatch.setattr(activation_files, "_BLOCK_VALUES", 8)
    rows = [[[0.25, 0.5], [0.0, 1.0]]] * 5 + [[[0.25, 0.5], bad]] + [[[0.0, 0.0], [0.0, 0.0]]]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(ratio_row(r) for r in rows))
    with pytest.raises(FormatError, match=re.escape(f"r.jsonl:6: each layer must hold [eq_zero, le_zero] as numbers, "
                                                    f"not {shown}")):
        read_ratio(path)


def test_an_integer_too_large_for_numpy_is_read_as_its_float_and_refused_as_no_share(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(ratio_row([[10 ** 30, 1], [0, 0.5]]))
    with pytest.raises(FormatError, match=r"r\.jsonl:1: layer 0: eq_zero is 1e\+30, not a share in \[0, 1\]"):
        read_ratio(path)


# ----------------------------------------------------------------------------- manifests and scans
def test_a_manifest_that_is_no_object_is_a_format_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[1, 2]\n")
    with pytest.raises(FormatError, match=r"m\.json: not a manifest \(not a JSON object\)"):
        load_manifest(path)
    assert load_manifest(tmp_path / "none.json") is None


def test_scan_ratio_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "BLOCK", 7)  # the first row spans several blocks
    path = tmp_path / "r.jsonl"
    rows = [[[0.5, 0.5], [0.0, 0.25], [1.0, 1.0]]] * 4
    path.write_text("".join(ratio_row(r) for r in rows).rstrip("\n"))  # the last row without its newline
    s = scan_ratio(path)
    assert (s.rows, s.layers) == (4, 3)
    path.write_text("".join(ratio_row(r) for r in rows) + ratio_row(rows[0][:2]))
    with pytest.raises(RunMismatch, match=r"not every row has the 3 layers of line 1 \(14 layer entries in 5 rows\)"):
        scan_ratio(path)


def test_scan_index_refuses_a_row_of_another_shape_and_an_empty_file(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text('{"0": [1, 2, 3], "1": [4, 5, 6]}\n{"0": [1, 2], "1": [4, 5]}\n')
    with pytest.raises(RunMismatch, match=r"i\.jsonl:2: 2 layers x 2 neurons, but line 1 has 2 x 3"):
        scan_index(path)
    path.write_text("")
    with pytest.raises(FormatError, match=r"i\.jsonl: empty file"):
        scan_index(path)
    path.write_text('{"0": [1, 2, 3]}\n{"0": [4, 5, 6]}\n')
    assert scan_index(path) == (1, 3) and read_index(path).tolist() == [[5, 7, 9]]


@pytest.mark.parametrize("status", ["running", "merging", "stopped"])
def test_a_run_that_is_not_finished_is_refused(status):
    with pytest.raises(RunMismatch, match=f"m.json: the run is {status}, not finished"):
        verify(checks.Facts(), {"status": status}, {}, "m.json")
    verify(checks.Facts(), {"status": "finished"}, {}, "m.json")
    verify(checks.Facts(), {}, {}, "m.json")  # the paper's runs: no status at all
