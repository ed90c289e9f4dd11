"""Scores of generated text: labels parsed from free text, accuracy, BLEU and chrF (analysis/evaluate.py).

Classification tasks and their labels (canonical spelling, as in the release's label files):
    xnli   entailment, neutral, contradiction
    rte    entailment, not_entailment
    boolq  True, False

parse_label(task, text) reads a model's answer: case and punctuation do not matter, an explanation may
come first, and where several labels are mentioned the first one counts. Negations are read as such:
"not entailment" / "does not entail" is RTE's not_entailment (never entailment), "not true" is False;
in XNLI a negated label ("not a contradiction") is no answer at all, so the next mention counts. BoolQ
also takes yes/no, but only as the first word of the answer or after "answer (is)", since "no" is a
common word in explanations. Text with no label gives None (counted as unparsed, and as wrong).
"""
import re

LABELS = {
    "xnli": ("entailment", "neutral", "contradiction"),
    "rte": ("entailment", "not_entailment"),
    "boolq": ("True", "False"),
}

from pim.activation_files import split_lines
from pim.data.languages import two_letter

_B, _E = r"(?<![a-z])", r"(?![a-z])"  # word boundaries that treat "_" and digits as separators
_NEG = (r"(?:not|no|non|never|neither|nor|cannot|[a-z]+n't)[\s_-]*"  # a negation, then filler words
        r"(?:(?:an?|the|be|necessarily|really|an?\s+case\s+of)\s+)*")
_ENTAIL = r"entail(?:ment|s|ed|ing)?"
_CONTRA = r"contradict(?:ion|s|ed|ing|ory)?"

# per task: (regex, label or None); None marks a negated mention that is no answer by itself
_PATTERNS = {
    "xnli": [(_B + _NEG + f"(?:{_ENTAIL}|neutral|{_CONTRA})" + _E, None),
             (_B + _ENTAIL + _E, "entailment"),
             (_B + "neutral" + _E, "neutral"),
             (_B + _CONTRA + _E, "contradiction")],
    "rte": [(_B + _NEG + _ENTAIL + _E, "not_entailment"),
            (_B + _ENTAIL + _E, "entailment")],
    "boolq": [(_B + _NEG + "true" + _E, "False"),
              (_B + _NEG + "false" + _E, "True"),
              (_B + "true" + _E, "True"),
              (_B + "false" + _E, "False"),
              (r"^[^a-z]*(yes|no)" + _E, {"yes": "True", "no": "False"}),
              (_B + r"answer(?:\s+is)?\s*[:=-]?\s*(yes|no)" + _E, {"yes": "True", "no": "False"})],
}
_COMPILED = {task: [(re.compile(rx), label) for rx, label in pats] for task, pats in _PATTERNS.items()}


def is_classification(task):
    return task in LABELS


def _normalize(text):
    return text.lower().replace("\u2019", "'").replace("\\n", "\n")


def parse_label(task, text):
    """The label a generated answer gives (the first one mentioned), or None if it gives none."""
    text = _normalize(text)
    found = []  # (start, -length, label); the earliest mention wins, the longest at equal starts
    for rx, label in _COMPILED[task]:
        for m in rx.finditer(text):
            value = label[m.group(1)] if isinstance(label, dict) else label
            found.append((m.start(), -(m.end() - m.start()), m.end(), value))
    found.sort()
    covered_to = -1
    for start, _, end, value in found:
        if start < covered_to:  # inside a longer mention already read ("entailment" in "not entailment")
            continue
        if value is not None:
            return value
        covered_to = end  # a negated mention: skip it and whatever lies inside it
    return None


def parse_gold(task, text):
    """A gold label as written in a label file (exact up to case, spaces and '-' for '_'), or None."""
    key = re.sub(r"[\s-]+", "_", text.strip()).lower()
    for label in LABELS[task]:
        if key == label.lower():
            return label
    return None


def accuracy(task, predictions, golds):
    """Counts of a classification run; predictions hold labels or None (unparsed), golds labels."""
    labels = LABELS[task]
    n = len(golds)
    correct = sum(p == g for p, g in zip(predictions, golds))
    unparsed = sum(p is None for p in predictions)
    return {"n": n, "correct": correct, "accuracy": 100.0 * correct / n if n else 0.0,
            "unparsed": unparsed, "unparsed_share": 100.0 * unparsed / n if n else 0.0,
            "gold": {lab: sum(g == lab for g in golds) for lab in labels},
            "predicted": {lab: sum(p == lab for p in predictions) for lab in labels},
            "correct_by_class": {lab: sum(p == g == lab for p, g in zip(predictions, golds)) for lab in labels}}


def first_line(text):
    """The first non-empty line of a generated continuation, stripped: the translation itself. Lines break as in
    the result files (split_lines), so a \\v, \\x85 or \\u2028 inside a translation does not cut it."""
    for line in split_lines(text):
        if line.strip():
            return line.strip()
    return ""


def bleu_tokenizer(target):
    """(tokenize, note) that sacrebleu would pick for a target language, where that works offline.

    sacrebleu's choice: 13a, except zh -> zh, ja -> ja-mecab, ko -> ko-mecab. The last two need
    MeCab (`pip install sacrebleu[ja]` / `[ko]`); without it the score falls back to characters.
    """
    lang = two_letter(target or "")
    if lang == "zh":
        return "zh", None
    if lang in ("ja", "ko"):
        from sacrebleu.metrics.bleu import BLEU
        try:
            BLEU(trg_lang=lang)
            return ("ja-mecab" if lang == "ja" else "ko-mecab"), None
        except Exception:  # sacrebleu raises RuntimeError when MeCab is missing
            return "char", (f"BLEU for target '{lang}' uses tok:char: the {lang}-mecab tokenizer needs "
                            f"`pip install sacrebleu[{lang}]`; not comparable with tok:{lang}-mecab scores")
    return "13a", None


def translation_scores(hypotheses, references, target, tokenize=None):
    """BLEU and chrF of hypotheses against references (a list of reference streams, each as long).

    Returns {"bleu": float, "chrf": float, "bleu_line": str, "chrf_line": str, "bleu_signature": str,
    "chrf_signature": str, "note": str or None}; the lines are sacrebleu's standard output.
    """
    from sacrebleu.metrics import BLEU, CHRF
    note = None
    if tokenize is None:
        tokenize, note = bleu_tokenizer(target)
    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b = bleu.corpus_score(hypotheses, references)
    c = chrf.corpus_score(hypotheses, references)
    bsig, csig = str(bleu.get_signature()), str(chrf.get_signature())
    return {"bleu": b.score, "chrf": c.score, "bleu_line": b.format(signature=bsig),
            "chrf_line": c.format(signature=csig), "bleu_signature": f"{b.name}|{bsig}",
            "chrf_signature": f"{c.name}|{csig}", "note": note}
