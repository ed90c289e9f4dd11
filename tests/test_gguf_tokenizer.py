"""The SentencePiece tokenizer built from a GGUF (pim/models/gguf_tokenizer.py) against an independent reference
(tests/spm_reference.py), on Gemma-3-270M's GGUF (fixture `gemma_gguf`, tests/conftest.py).

The tokenizer under test is the one AutoTokenizer loads back from save_pretrained's folder (beside a
gemma3_text config.json, as in a converted model's folder). Compared: thousands of lines of the paper's data in
every script it has (../shared/data/pim-release/, skipped where absent), hand-made strings (whitespace,
line breaks, numbers, byte fallback, user-defined pieces) and, exhaustively, short strings of a tiny vocabulary
with every flag (Gemma's normal pieces have ids in the order of their scores, so merges ranked by id instead of
score show only there, where the ids are alphabetical). Strings with control pieces (`<eos>`...) are left out:
SentencePiece (the reference) reads them as text, transformers as the tokens (the module's documented
exception, tested on its own).
"""
import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path

import pytest
from spm_reference import SpmReference

from pim.models.gguf_tokenizer import TokenizerFields, read_tokenizer_fields, spm_tokenizer_from_gguf

RELEASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pim-release"
BOS, EOS, UNK, PAD = 2, 1, 3, 0
FIRST_BYTE_PIECE = 238  # <0x00>; <0xFF> is 493

HAND_MADE = [
    "", "Der Zug nach Hamburg", "der zug nach hamburg", "DER ZUG NACH HAMBURG", "Zug", " Zug", "nach", " nach",
    # digits and long numbers
    "0", "42", "3.14159", "1,234,567.89", "12345678901234567890123456789012345678901234567890",
    "2024-06-01 12:34:56", "+49 (0)30 1234567", "0x1F 0b1010 1e-9 -0.5%", "١٢٣ ४५६ 七八九",
    # whitespace runs (user-defined pieces: runs of 2-31 spaces, 1-31 "\n", 1-31 "\t")
    " ", "  ", "   ", " " * 31, " " * 32, " " * 70, "\t", "\t\t", "\t" * 40, "\n", "\n\n", "\n" * 31, "\n" * 33,
    "\n" * 100, " leading", "  two leading", "trailing ", "trailing  ", " both ", "a  b   c    d",
    "a\tb\t\tc", "line1\nline2\n\nline3\n", " \n \t \n", "\t \n", " \t\n\r\n", "x \n y \t z", "a \t\n\n \t b",
    # other line breaks
    "\r\n", "a\r\nb\r\n", "\r", "a\rb", "a\vb", "a\fb", "a\x85b", "a\u2028b\u2029c", "\r\n\r\n\r\n",
    # characters outside the vocabulary: byte fallback
    "\U00020000\U0002a6d6", "a\U00020000b", "\ue000\uf8ff", "\U0010fffd", "👩‍👩‍👧‍👦", "🇩🇪🇯🇵", "👍🏽",
    "\x00\x01\x1b[0m\x7f", "a\u200bb\u200dc\ufeff", "\ufffd", "𝕏𝔸ℤ", "ʬʭ ꙮ",
    # user-defined pieces glued to words, and near misses
    "<b>bold</b>", "x<td>1</td><td>2</td>y", "<table><tr><th>A</th></tr></table>", "[multimodal]image",
    "<start_of_image><end_of_image>", "a<s>b</s>c", "<b<b>>", "</", "<", "<B>", "< b>", "<0x41> and <0xFF>",
    "text<h1>Title</h1>\n\n<ul><li>x</li></ul>",
    # scripts the data has few or none of
    "مرحبا بالعالم", "ہیلو دنیا", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Habari ya dunia", "Здравей, свят",
    "Γειά σου Κόσμε", "안녕하세요 세계", "שלום עולם", "ሰላም ዓለም", "Þetta er íslenska: ð, æ, ö.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.", "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ", "გამარჯობა",
    # combining marks, compatibility characters (no normalisation: kept as they are)
    "e\u0301 vs \u00e9", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ", "ㄱㄴㄷ", "Å Å",
    # repetitions
    "ababababab", "a" * 31, "==========", "----------", "..........", "ーーーーー", "哈哈哈哈哈哈", "!!!???!!!",
    # code
    "def f(x):\n    return x ** 2\n", "if (a && b) { c++; }\n\t\treturn;", "SELECT * FROM t WHERE a='b';",
    # SentencePiece's own space symbol in the text
    "▁", "▁nach", "a▁b", "▁ ▁",
]


@pytest.fixture(scope="module")
def fields(gemma_gguf):
    return read_tokenizer_fields(gemma_gguf)


def reference_of(fields):
    return SpmReference(fields.tokens, fields.scores, fields.types, bos_id=fields.bos_id, eos_id=fields.eos_id,
                        unk_id=fields.unk_id, add_bos=fields.add_bos, add_eos=fields.add_eos,
                        add_space_prefix=fields.add_space_prefix)


@pytest.fixture(scope="module")
def reference(fields):
    return reference_of(fields)


@pytest.fixture(scope="module")
def built(fields):
    return spm_tokenizer_from_gguf(fields)


@pytest.fixture(scope="module")
def saved_folder(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma-tokenizer")
    built.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    return folder


@pytest.fixture(scope="module")
def tok(saved_folder):
    """The tokenizer under test: as AutoTokenizer loads it back (with padding_side="left", as pim/models/names.py)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(saved_folder, padding_side="left")


def control_strings(fields):
    return {t for t, kind in zip(fields.tokens, fields.types) if kind in (2, 3)}


def has_control_string(text, controls):
    return any(m in controls for m in re.findall(r"<[^<>]+>", text))


def first_mismatches(texts, expected, got, tok, limit=3):
    bad = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    return len(bad), [f"{t[:80]!r}: reference {tok.convert_ids_to_tokens(e)[:20]} tokenizer "
                      f"{tok.convert_ids_to_tokens(g)[:20]}" for t, e, g in bad[:limit]]


# --- the file and the reference ---

def test_fields_of_the_gemma_file(fields):
    counts = {kind: fields.types.count(kind) for kind in set(fields.types)}
    assert counts == {1: 255474, 3: 6249, 6: 256, 4: 165}
    assert (fields.model, len(fields.tokens), len(fields.scores)) == ("llama", 262144, 262144)
    assert (fields.bos_id, fields.eos_id, fields.unk_id, fields.pad_id) == (BOS, EOS, UNK, PAD)
    assert (fields.add_bos, fields.add_eos, fields.add_space_prefix) == (True, False, False)
    assert fields.tokens[FIRST_BYTE_PIECE:FIRST_BYTE_PIECE + 256] == tuple(f"<0x{b:02X}>" for b in range(256))
    # the filter of control strings below relies on this form
    assert all(re.fullmatch(r"<[^<>]+>", t) for t in control_strings(fields))


def test_reference_by_hand(reference, fields):
    """Ids checked by hand, so that a bug shared by the reference and the tokenizer cannot pass."""
    assert reference.encode("") == [BOS]
    assert reference.encode("Der Zug nach Hamburg") == [BOS, 17361, 52483, 8519, 48080]  # Der ▁Zug ▁nach ▁Hamburg
    assert (fields.tokens[52483], fields.tokens[8519]) == ("▁Zug", "▁nach")
    # merges by score, not the longest piece first: u n b e l i e v a b l e -> le, el, ab, un, ie, able, bel,
    # iev, ievable (scores -25 ... -178592); longest-first would give un|beli|eva|ble
    assert reference.encode("unbelievable") == [BOS, 602, 8145, 179086]
    assert [fields.tokens[i] for i in (602, 8145, 179086)] == ["un", "bel", "ievable"]
    # user-defined runs: a, "  ", b, "\t\t", c, "\n"
    assert reference.encode("a  b\t\tc\n") == [BOS, 236746, 138, 236763, 255969, 236755, 107]
    assert reference.encode("<b>Zug</b>") == [BOS, 200, 180338, 209]
    # U+20000 is not a piece: its UTF-8 bytes F0 A0 80 80
    assert reference.encode("\U00020000") == [BOS] + [FIRST_BYTE_PIECE + b for b in (0xF0, 0xA0, 0x80, 0x80)]


# --- the tokenizer as built and as loaded back ---

def test_the_saved_folder_loads_as_it_is(built, tok, saved_folder):
    config = json.loads((saved_folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend"
    assert type(tok).__name__ == "TokenizersBackend"  # not GemmaTokenizer, which would rebuild it
    assert tok.padding_side == "left"
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (BOS, EOS, UNK, PAD)
    backend, saved = tok.backend_tokenizer, built.backend_tokenizer
    assert backend.pre_tokenizer is None
    for part in ("normalizer", "decoder", "post_processor"):
        assert str(getattr(backend, part)) == str(getattr(saved, part)), part
    assert backend.get_vocab_size() == saved.get_vocab_size() == 262144


@pytest.mark.parametrize("text", HAND_MADE, ids=range(len(HAND_MADE)))
def test_hand_made_strings_equal_the_reference(text, tok, built, reference):
    expected = reference.encode(text)
    assert tok(text)["input_ids"] == expected, tok.convert_ids_to_tokens(expected)
    assert built(text)["input_ids"] == expected
    if "▁" not in text:  # the text's own "▁" decodes to " "
        assert tok.decode(expected, skip_special_tokens=True) == text


# --- the paper's data ---

# A line belongs to the first of these it has a character of; lines of the first six are all taken.
SCRIPTS = [("Greek", "\u0370-\u03ff"), ("Hebrew", "\u0590-\u05ff"), ("Arabic", "\u0600-\u06ff"),
           ("Devanagari", "\u0900-\u097f"), ("Myanmar", "\u1000-\u109f"),
           ("emoji", "\u2600-\u27bf\U0001f000-\U0001faff"), ("Japanese", "\u3040-\u30ff"),
           ("Han", "\u4e00-\u9fff"), ("Cyrillic", "\u0400-\u04ff"), ("Latin with diacritics", "\u00c0-\u024f")]
RARE = 6
PER_SCRIPT = 700  # the sample of each other script, and of ASCII lines
# lines of the sample that have a character of each (all of the copy's lines for the first six), at least
PRESENT = dict(SCRIPTS, **{"Icelandic þ ð": "þðÞÐ", "Czech ř ě ů": "řěůŘĚŮ", "German ß": "ß", "Spanish ñ ¿": "ñ¿",
                           "French ç œ": "çœ"})
PRESENT_MINIMUM = {"Greek": 100, "Hebrew": 15, "Arabic": 15, "Devanagari": 10, "Myanmar": 5, "emoji": 100,
                   "Japanese": PER_SCRIPT, "Han": PER_SCRIPT, "Cyrillic": PER_SCRIPT,
                   "Latin with diacritics": PER_SCRIPT, "Icelandic þ ð": 50, "Czech ř ě ů": 100, "German ß": 50,
                   "Spanish ñ ¿": 40, "French ç œ": 30}


def script_of(line, patterns):
    if line.isascii():
        return "ASCII"
    return next((name for name, pattern in patterns if pattern.search(line)), None)


def release_sample(controls):
    """{script: lines}: a deterministic sample of the release's distinct lines (by the SHA-1 of each line)."""
    lines = set()
    for path in sorted(RELEASE.rglob("*")):
        if path.is_file() and path.suffix != ".md" and "label" not in path.name:
            lines.update(path.read_text(encoding="utf-8").splitlines())
    patterns = [(name, re.compile(f"[{chars}]")) for name, chars in SCRIPTS]
    by_script = {}
    for line in lines:
        script = script_of(line, patterns)
        if script is not None and line.strip() and not has_control_string(line, controls):
            by_script.setdefault(script, []).append(line)
    rare = {name for name, _ in SCRIPTS[:RARE]}
    sample = {}
    for script, found in by_script.items():
        found.sort(key=lambda line: hashlib.sha1(line.encode()).hexdigest())
        sample[script] = found if script in rare else found[:PER_SCRIPT]
    return sample


@pytest.fixture(scope="module")
def release_lines(fields):
    if not RELEASE.is_dir():
        pytest.skip(f"no copy of the paper's data at {RELEASE}")
    return release_sample(control_strings(fields))


def test_the_sample_covers_every_script(release_lines):
    counts = {script: len(lines) for script, lines in release_lines.items()}
    sampled = ["ASCII"] + [name for name, _ in SCRIPTS[RARE:]]
    assert all(counts.get(script) == PER_SCRIPT for script in sampled), counts
    every_line = [line for lines in release_lines.values() for line in lines]
    present = {name: sum(bool(re.search(f"[{chars}]", line)) for line in every_line)
               for name, chars in PRESENT.items()}
    assert all(present[name] >= n for name, n in PRESENT_MINIMUM.items()), present
    assert 3000 <= len(every_line) <= 5000


def test_release_lines_equal_the_reference(release_lines, tok, reference):
    for script, lines in sorted(release_lines.items()):
        expected = [reference.encode(line) for line in lines]
        count, examples = first_mismatches(lines, expected, tok(lines)["input_ids"], tok)
        assert count == 0, f"{script}: {count} of {len(lines)} lines differ: " + "\n".join(examples)
        assert tok.batch_decode(expected, skip_special_tokens=True) == [line.replace("▁", " ") for line in lines]


# --- behaviour around the encoding ---

def test_left_padding_and_bos(tok, reference):
    texts = ["Hallo", "Der Zug nach Hamburg"]
    batch = tok(texts, padding=True)
    short, long = (reference.encode(t) for t in texts)
    pads = len(long) - len(short)
    assert batch["input_ids"] == [[PAD] * pads + short, long]
    assert batch["attention_mask"] == [[0] * pads + [1] * len(short), [1] * len(long)]
    assert tok("Hallo", add_special_tokens=False)["input_ids"] == short[1:]


def test_control_strings_in_text_are_special_tokens(tok, reference, fields):
    """The documented exception: transformers parses `<start_of_turn>` written in the text as the token
    (chat templates rely on it); SentencePiece and the reference encode it as text."""
    start, end = fields.tokens.index("<start_of_turn>"), fields.tokens.index("<end_of_turn>")
    text = "<start_of_turn>user\nHallo<end_of_turn>"
    ids = tok(text)["input_ids"]
    assert ids[:2] == [BOS, start] and ids[-1] == end
    assert ids[2:-1] == reference.encode("user\nHallo")[1:]
    assert start not in reference.encode(text)


def test_other_tokenizer_models_are_refused(fields):
    with pytest.raises(ValueError, match="'gpt2'"):
        spm_tokenizer_from_gguf(dataclasses.replace(fields, model="gpt2"))


# --- every flag, on a vocabulary small enough for all short strings ---

# normal pieces and their scores; their ids are in alphabetical order, not in the order of the scores. The first
# is spelled as the byte pieces of "é": a merge must not join byte pieces (nor make anything but a normal piece).
TINY_NORMAL = {"<0xC3><0xA9>": 1.0, "▁": 0.0, "a": -1.0, "b": -2.0, "ab": -3.0, "▁a": -4.0, "ba": -5.0,
               "▁ab": -6.0, "aba": -7.0, "bb": -8.0, "▁b": -9.0, "abab": -10.0, "bab": -11.0, "▁▁": -12.0,
               "bba": -13.0, "▁ba": -14.0}


def tiny_fields(add_space_prefix, add_eos):
    pieces = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2)] + [(f"<0x{b:02X}>", 6) for b in range(256)]
    pieces += [("\n", 4), ("  ", 4), ("<b>", 4)] + [(p, 1) for p in sorted(TINY_NORMAL)]
    tokens, types = zip(*pieces)
    scores = tuple(TINY_NORMAL[t] if kind == 1 else -1000.0 for t, kind in pieces)
    return TokenizerFields(model="llama", tokens=tokens, scores=scores, types=types, bos_id=BOS, eos_id=EOS,
                           unk_id=UNK, pad_id=PAD, add_bos=True, add_eos=add_eos, add_space_prefix=add_space_prefix)


@pytest.mark.parametrize("add_space_prefix,add_eos", [(False, False), (True, False), (False, True), (True, True)])
def test_every_short_string_of_a_tiny_vocabulary(add_space_prefix, add_eos):
    fields = tiny_fields(add_space_prefix, add_eos)
    tiny, reference = spm_tokenizer_from_gguf(fields), reference_of(fields)
    alphabet = ["a", "b", " ", "\n", "é", "<b>"]
    texts = ["".join(chars) for n in range(6) for chars in itertools.product(alphabet, repeat=n)]
    expected = [reference.encode(t) for t in texts]
    count, examples = first_mismatches(texts, expected, tiny(texts)["input_ids"], tiny)
    assert count == 0, f"{count} of {len(texts)} strings differ: " + "\n".join(examples)
    if not add_space_prefix:
        assert tiny.batch_decode(expected, skip_special_tokens=True) == texts


# --- why this module exists ---

@pytest.mark.slow
def test_transformers_own_gguf_tokenizer_differs(gemma_gguf, reference):
    """transformers 5.17 loads Gemma-3's GGUF tokenizer as a Unigram model over the file's BPE scores: it splits
    pieces of the vocabulary (`▁nach` -> `▁n`, `ach`) and adds no BOS. A plain assertion, not an xfail (which
    would also pass on any error): if it fails, upstream changed, maybe fixed; compare it with
    pim/models/gguf_tokenizer.py on the data above before loading GGUF tokenizers with it. Slow: transformers reads
    the GGUF twice (config, tokenizer), about 25 s."""
    from transformers import AutoTokenizer

    upstream = AutoTokenizer.from_pretrained(gemma_gguf.parent, gguf_file=gemma_gguf.name)
    ids = upstream("Der Zug nach Hamburg")["input_ids"]
    assert ids != reference.encode("Der Zug nach Hamburg") == [BOS, 17361, 52483, 8519, 48080]
    assert BOS not in ids and 8519 not in ids
