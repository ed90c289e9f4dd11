"""Language activation probability entropy (LAPE) and language-specific neurons (Tang et al. 2024).

From corpus runs of one model, one per language (`--positions all`): per language, the index file's
count of positions where a neuron's activation was > 0, and the number of counted tokens. Then:

    p[layer, neuron, lang]  = count / tokens                       activation probability
    q[layer, neuron, lang]  = p / sum over languages of p           (0 where a neuron never fires)
    LAPE[layer, neuron]     = - sum over languages of q log q       low: specific to few languages

Selection, the peer's rule (RUCAIBox/Language-Specific-Neurons, identify.py), defaults at the top:
1. bar = the FILTER_QUANTILE quantile of all probabilities (all layers, neurons and languages), taken
   as the k-th smallest value with k = round(FILTER_QUANTILE * count); a neuron none of whose
   probabilities exceeds the bar is dropped;
2. of the remaining, the round(TOP_RATE * all neurons) with the lowest LAPE are kept (ties: lower
   layer, then lower neuron first; if fewer remain, all of them);
3. a kept neuron belongs to every language whose probability exceeds the BAR_QUANTILE quantile bar.
"""
from dataclasses import dataclass

import numpy as np

TOP_RATE = 0.01  # share of all neurons kept: those of lowest LAPE (the paper's 1%)
FILTER_QUANTILE = 0.95  # a neuron is a candidate only if some language's probability exceeds this quantile
BAR_QUANTILE = 0.95  # a kept neuron belongs to the languages whose probability exceeds this quantile


@dataclass
class Selection:
    languages: list  # language names, in the order of the probabilities' last axis
    neurons: dict  # language -> sorted [(layer, neuron), ...]
    kept: np.ndarray  # int [k, 2]: (layer, neuron) of the kept neurons, lowest LAPE first
    filter_value: float  # the probability a candidate must exceed
    bar_value: float  # the probability a language must exceed for a kept neuron to be its
    settings: dict  # top_rate, filter_quantile, bar_quantile


def activation_probabilities(counts, tokens):
    """float64 [layers, width, languages] from per-language counts [languages][layers, width] and token totals."""
    counts = np.stack([np.asarray(c, dtype=np.float64) for c in counts], axis=-1)
    tokens = np.asarray(tokens, dtype=np.float64)
    if (tokens <= 0).any():
        raise ValueError(f"every language needs counted tokens, got {tokens.tolist()}")
    probs = counts / tokens
    if (probs > 1).any():
        raise ValueError("a count exceeds its language's counted tokens: the runs do not belong together")
    return probs


def lape(probs):
    """float64 [layers, width]: the entropy of each neuron's probabilities normalised over languages."""
    total = probs.sum(axis=-1, keepdims=True)
    normed = np.divide(probs, total, out=np.zeros_like(probs), where=total > 0)
    logs = np.log(normed, out=np.zeros_like(normed), where=normed > 0)
    return -(normed * logs).sum(axis=-1)


def quantile_value(values, quantile):
    """The k-th smallest of `values`, k = round(quantile * count) (at least 1): the peer's kthvalue."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    return float(flat[max(round(len(flat) * quantile), 1) - 1])


def select(probs, languages, top_rate=TOP_RATE, filter_quantile=FILTER_QUANTILE, bar_quantile=BAR_QUANTILE):
    """The language-specific neurons of `probs` [layers, width, languages] (see the module docstring)."""
    layers, width, n_lang = probs.shape
    if n_lang != len(languages) or n_lang < 2:
        raise ValueError(f"{n_lang} probability columns for languages {languages}: need one per language, at least 2")
    entropy = lape(probs)
    filter_value = quantile_value(probs, filter_quantile)
    candidate = (probs > filter_value).any(axis=-1)
    layer_ids, neuron_ids = np.nonzero(candidate)  # row-major: by layer, then neuron
    order = np.argsort(entropy[layer_ids, neuron_ids], kind="stable")
    keep = order[:round(layers * width * top_rate)]
    kept = np.stack([layer_ids[keep], neuron_ids[keep]], axis=-1).reshape(-1, 2)
    bar_value = quantile_value(probs, bar_quantile)
    neurons = {}
    for j, lang in enumerate(languages):
        mine = kept[probs[kept[:, 0], kept[:, 1], j] > bar_value]
        neurons[lang] = sorted(map(tuple, mine.tolist()))
    return Selection(list(languages), neurons, kept, filter_value, bar_value,
                     dict(top_rate=top_rate, filter_quantile=filter_quantile, bar_quantile=bar_quantile))
