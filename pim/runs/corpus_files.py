"""Corpus runs: a model's activation statistics over a text corpus, teacher-forced (scripts/corpus_activate.py).

A corpus run has the index and manifest files of a run (pim/runs.run_paths), and no result or ratio
file: <FILE>-index-<MODEL>.jsonl counts, per neuron, the counted positions (every non-pad token of every
text) where its activation was > 0, and <FILE>-manifest-<MODEL>.json says `"kind": "corpus"`,
`"positions": "all"` and the number of counted tokens (`tokens`), which LAPE divides by. Analyses of
generation runs (make plots) skip runs whose manifest says kind "corpus" (is_corpus_run).

CorpusWriter commits batch by batch. The input is processed in windows of lines (pim/runs/corpus_input.py),
whose batches may come in any order (length-sorted); the progress file <FILE>-progress-<MODEL>.npz
holds the first line of the current window, the lines of it that are done, the counted tokens and the
index counts, and is replaced atomically after each batch. A killed run resumes from it with the same
settings, and refuses other settings, listing them. --overwrite writes the new run into a hidden folder
beside the old one (.overwrite-<FILE>-<MODEL>/, where a killed --overwrite run resumes) and moves it over
the old run only when it is finished: the old run stays readable until then.
"""
import json
import shutil
import sys

import numpy as np

from pim.activation_files import index_line, read_index, remove_stale_temps, save_npz_atomic, write_atomic
from pim.cli import UserError
from pim.runs.names import read_manifest, run_paths, write_manifest
from pim.runs.writer import RunRefused, earlier_manifest, now, replace_run, staging_dir

KIND = "corpus"  # the manifest's "kind" of a corpus run (generation runs have none)
FILES = ("index", "manifest", "progress")  # the files of a corpus run


def is_corpus_run(run):
    """True for a pim.runs.names.Run whose manifest says kind "corpus"."""
    path = run.index or run.ratio or run.result
    if path is None:
        return False
    return (read_manifest(run_paths(path.parent, run.file, run.model)["manifest"]) or {}).get("kind") == KIND


def read_corpus_run(results_dir, file, model):
    """(index counts [layers, width], counted tokens, manifest) of a finished corpus run; a UserError otherwise."""
    paths = run_paths(results_dir, file, model)
    manifest = read_manifest(paths["manifest"])
    if manifest is None or not paths["index"].is_file():
        raise UserError(f"no corpus run {paths['index']} with its manifest: run `make corpus FILE={file} MODEL={model}`")
    if manifest.get("kind") != KIND or manifest.get("positions") != "all":
        raise UserError(f"{paths['manifest']} is not a corpus run (kind {manifest.get('kind')!r}, positions "
                        f"{manifest.get('positions')!r}): LAPE needs `make corpus` runs")
    if manifest.get("status") != "finished":
        raise UserError(f"{paths['manifest']}: the corpus run is not finished")
    tokens = manifest.get("tokens")
    if type(tokens) is not int or tokens <= 0:
        raise UserError(f"{paths['manifest']}: \"tokens\" is {json.dumps(tokens)}, not a number of counted tokens: "
                        f"a damaged manifest; redo the run (make corpus FILE={file} MODEL={model} ARGS=--overwrite)")
    counts = read_index(paths["index"])
    if counts.max(initial=0) > tokens:
        raise UserError(f"{paths['index']}: a neuron counted {counts.max()} times, more than the {tokens} tokens of "
                        f"{paths['manifest'].name}: the index is not this run's; redo the run (ARGS=--overwrite)")
    return counts, tokens, manifest


def _settings(manifest):
    """A manifest's settings; those of runs started before the window was a setting get their sort_window."""
    settings = dict(manifest.get("settings") or {})
    if "sort_window" not in settings and "sort_window" in manifest:
        settings["sort_window"] = manifest["sort_window"]
    return settings


class CorpusWriter:
    def __init__(self, results_dir, file, model, settings, overwrite=False):
        self.final = {k: v for k, v in run_paths(results_dir, file, model).items() if k in FILES}
        self.staging = staging_dir(results_dir, file, model)
        self.paths = self.final  # the staged paths for an --overwrite run
        self.settings = settings
        self.overwrite = overwrite
        self.manifest = None
        self.next_line = None  # the first line of the current window: every line before it is done
        self.window_done = set()  # the lines of the current window that are done
        self.texts = self.tokens = self.cut = 0  # committed
        self.tokens_before = 0  # tokens of the lines before next_line (a --max-tokens budget counts from them)
        self.counts = None  # int64 [layers, width]

    def open(self, info, first_line):
        """Start or resume at `first_line` (the shard's); returns whether it resumed. Call it holding the run's
        lock: it removes the temporaries a killed process of the run left (remove_stale_temps)."""
        remove_stale_temps([*self.final.values(), *(self.staging / p.name for p in self.final.values())])
        old = read_manifest(self.final["manifest"]) if self.overwrite else earlier_manifest(self.final, self.staging)
        if old is not None and old.get("kind") != KIND:  # never replaced by a corpus run, not even with --overwrite
            raise RunRefused(f"{self.final['manifest']} is a generation run (make infer), not a corpus run: a corpus "
                             "run never replaces it; give the corpus run another FILE (FILE=corpus-<lang>), or move "
                             "that run away")
        if self.overwrite:
            self.paths = {k: self.staging / v.name for k, v in self.final.items()}
            staged = earlier_manifest(self.paths, self.staging, staged=True)
            if staged is not None and staged.get("status") == "finished":  # killed while moving it into place
                self._swap()
                raise RunRefused(f"{self.final['manifest']}: the --overwrite run had finished; it is in place now")
            if staged is not None and _settings(staged) == self.settings and self.paths["progress"].is_file():
                return self._resume(staged, info)
            shutil.rmtree(self.staging, ignore_errors=True)
        elif old is not None and old.get("status") == "finished":
            again = " (an --overwrite run of it was interrupted: give --overwrite again to resume that)" \
                if self.staging.exists() else ""
            raise RunRefused(f"{self.final['index']} is a finished corpus run; pass --overwrite to run it again{again}")
        elif old is not None:
            differ = [f"{k}: {_settings(old).get(k)!r} then, {v!r} now" for k, v in self.settings.items()
                      if _settings(old).get(k) != v]
            if differ:
                raise RunRefused(f"{self.final['manifest']} was started with other settings:\n  " + "\n  ".join(differ)
                                 + "\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
            if self.final["progress"].is_file():
                return self._resume(old, info)
        elif self.final["index"].exists():
            raise RunRefused(f"{self.final['index']} exists but is not an unfinished corpus run; move it away or "
                             "pass --overwrite")
        for path in self.paths.values():
            path.unlink(missing_ok=True)
        self.paths["index"].parent.mkdir(parents=True, exist_ok=True)
        self.manifest = {"kind": KIND, "positions": "all", "status": "running", "settings": self.settings, **info,
                         "started": now(), "resumed": []}
        self.next_line = first_line
        write_manifest(self.paths["manifest"], self.manifest)  # first: a progress file never lacks its manifest
        self._commit_progress()
        return False

    def _resume(self, old, info):
        path = self.paths["progress"]
        try:
            with np.load(path) as progress:
                state = json.loads(str(progress["state"]))
                counts = progress["counts"]
            self.next_line, self.window_done = int(state["next_line"]), set(map(int, state["window_done"]))
            self.texts, self.tokens, self.cut = int(state["texts"]), int(state["tokens"]), int(state["cut"])
            self.tokens_before = int(state["tokens_before"])
        except Exception as e:  # noqa: BLE001 -- any damage: a zip, npy, JSON or key error
            raise RunRefused(f"{path}: damaged progress file ({type(e).__name__}: {e}); the run cannot resume "
                             "exactly: pass --overwrite to start afresh") from None
        layers = info.get("layers")
        if counts.size and (counts.ndim != 2 or counts.shape != (layers, info.get("width"))):
            raise RunRefused(f"{path}: index counts of shape {counts.shape} do not fit the model's {layers} layers x "
                             f"{info.get('width')} neurons; pass --overwrite to start afresh")
        self.counts = counts if counts.size else None
        self.manifest = {**old, "batch_size": info.get("batch_size"), "sorted": info.get("sorted"),
                         "resumed": old.get("resumed", []) + [{"at": now(), "texts_done": self.texts,
                                                               "command": info.get("command")}]}
        before, after = (old.get("batch_size"), old.get("sorted")), (info.get("batch_size"), info.get("sorted"))
        if before != after:
            print(f"note: resumed with batch size {after[0]}{', sorted' if after[1] else ''} (started with "
                  f"{before[0]}{', sorted' if before[1] else ''}): the counts are those of any batching up to float "
                  "rounding (docs/measures.md); the manifest records the change", file=sys.stderr)
            self.manifest.setdefault("batch_size_changes", []).append(
                {"at": now(), "texts_done": self.texts, "from": before[0], "to": after[0], "sorted": after[1],
                 "why": "resumed with another batch size or order"})
        write_manifest(self.paths["manifest"], self.manifest)
        return True

    def commit(self, lines, tokens, cut, counts):
        """Add one batch: its line numbers, counted tokens, texts cut and index counts; durable on return."""
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts.copy() if self.counts is None else self.counts + counts
        self.window_done.update(lines)
        self.texts += len(lines)
        self.tokens += int(tokens)
        self.cut += int(cut)
        self._commit_progress()

    def end_window(self, end):
        """Every text of the window is committed: the next one starts at line `end`."""
        self.next_line, self.window_done, self.tokens_before = end, set(), self.tokens
        self._commit_progress()

    def _commit_progress(self):
        state = {"next_line": self.next_line, "window_done": sorted(self.window_done), "texts": self.texts,
                 "tokens": self.tokens, "cut": self.cut, "tokens_before": self.tokens_before}
        save_npz_atomic(self.paths["progress"], state=np.array(json.dumps(state)),
                        counts=self.counts if self.counts is not None else np.zeros(0, dtype=np.int64))
        self.manifest.update(lines_done=self.texts, tokens=self.tokens, next_line=self.next_line, updated=now())
        write_manifest(self.paths["manifest"], self.manifest)

    def finish(self, **facts):
        """Write the index file and mark the run finished (facts: what the manifest says of where it stopped)."""
        if self.counts is None:
            raise RunRefused("no text was counted, so there is no index file to write")
        write_atomic(self.paths["index"], index_line(self.counts))
        self.manifest.pop("next_line", None)
        self.manifest.update(status="finished", finished=now(), lines=self.texts, lines_done=self.texts,
                             tokens=self.tokens, cut_lines=self.cut, **facts)
        write_manifest(self.paths["manifest"], self.manifest)
        self.paths["progress"].unlink()
        if self.paths is not self.final:
            self._swap()

    def _swap(self):
        """Move a finished --overwrite run over the old one (pim.runs.writer.replace_run)."""
        replace_run(self.final, self.paths, ("index",), self.staging)
        self.paths = self.final

    def abandon(self):
        """The run failed before this process committed a batch of a fresh run: leave no trace of it."""
        if self.manifest is not None and not self.manifest.get("resumed") and self.texts == 0:
            for path in self.paths.values():
                path.unlink(missing_ok=True)
            if self.paths is not self.final:
                shutil.rmtree(self.staging, ignore_errors=True)
