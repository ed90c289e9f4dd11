"""The comparison's interval of Δ suppressed (pim.stats.neuron_stats.paired_bootstrap), against what it must be:
a constant shift per prompt gives a zero-width interval at the shift; the prompts more suppressed counted by
hand; on many prompts of equal length the interval is the normal one of a mean of paired differences."""
import numpy as np
import pytest

from pim.stats.neuron_stats import Summary, paired_bootstrap


def run(per_step, prompt_steps):
    return Summary({}, len(per_step), np.asarray(per_step, dtype=np.float64), prompt_steps)


def test_a_constant_shift_per_prompt_is_an_interval_of_zero_width_at_the_shift():
    rng = np.random.default_rng(3)
    steps = [3, 1, 5, 2, 4, 7, 1]  # unequal: a prompt's weight is its steps
    ref = rng.uniform(0.4, 0.8, sum(steps))
    low, high, more, n = paired_bootstrap(run(ref, steps), run(ref + 0.01, steps))
    assert low == pytest.approx(0.01, abs=1e-12) and high == pytest.approx(0.01, abs=1e-12)
    assert (more, n) == (7, 7)


def test_prompts_more_suppressed_by_hand():
    steps = [2, 1, 3]
    ref = [0.5, 0.7, 0.2, 0.6, 0.6, 0.6]  # per prompt: 0.6, 0.2, 0.6
    other = [0.9, 0.1, 0.3, 0.5, 0.5, 0.8]  # per prompt: 0.5, 0.3, 0.6 (equal: not more)
    assert paired_bootstrap(run(ref, steps), run(other, steps))[2:] == (1, 3)


def test_many_prompts_of_equal_length_give_the_normal_interval_of_the_mean_difference():
    rng = np.random.default_rng(5)
    n, length = 400, 4
    ref = rng.uniform(0.5, 0.7, n * length)
    other = ref + np.repeat(rng.normal(0.003, 0.02, n), length)  # a per-prompt difference, noisy
    diffs = (other - ref).reshape(n, length).mean(1)
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(n)
    low, high, _, _ = paired_bootstrap(run(ref, [length] * n), run(other, [length] * n), reps=4000)
    assert (low + high) / 2 == pytest.approx(diffs.mean(), abs=0.1 * half)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


@pytest.mark.parametrize("steps_ref, steps_other", [(None, [1, 2]), ([1, 2], None), ([1, 2], [1, 1, 1]), ([], [])])
def test_no_interval_without_the_steps_of_each_prompt_of_the_same_prompts(steps_ref, steps_other):
    values = np.full(3, 0.5)
    assert paired_bootstrap(run(values, steps_ref), run(values, steps_other)) is None
