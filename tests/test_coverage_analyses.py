"""The branches of LAPE, the neuron statistics and the comparison of conditions that no other test took
(issue 27; `make coverage`): corpus runs that do not belong together, the --direct/--pim table's refusals,
runs without ratio files, a binning that does not exist. Numbers are worked out here by hand."""
import csv
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from pim.activation_files import index_line
from pim.runs.names import write_manifest
from pim.stats.neuron_stats import binned_means


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


language_neurons = load_script("language_neurons")
compare_conditions = load_script("compare_conditions")


# ----------------------------------------------------------------------------- LAPE's refusals
def corpus_run(results, lang, counts, tokens, model="m", **settings):
    results.mkdir(exist_ok=True)
    (results / f"corpus-{lang}-index-{model}.jsonl").write_text(index_line(np.array(counts)))
    write_manifest(results / f"corpus-{lang}-manifest-{model}.json",
                   {"kind": "corpus", "positions": "all", "status": "finished", "tokens": tokens,
                    "file": f"corpus-{lang}", "model": model, "settings": {"max_length": 32, **settings}})


def lape_error(results, *extra):
    with pytest.raises(SystemExit) as e:
        language_neurons.main(["--results-dir", str(results), "--model", "m", "--min-tokens", "1", *extra])
    assert not (results / "neurons").exists(), "a refusal writes nothing"
    return str(e.value)


@pytest.mark.parametrize("fra, fra_tokens, message", [
    ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 10,
     "corpus-fra: 3 layers x 3 neurons, but corpus-deu has 2 x 3: not runs of one model"),
    ([[1, 2, 3], [4, 5, 6]], 5, "more than the 5 tokens of corpus-fra-manifest-m.json"),  # refused when read
    ([[0, 0, 0], [0, 0, 0]], 0, "counted tokens"),
])
def test_corpus_runs_that_do_not_belong_together_are_refused(tmp_path, fra, fra_tokens, message):
    results = tmp_path / "results"
    corpus_run(results, "deu", [[10, 5, 0], [2, 0, 9]], 10)
    corpus_run(results, "fra", fra, fra_tokens)
    error = lape_error(results)
    assert error.startswith("language_neurons.py: error: ") and message in error and "\n" not in error


def test_lape_itself_refuses_counts_above_their_tokens_and_languages_without_tokens():
    """The library's own guard (the API and the report call it too, not only the script, whose reader refuses first)."""
    from pim.stats.lape import activation_probabilities

    with pytest.raises(ValueError, match="a count exceeds its language's counted tokens"):
        activation_probabilities([np.array([[1, 11]]), np.array([[0, 1]])], [10, 5])
    with pytest.raises(ValueError, match="every language needs counted tokens"):
        activation_probabilities([np.array([[0, 0]]), np.array([[0, 1]])], [0, 5])
    assert activation_probabilities([np.array([[1, 5]]), np.array([[0, 1]])], [10, 5]).tolist() == [[[0.1, 0.0],
                                                                                                      [0.5, 0.2]]]


def test_the_direct_and_pim_runs_are_refused_when_they_cannot_be_compared(tmp_path):
    results = tmp_path / "results"
    corpus_run(results, "deu", [[10, 5, 0], [2, 0, 9]], 10)
    corpus_run(results, "fra", [[0, 5, 0], [2, 8, 1]], 10)
    assert lape_error(results, "--direct", "direct") == "language_neurons.py: error: --direct and --pim go together"
    (results / "direct-index-m.jsonl").write_text(index_line(np.array([[3, 1, 0], [0, 2, 5]])))
    (results / "other.jsonl").write_text(index_line(np.array([[3, 1], [0, 2]])))
    with pytest.raises(SystemExit) as e:
        language_neurons.main(["--results-dir", str(results), "--model", "m", "--min-tokens", "1", "--direct", "direct",
                               "--pim", str(results / "other.jsonl")])
    assert str(e.value) == ("language_neurons.py: error: direct has (2, 3) (layers x neurons), PiM (2, 2): "
                            "not runs of one model")
    with pytest.raises(SystemExit) as e:
        language_neurons.main(["--results-dir", str(results), "--model", "m", "--min-tokens", "1", "--direct", "direct",
                               "--pim", "pim"])
    assert str(e.value) == (f"language_neurons.py: error: {results / 'pim-index-m.jsonl'}: no such index file "
                            "(run `make infer FILE=... MODEL=m` first)")


def test_an_index_path_is_read_as_given(tmp_path):
    """--direct and --pim as paths: the PiM table counts what fired in direct and not in PiM, by hand."""
    results = tmp_path / "results"
    corpus_run(results, "deu", [[10, 5, 0], [2, 0, 9]], 10)
    corpus_run(results, "fra", [[0, 5, 0], [2, 8, 1]], 10)
    (tmp_path / "d.jsonl").write_text(index_line(np.array([[3, 1, 1], [0, 2, 5]])))
    (tmp_path / "p.jsonl").write_text(index_line(np.array([[0, 1, 0], [0, 0, 5]])))
    language_neurons.main(["--results-dir", str(results), "--model", "m", "--min-tokens", "1", "--top-rate", "0.5",
                           "--filter-quantile",
                           "0.5", "--bar-quantile", "0.75", "--direct", str(tmp_path / "d.jsonl"),
                           "--pim", str(tmp_path / "p.jsonl")])
    # the selection of tests/test_lape.py: deu (0,0), (1,2); fra (1,1). Suppressed: (0,0), (0,2), (1,1)
    rows = list(csv.reader((results / "tables" / "m-language-neurons-pim.csv").open()))
    assert rows[1:] == [["deu", "1", f"{1 / 3:.4f}", "0.5000"], ["fra", "1", f"{1 / 3:.4f}", "1.0000"],
                        ["any language", "2", f"{2 / 3:.4f}", "–"], ["suppressed by PiM (all)", "3", "1.0000", "–"]]


def test_the_lape_script_runs_as_a_program():
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "language_neurons.py"), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--top-rate" in done.stdout and "--direct" in done.stdout


# ----------------------------------------------------------------------------- neuron statistics
def test_binned_maxima_by_hand_and_an_unknown_binning():
    counts = np.array([[1, 7, 3, 2, 9], [0, 0, 4, 4, 1]])
    # 5 neurons in at most 2 bins: 2 bins, edges at 0, round(2.5) = 2, 5 (numpy rounds half to even)
    values, small, large = binned_means(counts, 2, how="max")
    assert values.tolist() == [[7, 9], [0, 4]] and (small, large) == (2, 3)
    means, _, _ = binned_means(counts, 2)
    assert means.tolist() == [[8 / 2, 14 / 3], [0 / 2, 9 / 3]]
    with pytest.raises(ValueError, match="how must be mean or max, not 'median'"):
        binned_means(counts, 2, how="median")


# ----------------------------------------------------------------------------- comparison without ratio files
def top_share_and_ids(counts, p):
    """By hand: the top floor(N p) neurons (highest count; ties: lower layer, then neuron), less those of count 0."""
    flat = [(c, layer, n) for layer, row in enumerate(counts) for n, c in enumerate(row)]
    k = int(len(flat) * p + 1e-9)
    top = sorted(flat, key=lambda x: (-x[0], x[1], x[2]))[:k]
    ids = {(layer, n) for c, layer, n in top if c > 0}
    return sum(c for c, _, _ in top) / sum(c for c, _, _ in flat), ids


def test_runs_without_ratio_files_are_compared_on_their_index_counts(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rng = np.random.default_rng(5)
    direct = rng.permutation(np.arange(1, 101)).reshape(2, 50)  # 100 neurons, counts 1..100
    pim = rng.permutation(np.arange(100) // 2).reshape(2, 50)  # ties and zeros
    for file, counts in (("t-deu2eng", direct), ("t-GPT4-deu_spa2eng", pim)):
        (results / f"{file}-index-m.jsonl").write_text(index_line(counts))
    compare_conditions.main(["--results-dir", str(results), "--model", "m", "--files", "t-deu2eng",
                             "t-GPT4-deu_spa2eng", "--top", "0.01", "0.1", "--no-heatmaps"])
    rows = {r["file"]: r for r in csv.DictReader((results / "tables" / "compare-t-deu2eng-m.csv").open())}
    for file, counts in (("t-deu2eng", direct), ("t-GPT4-deu_spa2eng", pim)):
        row = rows[file]
        assert (row["steps"], row["le_zero"], row["dle_zero"], row["eq_zero"]) == ("", "", "", "")
        assert float(row["fired"]) == pytest.approx(sum(c > 0 for c in counts.ravel()) / 100, rel=1e-12)
        for p in (0.01, 0.1):
            share, ids = top_share_and_ids(counts.tolist(), p)
            _, base = top_share_and_ids(direct.tolist(), p)
            assert float(row[f"top{p:g}"]) == pytest.approx(share, rel=1e-12)
            assert float(row[f"jaccard{p:g}"]) == pytest.approx(len(ids & base) / len(ids | base), rel=1e-12)
    md = (results / "tables" / "compare-t-deu2eng-m.md").read_text()
    assert "## Suppressed share per layer" not in md and "percentage points" not in md
    share, _ = top_share_and_ids(pim.tolist(), 0.01)
    base_share, _ = top_share_and_ids(direct.tolist(), 0.01)
    assert f"its top 1% of neurons take {share:.2%} of all activations ({base_share:.2%})" in md
    assert "(no ratio file)" in md
    assert sorted(p.name for p in (results / "figures").iterdir()) == ["compare-t-deu2eng-m-peak.png"]


# ----------------------------------------------------------------------------- perplexity table, peaks, heatmap
def test_the_perplexity_table_reader_names_the_file_and_line_it_cannot_read(tmp_path):
    from pim.activation_files import FormatError
    from pim.stats.perplexity_table import HEADER, read_perplexity

    good = ["none", "deu", "40", "1.5", "4.4817", "0.0", "1.0"]
    path = tmp_path / "m-perplexity.csv"
    path.write_text("\n".join(",".join(row) for row in (HEADER, good, ["deu", "deu", "forty", "2", "7.4", "3", "1.6"])))
    with pytest.raises(FormatError, match=rf"m-perplexity\.csv:3: not a row of a perplexity table"):
        read_perplexity(path)
    path.write_text("\n".join(",".join(row) for row in (HEADER, good, ["deu", "deu"])))  # a short row
    with pytest.raises(FormatError, match=r"m-perplexity\.csv:3: not a row"):
        read_perplexity(path)
    path.write_text("\n".join(",".join(row) for row in (["language", *HEADER[1:]], good)))
    with pytest.raises(FormatError, match=r"m-perplexity\.csv: not a perplexity table \(header language,evaluated"):
        read_perplexity(path)


def test_the_peak_summary_says_no_neuron_fired_and_names_the_busiest_layers():
    from pim.stats.peaks import peaks, summary_lines

    counts = np.zeros((4, 5), dtype=np.int64)
    counts[2, [0, 3]] = [9, 7]  # layer 2 holds two of the three kept neurons, layer 0 one
    counts[0, 4] = 8
    lines = summary_lines([peaks(np.zeros((4, 5), dtype=np.int64), 0.15), peaks(counts, 0.15)], ["direct", "PiM-3"])
    assert lines[0] == "direct: no neuron fired"
    assert lines[1] == "PiM-3: 3 of 20 neurons kept, counts 9 down to 7; most in layers 2 (2), 0 (1), 1 (0)"


def test_the_heatmap_refuses_an_empty_index_a_tiny_image_and_an_unknown_colour_map(tmp_path):
    from pim.cli import UserError
    from pim.stats.heatmap import draw, matplotlib_cmap

    for shape in ((0, 5), (3, 0)):
        with pytest.raises(UserError, match="x: the index file holds no neurons"):
            draw(np.zeros(shape, dtype=np.int64), tmp_path / "h.png", "x")
    with pytest.raises(UserError, match="an image of 120 x 90 pixels leaves no room for the plot"):
        draw(np.ones((3, 5), dtype=np.int64), tmp_path / "h.png", "x", width_px=120, height_px=90)
    assert not (tmp_path / "h.png").exists()
    with pytest.raises(UserError, match="no colour map 'hott'; try hot, viridis"):
        matplotlib_cmap("hott")
    assert matplotlib_cmap("viridis").name == "viridis"
