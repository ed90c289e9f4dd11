"""The languages of the project, in one table: 3-letter code -> 2-letter code, name, FLORES-200 file.

File names and conditions (pim/data/conditions.py) use the 3-letter codes; the release's folders and files,
WMT and sacrebleu the 2-letter ones; the templates (pim/data/prompts.py) print the names. A language
without a name (kor, ukr, hrv) can be scored (pim/eval/scoring.py) but has no template text.
"""

# 3-letter code: (2-letter code, name the templates print, FLORES-200 file stem dev/<stem>.dev)
TABLE = {
    "deu": ("de", "German", "deu_Latn"), "eng": ("en", "English", "eng_Latn"),
    "spa": ("es", "Spanish", "spa_Latn"), "rus": ("ru", "Russian", "rus_Cyrl"),
    "fra": ("fr", "French", "fra_Latn"), "zho": ("zh", "Chinese", "zho_Hans"),
    "jpn": ("ja", "Japanese", "jpn_Jpan"), "ces": ("cs", "Czech", "ces_Latn"),
    "ita": ("it", "Italian", "ita_Latn"), "isl": ("is", "Icelandic", "isl_Latn"),
    "kor": ("ko", None, None), "ukr": ("uk", None, None), "hrv": ("hr", None, None),
}

NAMES = {code: name for code, (_, name, _) in TABLE.items() if name}  # 3-letter -> name
TWO_LETTER = {code: two for code, (two, _, _) in TABLE.items()}  # 3-letter -> 2-letter
THREE_LETTER = {two: code for code, two in TWO_LETTER.items() if code in NAMES}  # 2-letter -> 3-letter
FLORES = {code: stem for code, (_, _, stem) in TABLE.items() if stem}  # 3-letter -> FLORES-200 stem
FLORES_DEV_LINES = 997  # rows of every FLORES-200 dev file


def three_letter(code):
    """The 3-letter code of a 2- or 3-letter code (the release mixes them); unknown codes unchanged."""
    return THREE_LETTER.get(code, code)


def two_letter(code):
    """The 2-letter code of a 3-letter code (sacrebleu, WMT and the release); unknown codes unchanged."""
    return TWO_LETTER.get(code, code)
