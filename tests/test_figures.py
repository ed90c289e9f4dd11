"""What the figures say, read back from the drawn matplotlib figures (captured where they are saved) and
compared with numbers computed here from the tables and run files: the perplexity matrix's ratios and
its log scale centred at x1, the comparison's suppressed share in percent, the counted steps in the
legends, the language-neuron bars."""
import csv
import json
import re
import sys

import numpy as np
import pytest
from conftest import CORPUS, ROOT

from pim.activation_files import index_line, ratio_lines
from pim.runs.names import write_manifest

sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "analysis"))
import language_neurons  # noqa: E402
import perplexity  # noqa: E402
import plot_all  # noqa: E402

from pim.stats import comparison, heatmap, peaks  # noqa: E402


def capture(monkeypatch, *modules):
    """{file name: Figure} of every figure the modules save (they are still written)."""
    figures = {}
    for module in modules:
        original = module.save_figure

        def keep(fig, path, dpi, original=original):
            figures[path.name if hasattr(path, "name") else str(path)] = fig
            return original(fig, path, dpi)

        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def number(text):
    """The number of an annotation ×1,234.5 or ×0.97."""
    return float(text.removeprefix("×").replace(",", ""))


# --- the perplexity matrix ---
@pytest.fixture(scope="module")
def bloom(tmp_path_factory):
    from pim.models.tiny import build_tiny_model
    return build_tiny_model("bloom", tmp_path_factory.mktemp("figures") / "tiny-bloom", CORPUS, seed=3)


def test_the_perplexity_figure_annotates_off_over_as_is(bloom, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus-deu.txt").write_text("Das Wetter ist heute schön.\nDer Zug fährt um acht Uhr ab.\nGuten Tag!\n")
    (data / "corpus-fra.txt").write_text("Il fait beau.\nLe train part à huit heures du matin.\nBonjour\n")
    neurons = tmp_path / "n.json"
    neurons.write_text(json.dumps({"neurons": {"deu": [], "fra": [[layer, j] for layer in (0, 1)
                                                                   for j in range(0, 256, 2)]}}))
    figures = capture(monkeypatch, perplexity)
    perplexity.main(["--model", str(bloom), "--data-dir", str(data), "--results-dir", str(tmp_path / "results"),
                     "--neurons", str(neurons), "--max-length", "9", "--batch-size", "2"])
    table = {(r["deactivated"], r["evaluated"]): r for r in
             csv.DictReader((tmp_path / "results" / "tables" / "tiny-bloom-perplexity.csv").open())}
    langs = ["deu", "fra"]
    expected = [[float(table[d, e]["perplexity"]) / float(table["none", e]["perplexity"]) for e in langs]
                for d in langs]
    # a random-init model hardly notices (ratios of 1 +- 1e-3): the colours are compared exactly below
    assert any(abs(r - 1) > 1e-5 for row in expected for r in row), "switching neurons off changes something"
    fig = figures["tiny-bloom-perplexity.png"]
    ax = fig.axes[0]
    shown = [number(t.get_text()) for t in ax.texts]  # row by row, as drawn
    for got, want in zip(shown, [r for row in expected for r in row]):
        assert got == pytest.approx(want, abs=0.005 if want < 10 else 0.5)
    assert len(shown) == 4
    for d in langs:
        for e in langs:
            assert float(table[d, e]["ratio"]) == pytest.approx(expected[langs.index(d)][langs.index(e)], rel=1e-12)
    # the columns name the perplexity as is; the colour is log10 of the ratio, centred at x1
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"{e}\n{float(table['none', e]['perplexity']):,.1f}" for e in langs]
    image = ax.images[0]
    assert np.allclose(image.get_array(), np.log10(expected))
    assert image.norm.vmin == -image.norm.vmax and image.norm(0.0) == 0.5


def test_a_large_ratio_does_not_wash_out_the_others():
    """One cell of x130 (the demo's Russian one) and others of x4.1, x1 and x0.25: on the log scale the x4.1
    cell is clearly red (on the old linear scale of the difference, +3.1 beside +129, it was white), x1
    white, x0.25 clearly blue; the colour bar reads as ratios."""
    ratios = [[130.0, 4.1], [1.0, 0.25]]
    fig = perplexity.figure(ratios, ["a", "b"], {"a": 10.0, "b": 20.0}, "t", 600, 500, 100)
    ax, bar = fig.axes
    image = ax.images[0]
    rgb = image.cmap(image.norm(image.get_array()))[..., :3]
    white = image.cmap(image.norm(0.0))[:3]
    assert np.abs(np.asarray(white) - 1).max() < 0.06, "x1 is the colour map's pale centre"
    assert rgb[0, 1, 0] - rgb[0, 1, 2] > 0.15, "x4.1 is red, not washed out by x130"
    assert rgb[1, 1, 2] - rgb[1, 1, 0] > 0.15, "x0.25 is blue"
    assert np.allclose(rgb[1, 0], white)
    assert [t.get_text() for t in ax.texts] == ["×130", "×4.10", "×1.00", "×0.25"]
    fig.canvas.draw()
    ticks = {t.get_text(): t.get_position()[1] for t in bar.yaxis.get_ticklabels() if t.get_text()}
    assert "×1" in ticks and "×100" in ticks
    for label, value in ticks.items():
        assert value == pytest.approx(np.log10(number(label)), abs=1e-9)
    assert "log scale" in bar.get_ylabel() and "÷" in bar.get_ylabel()


# --- make plots: the comparison, the peak plots and heatmaps of runs of unequal counted steps ---
# direct: 2 steps, PiM-1: 3 steps, of 2 layers x 4 neurons; (eq, le) counts per step and layer
DIRECT = [[[1, 2], [0, 1]], [[1, 4], [2, 3]]]
PIM = [[[0, 4], [0, 2]], [[2, 2], [1, 4]], [[0, 3], [0, 3]]]


def write_run(results, file, counts, zero_counts):
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{file}-index-m.jsonl").write_text(index_line(np.asarray(counts)))
    (results / f"{file}-ratio-m.jsonl").write_text(ratio_lines(zero_counts, 4))


def test_the_comparison_figures_show_percent_and_counted_steps(tmp_path, monkeypatch):
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", [[2, 1, 0, 0], [1, 2, 0, 1]], DIRECT)
    write_run(results, "t-GPT4-deu_spa2eng", [[3, 0, 1, 0], [0, 3, 1, 1]], PIM)
    figures = capture(monkeypatch, comparison, peaks, heatmap)
    plot_all.main(["--results-dir", str(results)])
    le = {name: [[json.loads(line)[str(layer)][1] for line in (results / f"{name}-ratio-m.jsonl").open()]
                 for layer in range(2)] for name in ("t-deu2eng", "t-GPT4-deu_spa2eng")}
    means = {name: [100 * sum(v) / len(v) for v in layers] for name, layers in le.items()}

    top, bottom = figures["compare-t-deu2eng-m-suppressed.png"].axes
    assert [line.get_label() for line in top.lines] == ["direct (2 counted steps)", "PiM-1 (3 counted steps)"]
    assert np.allclose(top.lines[0].get_ydata(), means["t-deu2eng"])
    assert np.allclose(top.lines[1].get_ydata(), means["t-GPT4-deu_spa2eng"])
    assert "(%)" in top.get_ylabel()
    assert np.allclose(bottom.lines[0].get_ydata(), np.subtract(means["t-GPT4-deu_spa2eng"], means["t-deu2eng"]))
    assert bottom.get_ylabel() == "percentage points"

    legend = [t.get_text() for t in figures["compare-t-deu2eng-m-peak.png"].axes[0].get_legend().get_texts()]
    assert re.fullmatch(r"direct \(\d+ neurons; of 2 counted steps\)", legend[0]), legend
    assert re.fullmatch(r"PiM-1 \(\d+ neurons; of 3 counted steps\)", legend[1]), legend
    for name, steps in (("t-deu2eng", 2), ("t-GPT4-deu_spa2eng", 3)):
        texts = [t.get_text() for t in figures[f"{name}-heatmap-m.png"].texts]
        assert any(f"in how many counted steps of the run's {steps} each neuron" in t for t in texts), texts


def test_a_heatmap_whose_scale_does_not_start_at_zero_says_so(tmp_path, monkeypatch):
    """The paper's scale runs from the smallest count shown: black is then that count, not "never fired"."""
    figures = capture(monkeypatch, heatmap)
    heatmap.draw(np.array([[700, 900, 1250], [800, 701, 1000]]), tmp_path / "a.png", "t", steps=1300)
    heatmap.draw(np.array([[0, 900, 1250], [800, 701, 1000]]), tmp_path / "b.png", "t")
    heatmap.draw(np.array([[700, 900, 1250], [800, 701, 1000]]), tmp_path / "c.png", "t", from_zero=True)
    captions = {name: " ".join(t.get_text() for t in fig.texts) for name, fig in figures.items()}
    assert "starts at the smallest value shown, 700 (black), not at 0" in captions["a.png"]
    assert "of the run's 1,300 each neuron" in captions["a.png"]
    assert "not at 0" not in captions["b.png"] and "not at 0" not in captions["c.png"]


# --- the language-specific neurons per layer ---
def test_the_language_neuron_bars_count_the_files_neurons(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    rng = np.random.default_rng(5)
    for lang, tokens in (("deu", 40), ("fra", 25), ("spa", 33)):
        counts = rng.integers(0, tokens + 1, size=(3, 40))
        (results / f"corpus-{lang}-index-m.jsonl").write_text(index_line(counts))
        write_manifest(results / f"corpus-{lang}-manifest-m.json",
                       {"kind": "corpus", "positions": "all", "status": "finished", "tokens": tokens,
                        "settings": {"model_source": "x"}})
    figures = capture(monkeypatch, language_neurons)
    language_neurons.main(["--results-dir", str(results), "--model", "m", "--top-rate", "0.1",
                          "--min-tokens", "1"])  # the corpora of a few tens of tokens
    data = json.loads((results / "neurons" / "m-language-neurons.json").read_text())
    fig = figures["m-language-neurons.png"]
    ax = fig.axes[0]
    heights = {}
    for patch, lang in zip(ax.patches, [lang for lang in data["languages"] for _ in range(3)]):
        heights.setdefault(lang, []).append(patch.get_height())
    for lang in data["languages"]:
        per_layer = [sum(1 for layer, _ in data["neurons"][lang] if layer == i) for i in range(3)]
        assert heights[lang] == per_layer
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{lang} ({len(data['neurons'][lang])})" for lang in data["languages"]]
    assert f"{len(data['kept'])} of 120 neurons kept (the 10% of lowest LAPE)" in fig.get_suptitle()
