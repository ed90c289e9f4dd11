"""data/*.py and pim/data/prompts.py on a made-up release written here in the release's layout.

Expected strings are written out by hand from the data specification (templates of section 3,
layout of section 2), not produced by the code under test.
"""
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data"))

import build_own  # noqa: E402
import build_prompts  # noqa: E402
import export_llamafactory  # noqa: E402
import fetch_release  # noqa: E402

from pim.activation_files import escape_newlines  # noqa: E402
from pim.data import prompts  # noqa: E402
from pim.data.conditions import parse_condition  # noqa: E402

# --- the made-up release -----------------------------------------------------------------------------

SOURCES = {  # three made-up items per source language
    "deu": ["Das Haus ist klein.", "Der Hund schläft.", "Wir lesen ein Buch."],
    "eng": ["The house is small.", "The dog sleeps.", "We read a book."],
    "zho": ["房子很小。", "狗在睡觉。", "我们读书。"],
    "isl": ["Húsið er lítið.", "Hundurinn sefur.", "Við lesum bók."],
}
NAMES = {"deu": "German", "eng": "English", "spa": "Spanish", "rus": "Russian", "fra": "French",
         "zho": "Chinese", "jpn": "Japanese", "ces": "Czech", "ita": "Italian", "isl": "Icelandic"}
PAIRS = {  # spec 2.1: pair folder -> (prefix, source, aux folders)
    "de2en": ("wmt22", "deu", "ces fra jpn rus spa zho"),
    "de2fr": ("wmt22", "deu", "ces eng ita jpn rus spa zho"),
    "en2de": ("wmt22", "eng", "ces fra jpn rus spa zho"),
    "en2zh": ("wmt22", "eng", "ces deu fra jpn rus spa"),
    "is2en": ("wmt21", "isl", "ces deu fra ita rus spa"),
    "zh2en": ("wmt22", "zho", "ces deu fra jpn rus spa"),
}
FAILED = {("de2en", "spa", 1): "Request failed!!!", ("de2fr", "jpn", 2): "###over length!!!"}
FLORES_STEMS = {"deu": "deu_Latn", "eng": "eng_Latn", "spa": "spa_Latn", "rus": "rus_Cyrl", "fra": "fra_Latn",
                "zho": "zho_Hans", "jpn": "jpn_Jpan", "ces": "ces_Latn", "ita": "ita_Latn", "isl": "isl_Latn"}


def vhendy(target_name, source):
    """A released GPT-4 translation prompt (spec section 1), with a made-up demonstration."""
    return (f"Translate this into 1. {target_name}:\\nEin Beispiel.\\n1. An example in {target_name}.\\n"
            f"Translate this into 1. {target_name}:\\n{source}\\n1.")


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_wmt(root):
    for pair, (task, src, auxes) in PAIRS.items():
        for aux in auxes.split():
            folder = root / "WMT" / "gpt4_translation_test" / pair / f"{task}-{src}2{aux}-1shot-baseline_vhendy"
            write(folder / "prompt.txt", [vhendy(NAMES[aux], s) for s in SOURCES[src]])
            results = [FAILED.get((pair, aux, i), f"({aux}) {s}") for i, s in enumerate(SOURCES[src])]
            write(folder / "result.txt", results)


def make_xnli(root):
    x = root / "XNLI"
    for lang in ("de", "fr", "ru", "zh"):
        for field in ("premise", "hypothesis"):
            write(x / "test_set" / f"xnli.{lang}.{field}.txt", [f"{lang} {field} {i}" for i in range(2)])
        write(x / "test_set" / f"xnli.{lang}.label.txt", ["entailment", "neutral"])
    complete = [("de", f, a) for f in ("premise", "hypothesis") for a in ("es", "ru", "fr")]
    complete += [("fr", "premise", "es"), ("fr", "hypothesis", "es"), ("fr", "hypothesis", "de"),
                 ("fr", "premise", "ru")]
    translations = x / "chatgpt_translation_test"
    for lang, f, a in complete:
        write(translations / f"xnli.{lang}.{f}.txt-{a}" / "result.txt", [f"{lang} {f} {i} in {a}" for i in range(2)])
    write(translations / "xnli.fr.premise.txt-de" / "result.txt", [])  # empty, as released
    write(translations / "xnli.zh.premise.txt-es" / "result.txt", ["only one line"])  # short


def make_rte_boolq(root):
    r = root / "RTE"
    texts = {"premise": ["A man sleeps.", "It rains."], "hypothesis": ["A person sleeps.", "It is sunny."]}
    for f, lines in texts.items():
        write(r / "test_set" / f"RTE.valid.{f}.txt", lines)
        for a in ("de", "es", "fr"):
            folder = r / "chatgpt_translation_test" / f"RTE.valid.{f}.txt-{a}"
            write(folder / "result.txt", [f"{t} [{a}]" for t in lines])
    write(r / "test_set" / "RTE.valid.label.txt", ["entailment", "not_entailment"])
    b = root / "BoolQ"
    for split, folder, sets in (("valid", "chatgpt_translation_test", "test_set"),
                                ("train", "chatgpt_translation_train", "train_set")):
        write(b / sets / f"{split}.passage.txt", [f"Title {i} -- passage {i} of {split}" for i in range(2)])
        write(b / sets / f"{split}.question.txt", [f"is it question {i}" for i in range(2)])
        write(b / sets / f"{split}.label.txt", ["True", "False"])
        for f in ("passage", "question"):
            for a in ("de", "es", "fr"):
                lines = [f"{split} {f} {i} [{a}]" for i in range(2)]
                write(b / folder / f"BoolQ.{split}.{f}.txt-{a}" / "result.txt", lines)


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "release"
    make_wmt(root)
    make_xnli(root)
    make_rte_boolq(root)
    return root


@pytest.fixture
def flores(tmp_path):
    for code, stem in FLORES_STEMS.items():
        write(tmp_path / "flores200_dataset" / "dev" / f"{stem}.dev", [f"{code} row {r}" for r in range(997)])
    return tmp_path / "flores200_dataset"


def build(release, out, *flags):
    build_prompts.main(["--release", str(release), "--out", str(out), *flags])
    return {p.stem: p.read_text(encoding="utf-8").split("\n")[:-1] for p in Path(out).glob("*.txt")}


def error_of(main, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return str(e.value)


# --- templates ---------------------------------------------------------------------------------------

SPEC_DIRECT = "Translate into English.\\nGerman: Die Ware hat unter 20 Euro gekostet.\\nEnglish:"
SPEC_PIM6 = ("Translate into English.\\nGerman: Die Ware hat unter 20 Euro gekostet.\\nSpanish: La mercancía "
             "costó menos de 20 euros.\\nRussian: Товар стоил менее 20 евро.\\nFrench: La marchandise a coûté moins "
             "de 20 euros.\\nChinese: 这件商品的价格低于20欧元。\\nJapanese: その商品は20ユーロ未満で買えました。\\n"
             "Czech: Zboží stálo méně než 20 euro.\\nEnglish:")


def test_translation_template_is_the_spec_example():
    aux = [("Spanish", "La mercancía costó menos de 20 euros."), ("Russian", "Товар стоил менее 20 евро."),
           ("French", "La marchandise a coûté moins de 20 euros."), ("Chinese", "这件商品的价格低于20欧元。"),
           ("Japanese", "その商品は20ユーロ未満で買えました。"), ("Czech", "Zboží stálo méně než 20 euro.")]
    source = [("German", "Die Ware hat unter 20 Euro gekostet.")]
    assert escape_newlines(prompts.translation_prompt("English", source)) == SPEC_DIRECT
    assert escape_newlines(prompts.translation_prompt("English", source + aux)) == SPEC_PIM6
    assert prompts.translation_prompt("English", source, [([("German", "a")], "b")]) == (
        "Translate into English.\nGerman: a\nEnglish: b\n\n"
        "Translate into English.\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:")


def test_nli_templates_are_the_spec_text():
    assert prompts.nli_prompt([("German", "P")], "H") == (
        "You will be presented with a pair of sentences. Your task is to determine the relationship between "
        "these two sentences. There are three possible relationships: entailment, contradiction, or neutral. "
        "Please provide a single prediction for the relationship based on these sentence pairs, without any "
        "explanation. Here is the sentence pair:\nPremise: P\nHypothesis: H\nYour prediction:")
    pim = prompts.nli_prompt([("German", "P0"), ("Spanish", "P1"), ("Russian", "P2"), ("French", "P3")], "H")
    assert pim == (
        "You will be given a premise in multiple languages (German, Spanish, Russian, French) and a hypothesis in "
        "German. Your task is to determine the relationship between the multilingual premises and the German "
        "hypothesis. There are three possible relationships: entailment, contradiction, or neutral. Please provide "
        "a single prediction for the relationship, without any explanation. Here are the premises and the "
        "hypothesis:\n\nGerman Premise: P0\nSpanish Premise: P1\nRussian Premise: P2\nFrench Premise: P3\n\n"
        "Hypothesis: H\n\nYour prediction:")


def test_demo_rows_are_cpython_seed_42():
    random.seed(42)
    assert random.sample(range(997), 5) == [654, 114, 25, 759, 281] == list(prompts.DIRECT_DEMO_ROWS)
    random.seed(42)
    assert random.sample(range(997), 1) == [654]
    assert prompts.PIM_DEMO_ROWS[0] == 4


def test_recover_source():
    line = vhendy("Spanish", "Die Ware hat unter 20 Euro gekostet.")
    assert prompts.recover_source(line) == ("Spanish", "Die Ware hat unter 20 Euro gekostet.")
    for bad in ("Translate into Spanish.\\nx", line[:-3], line.replace("\\nTranslate this into 1. Spanish:\\n", "\\n")):
        with pytest.raises(ValueError):
            prompts.recover_source(bad)


# --- build_prompts.py ----------------------------------------------------------------------------------

def test_builds_every_condition_of_the_spec(release, tmp_path, capsys):
    files = build(release, tmp_path / "out")
    out = capsys.readouterr().out
    assert len([n for n in files if n.startswith("wmt")]) == 5 * (1 + 6 + 3) + (1 + 7 + 6)
    for name in ("wmt22-deu2eng", "wmt22-deu2eng-pivot_zho", "wmt22-GPT4-deu_spa2eng", "wmt22-GPT4-deu_spa_rus_fra2eng",
                 "wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng", "wmt22-GPT4-deu_eng_rus_spa_zho_ita_ces2fra",
                 "wmt22-GPT4-deu_spa_rus_ita_zho_jpn_ces2fra", "wmt22-GPT4-eng_spa_rus_fra_jpn_ces_deu2zho",
                 "wmt21-GPT4-isl_spa_rus_fra_ita_ces_deu2eng", "wmt22-zho2eng-pivot_deu", "wmt21-isl2eng"):
        assert len(files[name]) == 3, name
    assert all(parse_condition(n) is not None for n in files)
    assert sorted(n for n in files if not n.startswith("wmt")) == sorted([
        "xnli-deu", "xnli-deu-pivot_spa", "xnli-deu-pivot_rus", "xnli-deu-pivot_fra", "xnli-GPT4-deu_spa_rus_fra",
        "xnli-fra", "xnli-fra-pivot_spa", "xnli-rus", "xnli-zho", "rte-eng", "rte-eng-pivot_spa", "rte-eng-pivot_fra",
        "rte-eng-pivot_deu", "rte-GPT4-eng_spa_fra_deu", "boolq-eng", "boolq-eng-pivot_spa", "boolq-eng-pivot_fra",
        "boolq-eng-pivot_deu", "boolq-GPT4-eng_spa_fra_deu"])
    # what the release lacks is named, file by file
    lacks = "XNLI/chatgpt_translation_test/xnli.{}/result.txt ({})"
    assert "xnli-GPT4-fra_spa_rus_deu: " + lacks.format("fr.premise.txt-de", "empty") in out
    assert "xnli-fra-pivot_rus: " + lacks.format("fr.hypothesis.txt-ru", "absent") in out
    assert lacks.format("zh.premise.txt-es", "1 of 2 lines") in out
    assert "70 few-shot files" in out and "FLORES" in out


def test_prompt_lines(release, tmp_path):
    files = build(release, tmp_path / "out")
    assert files["wmt21-GPT4-isl_spa_rus_fra_ita_ces_deu2eng"][2] == (
        "Translate into English.\\nIcelandic: Við lesum bók.\\nSpanish: (spa) Við lesum bók.\\nRussian: (rus) Við "
        "lesum bók.\\nFrench: (fra) Við lesum bók.\\nItalian: (ita) Við lesum bók.\\nCzech: (ces) Við lesum bók.\\n"
        "German: (deu) Við lesum bók.\\nEnglish:")
    assert files["wmt22-eng2zho-pivot_jpn"][0] == (
        "Translate into Chinese.\\nJapanese: (jpn) The house is small.\\nChinese:")
    assert files["rte-GPT4-eng_spa_fra_deu"][1].endswith(
        "\\n\\nEnglish Premise: It rains.\\nSpanish Premise: It rains. [es]\\nFrench Premise: It rains. [fr]\\n"
        "German Premise: It rains. [de]\\n\\nHypothesis: It is sunny.\\n\\nYour prediction:")
    assert "There are two possible relationships: entailment or not_entailment." in files["rte-eng"][0]
    assert files["xnli-deu-pivot_rus"][1].endswith(
        "\\nPremise: de premise 1 in ru\\nHypothesis: de hypothesis 1 in ru\\nYour prediction:")
    assert files["boolq-eng"][0].endswith(
        "\\nPassage: Title 0 -- passage 0 of valid\\nQuestion: is it question 0\\nYour answer:")


PIM3, PIVOT, DIRECT = "wmt22-GPT4-deu_spa_rus_fra2eng", "wmt22-deu2eng-pivot_spa", "wmt22-deu2eng"


def test_policy_keep(release, tmp_path, capsys):
    keep = build(release, tmp_path / "keep", "--failed", "keep")
    assert keep[PIM3][1] == ("Translate into English.\\nGerman: Der Hund schläft.\\nSpanish: Request failed!!!\\n"
                             "Russian: (rus) Der Hund schläft.\\nFrench: (fra) Der Hund schläft.\\nEnglish:")
    assert keep[PIVOT][1] == "Translate into English.\\nSpanish: Request failed!!!\\nEnglish:"
    out = capsys.readouterr().out
    assert "1 failed (lines 2)" in out and "1 failed (lines 3)" in out


def test_policy_drop_language_is_the_default(release, tmp_path, capsys):
    drop = build(release, tmp_path / "drop")
    assert drop[PIM3][1] == ("Translate into English.\\nGerman: Der Hund schläft.\\nRussian: (rus) Der Hund schläft.\\n"
                             "French: (fra) Der Hund schläft.\\nEnglish:")
    assert drop[PIM3][0].startswith("Translate into English.\\nGerman: Das Haus ist klein.\\nSpanish: (spa) Das Haus")
    direct = "Translate into English.\\nGerman: Der Hund schläft.\\nEnglish:"
    assert drop["wmt22-GPT4-deu_spa2eng"][1] == drop[DIRECT][1] == direct
    assert drop[PIVOT][1] == drop[DIRECT][1]
    assert drop[PIVOT][0] == "Translate into English.\\nSpanish: (spa) Das Haus ist klein.\\nEnglish:"
    assert not any("###over length!!!" in line for line in drop["wmt22-GPT4-deu_spa_rus_ita_zho_jpn_ces2fra"])
    assert "policy drop-language: " in capsys.readouterr().out


def test_policy_drop_item(release, tmp_path):
    items = build(release, tmp_path / "items", "--failed", "drop-item")
    assert [len(items[n]) for n in (PIM3, PIVOT, DIRECT, "wmt22-deu2eng-pivot_zho")] == [2, 2, 2, 2]
    assert items[DIRECT] == ["Translate into English.\\nGerman: Das Haus ist klein.\\nEnglish:",
                             "Translate into English.\\nGerman: Wir lesen ein Buch.\\nEnglish:"]
    assert len(items["wmt22-deu2fra"]) == 2 and len(items["wmt22-eng2deu"]) == 3  # only the test sets with failures


def test_wmt_sources_must_agree(release, tmp_path):
    folder = release / "WMT" / "gpt4_translation_test" / "de2en" / "wmt22-deu2rus-1shot-baseline_vhendy"
    lines = (folder / "prompt.txt").read_text(encoding="utf-8").split("\n")
    lines[1] = vhendy("Russian", "Ein anderer Satz.")
    (folder / "prompt.txt").write_text("\n".join(lines), encoding="utf-8")
    argv = ["--release", str(release), "--out", str(tmp_path / "o")]
    msg = error_of(build_prompts.main, argv)
    assert "wmt22-deu2rus-1shot-baseline_vhendy/prompt.txt:2" in msg and "same items" in msg
    (folder / "prompt.txt").write_text("\n".join(lines[:1] + lines[2:]), encoding="utf-8")
    (folder / "result.txt").write_text("a\nb\n", encoding="utf-8")
    msg = error_of(build_prompts.main, argv)
    assert "has 2 items but" in msg and "de2en" in msg
    (folder / "result.txt").write_text("a\n", encoding="utf-8")
    assert "prompt.txt has 2 lines but result.txt 1" in error_of(build_prompts.main, argv)
    assert not list(tmp_path.glob("o/*.txt"))


def test_few_shot_needs_flores(release, flores, tmp_path):
    msg = error_of(build_prompts.main, ["--release", str(release), "--out", str(tmp_path / "o"), "--shots", "0,5"])
    assert "FLORES" in msg
    files = build(release, tmp_path / "few", "--flores", str(flores), "--tasks", "wmt")
    assert len(files) == 64 + 64 + 6  # 0-shot, 1-shot of each, plus 5-shot direct
    assert files["wmt22-deu2eng-1shot"][0] == (
        "Translate into English.\\nGerman: deu row 654\\nEnglish: eng row 654\\n\\n"
        "Translate into English.\\nGerman: Das Haus ist klein.\\nEnglish:")
    five = files["wmt22-deu2eng-5shot"][0]
    assert five.count("\\n\\n") == 5 and "German: deu row 281\\nEnglish: eng row 281\\n\\nTranslate" in five
    assert files["wmt22-GPT4-deu_spa2eng-1shot"][0] == (
        "Translate into English.\\nGerman: deu row 4\\nSpanish: spa row 4\\nEnglish: eng row 4\\n\\n"
        "Translate into English.\\nGerman: Das Haus ist klein.\\nSpanish: (spa) Das Haus ist klein.\\nEnglish:")
    pivot = files["wmt22-deu2eng-pivot_spa-1shot"]
    assert pivot[0].startswith("Translate into English.\\nSpanish: spa row 654\\nEnglish: eng row 654\\n\\n")
    assert pivot[1] == files["wmt22-deu2eng-1shot"][1]  # drop-language falls back to the direct prompt
    (flores / "dev" / "eng_Latn.dev").write_text("short\n", encoding="utf-8")
    msg = error_of(build_prompts.main, ["--release", str(release), "--out", str(tmp_path / "o"),
                                        "--flores", str(flores)])
    assert "eng_Latn.dev has 1 lines" in msg and "997" in msg


def test_only_and_list(release, tmp_path, capsys):
    files = build(release, tmp_path / "o", "--only", "xnli-deu", "wmt22-deu2eng")
    assert sorted(files) == ["wmt22-deu2eng", "xnli-deu"]
    assert files["xnli-deu"][1].endswith("Premise: de premise 1\\nHypothesis: de hypothesis 1\\nYour prediction:")
    argv = ["--release", str(release), "--out", str(tmp_path / "o")]
    msg = error_of(build_prompts.main, argv + ["--only", "xnli-GPT4-zho_spa_fra_deu"])
    assert "xnli.zh.premise.txt-es/result.txt (1 of 2 lines)" in msg
    assert "xnli.zh.premise.txt-fr/result.txt (absent)" in msg
    assert "not a condition of the release" in error_of(build_prompts.main, argv + ["--only", "wmt22-deu2xxx"])
    build_prompts.main(["--release", str(release), "--list"])
    assert "xnli-GPT4-deu_spa_rus_fra" in capsys.readouterr().out
    assert "no release here" in error_of(build_prompts.main, ["--release", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit):
        build_prompts.main(["--no-such-flag"])


# --- build_own.py --------------------------------------------------------------------------------------

def test_own_data(tmp_path):
    write(tmp_path / "t.de", ["Guten Morgen.", "Danke schön."])
    write(tmp_path / "t.es", ["Buenos días.", "Muchas gracias."])
    write(tmp_path / "t.ko", ["좋은 아침.", "감사합니다."])
    argv = ["--source", str(tmp_path / "t.de"), "--source-lang", "deu", "--target-lang", "eng",
            "--aux", f"spa={tmp_path / 't.es'}", f"kor={tmp_path / 't.ko'}", "--task", "mine",
            "--out", str(tmp_path / "out"), "--names", "kor=Korean"]
    build_own.main(argv)
    files = {p.stem: p.read_text(encoding="utf-8") for p in (tmp_path / "out").glob("*.txt")}
    assert sorted(files) == ["mine-GPT4-deu_spa2eng", "mine-GPT4-deu_spa_kor2eng", "mine-deu2eng",
                             "mine-deu2eng-pivot_kor", "mine-deu2eng-pivot_spa"]
    assert files["mine-GPT4-deu_spa_kor2eng"] == (
        "Translate into English.\\nGerman: Guten Morgen.\\nSpanish: Buenos días.\\nKorean: 좋은 아침.\\nEnglish:\n"
        "Translate into English.\\nGerman: Danke schön.\\nSpanish: Muchas gracias.\\nKorean: 감사합니다.\\nEnglish:\n")
    assert "no language name for 'kor'" in error_of(build_own.main, argv[:-2])
    write(tmp_path / "t.es", ["Buenos días."])
    msg = error_of(build_own.main, argv)
    assert "t.es has 1 lines but" in msg and "t.de has 2" in msg
    write(tmp_path / "t.es", ["Buenos días.", ""])
    assert "t.es:2: empty line" in error_of(build_own.main, argv)


# --- export_llamafactory.py ----------------------------------------------------------------------------

COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}


def test_export_is_deterministic(release, tmp_path):
    argv = ["--release", str(release), "--out", str(tmp_path / "lf")]
    export_llamafactory.main(argv)
    first = {p.name: p.read_bytes() for p in (tmp_path / "lf").iterdir()}
    export_llamafactory.main(argv)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lf").iterdir()} == first
    info = json.loads(first["dataset_info.json"])
    assert len(info) == 83 + 2 and info["xnli-deu"] == {"file_name": "xnli-deu.json", "columns": COLUMNS}
    rte = json.loads(first["rte-eng.json"])
    assert [r["output"] for r in rte] == ["entailment", "not_entailment"]
    assert rte[0]["input"] == "" and rte[0]["history"] == []
    assert rte[0]["instruction"].endswith("\nPremise: A man sleeps.\nHypothesis: A person sleeps.\nYour prediction:")
    train = json.loads(first["boolq-GPT4-eng_spa_fra_deu-train.json"])
    passages = "English Passage: Title 1 -- passage 1 of train\nSpanish Passage: train passage 1 [es]"
    assert passages in train[1]["instruction"]
    assert [r["output"] for r in train] == ["True", "False"] and "boolq-eng-train" in info


def test_export_references_follow_dropped_items(release, tmp_path):
    refs = tmp_path / "refs"
    for name in ("generaltest2022.de-en.ref.A.en", "generaltest2022.de-fr.ref.A.fr", "generaltest2022.en-de.ref.A.de",
                 "generaltest2022.en-zh.ref.A.zh", "generaltest2022.zh-en.ref.A.en", "newstest2021.is-en.ref.A.en"):
        write(refs / "sub" / name, [f"{name} ref {i}" for i in range(3)])
    export_llamafactory.main(["--release", str(release), "--out", str(tmp_path / "lf"), "--failed", "drop-item",
                              "--references", str(refs), "--only", "wmt22-deu2eng"])
    items = json.loads((tmp_path / "lf" / "wmt22-deu2eng.json").read_text(encoding="utf-8"))
    assert [r["output"] for r in items] == [f"generaltest2022.de-en.ref.A.en ref {i}" for i in (0, 2)]
    assert items[1]["instruction"] == "Translate into English.\nGerman: Wir lesen ein Buch.\nEnglish:"
    write(refs / "sub" / "newstest2021.is-en.ref.A.en", ["one"])
    msg = error_of(export_llamafactory.main, ["--release", str(release), "--out", str(tmp_path / "lf"),
                                              "--references", str(refs)])
    assert "newstest2021.is-en.ref.A.en has 1 lines" in msg


def test_export_a_prompt_file(tmp_path):
    write(tmp_path / "p.txt", ["Line one\\nnext", "Line two"])
    write(tmp_path / "o.txt", ["out one"])
    argv = ["--prompts", str(tmp_path / "p.txt"), "--outputs", str(tmp_path / "o.txt"), "--out", str(tmp_path / "lf")]
    assert "o.txt has 1 lines but" in error_of(export_llamafactory.main, argv)
    write(tmp_path / "o.txt", ["out one", "out two"])
    export_llamafactory.main(argv)
    records = json.loads((tmp_path / "lf" / "p.json").read_text(encoding="utf-8"))
    assert records[0] == {"instruction": "Line one\nnext", "input": "", "output": "out one", "history": []}
    assert json.loads((tmp_path / "lf" / "dataset_info.json").read_text())["p"]["file_name"] == "p.json"


def test_export_flores_train_sets(release, flores, tmp_path):
    export_llamafactory.main(["--release", str(release), "--out", str(tmp_path / "lf"), "--flores", str(flores),
                              "--tasks", "wmt", "--only", "wmt22-GPT4-deu_spa2eng-train", "wmt22-deu2eng-1shot"])
    train = json.loads((tmp_path / "lf" / "wmt22-GPT4-deu_spa2eng-train.json").read_text(encoding="utf-8"))
    assert len(train) == 997
    assert train[5] == {"instruction": "Translate into English.\nGerman: deu row 5\nSpanish: spa row 5\nEnglish:",
                        "input": "", "output": "eng row 5", "history": []}


# --- fetch_release.py ----------------------------------------------------------------------------------

def sha256_list(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def repository(release, tmp_path):
    """(a repository checkout holding the release in gpt_translated_data/, its checksum file, the sums)."""
    sums = sha256_list(release)
    listing = tmp_path / "release.sha256"
    listing.write_text("".join(f"{d}  {r}\n" for r, d in sums.items()), encoding="utf-8")
    repo = tmp_path / "LLMs-are-parallel-multilingual-learners-cba55b1"
    repo.mkdir()
    release.rename(repo / "gpt_translated_data")
    return repo, listing, sums


def test_fetch_from_folders_and_archives(repository, tmp_path):
    repo, listing, sums = repository
    with tarfile.open(tmp_path / "repo.tar.gz", "w:gz") as t:
        t.add(repo, arcname=repo.name)
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        for rel in sums:
            z.write(repo / "gpt_translated_data" / rel, "pim-release/" + rel)
    for i, url in enumerate((repo, repo / "gpt_translated_data", tmp_path / "repo.tar.gz", tmp_path / "data.zip")):
        dest = tmp_path / f"dest{i}"
        fetch_release.main(["--url", str(url), "--dest", str(dest), "--checksums", str(listing)])
        assert sha256_list(dest) == sums, url


def test_fetch_refuses_a_corrupted_or_incomplete_copy(repository, tmp_path):
    repo, listing, _ = repository
    label = repo / "gpt_translated_data" / "RTE" / "test_set" / "RTE.valid.label.txt"

    def fetch_error(url):
        argv = ["--url", str(url), "--dest", str(tmp_path / "bad"), "--checksums", str(listing)]
        return error_of(fetch_release.main, argv)

    label.write_text("entailment\nentailment\n")
    assert "RTE/test_set/RTE.valid.label.txt: checksum mismatch" in fetch_error(repo)
    assert not (tmp_path / "bad" / "RTE").exists()  # nothing half-unpacked
    label.unlink()
    assert "1 release files are missing" in fetch_error(repo)
    msg = fetch_error("http://127.0.0.1:9/release.tar.gz")
    assert "cannot download" in msg and "DATA_URL=" in msg
    assert "no such file or folder" in fetch_error(tmp_path / "none")


def truncated(archive):
    """Cut `archive` to half its bytes, as an interrupted download leaves it."""
    data = archive.read_bytes()
    archive.write_bytes(data[:len(data) // 2])
    return archive


def test_make_data_with_a_truncated_archive_is_one_line_and_unpacks_nothing(repository, tmp_path):
    repo, _, _ = repository
    archive = tmp_path / "release.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(repo, arcname=repo.name)
    out = tmp_path / "out"
    command = ["make", "--no-print-directory", "data", f"DATA_URL={truncated(archive)}", f"DATA_OUT={out}",
               f"PY={sys.executable}"]
    res = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    said = [line for line in res.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]  # under make too
    assert len(said) == 1 and said[0].startswith(f"fetch_release.py: error: {archive}: the archive is damaged or "
                                                 "truncated (") and said[0].endswith("; download it again"), said
    assert not out.exists() or list(out.iterdir()) == []  # nothing unpacked, no prompt files built


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "zip"])
def test_a_truncated_archive_leaves_the_release_as_it_was(repository, tmp_path, kind):
    repo, listing, sums = repository
    archive = tmp_path / f"release.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for rel in sums:
                z.write(repo / "gpt_translated_data" / rel, "pim-release/" + rel)
    else:
        with tarfile.open(archive, f"w:{kind[4:]}") as t:
            t.add(repo, arcname=repo.name)
    dest = tmp_path / "dest"
    (dest / "WMT").mkdir(parents=True)
    (dest / "WMT" / "older.txt").write_text("an older copy\n")
    argv = ["--url", str(truncated(archive)), "--dest", str(dest), "--checksums", str(listing)]
    msg = error_of(fetch_release.main, argv)
    assert msg.startswith(f"fetch_release.py: error: {archive}: the archive is damaged or truncated (")
    assert msg.endswith("; download it again") and "\n" not in msg
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["WMT", "WMT/older.txt"]
