"""The runs in a notebook (docs/api.md): pim.open_run, pim.open_neurons, pim.list_runs.

    import pim
    pim.list_runs("results")                                   # every run: a DataFrame
    run = pim.open_run("results", "sample-deu2eng", "gemma-3-270m")
    run.ratios       # DataFrame: prompt, step, layer, eq_zero, le_zero; one row per counted step and layer
    run.index        # int64 [layers, width]: per neuron, the counted steps (tokens) in which it fired
    run.manifest     # dict (None for the paper's own files)
    run.results      # the continuations, newlines restored
    pim.open_neurons("results", "gemma-3-270m").table          # layer, neuron, languages, rank

The files are read by the readers the analyses use (pim.activation_files, pim.runs.names,
pim.models.deactivation), and a run is checked by the analyses' check (pim.runs.checks.check_run)
before anything of it is returned: a run whose files disagree with its manifest is refused with the
same message as in `make plots`. pandas is imported here only; `import pim` does not import this module
until one of the functions is used (pim/__init__.py).
"""
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from pim.activation_files import read_index, read_ratio, read_results
from pim.models.deactivation import load_deactivation, read_neurons
from pim.runs.checks import check_run, load_manifest
from pim.runs.corpus_files import KIND as CORPUS
from pim.runs.names import KINDS, Run, condition_order, read_manifest, run_paths, split_name, with_files
from pim.stats.neuron_stats import layer_means, top_neurons


@dataclass
class RunData:
    """One finished run, checked, as pim.open_run returns it. `ratios` and `results` are read when first
    used; a corpus run has neither (None): its index counts tokens, not generated steps."""
    files: Run  # the paths of its index, ratio and result files (pim.runs.names.Run)
    manifest: dict | None  # None: a run without a manifest (the paper's own files)
    index: np.ndarray  # int64 [layers, width]: per neuron, the counted steps (corpus: tokens) in which it fired
    note: str | None = None  # what check_run says of a run without a manifest
    kind: str = field(init=False)  # "generation" or "corpus"

    def __post_init__(self):
        self.kind = "corpus" if (self.manifest or {}).get("kind") == CORPUS else "generation"

    @property
    def file(self):
        return self.files.file

    @property
    def model(self):
        return self.files.model

    @property
    def counted(self):
        """Counted steps (generation) or tokens (corpus) as the manifest says; else the ratio file's rows."""
        m = self.manifest or {}
        value = m.get("tokens" if self.kind == "corpus" else "counted_steps")
        return value if value is not None or self.ratio_array is None else len(self.ratio_array)

    @property
    def tokens(self):
        """The counted tokens of a corpus run (LAPE's activation probability is index / tokens); None otherwise."""
        return self.counted if self.kind == "corpus" else None

    @cached_property
    def ratio_array(self):
        """float64 [rows, layers, 2] of the ratio file (pim.activation_files.read_ratio); None for a corpus run."""
        return None if self.files.ratio is None or self.kind == "corpus" else read_ratio(self.files.ratio)

    @cached_property
    def results(self):
        """The continuations, one per prompt in input order, newlines restored; None for a corpus run."""
        return None if self.files.result is None or self.kind == "corpus" else read_results(self.files.result)

    @property
    def prompt_steps(self):
        """The counted steps of each prompt in input order (its rows of the ratio file), or None where the
        run does not say (prompt_steps_of)."""
        return prompt_steps_of(self.manifest, self.counted) if self.kind == "generation" else None

    @cached_property
    def ratios(self):
        """DataFrame, one row per counted step and layer, in the order of the ratio file: prompt (0-based
        line of the prompt file), step (0 = the prompt's last token, 1.. = the tokens generated after it),
        layer, eq_zero, le_zero (shares of the layer's neurons with activation == 0, <= 0). prompt and step
        are <NA> where the run does not say how many steps each prompt has. None for a corpus run."""
        ratios = self.ratio_array
        if ratios is None:
            return None
        rows, layers = ratios.shape[:2]
        steps = self.prompt_steps
        if steps is None:
            prompt = step = pd.array([pd.NA] * rows, dtype="Int64")
        else:
            prompt = np.repeat(np.arange(len(steps)), steps)
            step = np.arange(rows) - np.repeat(np.cumsum(steps) - steps, steps)
        return pd.DataFrame({"prompt": np.repeat(prompt, layers), "step": np.repeat(step, layers),
                             "layer": np.tile(np.arange(layers), rows),
                             "eq_zero": ratios[:, :, 0].ravel(), "le_zero": ratios[:, :, 1].ravel()})

    def layer_means(self):
        """DataFrame per layer: eq_zero, lt_zero, le_zero averaged over the counted steps, the numbers of the
        ratio table and the comparison (pim.stats.neuron_stats.layer_means); None for a corpus run."""
        if self.ratio_array is None:
            return None
        frame = pd.DataFrame(layer_means(self.ratio_array))
        frame.index.name = "layer"
        return frame

    def top_neurons(self, proportion=0.01):
        """DataFrame of the top `proportion` of neurons by count, as the peak plot ranks them (ties: lower
        layer, then lower neuron first; neurons that never fired left out): layer, neuron, count."""
        layer, neuron, count = top_neurons(self.index, proportion)
        return pd.DataFrame({"layer": layer, "neuron": neuron, "count": count})


def prompt_steps_of(manifest, counted):
    """The counted steps of each prompt: the manifest's `prompt_steps` (written since it existed); for older
    runs, where every prompt ran the whole `max_new_tokens` (prompts x max_new_tokens = counted steps; no
    prompt has more) or took one step each (prompts = counted steps; none has fewer), those; else None."""
    m = manifest or {}
    if m.get("prompt_steps") is not None:
        return list(m["prompt_steps"])
    prompts = m.get("prompts_done", m.get("prompts"))
    most = (m.get("settings") or {}).get("max_new_tokens")
    if not prompts or counted is None:
        return None
    for each in (most, 1):
        if isinstance(each, int) and prompts * each == counted:
            return [each] * prompts
    return None


def open_run(results, file, model):
    """The finished run of `model` on data/<file>.txt in the folder `results`, checked as the analyses
    check it (pim.runs.checks.check_run: RunMismatch or FormatError naming the file where it fails; an
    unfinished run is refused). FileNotFoundError where it has no files, or no index file."""
    files = with_files(Run(file, model), results)
    manifest_file = run_paths(results, file, model)["manifest"]
    if files.index is None and files.ratio is None and files.result is None and not manifest_file.is_file():
        raise FileNotFoundError(f"no run of {file} with {model} in {results}/ (no {file}-<kind>-{model}.* file); "
                                f"pim.list_runs({str(results)!r}) lists the runs there")
    if files.index is None:
        check_run(files)  # an unfinished run: refused as such
        raise FileNotFoundError(f"{run_paths(results, file, model)['index']}: no such file; the run is not finished")
    index = read_index(files.index)
    note = check_run(files, index=index)
    return RunData(files, load_manifest(manifest_file), index, note)


def list_runs(results="results"):
    """DataFrame of every run in the folder (not its shards/): file, model, kind (generation, corpus),
    condition (direct, PiM-3, ...; None for other files), status (finished, unfinished, no manifest, damaged
    manifest: what the manifest says, the files unchecked), counted (steps or tokens, as the manifest says),
    prompts (prompts done, corpus runs: lines), and the paths: manifest, index, ratio, result (None where
    absent). Sorted by model, generation runs first, then by test set and condition as `make plots` orders them."""
    results = Path(results)
    found = {}
    for kind in ("index", "ratio", "result", "manifest"):
        for path in sorted(results.glob(f"*-{kind}-*.{KINDS[kind]}")) if results.is_dir() else []:
            split = None if path.name.startswith(".") else split_name(path.name, kind, results)
            if split and split not in found:
                found[split] = with_files(Run(*split), results)
    rows = []
    for run in found.values():
        path = run_paths(results, run.file, run.model)["manifest"]
        manifest = read_manifest(path)
        corpus = (manifest or {}).get("kind") == CORPUS
        status = ("no manifest" if not path.is_file() else "damaged manifest" if manifest is None
                  else "finished" if manifest.get("status") == "finished" else "unfinished")
        m = manifest or {}
        rows.append({"file": run.file, "model": run.model, "kind": "corpus" if corpus else "generation",
                     "condition": run.condition.label if run.condition and not corpus else None, "status": status,
                     "counted": m.get("tokens" if corpus else "counted_steps"),
                     "prompts": m.get("lines_done" if corpus else "prompts_done"),
                     "manifest": path if path.is_file() else None, "index": run.index, "ratio": run.ratio,
                     "result": run.result})
    columns = ["file", "model", "kind", "condition", "status", "counted", "prompts", "manifest", "index", "ratio",
               "result"]
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["model"], rows[i]["kind"] == "corpus",
                                                   condition_order(Run(rows[i]["file"], rows[i]["model"]))))
    frame = pd.DataFrame([rows[i] for i in order], columns=columns)
    return frame.astype({"counted": "Int64", "prompts": "Int64"})


@dataclass
class Neurons:
    """A language-neurons file (make lape) as pim.open_neurons returns it."""
    path: Path
    raw: dict  # the file's JSON object (docs/lape.md): languages, tokens, layers, width, settings, kept, neurons
    table: pd.DataFrame  # one row per neuron: layer, neuron, languages (tuple), rank (0: lowest LAPE)

    @property
    def languages(self):
        return list(self.raw["neurons"])

    def of(self, language):
        """The rows of `language`'s neurons (KeyError for a language the file does not have)."""
        if language not in self.raw["neurons"]:
            raise KeyError(f"{self.path}: no language {language!r}; it has {', '.join(self.languages)}")
        return self.table[self.table.languages.map(lambda langs: language in langs)]


def open_neurons(where="results", model=None):
    """The language-specific neurons of results/neurons/<model>-language-neurons.json (open_neurons("results",
    "gemma-3-270m")), or of the file `where` (model None). Read and checked by the reader that switches them off
    (pim.models.deactivation: DeactivationError naming the file for a pair that is no [layer, neuron] in range)."""
    path = Path(where) / "neurons" / f"{model}-language-neurons.json" if model is not None else Path(where)
    raw = read_neurons(path)
    # the model's shape as the file records it (every file of make lape does); else one that fits its pairs
    big = 1 << 62
    shape = SimpleNamespace(num_hidden_layers=raw.get("layers", big), intermediate_size=raw.get("width", big))
    langs = {}
    for name in raw["neurons"]:
        off, _ = load_deactivation(f"{path}:{name}", shape, allow_empty=True)
        for layer, ids in off.items():
            for neuron in ids:
                langs.setdefault((layer, neuron), []).append(name)
    rank = {tuple(p): i for i, p in enumerate(raw.get("kept") or []) if isinstance(p, list)}
    keys = sorted(langs)
    table = pd.DataFrame({"layer": [k[0] for k in keys], "neuron": [k[1] for k in keys],
                          "languages": [tuple(langs[k]) for k in keys],
                          "rank": pd.array([rank.get(k) for k in keys], dtype="Int64")})
    return Neurons(path, raw, table)
