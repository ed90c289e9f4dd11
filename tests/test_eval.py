"""analysis/evaluate.py (make eval): scores against sacrebleu called directly, hand-counted accuracy,
the comparison tables, references and their errors. Fixtures: tests/fixtures/eval/ (made up)."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import sacrebleu
from conftest import ROOT

from pim.eval import evaluation

FIX = ROOT / "tests" / "fixtures" / "eval"
RES = FIX / "results"
SCRIPT = ROOT / "analysis" / "evaluate.py"

spec = importlib.util.spec_from_file_location("evaluate", SCRIPT)
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)

TRANSLATION = ["toy-deu2eng", "toy-deu2eng-5shot", "toy-deu2eng-pivot_spa", "toy-GPT4-deu_spa2eng",
               "toy-GPT4-deu_spa_rus_fra2eng"]


def run_eval(tmp_path, *args, results=RES):
    """main() on the fixtures, tables to tmp_path; returns the exit status."""
    argv = ["--results-dir", str(results), "--tables-dir", str(tmp_path / "tables"), "--data-dir", str(tmp_path),
            "--release", str(tmp_path / "no-release"), "--offline", *map(str, args)]
    return evaluate.main(argv)


def read_csv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------------- translation
def test_translation_scores_equal_sacrebleu(tmp_path):
    assert run_eval(tmp_path, "--files", *TRANSLATION, "--ref", FIX / "ref.eng") == 0
    rows = {r["file"]: r for r in read_csv(tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.csv")}
    refs = lines(FIX / "ref.eng")
    # the direct run's continuations go on after the translation: only the first non-empty line counts
    direct = ["The weather is good today.", "I drink coffee every morning.", "The train departs at eight.",
              "My sister lives in a small village by the sea.", "We meet tomorrow at noon."]
    hyps = {"toy-deu2eng": direct, **{f: lines(RES / f"{f}-result-tiny-x.txt") for f in TRANSLATION[1:]}}
    for file, hyp in hyps.items():
        assert float(rows[file]["bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyp, [refs]).score, abs=1e-5)
        assert float(rows[file]["chrf"]) == pytest.approx(sacrebleu.corpus_chrf(hyp, [refs]).score, abs=1e-5)
    assert 0 < float(rows["toy-deu2eng"]["bleu"]) < float(rows["toy-GPT4-deu_spa_rus_fra2eng"]["bleu"]) < 100
    assert "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0" in rows["toy-deu2eng"]["signatures"]


def test_whole_output_scores_all_lines(tmp_path):
    assert run_eval(tmp_path, "--files", "toy-deu2eng", "--ref", FIX / "ref.eng", "--whole-output") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.csv")
    hyps = [h.replace("\\n", " ").strip() for h in lines(RES / "toy-deu2eng-result-tiny-x.txt")]
    assert float(row["bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [lines(FIX / "ref.eng")]).score, abs=1e-5)


def test_chinese_target_tokenized_as_zh(tmp_path, capsys):
    assert run_eval(tmp_path, "--files", "toy-eng2zho", "--ref", FIX / "zh.ref") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-toy-eng2zho-tiny-x.csv")
    hyps, refs = lines(RES / "toy-eng2zho-result-tiny-x.txt"), lines(FIX / "zh.ref")
    zh, plain = (sacrebleu.corpus_bleu(hyps, [refs], tokenize=t).score for t in ("zh", "13a"))
    assert zh != pytest.approx(plain)  # 13a would see each sentence as one word
    assert float(row["bleu"]) == pytest.approx(zh, abs=1e-5)
    assert "tok:zh" in capsys.readouterr().out


def test_reference_found_in_data_dir(tmp_path):
    """No --ref: <data-dir>/<test set>.ref.<target> (as the demo's data/sample-deu2eng.ref.eng)."""
    (tmp_path / "toy-deu2eng.ref.eng").write_bytes((FIX / "ref.eng").read_bytes())
    assert run_eval(tmp_path, "--files", "toy-GPT4-deu_spa2eng") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.csv")
    hyps = lines(RES / "toy-GPT4-deu_spa2eng-result-tiny-x.txt")
    assert float(row["bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [lines(FIX / "ref.eng")]).score, abs=1e-5)
    assert row["reference"] == str(tmp_path / "toy-deu2eng.ref.eng")


def test_multi_reference(tmp_path):
    ref2 = tmp_path / "ref2.eng"
    ref2.write_text("\n".join(lines(RES / "toy-deu2eng-pivot_spa-result-tiny-x.txt")) + "\n")
    assert run_eval(tmp_path, "--files", "toy-GPT4-deu_spa2eng", "--ref", FIX / "ref.eng", "--ref", ref2) == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.csv")
    hyps = lines(RES / "toy-GPT4-deu_spa2eng-result-tiny-x.txt")
    expect = sacrebleu.corpus_bleu(hyps, [lines(FIX / "ref.eng"), lines(ref2)])
    assert float(row["bleu"]) == pytest.approx(expect.score, abs=1e-5) and "nrefs:2" in row["signatures"]


# ----------------------------------------------------------------------------- the comparison table
def test_table_rows_differences_and_suppressed_share(tmp_path):
    assert run_eval(tmp_path, "--files", *TRANSLATION, "--ref", f"toy-deu2eng={FIX / 'ref.eng'}") == 0
    rows = read_csv(tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.csv")
    assert [r["condition"] for r in rows] == ["direct", "direct 5-shot", "pivot spa", "PiM-1", "PiM-3"]
    direct = rows[0]
    assert direct["delta_bleu"] == "" and direct["delta_chrf"] == ""
    for r in rows[1:]:
        assert float(r["delta_bleu"]) == pytest.approx(float(r["bleu"]) - float(direct["bleu"]), abs=1e-5)
        assert float(r["delta_chrf"]) == pytest.approx(float(r["chrf"]) - float(direct["chrf"]), abs=1e-5)
    # by hand from the ratio fixtures: le_zero per layer averaged over steps, then over layers
    # direct: layer 0 (0.5 + 0.3) / 2 = 0.4, layer 1 (0.7 + 0.9) / 2 = 0.8 -> 0.6
    # PiM-3: layer 0 (0.25 + 0.75 + 0.5) / 3 = 0.5, layer 1 (0.5 + 0 + 0) / 3 = 1/6 -> 1/3
    assert float(direct["suppressed_share"]) == pytest.approx(0.6, abs=1e-6)
    assert float(rows[4]["suppressed_share"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(rows[4]["delta_suppressed_share"]) == pytest.approx(1 / 3 - 0.6, abs=1e-6)
    assert all(r["suppressed_share"] == "" for r in rows[1:4])  # no ratio file
    md = (tmp_path / "tables" / "eval-toy-deu2eng-tiny-x.md").read_text(encoding="utf-8")
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[:5] == ["| condition", "file", "n", "BLEU", "Δ BLEU"]
    assert table[1].startswith("| direct | toy-deu2eng | 5 | ") and "| 60.00 |" in table[1]
    assert table[5].startswith("| PiM-3 | ") and table[5].endswith("| 33.33 | -26.67 |")
    assert "version:2.6.0" in md


def test_tables_per_model(tmp_path):
    results = tmp_path / "res"
    results.mkdir()
    for model in ("qwen2.5-7b-instruct", "bloom-7b1"):  # hyphens in the model name
        for file in ("toy-deu2eng", "toy-GPT4-deu_spa2eng"):
            (results / f"{file}-result-{model}.txt").write_bytes((RES / f"{file}-result-tiny-x.txt").read_bytes())
    (results / "notes-result-x.txt").write_text("not a condition\n")
    assert run_eval(tmp_path, "--ref", FIX / "ref.eng", results=results) == 0
    for model in ("qwen2.5-7b-instruct", "bloom-7b1"):
        rows = read_csv(tmp_path / "tables" / f"eval-toy-deu2eng-{model}.csv")
        assert [r["file"] for r in rows] == ["toy-deu2eng", "toy-GPT4-deu_spa2eng"] and rows[0]["model"] == model
    assert run_eval(tmp_path / "m", "--ref", FIX / "ref.eng", "--models", "bloom-7b1", results=results) == 0
    assert [p.name for p in (tmp_path / "m" / "tables").iterdir()] != []
    assert all("bloom-7b1" in p.name for p in (tmp_path / "m" / "tables").iterdir())


# ----------------------------------------------------------------------------- classification
def test_classification_hand_counted(tmp_path):
    assert run_eval(tmp_path, "--files", "xnli-deu", "--ref", f"xnli-deu={FIX / 'xnli.labels'}") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-xnli-deu-tiny-x.csv")
    # answers 1, 2, 3, 6, 7, 8 are right; 4 says entailment (gold contradiction); 5 gives no label
    assert float(row["accuracy"]) == pytest.approx(75.0)
    assert float(row["unparsed_share"]) == pytest.approx(12.5)
    assert (row["predicted_entailment"], row["predicted_neutral"], row["predicted_contradiction"]) == ("3", "2", "2")


def test_gold_labels_from_the_release_layout(tmp_path):
    release = tmp_path / "release" / "XNLI" / "test_set"
    release.mkdir(parents=True)
    (release / "xnli.de.label.txt").write_bytes((FIX / "xnli.labels").read_bytes())
    argv = ["--results-dir", str(RES), "--tables-dir", str(tmp_path / "t"), "--files", "xnli-deu",
            "--release", str(tmp_path / "release"), "--offline"]
    assert evaluate.main(argv) == 0
    (row,) = read_csv(tmp_path / "t" / "eval-xnli-deu-tiny-x.csv")
    assert float(row["accuracy"]) == pytest.approx(75.0) and row["reference"].endswith("xnli.de.label.txt")


def test_llamafactory_predictions(tmp_path):
    pred = FIX / "lf" / "tiny-lora" / "xnli-deu" / "generated_predictions.jsonl"
    assert run_eval(tmp_path, "--models", "tiny-lora", "--predictions", pred) == 0  # predictions only
    (row,) = read_csv(tmp_path / "tables" / "eval-xnli-deu-tiny-lora.csv")  # model and condition from the folders
    assert float(row["accuracy"]) == pytest.approx(50.0) and float(row["unparsed_share"]) == pytest.approx(25.0)
    assert row["reference"].endswith("(label field)")
    # FILE:MODEL=PATH, and --ref before the label field
    gold = tmp_path / "gold"
    gold.write_text("entailment\nneutral\ncontradiction\nneutral\n")
    assert run_eval(tmp_path, "--files", "xnli-GPT4-deu_spa_rus_fra", "--ref", f"xnli-deu={gold}",
                    "--predictions", f"xnli-GPT4-deu_spa_rus_fra:lora2={pred}") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-xnli-deu-lora2.csv")
    assert row["condition"] == "PiM-3" and float(row["accuracy"]) == pytest.approx(75.0)


def test_llamafactory_translation_label_is_reference(tmp_path):
    refs, hyps = lines(FIX / "ref.eng"), lines(RES / "toy-deu2eng-pivot_spa-result-tiny-x.txt")
    pred = tmp_path / "generated_predictions.jsonl"
    pred.write_text("".join(json.dumps({"prompt": "p", "predict": h + "\nmore", "label": r}) + "\n"
                            for h, r in zip(hyps, refs)))
    assert run_eval(tmp_path, "--models", "ft", "--predictions", f"toy-deu2eng:ft={pred}") == 0
    (row,) = read_csv(tmp_path / "tables" / "eval-toy-deu2eng-ft.csv")
    assert float(row["bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-5)


# ----------------------------------------------------------------------------- errors
def test_line_count_mismatch_is_an_error(tmp_path, capsys):
    short = tmp_path / "short.eng"
    short.write_text("\n".join(lines(FIX / "ref.eng")[:4]) + "\n")
    assert run_eval(tmp_path, "--files", "toy-deu2eng", "--ref", short) == 1
    err = capsys.readouterr().err
    assert str(RES / "toy-deu2eng-result-tiny-x.txt") in err and str(short) in err
    assert "has 5 lines" in err and "has 4" in err
    assert not (tmp_path / "tables").exists()  # nothing scored, nothing written


def test_bad_gold_label_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "labels"
    bad.write_text("entailment\nneutral\ncontradiction\nyes\n" + "neutral\n" * 4)
    assert run_eval(tmp_path, "--files", "xnli-deu", "--ref", bad) == 1
    assert f"{bad}:4: 'yes' is not a xnli label" in capsys.readouterr().err


def test_unknown_task_without_target(tmp_path, capsys):
    results = tmp_path / "res"
    results.mkdir()
    (results / "mytask-deu-result-m.txt").write_text("a\n")
    assert run_eval(tmp_path, results=results) == 1
    assert "mytask-deu: no target language and the task 'mytask' is none of xnli, rte, boolq" in capsys.readouterr().err


def test_bare_ref_for_several_test_sets(tmp_path, capsys):
    assert run_eval(tmp_path, "--files", "toy-deu2eng", "xnli-deu", "--ref", FIX / "ref.eng") == 1
    assert "TESTSET=PATH" in capsys.readouterr().err


def test_missing_reference_names_the_file(tmp_path):
    """No --ref, no network, no cache: the message says which file is needed (a subprocess: own sacrebleu cache)."""
    results = tmp_path / "res"
    results.mkdir()
    (results / "wmt22-deu2eng-result-m.txt").write_text("a\nb\n")
    (results / "wmt21-isl2eng-result-m.txt").write_text("a\nb\n")
    (results / "xnli-deu-result-m.txt").write_text("a\nb\n")
    env = {**os.environ, "SACREBLEU": str(tmp_path / "sacrebleu")}
    p = subprocess.run([sys.executable, SCRIPT, "--results-dir", results, "--offline", "--release", tmp_path],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "generaltest2022.de-en.ref.A.en" in p.stderr and "newstest2021.is-en.ref.A.en" in p.stderr
    assert "REF=wmt22-deu2eng=" in p.stderr and "XNLI/test_set/xnli.de.label.txt" in p.stderr


def test_unknown_flag_and_help():
    p = subprocess.run([sys.executable, SCRIPT, "--no-such-flag"], capture_output=True, text=True)
    assert p.returncode == 2 and "unrecognized arguments: --no-such-flag" in p.stderr
    p = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for flag in ("--results-dir", "--files", "--models", "--ref", "--data-dir", "--release", "--predictions",
                 "--tokenize", "--whole-output", "--offline", "--net-timeout"):
        assert flag in p.stdout


def test_nothing_to_score(tmp_path, capsys):
    assert run_eval(tmp_path, results=tmp_path / "empty") == 1
    assert "nothing to score" in capsys.readouterr().err
    assert run_eval(tmp_path, "--files", "toy-zho2eng") == 1
    assert "no result file" in capsys.readouterr().err and not (tmp_path / "tables").exists()


RELEASE = ROOT.parent / "shared" / "data" / "pim-release"


@pytest.mark.skipif(not (RELEASE / "XNLI").is_dir(), reason="no copy of the release at ../shared/data/pim-release")
def test_release_gold_counts(tmp_path):
    """Always answering one label scores that label's share of the real test sets (spec section 2)."""
    results = tmp_path / "res"
    results.mkdir()
    answers = {"xnli-deu": ("Entailment.", 1000), "rte-eng": ("not_entailment", 277), "boolq-eng": ("Yes", 1000)}
    for file, (answer, n) in answers.items():
        (results / f"{file}-result-m.txt").write_text(f"{answer}\n" * n)
    argv = ["--results-dir", str(results), "--release", str(RELEASE), "--offline"]
    assert evaluate.main(argv) == 0
    acc = {f: float(read_csv(results / "tables" / f"eval-{f}-m.csv")[0]["accuracy"]) for f in answers}
    # the spec's counts: xnli.de 330 entailment of 1000, RTE 131 not_entailment of 277, BoolQ 625 True of 1000
    assert acc == {"xnli-deu": pytest.approx(33.0), "rte-eng": pytest.approx(100 * 131 / 277),
                   "boolq-eng": pytest.approx(62.5)}


# ----------------------------------------------------------------------------- sacrebleu's test sets
WMT_XML = """<dataset id="{name}"><collection id="general">
<doc id="d1" origlang="{src}">
<src lang="{src}"><p><seg id="1">Hallo Welt.</seg><seg id="2">Guten Morgen.</seg></p></src>
<ref lang="en" translator="A"><p><seg id="1">Hello world.</seg><seg id="2">Good morning.</seg></p></ref></doc>
</collection></dataset>
"""


@pytest.mark.parametrize("file, src, tarball, xml", [
    ("wmt22-deu2eng", "de", "wmt22.v1.1.tar.gz", "wmt22-news-systems-1.1/xml/wmttest2022.de-en.all.xml"),
    ("wmt21-isl2eng", "is", "wmt21.test.tgz", "test/newstest2021.is-en.xml"),
])
def test_reference_from_sacrebleu_cache(tmp_path, file, src, tarball, xml):
    """A test set that sacrebleu holds already is used offline, for the language pair of the name."""
    raw = tmp_path / "sacrebleu" / file[:5] / "raw"
    (raw / xml).parent.mkdir(parents=True)
    (raw / tarball).write_bytes(b"placeholder")  # present: sacrebleu does not download
    (raw / xml).write_text(WMT_XML.format(name=file[:5], src=src), encoding="utf-8")
    results = tmp_path / "res"
    results.mkdir()
    (results / f"{file}-result-m.txt").write_text("Hello world.\nGood evening.\n")
    env = {**os.environ, "SACREBLEU": str(tmp_path / "sacrebleu")}
    p = subprocess.run([sys.executable, SCRIPT, "--results-dir", results, "--offline"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    expect = sacrebleu.corpus_bleu(["Hello world.", "Good evening."], [["Hello world.", "Good morning."]])
    (row,) = read_csv(results / "tables" / f"eval-{file}-m.csv")
    assert float(row["bleu"]) == pytest.approx(expect.score, abs=1e-5)
    assert row["reference"].endswith(f"-A (sacrebleu {file[:5]} {src}-en)")  # the file of reference A


def test_network_probe_gives_up_quickly(monkeypatch):
    import socket
    import threading

    released = threading.Event()

    def hang(*args, **kwargs):  # a name lookup that never answers (until the test is over)
        released.wait(60)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    why = evaluation.network_problem("https://github.com/x.tar.gz", 0.3)
    released.set()
    assert "no answer from github.com within 0.3 s" in why
    assert time.monotonic() - start < 30, "gave up long before the lookup would have"


def test_missing_predictions_file_says_so(tmp_path, capsys):
    assert run_eval(tmp_path, "--predictions", str(tmp_path / "missing.jsonl")) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "missing.jsonl" in err and "cannot tell the condition" not in err
