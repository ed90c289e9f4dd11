"""Labels parsed from generated text (pim/eval/scoring.py): each case the evaluation must read right."""
import pytest

from pim.eval.scoring import accuracy, bleu_tokenizer, first_line, parse_gold, parse_label


@pytest.mark.parametrize("text, label", [
    # case, punctuation, surrounding words
    ("entailment", "entailment"),
    ("Entailment.", "entailment"),
    ("  NEUTRAL!", "neutral"),
    ('"contradiction"', "contradiction"),
    ("Your prediction: Contradiction", "contradiction"),
    ("**Neutral**", "neutral"),
    # a leading explanation
    ("The premise talks about rain, the hypothesis about sun, so this is a contradiction.", "contradiction"),
    ("Since the premise implies the hypothesis, the relationship is entailment", "entailment"),
    # word forms
    ("The premise entails the hypothesis.", "entailment"),
    ("They contradict each other.", "contradiction"),
    # several labels mentioned: the first one counts
    ("Contradiction or neutral? Neutral.", "contradiction"),
    ("neutral (not entailment)", "neutral"),
    # a negated label is no answer; the next mention counts
    ("It is not a contradiction, it is entailment.", "entailment"),
    ("not entailment. neutral", "neutral"),
    ("There is no contradiction here.", None),
    ("Neither entailment nor contradiction, so neutral.", "neutral"),
    # no label at all
    ("I cannot tell.", None),
    ("", None),
    ("neutrality is important", None),
    # continuation after a newline
    ("\nNeutral\nPremise: ...", "neutral"),
])
def test_xnli(text, label):
    assert parse_label("xnli", text) == label


@pytest.mark.parametrize("text, label", [
    ("entailment", "entailment"),
    ("not_entailment", "not_entailment"),  # contains "entailment": must not be read as it
    ("Not entailment.", "not_entailment"),
    ("NOT_ENTAILMENT", "not_entailment"),
    ("not-entailment", "not_entailment"),
    ("non-entailment", "not_entailment"),
    ("The premise does not entail the hypothesis.", "not_entailment"),
    ("The premise doesn't entail the hypothesis.", "not_entailment"),
    ("The premise doesn\u2019t entail the hypothesis.", "not_entailment"),
    ("This is not an entailment", "not_entailment"),
    ("The answer is entailment, not not_entailment.", "entailment"),
    ("not_entailment (the premise is about entailment of ...)", "not_entailment"),
    ("Entailment: the premise supports it.", "entailment"),
    ("neutral", None),
    ("I don't know", None),
])
def test_rte(text, label):
    assert parse_label("rte", text) == label


@pytest.mark.parametrize("text, label", [
    ("True", "True"),
    ("false.", "False"),
    ("FALSE", "False"),
    ("Yes", "True"),
    ("No.", "False"),
    ("yes, the passage says so", "True"),
    ("  - No, it does not.", "False"),
    ("Based on the passage, the answer is yes.", "True"),
    ("Answer: no", "False"),
    ("The statement is not true.", "False"),
    ("That is not false", "True"),
    ("The passage shows the question is true, false claims aside", "True"),
    ("There is no evidence either way.", None),  # "no" inside an explanation is no answer
    ("I know nothing", None),
    ("trueish", None),
])
def test_boolq(text, label):
    assert parse_label("boolq", text) == label


@pytest.mark.parametrize("task, text, gold", [
    ("xnli", "entailment", "entailment"),
    ("xnli", " Neutral \r", "neutral"),
    ("rte", "not_entailment", "not_entailment"),
    ("rte", "not entailment", "not_entailment"),
    ("boolq", "True", "True"),
    ("boolq", "false", "False"),
    ("boolq", "yes", None),  # gold files hold labels, nothing else
    ("xnli", "entailment.", None),
    ("rte", "neutral", None),
])
def test_gold(task, text, gold):
    assert parse_gold(task, text) == gold


def test_accuracy_counts_unparsed_as_wrong():
    s = accuracy("rte", ["entailment", None, "not_entailment", "entailment"],
                 ["entailment", "entailment", "entailment", "not_entailment"])
    assert (s["n"], s["correct"], s["unparsed"]) == (4, 1, 1)
    assert s["accuracy"] == 25.0 and s["unparsed_share"] == 25.0
    assert s["gold"] == {"entailment": 3, "not_entailment": 1}
    assert s["predicted"] == {"entailment": 2, "not_entailment": 1}
    assert s["correct_by_class"] == {"entailment": 1, "not_entailment": 0}


@pytest.mark.parametrize("text, line", [
    ("The goods cost less.\nGerman: Die Ware", "The goods cost less."),
    ("\n\n  The goods cost less.  \nmore", "The goods cost less."),
    ("", ""),
    ("\r\n The goods\r cost less.", "The goods"),
    # only \n, \r\n and \r end a line, as in the result files: not \v, \x0c, \x1c, \x85, \u2028, \u2029
    ("The\vgoods\x0ccost\x1cless\x85than\u2028twenty\u2029euros.\nGerman:",
     "The\vgoods\x0ccost\x1cless\x85than\u2028twenty\u2029euros."),
])
def test_first_line(text, line):
    assert first_line(text) == line


def test_tokenizer_per_target():
    assert bleu_tokenizer("eng") == ("13a", None)
    assert bleu_tokenizer("deu") == ("13a", None)
    assert bleu_tokenizer("zho") == ("zh", None)
    try:
        import MeCab  # noqa: F401
        pytest.skip("MeCab is installed: ja-mecab works")
    except ImportError:
        tok, note = bleu_tokenizer("jpn")
        assert tok == "char" and "sacrebleu[ja]" in note
