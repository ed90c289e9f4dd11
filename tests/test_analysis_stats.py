"""The readers of ratio and index files and the shared statistics, against numbers worked out by hand."""
import json

import numpy as np
import pytest

from pim import activation_files
from pim.activation_files import FormatError, index_line, ratio_lines, read_index, read_ratio
from pim.stats.neuron_stats import (
    binned_means,
    concentration,
    layer_means,
    suppressed_share,
    top_count,
    top_ids,
    top_neurons,
    top_overlap,
)


def write(tmp_path, text, name="f.jsonl"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- read_ratio / read_index: exact values ---------------------------------------------------------

RATIO = ('{"0": [0.25, 0.5], "1": [0.0, 0.125]}\n'
         '{"0": [0.1, 0.30000000000000004], "1": [1e-05, 1.7438616071428572e-05]}\n'
         '{"0": [0, 1], "1": [0.5, 0.75]}')  # ints, exponents, and no newline at the end


def test_read_ratio_gives_the_exact_values(tmp_path):
    got = read_ratio(write(tmp_path, RATIO))
    want = np.array([[[0.25, 0.5], [0.0, 0.125]], [[0.1, 0.30000000000000004], [1e-05, 1.7438616071428572e-05]],
                     [[0.0, 1.0], [0.5, 0.75]]])
    assert got.dtype == np.float64 and got.shape == (3, 2, 2)
    assert np.array_equal(got, want)  # bit-exact: the same floats that json.loads gives


def test_read_ratio_round_trips_the_writer_across_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    width = 57344
    le = rng.integers(0, width + 1, size=(37, 5))
    counts = np.stack([rng.integers(0, le + 1), le], axis=-1)
    path = write(tmp_path, ratio_lines(counts, width))
    monkeypatch.setattr(activation_files, "_BLOCK_VALUES", 25)  # blocks of 3 rows: joins and a short last one
    got = read_ratio(path)
    assert np.array_equal(got, counts / width)
    assert np.array_equal(got, np.array([[v for v in json.loads(line).values()] for line in path.open()]))


def test_read_index_sums_rows_exactly(tmp_path):
    path = write(tmp_path, '{"0": [1, 0, 2], "1": [3, 4, 5]}\n{"0": [10, 0, 0], "1": [0, 1, 2.0]}\n')
    got = read_index(path)
    assert got.dtype == np.int64
    assert got.tolist() == [[11, 0, 2], [3, 5, 7]]
    big = np.arange(12, dtype=np.int64).reshape(3, 4) * 10**12  # beyond float32, exact in int64
    assert np.array_equal(read_index(write(tmp_path, index_line(big), "big.jsonl")), big)


# --- errors name the file and the line ------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ('{"0": [0.1, 0.2]}\n{"0": [0.1, 0.2]\n', 2, "not JSON"),
    ('{"0": [0.1, 0.2], "1": [0, 0]}\n' * 2 + '{"0": [0.1, 0.2]}\n', 3, "1 layers, but line 1 has 2"),
    ('{"1": [0.1, 0.2], "0": [0.1, 0.2]}\n', 1, "in order; key number 1 is '1', not '0'"),
    ('{"0": [0.1, 0.2], "2": [0.1, 0.2]}\n', 1, "key number 2 is '2', not '1'"),
    ('{"0": [0.1, 0.2]}\n\n{"0": [0.1, 0.2]}\n', 2, "empty line"),
    ('{"0": [0.1, 0.2, 0.3]}\n', 1, "each layer must hold [eq_zero, le_zero]"),
    ('{"0": [0.1, 0.2]}\n{"0": "ab"}\n', 2, "each layer must hold [eq_zero, le_zero]"),
    ('{"0": [0.1, 0.2]}\n' * 4 + '{"0": [0.1, "0.2"]}\n', 5, 'as numbers, not "0.2"'),
    ('{"0": [0.1, 0.2]}\n' * 4 + '{"0": [0.1, null]}\n', 5, "as numbers, not null"),
    ('[[0.1, 0.2]]\n', 1, "expected an object"),
    ('{}\n', 1, "no layers"),
    (b'{"0": [0.1, 0.2]}\n\xff\xfe\n', 2, "not UTF-8"),
])
def test_read_ratio_errors_name_file_and_line(tmp_path, monkeypatch, text, line, words):
    monkeypatch.setattr(activation_files, "_BLOCK_VALUES", 4)  # the bad value is in a later block
    path = write(tmp_path, text)
    with pytest.raises(FormatError) as e:
        read_ratio(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert words in str(e.value)


@pytest.mark.parametrize("text, words", [
    ('{"0": [1, 2], "1": [3, 4]}\n{"0": [1, 2]}\n', "2:"),
    ('{"0": [1, 2], "1": [3, 4]}\n{"0": [1, 2], "1": [3, 4, 5]}\n', "2: counts must be integers"),
    ('{"0": [1, 2.5]}\n', "1: counts must be integers"),
    ('{"0": [1, 2]}\n{"0": [1, 2], "1": [1, 2]}\n', "2: 2 layers x 2 neurons, but earlier rows have 1 x 2"),
    ('{"0": 5}\n', "1: counts must be integers"),
])
def test_read_index_errors_name_file_and_line(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(FormatError) as e:
        read_index(path)
    assert str(e.value).startswith(f"{path}:") and f"{path}:{words}" in str(e.value)


@pytest.mark.parametrize("reader", [read_ratio, read_index])
def test_empty_file_is_an_error(tmp_path, reader):
    path = write(tmp_path, "")
    with pytest.raises(FormatError, match="empty file"):
        reader(path)


# --- the statistics --------------------------------------------------------------------------------

def test_layer_means_and_suppressed_share_by_hand():
    ratios = [[[0.1, 0.5], [0.0, 0.2]], [[0.3, 0.7], [0.2, 0.4]]]  # 2 steps x 2 layers
    means = layer_means(ratios)
    assert np.allclose(means["eq_zero"], [0.2, 0.1]) and np.allclose(means["le_zero"], [0.6, 0.3])
    assert np.allclose(means["lt_zero"], [0.4, 0.2])
    assert suppressed_share(ratios) == pytest.approx(0.45)


COUNTS = np.array([[5, 3, 5, 0],
                   [5, 7, 3, 1]])  # ranked: (1,1)=7, then the 5s by layer and neuron: (0,0) (0,2) (1,0), ...


def test_top_neurons_ties_by_layer_then_neuron():
    layers, neurons, counts = top_neurons(COUNTS, 0.5)  # 4 of 8
    assert list(zip(layers.tolist(), neurons.tolist(), counts.tolist())) == [(1, 1, 7), (0, 0, 5), (0, 2, 5), (1, 0, 5)]
    layers, neurons, counts = top_neurons(COUNTS, 1.0)  # all, less the neuron that never fired
    assert list(zip(layers.tolist(), neurons.tolist(), counts.tolist())) == [
        (1, 1, 7), (0, 0, 5), (0, 2, 5), (1, 0, 5), (0, 1, 3), (1, 2, 3), (1, 3, 1)]
    layers, _, _ = top_neurons(COUNTS, 0.375)  # 3 of 8: the 7, then (0,0) and (0,2)
    assert layers.tolist() == [1, 0, 0]


def test_top_ids_match_the_papers_sort_on_many_ties():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 6, size=(7, 50))  # few distinct values: ties everywhere
    paper = sorted(((l, n, int(c)) for l in range(7) for n in range(50) for c in [counts[l, n]]),
                   key=lambda x: (-x[2], x[0], x[1]))
    for p in (0.01, 0.1, 0.2, 0.5, 1.0):
        want = [(l, n) for l, n, c in paper[:int(350 * p)] if c > 0]
        layers, neurons, _ = top_neurons(counts, p)
        assert list(zip(layers.tolist(), neurons.tolist())) == want
    floats = counts.astype(np.float64)  # the slower exact path for non-integer counts
    assert np.array_equal(top_ids(floats, 0.2), top_ids(counts, 0.2))


def test_top_count_as_the_paper_with_a_tolerance():
    assert top_count(10, 0.2) == 2 and top_count(3, 0.2) == 0 and top_count(8, 1.0) == 8
    assert top_count(100, 0.29) == 29  # 100 * 0.29 == 28.999999999999996
    with pytest.raises(ValueError):
        top_count(10, 0)


def test_concentration_by_hand():
    counts = np.array([[50, 20, 10, 10, 5], [5, 0, 0, 0, 0]])  # 10 neurons, 100 activations
    assert concentration(counts, 0.1) == pytest.approx(0.5)  # the top 1: 50
    assert concentration(counts, 0.2) == pytest.approx(0.7)  # 50 + 20
    assert concentration(counts, 1.0) == pytest.approx(1.0)
    assert np.isnan(concentration(counts, 0.05))  # too few neurons for a top 5%
    assert np.isnan(concentration(np.zeros((2, 5), dtype=int), 0.5))


def test_top_overlap_by_hand():
    a = np.array([[9, 8, 0, 0, 1, 0, 0, 0, 0, 0]])
    b = np.array([[9, 0, 8, 0, 1, 0, 0, 0, 0, 0]])
    assert top_overlap(a, b, 0.2) == pytest.approx(1 / 3)  # {0, 1} and {0, 2}
    assert top_overlap(a, b, 0.3) == pytest.approx(2 / 4)  # {0, 1, 4} and {0, 2, 4}
    tied = np.array([[5, 5, 5, 0, 0, 0, 0, 0, 0, 0]])
    assert top_overlap(a, tied, 0.2) == pytest.approx(1.0)  # ties: the lower neurons 0 and 1
    assert top_overlap(a, a, 1.0) == 1.0
    with pytest.raises(ValueError, match="different shapes"):
        top_overlap(a, a.reshape(2, 5), 0.2)


def test_binned_means_by_hand():
    means, smallest, largest = binned_means(np.array([[1, 2, 3, 4, 5, 6, 7], [7, 7, 7, 7, 7, 7, 7]]), 3)
    assert means.tolist() == [[1.5, 4.0, 6.5], [7.0, 7.0, 7.0]]  # neurons [0,1], [2,3,4], [5,6]
    assert (smallest, largest) == (2, 3)
    means, smallest, largest = binned_means(np.arange(8).reshape(1, 8), 5)  # at most 5: 4 bins of 2
    assert means.tolist() == [[0.5, 2.5, 4.5, 6.5]] and (smallest, largest) == (2, 2)
    means, smallest, largest = binned_means(np.arange(4).reshape(1, 4), 100)  # fewer neurons than bins
    assert means.tolist() == [[0, 1, 2, 3]] and (smallest, largest) == (1, 1)
    largest, _, _ = binned_means(np.array([[1, 9, 3, 4, 5, 6, 7]]), 3, how="max")
    assert largest.tolist() == [[9, 5, 7]]
