"""The analysis scripts (analysis/): tables against numbers worked out by hand, figures, runs, errors."""
import csv
import json
import logging
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

sys.path.insert(0, str(ROOT / "analysis"))
import compare_conditions  # noqa: E402
import heatmap  # noqa: E402
import peak_analysis  # noqa: E402
import plot_all  # noqa: E402
import ratio_analysis  # noqa: E402

from pim import cli as common  # noqa: E402  (UserError, finished_runs: what analysis/common.py held)
from pim.activation_files import index_line, ratio_lines  # noqa: E402
from pim.runs import names as pim_runs  # noqa: E402
from pim.stats import heatmap as heatmap_layout  # noqa: E402
from pim.stats import peaks as peak_stats  # noqa: E402
from pim.stats import ratio_table  # noqa: E402
from pim.stats.neuron_stats import Summary  # noqa: E402


def png_size(path):
    """(width, height) from the PNG signature and IHDR chunk; fails on anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    return struct.unpack(">II", head[16:24])


def heatmap_pixels(path, layers, neurons):
    """[layer][neuron] RGB at the centre of each cell of a heatmap of the default size with one column per
    neuron (layer 0 at the bottom)."""
    image = np.asarray(Image.open(path).convert("RGB"))
    top, bottom = heatmap_layout.TOP, heatmap_layout.HEIGHT - heatmap_layout.BOTTOM
    plot = heatmap_layout.plot_width(heatmap_layout.WIDTH)
    return [[image[int(bottom - (layer + 0.5) * (bottom - top) / layers),
                   int(heatmap_layout.LEFT + (n + 0.5) * plot / neurons)].tolist() for n in range(neurons)]
            for layer in range(layers)]


def write_run(results, file, model, counts, ratio_counts=None, width=None):
    """<file>-index-<model>.jsonl from counts [layers, width], and the ratio file from int (eq, le)
    counts [rows, layers, 2] out of `width` neurons."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{file}-index-{model}.jsonl").write_text(index_line(np.asarray(counts)))
    if ratio_counts is not None:
        (results / f"{file}-ratio-{model}.jsonl").write_text(ratio_lines(ratio_counts, width))


# two steps x two layers of 4 neurons: per layer eq/le counts
DIRECT = [[[1, 2], [0, 1]], [[1, 4], [2, 3]]]  # eq = [2/8, 2/8] -> means eq [0.25, 0.25], le [0.75, 0.5]
PIM = [[[0, 4], [0, 4]], [[2, 2], [2, 4]], [[1, 3], [1, 1]]]  # eq means [1/4, 1/4], le [3/4, 3/4]


def test_ratio_table_by_hand(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m", [[1], [1]], DIRECT, width=4)
    write_run(results, "t-GPT4-deu_spa2eng", "m", [[1], [1]], PIM, width=4)
    paths = [results / "t-deu2eng-ratio-m.jsonl", results / "t-GPT4-deu_spa2eng-ratio-m.jsonl"]
    ratio_analysis.main(["--files", *map(str, paths), "--out-dir", str(tmp_path / "tables"), "--name", "x"])
    rows = list(csv.reader((tmp_path / "tables" / "x.csv").open()))
    header, body = rows[0], {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}
    assert header == ["layer", "direct eq_zero", "direct lt_zero", "direct le_zero", "PiM-1 eq_zero", "PiM-1 lt_zero",
                      "PiM-1 le_zero", "PiM-1 Δeq_zero", "PiM-1 Δlt_zero", "PiM-1 Δle_zero"]
    # direct layer 0: eq (1+1)/2/4 = 0.25, le (2+4)/2/4 = 0.75; PiM-1 layer 0: eq 3/3/4 = 0.25, le 9/3/4 = 0.75
    assert body["0"] == pytest.approx([0.25, 0.5, 0.75, 0.25, 0.5, 0.75, 0, 0, 0])
    # direct layer 1: eq 2/2/4 = 0.25, le 4/2/4 = 0.5; PiM-1 layer 1: eq 3/3/4 = 0.25, le 9/3/4 = 0.75
    assert body["1"] == pytest.approx([0.25, 0.25, 0.5, 0.25, 0.5, 0.75, 0, 0.25, 0.25])
    assert body["mean"] == pytest.approx([0.25, 0.375, 0.625, 0.25, 0.5, 0.75, 0, 0.125, 0.125])
    md = (tmp_path / "tables" / "x.md").read_text()
    assert "| mean | 0.2500 | 0.3750 | 0.6250 | 0.2500 | 0.5000 | 0.7500 | +0.0000 | +0.1250 | +0.1250 |" in md
    out = capsys.readouterr().out
    assert "0.6250" in out and "+0.1250" in out and "counted steps" in out


def test_ratio_table_of_files_with_different_layers_leaves_blanks():
    a = Summary({"eq_zero": np.array([0.1, 0.2]), "lt_zero": np.array([0.1, 0.1]),
                                "le_zero": np.array([0.2, 0.3])}, 5)
    b = Summary({k: v[:1] for k, v in a.means.items()}, 3)
    header, rows = ratio_table.table([a, b], ["a", "b"])
    assert rows[1][0] == "1" and rows[1][4:] == [None] * 6  # b has no layer 1: no value, no difference
    assert rows[2][4:7] == pytest.approx([0.1, 0.1, 0.2]) and rows[2][7:] == pytest.approx([-0.05, 0.0, -0.05])


def test_heatmap_size_and_layer_0_at_the_bottom(tmp_path, caplog):
    counts = np.zeros((4, 3000), dtype=np.int64)
    counts[0] = 100  # layer 0 fired always, the others never: white at the bottom, black above ('hot')
    caplog.set_level(logging.WARNING, logger="matplotlib")
    out = heatmap_layout.draw(counts, tmp_path / "h.png", "test", width_px=900, height_px=500, dpi=100)
    assert png_size(out) == (900, 500)
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]  # default font only
    image = np.asarray(Image.open(out).convert("RGB"))
    plot_top, plot_bottom = heatmap_layout.TOP, 500 - heatmap_layout.BOTTOM  # pixel rows of the plot area
    band = (plot_bottom - plot_top) / 4
    x = heatmap_layout.LEFT + heatmap_layout.plot_width(900) // 2
    assert image[int(plot_bottom - band / 2), x].tolist() == [255, 255, 255]  # layer 0
    assert image[int(plot_top + band / 2), x].max() < 20  # layer 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_heatmap_cli_writes_one_png_per_file(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m-1", np.arange(2 * 5000).reshape(2, 5000))
    write_run(results, "t-GPT4-deu_spa2eng", "m-1", np.ones((2, 5000), dtype=int))
    heatmap.main(["--files", str(results / "*-index-*.jsonl"), "--out-dir", str(tmp_path / "fig"), "--width", "800",
                  "--height", "400", "--log"])
    for name in ("t-deu2eng-heatmap-m-1.png", "t-GPT4-deu_spa2eng-heatmap-m-1.png"):
        assert png_size(tmp_path / "fig" / name) == (800, 400)
    assert "wrote" in capsys.readouterr().out


def test_peaks_and_peak_plot(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m", [[5, 3, 5, 0], [5, 7, 3, 1]])
    write_run(results, "t-GPT4-deu_spa_rus_fra2eng", "m", [[0, 0, 0, 9], [1, 0, 0, 2]])
    values, per_layer, n = peak_stats.peaks(np.array([[5, 3, 5, 0], [5, 7, 3, 1]]), 0.5)
    assert values.tolist() == [7, 5, 5, 5] and per_layer.tolist() == [2, 2] and n == 8
    values, per_layer, _ = peak_stats.peaks(np.array([[0, 0, 0, 9], [1, 0, 0, 2]]), 0.5)
    assert values.tolist() == [9, 2, 1] and per_layer.tolist() == [1, 2]  # the 4th of the top half never fired
    peak_analysis.main(["--files", str(results / "t-deu2eng-index-m.jsonl"),
                        str(results / "t-GPT4-deu_spa_rus_fra2eng-index-m.jsonl"), "--select-proportion", "0.5",
                        "--out-dir", str(tmp_path), "--width", "640", "--height", "480"])
    out = capsys.readouterr().out
    assert "direct: 4 of 8 neurons kept, counts 7 down to 5" in out and "PiM-3: 3 of 8 neurons kept" in out
    assert png_size(tmp_path / "t-deu2eng-peak-m-and-1-more.png") == (640, 480)


def test_run_names_with_hyphens(tmp_path):
    assert pim_runs.split_name("wmt22-deu2eng-index-bloom-7b1.jsonl", "index") == ("wmt22-deu2eng", "bloom-7b1")
    assert pim_runs.split_name("a-index-b-index-m.jsonl", "index") == ("a-index-b", "m")  # the last place
    (tmp_path / "a-ratio-b-index-m.jsonl").write_text("")  # the run's partner file says where FILE ends
    assert pim_runs.split_name("a-index-b-index-m.jsonl", "index", tmp_path) == ("a", "b-index-m")
    (tmp_path / "a-index-b-manifest-m.json").write_text(json.dumps({"file": "a-index-b", "model": "m"}))
    assert pim_runs.split_name("a-index-b-index-m.jsonl", "index", tmp_path) == ("a-index-b", "m")  # manifest first
    assert pim_runs.split_name("nothing.jsonl", "index") is None


def test_find_runs_orders_groups_and_labels(tmp_path):
    results = tmp_path / "results"
    for file in ("w-GPT4-deu_spa_rus_fra2eng", "w-deu2eng", "w-GPT4-deu_spa2eng", "x-fra2eng", "myrun"):
        for model in ("m-1", "m-2"):
            write_run(results, file, model, [[1, 2]])
    (results / "w-deu2eng-ratio-m-3.jsonl").write_text("")  # unfinished: no index file
    runs = pim_runs.finished_runs(results)
    assert [(r.file, r.model) for r in runs[:5]] == [("w-deu2eng", "m-1"), ("w-GPT4-deu_spa2eng", "m-1"),
                                                     ("w-GPT4-deu_spa_rus_fra2eng", "m-1"), ("x-fra2eng", "m-1"),
                                                     ("myrun", "m-1")]
    groups = pim_runs.comparison_groups(runs)
    assert list(groups) == [("w-deu2eng", "m-1"), ("w-deu2eng", "m-2")]  # x and myrun have nothing to compare
    assert pim_runs.labels(groups[("w-deu2eng", "m-1")]) == ["direct", "PiM-1", "PiM-3"]
    named = pim_runs.finished_runs(results, ["x-fra2eng", "w-deu2eng"], ["m-2"])
    assert [r.file for r in named] == ["x-fra2eng", "w-deu2eng"]  # the order given
    assert list(pim_runs.comparison_groups(named, together=True)) == [("x-fra2eng-and-1-more", "m-2")]
    with pytest.raises(common.UserError, match="no finished run of FILE w-deu2eng-5shot"):
        pim_runs.finished_runs(results, ["w-deu2eng-5shot"])
    same = [pim_runs.Run("w-GPT4-deu_spa2eng", "m"), pim_runs.Run("w-GPT4-deu_fra2eng", "m")]
    assert pim_runs.labels(same) == ["PiM-1 (spa)", "PiM-1 (fra)"]


def comparison_results(tmp_path):
    """direct and PiM-1 of one model: 2 layers x 5 neurons (10 neurons: the top 10% is one neuron)."""
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m", [[50, 20, 10, 10, 5], [5, 0, 0, 0, 0]], DIRECT, width=4)
    write_run(results, "t-GPT4-deu_spa2eng", "m", [[0, 30, 0, 0, 0], [10, 0, 0, 0, 0]], PIM, width=4)
    return results


def test_comparison_report_by_hand(tmp_path, capsys):
    results = comparison_results(tmp_path)
    compare_conditions.main(["--results-dir", str(results), "--model", "m", "--files", "t-deu2eng",
                             "t-GPT4-deu_spa2eng", "--top", "0.1", "0.2"])
    rows = {r["condition"]: r for r in csv.DictReader((results / "tables" / "compare-t-deu2eng-m.csv").open())}
    d, p = rows["direct"], rows["PiM-1"]
    assert (d["steps"], p["steps"]) == ("2", "3")
    assert float(d["le_zero"]) == pytest.approx(0.625) and float(p["le_zero"]) == pytest.approx(0.75)
    assert float(p["dle_zero"]) == pytest.approx(0.125) and float(d["dle_zero"]) == 0
    assert float(d["fired"]) == pytest.approx(0.6) and float(p["fired"]) == pytest.approx(0.2)
    assert float(d["top0.1"]) == pytest.approx(0.5) and float(d["top0.2"]) == pytest.approx(0.7)  # 50/100, 70/100
    assert float(p["top0.1"]) == pytest.approx(0.75) and float(p["top0.2"]) == pytest.approx(1.0)  # 30/40, 40/40
    # top 10%: direct {(0,0)}, PiM-1 {(0,1)}: 0; top 20%: {(0,0), (0,1)} and {(0,1), (1,0)}: 1/3
    assert float(p["jaccard0.1"]) == 0 and float(p["jaccard0.2"]) == pytest.approx(1 / 3)
    md = (results / "tables" / "compare-t-deu2eng-m.md").read_text()
    assert "suppresses 12.50 percentage points more neurons (75.00% vs 62.50%)" in md
    sizes = {"../figures/compare-t-deu2eng-m-peak.png": (peak_stats.WIDTH, peak_stats.HEIGHT),
             "../figures/compare-t-deu2eng-m-suppressed.png": (1200, 800),  # draw_suppressed's size
             "../figures/t-deu2eng-heatmap-m.png": (heatmap_layout.WIDTH, heatmap_layout.HEIGHT),
             "../figures/t-GPT4-deu_spa2eng-heatmap-m.png": (heatmap_layout.WIDTH, heatmap_layout.HEIGHT)}
    for link, size in sizes.items():
        assert f"]({link})" in md
        assert png_size(results / "tables" / link) == size
    # the heatmap's content: direct's layer 0 neuron 0 (50, the largest count) is white in 'hot', layer 1
    # neuron 4 (0, the smallest) black; PiM-1's layer 0 neuron 1 (30, its largest) white
    direct = heatmap_pixels(results / "figures" / "t-deu2eng-heatmap-m.png", layers=2, neurons=5)
    assert direct[0][0] == [255, 255, 255] and max(direct[1][4]) < 20 and direct[0][0] != direct[0][1]
    pim = heatmap_pixels(results / "figures" / "t-GPT4-deu_spa2eng-heatmap-m.png", layers=2, neurons=5)
    assert pim[0][1] == [255, 255, 255] and max(pim[0][0]) < 20
    assert "| 1 | 0.5000 | 0.7500 | +0.2500 |" in md  # per layer: le_zero of layer 1 and the difference
    assert "0.7500" in capsys.readouterr().out


def test_comparison_of_different_models_is_an_error(tmp_path):
    results = comparison_results(tmp_path)
    write_run(results, "t-GPT4-deu_fra2eng", "m", np.ones((3, 5), dtype=int))
    with pytest.raises(SystemExit, match="different shapes.*compare runs of one model"):
        compare_conditions.main(["--results-dir", str(results), "--model", "m", "--files", "t-deu2eng",
                                 "t-GPT4-deu_fra2eng"])


def test_plot_all_draws_every_run_and_compares(tmp_path):
    results = comparison_results(tmp_path)
    write_run(results, "t-deu2eng", "other-model", np.ones((3, 5), dtype=int))  # alone: no comparison
    plot_all.main(["--results-dir", str(results)])
    figures = sorted(p.name for p in (results / "figures").iterdir())
    tables = sorted(p.name for p in (results / "tables").iterdir())
    assert figures == sorted(["compare-t-deu2eng-m-peak.png", "compare-t-deu2eng-m-suppressed.png",
                              "t-deu2eng-heatmap-m.png", "t-deu2eng-peak-m.png", "t-GPT4-deu_spa2eng-heatmap-m.png",
                              "t-GPT4-deu_spa2eng-peak-m.png", "t-deu2eng-heatmap-other-model.png",
                              "t-deu2eng-peak-other-model.png"])
    assert tables == sorted(["compare-t-deu2eng-m.md", "compare-t-deu2eng-m.csv", "compare-t-deu2eng-m-ratio.csv",
                             "compare-t-deu2eng-m-ratio.md", "t-deu2eng-ratio-m.csv", "t-deu2eng-ratio-m.md",
                             "t-GPT4-deu_spa2eng-ratio-m.csv", "t-GPT4-deu_spa2eng-ratio-m.md"])
    assert png_size(results / "figures" / "t-deu2eng-heatmap-m.png") == (heatmap_layout.WIDTH, heatmap_layout.HEIGHT)
    assert png_size(results / "figures" / "t-deu2eng-peak-m.png") == (peak_analysis.WIDTH, peak_analysis.HEIGHT)


def test_plot_all_files_restricts_and_compares_in_order(tmp_path):
    results = comparison_results(tmp_path)
    write_run(results, "u-fra2eng", "m", np.ones((2, 5), dtype=int))
    plot_all.main(["--results-dir", str(results), "--files", "t-GPT4-deu_spa2eng", "u-fra2eng"])
    assert not (results / "figures" / "t-deu2eng-heatmap-m.png").exists()
    md = (results / "tables" / "compare-t-GPT4-deu_spa2eng-and-1-more-m.md").read_text()
    assert md.startswith("# PiM-1 vs direct: `t-deu2eng` + `u-fra2eng` · `m`")  # the first named: the reference
    with pytest.raises(SystemExit, match="no finished run of FILE nope"):
        plot_all.main(["--results-dir", str(results), "--files", "nope"])
    with pytest.raises(SystemExit, match="no finished runs"):
        plot_all.main(["--results-dir", str(tmp_path)])


def test_plot_all_draws_the_rest_when_a_file_is_broken(tmp_path, capsys):
    results = comparison_results(tmp_path)
    write_run(results, "u-fra2eng", "m", np.ones((2, 5), dtype=int))
    (results / "t-GPT4-deu_spa2eng-ratio-m.jsonl").write_text('{"0": [0.1, 0.2], "1": [0.1, 0.2]}\n{"0": [0.1]}\n')
    with pytest.raises(SystemExit) as e:
        plot_all.main(["--results-dir", str(results)])
    assert str(e.value) == (f"plot_all.py: error: could not draw t-GPT4-deu_spa2eng · m: "
                            f"{results}/t-GPT4-deu_spa2eng-ratio-m.jsonl:2: 1 layers, but line 1 has 2")
    heatmap_size, peak_size = (heatmap_layout.WIDTH, heatmap_layout.HEIGHT), (peak_stats.WIDTH, peak_stats.HEIGHT)
    for name, size in (("t-deu2eng-heatmap-m.png", heatmap_size), ("u-fra2eng-heatmap-m.png", heatmap_size),
                       ("u-fra2eng-peak-m.png", peak_size)):
        assert png_size(results / "figures" / name) == size
    assert not (results / "tables" / "compare-t-deu2eng-m.md").exists()  # it would lack one condition


def run_script(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_user_errors_are_one_line_messages(tmp_path):
    bad = tmp_path / "t-deu2eng-ratio-m.jsonl"
    bad.write_text('{"0": [0.1, 0.2]}\n{"0": [0.1, 0.2]\n')
    res = run_script("analysis/ratio_analysis.py", "--files", bad, "--out-dir", tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"ratio_analysis.py: error: {bad}:2: not JSON (Expecting ',' delimiter)"
    res = run_script("analysis/heatmap.py", "--files", tmp_path / "missing-index-m.jsonl")
    assert res.returncode == 1 and "missing-index-m.jsonl: no such index file" in res.stderr
    res = run_script("analysis/peak_analysis.py", "--select-proportion", "1.5")
    assert res.returncode == 2 and "invalid proportion value: '1.5'" in res.stderr
    res = run_script("analysis/plot_all.py", "--result-dir", tmp_path)  # a misspelt flag
    assert res.returncode == 2 and "unrecognized arguments: --result-dir" in res.stderr
    assert not list(tmp_path.glob("*.csv"))  # nothing half-written


@pytest.mark.parametrize("module, flags", [
    (ratio_analysis, {"--files", "--out-dir", "--name", "--quiet"}),
    (heatmap, {"--files", "--out-dir", "--width", "--height", "--dpi", "--cmap", "--log", "--from-zero", "--agg"}),
    (peak_analysis, {"--files", "--select-proportion", "--out-dir", "--name", "--width", "--height", "--dpi"}),
    (compare_conditions, {"--results-dir", "--files", "--model", "--select-proportion", "--top", "--out-dir",
                          "--figures-dir", "--name", "--no-heatmaps"}),
    (plot_all, {"--results-dir", "--files", "--models", "--select-proportion", "--top"}),
])
def test_help_explains_every_flag(module, flags, capsys):
    parser = module.build_parser()
    actions = {a.option_strings[-1]: a for a in parser._actions if a.option_strings and a.dest != "help"}
    assert set(actions) == flags
    for flag, action in actions.items():
        assert len(action.help or "") > 15, f"{flag} has no help"
    with pytest.raises(SystemExit) as e:
        module.build_parser().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in flags) and "python analysis/" in out  # the flags and the examples


def test_benchmark_smoke(tmp_path):
    res = run_script("scripts/benchmark_analysis.py", "--layers", "3", "--width", "64", "--rows", "40",
                     "--conditions", "2", "--dir", tmp_path)
    assert res.returncode == 0, res.stderr
    for name in ("ratio analysis", "heatmap", "peak analysis", "comparison of 2", "the three"):
        assert name in res.stdout
    assert png_size(tmp_path / "figures" / "wmt22-deu2eng-heatmap-synthetic-176b.png") == (1600, 900)
