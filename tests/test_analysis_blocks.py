"""The analyses' numbers on files that span several read blocks, against sums worked out in plain Python.

`pim.activation_files.read_ratio` converts a ratio file to numpy a block of rows at a time
(`_BLOCK_VALUES` values); here the block is made small, so that a file of 23 rows is read in blocks of
4 rows and a last one of 3. Rows and layers all hold different values, so an aggregation that weights
rows, blocks or layers unequally (a mean of block means, a mean of the first block, layers swapped)
gives other numbers than the loops below, which go over the rows as they were written. The index files
hold several rows (the paper's files; summed on reading).
"""
import csv
import math
import random
import sys

import numpy as np
import pytest
from conftest import ROOT

from pim import activation_files
from pim.activation_files import index_line, ratio_lines
from pim.stats.neuron_stats import binned_means
from pim.stats.peaks import peaks

sys.path.insert(0, str(ROOT / "analysis"))
import compare_conditions  # noqa: E402
import peak_analysis  # noqa: E402
import ratio_analysis  # noqa: E402

LAYERS, WIDTH = 3, 40  # 120 neurons: the top 1% is 1 neuron, the top 10% 12, the top 20% 24
ROWS = {"t-deu2eng": 23, "t-GPT4-deu_spa2eng": 17}  # counted steps of direct and PiM-1
ROWS_PER_BLOCK = 4


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(activation_files, "_BLOCK_VALUES", ROWS_PER_BLOCK * LAYERS * 2)


def made_up_ratio(rows, seed):
    """[rows][layers] of (eq, le) int counts out of WIDTH: different per row and per layer, the layers'
    levels far apart, and the later rows (the last, short block) far from the first ones."""
    rng = random.Random(seed)
    out = []
    for r in range(rows):
        row = []
        for layer in range(LAYERS):
            le = min(WIDTH, 4 + 9 * layer + (r * 7) % 11 + (12 if r >= rows - 3 else 0) + rng.randrange(3))
            eq = min(le, (r * 3 + layer) % 5 + rng.randrange(2))
            row.append([eq, le])
        out.append(row)
    return out


def made_up_counts(seed, ties=True):
    """[layers][WIDTH] index counts with many ties (a few distinct values) and some zeros."""
    rng = random.Random(seed)
    values = [0, 1, 2, 3, 5, 8] if ties else list(range(200))
    return [[rng.choice(values) for _ in range(WIDTH)] for _ in range(LAYERS)]


def write_run(results, file, ratio, counts, index_rows=3):
    """The run's ratio file and an index file of `index_rows` rows that sum to `counts`."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{file}-ratio-m.jsonl").write_text(ratio_lines(ratio, WIDTH))
    parts = [[[0] * WIDTH for _ in range(LAYERS)] for _ in range(index_rows)]
    for layer in range(LAYERS):
        for n in range(WIDTH):
            for k in range(counts[layer][n]):  # spread each count over the rows
                parts[(layer + n + k) % index_rows][layer][n] += 1
    (results / f"{file}-index-m.jsonl").write_text("".join(index_line(np.array(p)) for p in parts))


# --- the definitions (docs/measures.md), in plain Python over the rows as written ---------------------

def hand_layer_means(ratio):
    """{metric: [per-layer mean over all rows]} and {metric: mean of the per-layer means}."""
    sums = {m: [0.0] * LAYERS for m in ("eq_zero", "lt_zero", "le_zero")}
    for row in ratio:
        for layer, (eq, le) in enumerate(row):
            sums["eq_zero"][layer] += eq / WIDTH
            sums["le_zero"][layer] += le / WIDTH
            sums["lt_zero"][layer] += (le - eq) / WIDTH
    means = {m: [s / len(ratio) for s in v] for m, v in sums.items()}
    return means, {m: sum(v) / LAYERS for m, v in means.items()}


def hand_ranking(counts):
    """(layer, neuron, count), highest count first, ties by layer then neuron (the paper's sort)."""
    return sorted(((layer, n, counts[layer][n]) for layer in range(LAYERS) for n in range(WIDTH)),
                  key=lambda x: (-x[2], x[0], x[1]))


def hand_top(counts, p):
    k = math.floor(LAYERS * WIDTH * p + 1e-9)
    return [x for x in hand_ranking(counts)[:k] if x[2] > 0]


def hand_concentration(counts, p):
    return sum(c for _, _, c in hand_top(counts, p)) / sum(sum(row) for row in counts)


def hand_jaccard(a, b, p):
    sa, sb = {(l, n) for l, n, _ in hand_top(a, p)}, {(l, n) for l, n, _ in hand_top(b, p)}
    return len(sa & sb) / len(sa | sb)


@pytest.fixture
def two_runs(tmp_path):
    results = tmp_path / "results"
    data = {}
    for seed, (file, rows) in enumerate(ROWS.items()):
        ratio, counts = made_up_ratio(rows, seed), made_up_counts(seed)
        write_run(results, file, ratio, counts)
        data[file] = ratio, counts
    return results, data


def test_the_files_span_several_blocks_of_unequal_weight(two_runs):
    results, data = two_runs
    ratio, _ = data["t-deu2eng"]
    assert len(ratio) % ROWS_PER_BLOCK and len(ratio) > 3 * ROWS_PER_BLOCK  # a short last block
    blocks = [ratio[i:i + ROWS_PER_BLOCK] for i in range(0, len(ratio), ROWS_PER_BLOCK)]
    block_means = [sum(row[0][1] for row in b) / len(b) for b in blocks]
    # a mean of block means is not the mean over the rows here: the test below can tell them apart
    assert abs(sum(block_means) / len(blocks) - sum(row[0][1] for row in ratio) / len(ratio)) > 0.1
    got = activation_files.read_ratio(results / "t-deu2eng-ratio-m.jsonl")
    assert got.tolist() == [[[eq / WIDTH, le / WIDTH] for eq, le in row] for row in ratio]


def test_ratio_table_over_several_blocks(two_runs, tmp_path):
    results, data = two_runs
    files = list(ROWS)
    ratio_analysis.main(["--files", *(str(results / f"{f}-ratio-m.jsonl") for f in files),
                         "--out-dir", str(tmp_path / "tables"), "--name", "x", "--quiet"])
    rows = list(csv.reader((tmp_path / "tables" / "x.csv").open()))
    body = {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}
    (direct, direct_all), (pim, pim_all) = (hand_layer_means(data[f][0]) for f in files)
    metrics = ("eq_zero", "lt_zero", "le_zero")
    for layer in range(LAYERS):
        want = [direct[m][layer] for m in metrics] + [pim[m][layer] for m in metrics] + \
               [pim[m][layer] - direct[m][layer] for m in metrics]
        assert body[str(layer)] == pytest.approx(want, rel=1e-12, abs=1e-15), f"layer {layer}"
    want = [direct_all[m] for m in metrics] + [pim_all[m] for m in metrics] + \
           [pim_all[m] - direct_all[m] for m in metrics]
    assert body["mean"] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert len(body) == LAYERS + 1


def test_comparison_numbers_over_several_blocks(two_runs):
    results, data = two_runs
    files = list(ROWS)
    compare_conditions.main(["--results-dir", str(results), "--model", "m", "--files", *files,
                             "--top", "0.01", "0.1", "--no-heatmaps"])
    got = {r["file"]: r for r in csv.DictReader((results / "tables" / "compare-t-deu2eng-m.csv").open())}
    (ratio_d, counts_d), (ratio_p, counts_p) = data[files[0]], data[files[1]]
    base = hand_layer_means(ratio_d)[1]
    for file, (ratio, counts) in data.items():
        row = got[file]
        overall = hand_layer_means(ratio)[1]
        assert int(row["steps"]) == len(ratio)
        assert float(row["le_zero"]) == pytest.approx(overall["le_zero"], rel=1e-12)  # the suppressed share
        assert float(row["eq_zero"]) == pytest.approx(overall["eq_zero"], rel=1e-12)
        assert float(row["dle_zero"]) == pytest.approx(overall["le_zero"] - base["le_zero"], abs=1e-15)
        fired = sum(c > 0 for layer in counts for c in layer) / (LAYERS * WIDTH)
        assert float(row["fired"]) == pytest.approx(fired, rel=1e-12)
        for p in (0.01, 0.1):
            assert float(row[f"top{p:g}"]) == pytest.approx(hand_concentration(counts, p), rel=1e-12), (file, p)
            assert float(row[f"jaccard{p:g}"]) == pytest.approx(hand_jaccard(counts_d, counts, p), rel=1e-12)
    assert float(got[files[1]]["jaccard0.1"]) < 1  # the two top sets differ


def test_peak_analysis_top_20_percent_with_ties(two_runs, tmp_path, capsys):
    results, data = two_runs
    for file, (_, counts) in data.items():
        values, per_layer, n = peaks(activation_files.read_index(results / f"{file}-index-m.jsonl"), 0.2)
        top = hand_top(counts, 0.2)
        ties = [c for _, _, c in top]
        assert len(set(ties)) < len(ties), "the top 20% holds ties"
        assert values.tolist() == ties and n == LAYERS * WIDTH
        assert per_layer.tolist() == [sum(1 for l, _, _ in top if l == layer) for layer in range(LAYERS)]
    # ties cut at the boundary: which of the tied neurons are kept decides the per-layer numbers
    counts = [[3] * WIDTH for _ in range(LAYERS)]
    counts[2][WIDTH - 1] = 4
    values, per_layer, _ = peaks(np.array(counts), 0.2)  # 24 of 120: the 4, then the 3s of layer 0
    assert values.tolist() == [4] + [3] * 23 and per_layer.tolist() == [23, 0, 1]
    peak_analysis.main(["--files", *(str(results / f"{f}-index-m.jsonl") for f in ROWS),
                        "--out-dir", str(tmp_path), "--width", "640", "--height", "480"])
    out = capsys.readouterr().out
    for file, label in zip(ROWS, ("direct", "PiM-1")):
        top = hand_top(data[file][1], 0.2)
        assert f"{label}: {len(top)} of {LAYERS * WIDTH} neurons kept, counts {top[0][2]} down to {top[-1][2]}" in out


@pytest.mark.parametrize("width, max_bins", [(40, 7), (40, 8), (57, 10), (100, 33), (10, 20), (1000, 999), (2048, 1024)])
def test_heatmap_bins_by_hand(width, max_bins):
    rng = random.Random(width)
    counts = [[rng.randrange(100) for _ in range(width)] for _ in range(2)]
    size = -(-width // max_bins)  # the largest bin: as few bins as max_bins allows
    bins = -(-width // size)
    base, extra = divmod(width, bins)  # sizes differ by at most one
    sizes = [base + 1] * extra + [base] * (bins - extra)
    means, smallest, largest = binned_means(np.array(counts), max_bins)
    assert means.shape == (2, bins) and bins <= max_bins and (smallest, largest) == (min(sizes), max(sizes))
    # every neuron in exactly one bin, bins of adjacent neurons in order: the bin means of those sizes,
    # whichever order the sizes come in (the edges are rounded), add up to the layer's sum
    edges = [0]
    for b in range(bins):
        edges.append(round((b + 1) * width / bins))
    assert sorted(e2 - e1 for e1, e2 in zip(edges, edges[1:])) == sorted(sizes)
    for layer in range(2):
        want = [sum(counts[layer][edges[b]:edges[b + 1]]) / (edges[b + 1] - edges[b]) for b in range(bins)]
        assert means[layer].tolist() == pytest.approx(want, rel=1e-12)
        total = sum(m * (edges[b + 1] - edges[b]) for b, m in enumerate(means[layer].tolist()))
        assert total == pytest.approx(sum(counts[layer]), rel=1e-12)
