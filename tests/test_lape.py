"""LAPE and the selection of language-specific neurons, against an example worked out by hand."""
import math

import numpy as np
import pytest

from pim.stats.lape import activation_probabilities, lape, quantile_value, select

# 2 layers x 3 neurons, 10 counted tokens per language.
COUNTS = {"deu": [[10, 5, 0], [2, 0, 9]], "fra": [[0, 5, 0], [2, 8, 1]]}
# p (deu, fra): L0 (1, 0) (.5, .5) (0, 0) | L1 (.2, .2) (0, .8) (.9, .1)
PROBS = activation_probabilities(list(COUNTS.values()), [10, 10])


def test_probabilities_and_entropy_by_hand():
    assert PROBS[0, 0].tolist() == [1.0, 0.0] and PROBS[1, 2].tolist() == [0.9, 0.1]
    h = lape(PROBS)
    expected = [[0.0, math.log(2), 0.0],  # a neuron that never fires has entropy 0 (and is filtered out)
                [math.log(2), 0.0, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))]]
    assert np.allclose(h, expected, rtol=0, atol=1e-12)


def test_quantile_is_the_kth_smallest():
    # sorted: 0 0 0 0 .1 .2 .2 .5 .5 .8 .9 1
    assert quantile_value(PROBS, 0.5) == 0.2  # k = 6
    assert quantile_value(PROBS, 0.75) == 0.5  # k = 9
    assert quantile_value(PROBS, 0.95) == 0.9  # k = round(11.4) = 11
    assert quantile_value([3.0], 0.01) == 3.0


def test_selection_by_hand():
    sel = select(PROBS, ["deu", "fra"], top_rate=0.5, filter_quantile=0.5, bar_quantile=0.75)
    # candidates: some p > 0.2: L0N0, L0N1, L1N1, L1N2 (L1N0's 0.2 is not above; L0N2 never fires)
    # keep round(6 * 0.5) = 3 of lowest LAPE: L0N0 (0), L1N1 (0; tie: lower layer first), L1N2 (0.325)
    assert sel.kept.tolist() == [[0, 0], [1, 1], [1, 2]]
    assert (sel.filter_value, sel.bar_value) == (0.2, 0.5)
    # a kept neuron belongs to the languages with p > 0.5
    assert sel.neurons == {"deu": [(0, 0), (1, 2)], "fra": [(1, 1)]}


def test_a_kept_neuron_at_the_bar_belongs_to_no_language():
    sel = select(PROBS, ["deu", "fra"], top_rate=1.0, filter_quantile=0.5, bar_quantile=0.75)
    assert sel.kept.tolist() == [[0, 0], [1, 1], [1, 2], [0, 1]], "all 4 candidates, by LAPE"
    assert (0, 1) not in sel.neurons["deu"] + sel.neurons["fra"], "(.5, .5) is not above the bar .5"


def test_refusals():
    with pytest.raises(ValueError, match="counted tokens"):
        activation_probabilities(list(COUNTS.values()), [10, 0])
    with pytest.raises(ValueError, match="exceeds"):
        activation_probabilities(list(COUNTS.values()), [10, 5])
    with pytest.raises(ValueError, match="one per language"):
        select(PROBS, ["deu"])
