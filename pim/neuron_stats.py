"""Summaries of the recorded statistics that several analyses share (definitions: docs/design.md)."""
import numpy as np


def layer_means(ratios):
    """Per-layer means over all counted steps of a ratio array [rows, layers, 2] (eq_zero, le_zero).

    Returns {"eq_zero": [layers], "lt_zero": [layers], "le_zero": [layers]} as float64 arrays;
    le_zero is the share of suppressed neurons, lt_zero = le_zero - eq_zero.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    eq = ratios[:, :, 0].mean(axis=0)
    le = ratios[:, :, 1].mean(axis=0)
    return {"eq_zero": eq, "lt_zero": le - eq, "le_zero": le}


def suppressed_share(ratios):
    """The all-layer suppressed share: le_zero averaged over layers of the per-layer means."""
    return float(layer_means(ratios)["le_zero"].mean())
