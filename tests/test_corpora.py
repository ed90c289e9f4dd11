"""The per-language corpora (pim/data/corpora.py) on the real release, against counts taken from its files directly."""
import subprocess
import sys
from pathlib import Path

import pytest

from pim.data.corpora import CorpusOptions, build_corpora

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT.parent / "shared" / "data" / "pim-release"
pytestmark = pytest.mark.skipif(not (RELEASE / "WMT").is_dir(), reason=f"no release at {RELEASE}")
FAILED = ("Request failed!!!", "###over length!!!")


def distinct(paths):
    """Distinct stripped non-empty lines of the files, failed translations left out: the count by hand."""
    seen = set()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").split("\n"):
            line = line.strip()
            if line and not any(m in line for m in FAILED):
                seen.add(line)
    return seen


def translations(two_letter, three_letter):
    wmt = sorted(RELEASE.glob(f"WMT/gpt4_translation_test/*/*2{three_letter}-*/result.txt"))
    xnli = [p for p in sorted(RELEASE.glob(f"XNLI/chatgpt_translation_test/xnli.*.txt-{two_letter}/result.txt"))
            if len(p.read_text(encoding="utf-8").splitlines()) == 1000]  # the complete files (the others are empty)
    return wmt + xnli


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpora")
    written = build_corpora(RELEASE, out)
    return out, {p.stem: n for p, n in written.items()}


def lines_of(out, lang):
    return (out / f"corpus-{lang}.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("two, three", [("ja", "jpn"), ("cs", "ces"), ("es", "spa")])
def test_translation_only_languages_equal_their_files(corpora, two, three):
    out, counts = corpora
    expected = distinct(translations(two, three))
    assert counts[f"corpus-{three}"] == len(expected) == len(lines_of(out, three))
    assert set(lines_of(out, three)) == expected
    assert len(expected) > 7000


def test_counts_of_every_language_no_failures_no_duplicates(corpora):
    out, counts = corpora
    assert counts == {"corpus-deu": 11525, "corpus-eng": 3892, "corpus-spa": 11041, "corpus-rus": 13149,
                      "corpus-fra": 12473, "corpus-zho": 8233, "corpus-jpn": 8105, "corpus-ces": 8745}
    for lang in ("deu", "eng", "spa", "rus", "fra", "zho", "jpn", "ces"):
        lines = lines_of(out, lang)
        assert len(lines) == len(set(lines))
        assert not any(m in line for line in lines for m in FAILED) and all(lines)


def test_german_holds_the_xnli_inputs_and_the_wmt_source(corpora):
    out, _ = corpora
    german = set(lines_of(out, "deu"))
    xnli = distinct([RELEASE / "XNLI/test_set/xnli.de.premise.txt", RELEASE / "XNLI/test_set/xnli.de.hypothesis.txt"])
    assert xnli <= german
    assert "Die Ware hat unter 20 Euro gekostet." in german  # the first WMT22 de->en source line
    expected = distinct([*translations("de", "deu"), *RELEASE.glob("XNLI/test_set/xnli.de.*e*.txt")])
    assert len(german) > len(expected), "plus the WMT de->en and de->fr sources"


def test_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "data" / "build_corpora.py"), "--release", str(RELEASE),
                           "--out", str(tmp_path), "--languages", "jpn", "ces", "--tasks", "wmt"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-ces.txt", "corpus-jpn.txt"]
    assert "corpus-jpn" in done.stdout and "8105" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "data" / "build_corpora.py"), "--release", str(RELEASE),
                          "--out", str(tmp_path), "--languages", "kor"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no text in kor" in bad.stderr


def test_options_choose_the_languages():
    from pim.data.corpora import texts_by_language
    assert list(texts_by_language(RELEASE, CorpusOptions(("ces",), ("wmt",)))) == ["ces"]
