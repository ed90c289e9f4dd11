"""The files of neuron examples (scripts/neuron_examples.py, `make examples`): written and read here only.

    results/examples/<MODEL>-neuron-examples.jsonl           one JSON line per neuron (below), when finished
    results/examples/<MODEL>-neuron-examples-manifest.json   how it was made: settings, corpora, status
    results/examples/<MODEL>-neuron-examples-progress.npz    while unfinished: the running top-k, where it is

A line: {"layer": 3, "neuron": 17, "languages": ["deu"], "examples": [{"value": 1.25, "corpus":
"sample-corpus-deu", "line": 4, "position": 7, "tokens": ["<bos>", "Das", " Haus", ...], "at": 7,
"ids": [2, 1018, 4211, ...]}, ...]}: the neuron's top-k activations at the recorded site, largest first
(ties: earlier corpus, line, position first), `value` the float32 activation written in the shortest
form that reads back as the same float32, `line` the corpus file's line counted from 1, `position` the
token's index in the text's tokens (from 0, special tokens included, after the cut to the corpus run's
max length), `tokens` the decoded tokens of positions position - W .. position + W that exist
(W: the run's `window`), `at` the index of the example's own token in them, `ids` their token ids.
A neuron that appears in fewer than k positions in all corpora has fewer examples.

The writer commits once per window of lines (the progress file holds the running top-k arrays, the
corpus and line to go on from and the tokens read per corpus), resumes with equal settings only, and
with --overwrite works in a hidden folder beside the old files (.overwrite-<MODEL>-neuron-examples/),
moved over them when finished, as corpus runs do (pim/runs/corpus_files.py).
"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pim.activation_files import FormatError, remove_stale_temps, save_npz_atomic, write_atomic
from pim.runs.example_topk import EMPTY
from pim.runs.names import read_manifest, write_manifest
from pim.runs.writer import RunRefused, earlier_manifest, now, replace_run, staging_dir

KIND = "neuron-examples"  # the manifest's "kind"; the stem of the files' names
FOLDER = "examples"  # inside the results folder
ARRAYS = ("values", "corpus", "line", "position", "ids")  # the running top-k (pim/runs/example_topk.py)


def examples_paths(results_dir, model):
    """{"examples", "manifest", "progress"}: the paths of MODEL's neuron examples under results_dir."""
    folder = Path(results_dir) / FOLDER
    stem = f"{model}-{KIND}"
    return {"examples": folder / f"{stem}.jsonl", "manifest": folder / f"{stem}-manifest.json",
            "progress": folder / f"{stem}-progress.npz"}


@dataclass
class Example:
    value: float
    corpus: str  # FILE name of the corpus
    line: int  # from 1
    position: int  # token index in the text, from 0
    tokens: list  # decoded tokens around it
    at: int  # index of the example's token in `tokens`
    ids: list  # their token ids

    def text(self, mark=("[[", "]]")):
        """The window's text with the example's token between the two marks."""
        return "".join(self.tokens[:self.at]) + mark[0] + self.tokens[self.at] + mark[1] + \
            "".join(self.tokens[self.at + 1:])


@dataclass
class NeuronExamples:
    layer: int
    neuron: int
    languages: list  # the languages the neuron file gives it to
    examples: list  # Example, largest value first


def read_examples(path):
    """[NeuronExamples] of a finished examples file, in its order (layer, then neuron); a FormatError naming
    the file and line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file (write it with `make examples MODEL=...`)")
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                out.append(_neuron_of(json.loads(line)))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise FormatError(f"{path}:{number}: not a line of neuron examples ({type(e).__name__}: {e})") from None
    return out


def _neuron_of(record):
    examples = [Example(float(e["value"]), str(e["corpus"]), int(e["line"]), int(e["position"]),
                        [str(t) for t in e["tokens"]], int(e["at"]), [int(i) for i in e["ids"]])
                for e in record["examples"]]
    for e in examples:
        if not (0 <= e.at < len(e.tokens) == len(e.ids)):
            raise ValueError(f"token {e.at} of a window of {len(e.tokens)} tokens and {len(e.ids)} ids")
    return NeuronExamples(int(record["layer"]), int(record["neuron"]), [str(x) for x in record["languages"]], examples)


def examples_text(neurons, languages, corpora, state, pieces):
    """The examples file's text: neurons [(layer, neuron)], languages [[lang, ...]] per neuron, corpora the
    FILE names by corpus number, state the running top-k's host arrays, pieces(ids) the decoded tokens."""
    lines = []
    for i, ((layer, neuron), langs) in enumerate(zip(neurons, languages)):
        examples = []
        for j in np.flatnonzero(state["corpus"][i] != EMPTY):
            ids = state["ids"][i, j]
            inside = np.flatnonzero(ids >= 0)  # the text's tokens: one run, the example's own among them
            window = [int(t) for t in ids[inside[0]:inside[-1] + 1]]
            examples.append({"value": float(str(np.float32(state["values"][i, j]))),
                             "corpus": corpora[int(state["corpus"][i, j])], "line": int(state["line"][i, j]) + 1,
                             "position": int(state["position"][i, j]), "tokens": pieces(window),
                             "at": int(len(ids) // 2 - inside[0]), "ids": window})
        lines.append(json.dumps({"layer": layer, "neuron": neuron, "languages": langs, "examples": examples},
                                ensure_ascii=False) + "\n")
    return "".join(lines)


def settings_differ(old, new):
    """The lines naming the settings that differ between an old manifest's and the new ones."""
    return [f"{k}: {old.get(k)!r} then, {v!r} now" for k, v in new.items() if old.get(k) != v]


class ExamplesWriter:
    def __init__(self, results_dir, model, settings, overwrite=False):
        self.final = examples_paths(results_dir, model)
        self.staging = staging_dir(self.final["examples"].parent, model, KIND)
        self.paths = self.final  # the staged paths for an --overwrite run
        self.settings, self.overwrite = settings, overwrite
        self.manifest = None
        self.corpus = self.next_line = 0  # where to go on: every line before next_line of that corpus is done
        self.tokens = []  # tokens read per corpus (the current one last)
        self.state = None  # the running top-k's host arrays at the last commit

    def open(self, info):
        """Start or resume; returns whether it resumed (then `state`, `corpus`, `next_line` say where). Call it
        holding the run's lock: it removes the temporaries a killed process of the run left (remove_stale_temps)."""
        remove_stale_temps([*self.final.values(), *(self.staging / p.name for p in self.final.values())])
        old = read_manifest(self.final["manifest"]) if self.overwrite else earlier_manifest(self.final, self.staging)
        if self.overwrite:
            self.paths = {k: self.staging / v.name for k, v in self.final.items()}
            staged = earlier_manifest(self.paths, self.staging, staged=True)
            if staged is not None and staged.get("status") == "finished":  # killed while moving it into place
                self._swap()
                raise RunRefused(f"{self.final['examples']}: the --overwrite run had finished; it is in place now")
            if staged is not None and staged.get("settings") == self.settings and self.paths["progress"].is_file():
                return self._resume(staged, info)
            shutil.rmtree(self.staging, ignore_errors=True)
        elif old is not None and old.get("status") == "finished":
            raise RunRefused(f"{self.final['examples']} is finished; pass --overwrite to make it again")
        elif old is not None:
            differ = settings_differ(old.get("settings", {}), self.settings)
            if differ:
                raise RunRefused(f"{self.final['manifest']} was started with other settings:\n  " + "\n  ".join(differ)
                                 + "\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
            if self.final["progress"].is_file():
                return self._resume(old, info)
        elif self.final["examples"].exists():
            raise RunRefused(f"{self.final['examples']} exists without its manifest; move it away or pass --overwrite")
        for path in self.paths.values():
            path.unlink(missing_ok=True)
        self.paths["manifest"].parent.mkdir(parents=True, exist_ok=True)
        self.manifest = {"kind": KIND, "status": "running", "settings": self.settings, **info, "started": now(),
                         "resumed": []}
        write_manifest(self.paths["manifest"], self.manifest)
        return False

    def _resume(self, old, info):
        path = self.paths["progress"]
        try:
            with np.load(path) as progress:
                where = json.loads(str(progress["where"]))
                state = {name: progress[name] for name in ARRAYS}
            self.corpus, self.next_line = int(where["corpus"]), int(where["next_line"])
            self.tokens = [int(t) for t in where["tokens"]]
        except Exception as e:  # noqa: BLE001 -- any damage: a zip, npy, JSON or key error
            raise RunRefused(f"{path}: damaged progress file ({type(e).__name__}: {e}); pass --overwrite to start "
                             "afresh") from None
        self.state = state
        self.manifest = {**old, **{k: info[k] for k in ("batch_size", "sorted", "sort_window") if k in info},
                         "resumed": old.get("resumed", []) + [{"at": now(), "corpus": self.corpus,
                                                               "next_line": self.next_line,
                                                               "command": info.get("command")}]}
        write_manifest(self.paths["manifest"], self.manifest)
        return True

    def commit(self, corpus, next_line, tokens, state):
        """Corpus number `corpus` is read up to line next_line (exclusive), `tokens` of it; state: the running
        top-k's host arrays. Durable on return."""
        self.corpus, self.next_line, self.state = corpus, next_line, state
        self.tokens = self.tokens[:corpus] + [0] * (corpus - len(self.tokens)) + [int(tokens)]
        where = {"corpus": corpus, "next_line": next_line, "tokens": self.tokens}
        save_npz_atomic(self.paths["progress"], where=np.array(json.dumps(where)), **state)
        self.manifest.update(corpus=corpus, next_line=next_line, tokens=self.tokens, updated=now())
        write_manifest(self.paths["manifest"], self.manifest)

    def finish(self, text, **facts):
        """Write the examples file (its whole text) and mark the run finished."""
        write_atomic(self.paths["examples"], text)
        for key in ("corpus", "next_line"):
            self.manifest.pop(key, None)
        self.manifest.update(status="finished", finished=now(), tokens=self.tokens, **facts)
        write_manifest(self.paths["manifest"], self.manifest)
        self.paths["progress"].unlink(missing_ok=True)
        if self.paths is not self.final:
            self._swap()

    def _swap(self):
        """Move a finished --overwrite run over the old one (pim.runs.writer.replace_run)."""
        replace_run(self.final, self.paths, ("examples",), self.staging)
        self.paths = self.final

    def abandon(self):
        """The run failed before this process committed anything of a fresh run: leave no trace of it."""
        if self.manifest is not None and not self.manifest.get("resumed") and self.state is None:
            for path in self.paths.values():
                path.unlink(missing_ok=True)
            if self.paths is not self.final:
                shutil.rmtree(self.staging, ignore_errors=True)
