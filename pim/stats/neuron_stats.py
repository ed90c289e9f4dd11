"""Summaries of the recorded statistics that several analyses share (definitions: docs/measures.md)."""
from dataclasses import dataclass

import numpy as np

from pim.activation_files import read_index, read_ratio
from pim.runs.checks import check_run, load_manifest, manifest_path


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


@dataclass
class Summary:
    means: dict  # {"eq_zero"|"lt_zero"|"le_zero": float64 [layers]}: per-layer means over the steps
    steps: int  # counted steps (rows of the file)
    step_suppressed: np.ndarray = None  # per counted step, le_zero averaged over the layers (load sets it)
    prompt_steps: list = None  # the counted steps of each prompt, from the manifest (None: not recorded)

    @property
    def layers(self):
        return len(self.means["le_zero"])

    def overall(self, metric):
        """The mean over layers of a per-layer mean (the paper's "all layer" value)."""
        return float(self.means[metric].mean())


def summarize(ratios):
    """The Summary of a ratio file's rows [rows, layers, 2] (the rows themselves are not kept)."""
    return Summary(layer_means(ratios), len(ratios))


def load(runs, progress=None, notes=None):
    """(index counts, ratio Summary or None) per run, each run checked against its manifest and its
    files against each other (pim.runs.checks.check_run); progress: an iterable wrapper (e.g. tqdm) or
    None; notes: a list that gets the notes of runs without a manifest."""
    out = []
    for run in (progress(runs) if progress else runs):
        counts = read_index(run.index)
        ratios = read_ratio(run.ratio) if run.ratio else None
        note = check_run(run, ratio=ratios, index=counts)
        if note and notes is not None:
            notes.append(note)
        summary = None
        if ratios is not None:
            summary = summarize(ratios)
            summary.step_suppressed = ratios[:, :, 1].mean(axis=1)
            manifest = load_manifest(manifest_path(run))  # check_run has checked its prompt_steps
            summary.prompt_steps = (manifest or {}).get("prompt_steps")
        out.append((counts, summary))
        del ratios
    return out


def paired_bootstrap(ref, other, reps=2000, level=0.95, seed=0):
    """(low, high, prompts more suppressed, prompts) of the difference in suppressed share other - ref, two runs
    of the same prompts: a paired bootstrap over the prompts (each draw takes prompts with replacement, the
    same in both runs, and compares the shares over all their steps, as the runs' own shares are taken), the
    `level` interval of `reps` draws; None where a run lacks its steps per prompt or the prompts differ."""
    if ref is None or other is None or ref.prompt_steps is None or other.prompt_steps is None or \
            len(ref.prompt_steps) != len(other.prompt_steps) or not ref.prompt_steps:
        return None
    n = len(ref.prompt_steps)

    def per_prompt(s):
        steps = np.asarray(s.prompt_steps, dtype=np.int64)
        return np.bincount(np.repeat(np.arange(n), steps), weights=s.step_suppressed, minlength=n), steps

    (a_sum, a_n), (b_sum, b_n) = per_prompt(ref), per_prompt(other)
    rng, deltas = np.random.default_rng(seed), []
    for first in range(0, reps, 256):  # draws in blocks: memory stays at 256 x prompts
        pick = rng.integers(0, n, size=(min(256, reps - first), n))
        deltas.append(b_sum[pick].sum(1) / b_n[pick].sum(1) - a_sum[pick].sum(1) / a_n[pick].sum(1))
    low, high = np.quantile(np.concatenate(deltas), [(1 - level) / 2, (1 + level) / 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        more = int(np.sum(b_sum / b_n > a_sum / a_n))
    return float(low), float(high), more, n


# --- which neurons fire most (peak analysis, concentration, overlap between conditions) ---
# Neurons are ranked by their count, highest first; ties by layer, then neuron (the paper's
# Peak_anasisly.py: sorted(key=(-count, layer, neuron))). A flat id is layer * width + neuron.

def top_count(total, proportion):
    """How many neurons the top `proportion` of `total` holds: floor(total * proportion), as the paper's
    script (int(len * select_proportion)), with a tolerance so that 100 * 0.29 gives 29, not 28."""
    if not 0 < proportion <= 1:
        raise ValueError(f"a proportion must be in (0, 1], not {proportion}")
    return int(total * proportion + 1e-9)


def top_ids(counts, proportion):
    """Flat ids of the top floor(N * proportion) neurons of counts [layers, width], best first, less
    those among them that never fired (count 0), as the paper's peak plots leave them out."""
    flat = np.asarray(counts).ravel()
    n, k = flat.size, top_count(flat.size, proportion)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if flat.dtype.kind not in "iu" or (n and np.abs(flat).max() >= np.iinfo(np.int64).max // n - 1):
        order = np.argsort(-flat, kind="stable")[:k]  # exact for any numbers, slower
    else:
        key = flat.astype(np.int64) * n + np.arange(n - 1, -1, -1)  # unique: count first, then lower id
        part = np.argpartition(key, n - k)[n - k:]
        order = part[np.argsort(-key[part])]
    return order[flat[order] > 0]


def top_neurons(counts, proportion):
    """(layers, neurons, counts): the top neurons of top_ids, as three int arrays, best first."""
    counts = np.asarray(counts)
    ids = top_ids(counts, proportion)
    return ids // counts.shape[1], ids % counts.shape[1], counts.ravel()[ids]


def concentration(counts, proportion):
    """The share of all activations (the sum of counts) taken by the top floor(N * proportion) neurons;
    NaN where there are too few neurons for one, or none fired."""
    flat = np.asarray(counts).ravel()
    total = flat.sum()
    if top_count(flat.size, proportion) == 0 or total <= 0:
        return float("nan")
    return float(flat[top_ids(flat[None], proportion)].sum() / total)


def top_overlap(counts_a, counts_b, proportion):
    """Jaccard index |A & B| / |A | B| of the top neurons (top_ids) of two runs of one model; NaN if
    both sets are empty."""
    a, b = np.asarray(counts_a), np.asarray(counts_b)
    if a.shape != b.shape:
        raise ValueError(f"counts of different shapes: {a.shape} and {b.shape} (runs of different models?)")
    ids_a, ids_b = top_ids(a, proportion), top_ids(b, proportion)
    union = np.union1d(ids_a, ids_b).size
    return float(np.intersect1d(ids_a, ids_b, assume_unique=True).size / union) if union else float("nan")


def binned_means(counts, max_bins, how="mean"):
    """Adjacent neurons of each layer in bins, for drawing a layer wider than the image: returns
    (float64 [layers, bins] the mean (or with how="max", the largest) count of each bin, smallest bin
    size, largest bin size). The bins are as few as max_bins allows with sizes that differ by at
    most one: 2,048 neurons in at most 1,360 bins gives 1,024 bins of 2; 57,344 gives 1,334 of 42 or 43."""
    counts = np.asarray(counts, dtype=np.float64)
    width = counts.shape[1]
    size = -(-width // max(1, int(max_bins)))  # ceil: the largest bin
    bins = -(-width // size) if width else 1
    edges = np.linspace(0, width, bins + 1).round().astype(np.int64)
    sizes = np.diff(edges)
    if how == "mean":
        values = np.add.reduceat(counts, edges[:-1], axis=1) / sizes
    elif how == "max":
        values = np.maximum.reduceat(counts, edges[:-1], axis=1)
    else:
        raise ValueError(f"how must be mean or max, not {how!r}")
    return values, int(sizes.min()), int(sizes.max())
