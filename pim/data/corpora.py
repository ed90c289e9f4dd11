"""Corpora per language from the paper's release, for corpus statistics (LAPE, docs/lape.md).

data/corpus-<lang>.txt (3-letter codes, pim/data/languages.py) holds every distinct text the release has in
that language, one per line (newlines stored as \\n):

- WMT (pim/testsets.WMT_PAIRS): the source of each pair (German: de2en, de2fr; English: en2de, en2zh;
  Chinese: zh2en; Icelandic: is2en), recovered from the released translation prompts, and the GPT-4
  translations of the sources into each aux language (Spanish, Russian, French, Chinese, Japanese,
  Czech, and German, English, Italian where a pair has them);
- XNLI (test inputs of de, fr, ru, zh and their ChatGPT translations): premises and hypotheses, each
  a line of its own.

Failed translations ("Request failed!!!", "###over length!!!") and empty lines are left out; identical
lines are kept once, at their first occurrence (in the order WMT pairs, then XNLI languages, each
source before its translations).
"""
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import escape_newlines, write_atomic
from pim.data import testsets

LANGUAGES = ("deu", "eng", "spa", "rus", "fra", "zho", "jpn", "ces")  # the corpora built by default
TASKS = ("wmt", "xnli")  # which parts of the release feed them


@dataclass
class CorpusOptions:
    """What to build: the flags --languages and --tasks of data/build_corpora.py."""
    languages: tuple = LANGUAGES  # 3-letter codes; one file data/corpus-<lang>.txt each
    tasks: tuple = TASKS  # wmt, xnli


def corpus_name(lang):
    """The FILE name of a language's corpus: corpus-<lang> (data/corpus-<lang>.txt)."""
    return f"corpus-{lang}"


def texts_by_language(release, options=CorpusOptions()):
    """{lang: [distinct texts]} of the release (module docstring), for the languages of `options`."""
    for task in options.tasks:
        if task not in TASKS:
            raise testsets.DataError(f"unknown corpus source '{task}': choose from {', '.join(TASKS)}")
    out = {lang: {} for lang in options.languages}  # dicts: ordered sets

    def add(lang, texts):
        if lang in out:
            for text in texts:
                text = text.strip()
                if text and not testsets.is_failed(text):
                    out[lang].setdefault(text)

    sets = testsets.release_testsets(release, [t for t in options.tasks])
    for ts in sets:
        for field in ts.inputs:
            add(ts.source, ts.inputs[field])
            for lang, texts in ts.aux.items():
                add(lang, texts.get(field, ()))
    return {lang: list(texts) for lang, texts in out.items()}


def build_corpora(release, out, options=CorpusOptions()):
    """Write <out>/corpus-<lang>.txt for each language; returns {path: lines}. A language without any
    text is an error naming it."""
    found = texts_by_language(release, options)
    empty = [lang for lang, texts in found.items() if not texts]
    if empty:
        raise testsets.DataError(f"the release has no text in {', '.join(empty)} (sources: {', '.join(options.tasks)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for lang, texts in found.items():
        path = out / f"{corpus_name(lang)}.txt"
        write_atomic(path, "".join(escape_newlines(t) + "\n" for t in texts))
        written[path] = len(texts)
    return written
