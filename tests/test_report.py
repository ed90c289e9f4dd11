"""make report (pim/report/, analysis/report.py) on results written by hand: the numbers on the page against
numbers worked out by hand, what is missing said on the page, the top contexts' rendering, figures made
small enough, and the script's refusals."""
import base64
import io
import json
import re
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from pim.activation_files import index_line, ratio_lines
from pim.report import charts, neurons
from pim.report.build import build
from pim.runs.example_files import Example
from pim.runs.names import write_manifest

sys.path.insert(0, str(ROOT / "analysis"))
import report  # noqa: E402

# two layers of 4 neurons; per step and layer the (eq_zero, le_zero) counts out of 4
DIRECT = [[[1, 2], [0, 1]], [[1, 4], [2, 3]]]  # le per layer: (2+4)/2/4 = 0.75, (1+3)/2/4 = 0.5 -> 0.625
PIM = [[[0, 4], [0, 4]], [[2, 2], [2, 4]], [[1, 3], [1, 1]]]  # le: 9/3/4 = 0.75, 9/3/4 = 0.75 -> 0.75
CORPUS = {"deu": ([[9, 1, 0, 5], [0, 2, 8, 3]], 10), "fra": ([[1, 8, 0, 4], [0, 1, 2, 6]], 8)}  # counts, tokens
NEURONS = {"deu": [[0, 0], [1, 2]], "fra": [[0, 1]]}
PERPLEXITY = [("none", "deu", 100, 10.0), ("none", "fra", 80, 20.0), ("deu", "deu", 100, 25.0),
              ("deu", "fra", 80, 21.0), ("fra", "deu", 100, 11.0), ("fra", "fra", 80, 60.0)]


def generation_run(results, file, ratio, counts, **extra):
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{file}-index-m.jsonl").write_text(index_line(np.array(counts)))
    (results / f"{file}-ratio-m.jsonl").write_text(ratio_lines(ratio, 4))
    write_manifest(results / f"{file}-manifest-m.json",
                   {"status": "finished", "settings": {"model_source": "models/m", "config_sha256": "c0ffee",
                                                       "input": f"data/{file}.txt", "input_sha256": "abc123"},
                    "model": "m", "file": file, "layers": 2, "width": 4, "counted_steps": len(ratio),
                    "command": f"python scripts/infer_activate.py --file {file} --model m", **extra})


def write_results(results):
    generation_run(results, "t-deu2eng", DIRECT, [[2, 1, 0, 1], [0, 2, 1, 1]])
    generation_run(results, "t-GPT4-deu_spa2eng", PIM, [[3, 0, 0, 1], [0, 3, 1, 0]])
    for lang, (counts, tokens) in CORPUS.items():
        (results / f"corpus-{lang}-index-m.jsonl").write_text(index_line(np.array(counts)))
        write_manifest(results / f"corpus-{lang}-manifest-m.json",
                       {"kind": "corpus", "positions": "all", "status": "finished", "tokens": tokens,
                        "file": f"corpus-{lang}", "model": "m", "layers": 2, "width": 4,
                        "settings": {"model_source": "models/m", "config_sha256": "c0ffee"}})
    (results / "neurons").mkdir()
    (results / "neurons" / "m-language-neurons.json").write_text(json.dumps(
        {"model": "m", "languages": ["deu", "fra"], "files": ["corpus-deu", "corpus-fra"], "tokens": {"deu": 10, "fra": 8},
         "layers": 2, "width": 4, "settings": {"top_rate": 0.5}, "filter_value": 0.5, "bar_value": 0.5,
         "kept": [[0, 0], [0, 1], [1, 2]], "neurons": NEURONS}))
    (results / "tables").mkdir()
    (results / "tables" / "m-perplexity.csv").write_text(
        "deactivated,evaluated,tokens,mean NLL,perplexity,change\n"
        + "".join(f"{d},{e},{n},0.0,{p!r},0.0\n" for d, e, n, p in PERPLEXITY))
    (results / "tables" / "eval-t-deu2eng-m.csv").write_text(
        "test_set,model,condition,file,n,bleu,delta_bleu,chrf,delta_chrf,reference,signatures\n"
        "t-deu2eng,m,direct,t-deu2eng,2,12.3456,,40.0,,ref.eng,BLEU|x chrF2|y\n"
        "t-deu2eng,m,PiM-1,t-GPT4-deu_spa2eng,2,13.35,1.0044,39.5,-0.5,ref.eng,BLEU|x chrF2|y\n")


def tables_of(html, first_header):
    """The rows (cells as text) of each of the page's tables whose first header cell is first_header."""
    found = []
    for table in re.findall(r"<table.*?</table>", html, re.S):
        head = re.findall(r"<th>(.*?)</th>", table)
        if head and head[0] == first_header:
            found.append([[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
                          for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])])
    assert found, f"no table with a first column {first_header!r}"
    return found


def rows_of(html, first_header):
    return tables_of(html, first_header)[0]


def test_the_numbers_on_the_page_against_numbers_by_hand(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    html, titles = build(results, "m")
    assert titles == ["Runs", "PiM vs direct", "Heatmaps and peaks per run", "Language-specific neurons",
                      "Neurons one by one", "Perplexity with a language's neurons off", "Evaluation"]
    summary = rows_of(html, "condition")
    # condition, FILE, counted steps, suppressed, Δ: direct 0.625, PiM-1 0.75 (the ratio rows above, by hand)
    assert [r[:5] for r in summary[:2]] == [["direct", "t-deu2eng", "2", "0.6250", "+0.0000"],
                                           ["PiM-1", "t-GPT4-deu_spa2eng", "3", "0.7500", "+0.1250"]]
    # per layer: direct 0.75, 0.5; PiM-1 0.75, 0.75
    assert rows_of(html, "layer")[:2] == [["0", "0.7500", "0.7500", "+0.0000"], ["1", "0.5000", "0.7500", "+0.2500"]]
    # activation probability = count / tokens: neuron (0, 0) deu 9/10, fra 1/8; (0, 1) 1/10, 8/8; (1, 2) 8/10, 2/8
    entries = re.findall(r'<div class="neuron" data-layer="(\d)" data-index="(\d)" data-langs="(\w*)">(.*?)'
                         r'<div class="contexts"', html, re.S)
    assert [(int(l), int(n), langs) for l, n, langs, _ in entries] == [(0, 0, "deu"), (0, 1, "fra"), (1, 2, "deu")]
    bars = [re.findall(r"<title>(\w+): ([\d.]+)</title>", body) for *_, body in entries]
    assert bars == [[("deu", "0.9000"), ("fra", "0.1250")], [("deu", "0.1000"), ("fra", "1.0000")],
                    [("deu", "0.8000"), ("fra", "0.2500")]]
    # deu's neurons off: deu's text 10 -> 25, x2.5; the ratios off / as is: 25/10, 21/20, 11/10, 60/20
    assert "deu neurons off: perplexity of deu 10.0000 &rarr; 25.0000 (×2.50)" in entries[0][3]
    assert "fra neurons off: perplexity of fra 20.0000 &rarr; 60.0000 (×3.00)" in entries[1][3]
    assert rows_of(html, "deactivated \\ evaluated") == [
        ["none", "10.0000", "20.0000"], ["deu", "25.0000 (×2.50)", "21.0000 (×1.05)"],
        ["fra", "11.0000 (×1.10)", "60.0000 (×3.00)"]]
    assert "no table" in html and "m-language-neurons.csv" in html  # make lape's tables were not written
    assert tables_of(html, "condition")[1] == [["direct", "t-deu2eng", "2", "12.35", "", "40.00", ""],
                                             ["PiM-1", "t-GPT4-deu_spa2eng", "2", "13.35", "+1.00", "39.50", "-0.50"]]
    runs = rows_of(html, "FILE")
    assert [r[:6] for r in runs] == [
        ["t-deu2eng", "direct", "m", "generation", "2", "finished"],
        ["t-GPT4-deu_spa2eng", "PiM-1 (spa)", "m", "generation", "3", "finished"],
        ["corpus-deu", "–", "m", "corpus", "10", "finished"], ["corpus-fra", "–", "m", "corpus", "8", "finished"]]
    assert "abc123" in html and "python scripts/infer_activate.py --file t-deu2eng --model m" in html


def test_the_page_needs_nothing_from_elsewhere(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    (results / "figures").mkdir()
    Image.new("RGB", (50, 40), "red").save(results / "figures" / "t-deu2eng-heatmap-m.png")
    html, _ = build(results, "m")
    assert "<img" in html
    assert not re.findall(r"""(?:src|href|action)\s*=\s*["'](?!#|data:)""", html, re.I)
    assert not re.search(r"https?://|<link[^>]+stylesheet|<script[^>]+src|@import|url\(", html, re.I)


def test_what_is_missing_is_said_on_the_page(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "t-deu2eng-index-m.jsonl").write_text(index_line(np.array([[1, 0], [2, 1]])))  # the paper's: no manifest
    write_manifest(results / "u-deu2eng-manifest-m.json", {"status": "running", "file": "u-deu2eng", "model": "m"})
    (results / "u-deu2eng-ratio-m.jsonl").write_text(ratio_lines([[[0, 1], [0, 2]]], 2))
    html, titles = build(results, "m")
    assert titles == ["Runs", "Heatmaps and peaks per run"]
    missing = re.search(r'<ul class="missing">(.*?)</ul>', html, re.S)[1]
    for said in ("no comparison of conditions", "make lape MODEL=m", "make ppl MODEL=m", "make eval MODEL=m"):
        assert said in missing
    runs = rows_of(html, "FILE")
    assert [r[0] for r in runs] == ["t-deu2eng", "u-deu2eng"]
    assert runs[0][5] == "finished (no manifest)" and runs[1][5] == "running"
    assert "no figure" in html and "run `make plots`" in html


def test_a_run_whose_files_disagree_is_shown_with_the_check_not_an_error(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    (results / "t-deu2eng-index-m.jsonl").write_text(index_line(np.array([[3, 1, 0, 1], [0, 2, 1, 1]])))  # 3 > 2 steps
    html, titles = build(results, "m")
    assert "PiM vs direct" in titles
    assert "a neuron fired 3 times, but" in rows_of(html, "FILE")[0][7]
    assert "not compared, a run could not be read" in html


def test_top_contexts_are_shown_with_the_top_token_marked():
    examples = [Example(3.25, "corpus-deu", 7, 2, ["Das", " <b>", " Wetter"], 1, [4, 5, 6]),
                Example(0.5, "corpus-fra", 1, 9, ["Il", " fait"], 5, [7, 8])]
    html = neurons.contexts_html(examples)
    assert html.count("<li>") == 2
    assert '<span class="tok">Das</span><span class="tok top"> &lt;b&gt;</span><span class="tok"> Wetter</span>' in html
    assert '<span class="ctx-value">3.25</span>' in html and "corpus-deu:7 position 2" in html
    assert "(top token 5 is not in the window)" in html
    assert "<b>" not in html
    assert "not yet" in neurons.contexts_html(None) and "no top contexts" in neurons.contexts_html([])


def test_examples_given_go_into_their_neurons_slots(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    example = Example(1.5, "corpus-fra", 3, 4, ["a", "b"], 0, [1, 2])
    html, _ = build(results, "m", examples={(0, 1): [example]})
    slots = re.findall(r'data-index="(\d)".*?<div class="contexts" data-slot="top-contexts">(.*?)</div>', html, re.S)
    assert [(n, "corpus-fra:3" in body, "no top contexts" in body) for n, body in slots] == [
        ("0", False, True), ("1", True, False), ("2", False, True)]


def test_large_figures_are_reencoded_to_fit(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (900, 2400, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noise).save(path)
    assert path.stat().st_size > charts.MAX_PNG_BYTES
    data = charts.png_bytes(path, max_bytes=200_000, max_width=1600)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.width <= 1600 and image.height * 2400 == pytest.approx(900 * image.width,
                                                                                                      rel=0.01)
    assert len(data) <= 200_000
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 20), "blue").save(small)
    assert charts.png_bytes(small) == small.read_bytes()  # small figures as they are
    uri = re.search(r'src="data:image/png;base64,([^"]+)"', charts.figure(small, "c", "hint"))[1]
    assert base64.b64decode(uri) == small.read_bytes()


def test_the_script_writes_one_page_per_model_and_refuses_what_it_cannot_do(tmp_path, capsys):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        report.main(["--results-dir", str(results)])
    assert str(e.value) == f"report.py: error: no runs, neuron files or perplexity tables in {results}/: run " \
                           "`make infer` (or `make demo`) first"
    write_results(results)
    generation_run(results, "t-deu2eng", DIRECT, [[2, 1, 0, 1], [0, 2, 1, 1]])
    (results / "t-deu2eng-index-n.jsonl").write_text(index_line(np.array([[1]])))
    with pytest.raises(SystemExit) as e:
        report.main(["--results-dir", str(results), "--model", "x"])
    assert str(e.value) == f"report.py: error: nothing of x in {results}/; the models there: m, n"
    with pytest.raises(SystemExit) as e:
        report.main(["--results-dir", str(results), "--out", str(tmp_path / "r.html")])
    assert "give one --model" in str(e.value)
    report.main(["--results-dir", str(results)])
    out = capsys.readouterr().out
    assert (results / "report-m.html").is_file() and (results / "report-n.html").is_file()
    assert f"report of m: {results / 'report-m.html'}" in out
    with pytest.raises(SystemExit) as e:
        report.main(["--help"])
    assert e.value.code == 0


def test_at_most_max_neurons_entries_those_of_lowest_lape(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    data = json.loads((results / "neurons" / "m-language-neurons.json").read_text())
    data["kept"] = [[1, 2], [0, 1], [0, 0]]  # lowest LAPE first
    (results / "neurons" / "m-language-neurons.json").write_text(json.dumps(data))
    html, _ = build(results, "m", max_neurons=2)
    shown = re.findall(r'<div class="neuron" data-layer="(\d)" data-index="(\d)"', html)
    assert shown == [("0", "1"), ("1", "2")]  # the first two of "kept", by layer and neuron
    assert "2 of the 3 neurons are shown" in html
    html, _ = build(results, "m", max_neurons=None)
    assert len(re.findall(r'<div class="neuron" ', html)) == 3 and "neurons are shown" not in html


def test_runs_of_other_weights_are_pointed_out(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    html, _ = build(results, "m")
    assert "the same in all 4 manifests" in html
    generation_run(results, "t-GPT4-deu_spa2eng", PIM, [[3, 0, 0, 1], [0, 3, 1, 0]])
    manifest = json.loads((results / "t-GPT4-deu_spa2eng-manifest-m.json").read_text())
    manifest["settings"]["config_sha256"] = "beef"
    write_manifest(results / "t-GPT4-deu_spa2eng-manifest-m.json", manifest)
    html, _ = build(results, "m")
    assert "made with 2 different models, weights or software versions" in html
    assert [r[:4] for r in rows_of(html, "runs")] == [
        ["t-deu2eng · m, corpus-deu · m, corpus-fra · m", "models/m", "null", "c0ffee"],
        ["t-GPT4-deu_spa2eng · m", "models/m", "null", "beef"]]
