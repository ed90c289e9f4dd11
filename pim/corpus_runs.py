"""Corpus runs: a model's activation statistics over a text file, teacher-forced (scripts/corpus_activate.py).

A corpus run has the index and manifest files of a run (pim/runs.run_paths), and no result or ratio
file: <FILE>-index-<MODEL>.jsonl counts, per neuron, the counted positions (every non-pad token of every
text) where its activation was > 0, and <FILE>-manifest-<MODEL>.json says `"kind": "corpus"`,
`"positions": "all"` and the number of counted tokens (`tokens`), which LAPE divides by. Analyses of
generation runs (make plots) skip runs whose manifest says kind "corpus" (is_corpus_run).

CorpusWriter commits batch by batch as RunWriter does for inference: the progress file
<FILE>-progress-<MODEL>.npz (texts done, tokens, index counts) is replaced atomically after each batch;
a killed run resumes from it with the same settings, and refuses other settings, listing them.
"""
import json
import os

import numpy as np

from pim.activation_files import index_line, read_index, write_atomic
from pim.cli import UserError
from pim.run_writer import RunRefused, now
from pim.runs import read_manifest, run_paths, write_manifest

KIND = "corpus"  # the manifest's "kind" of a corpus run (generation runs have none)


def is_corpus_run(run):
    """True for a pim.runs.Run whose manifest says kind "corpus"."""
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
    return read_index(paths["index"]), int(manifest["tokens"]), manifest


class CorpusWriter:
    def __init__(self, results_dir, file, model, settings, overwrite=False):
        self.paths = {k: v for k, v in run_paths(results_dir, file, model).items() if k in ("index", "manifest", "progress")}
        self.settings = settings
        self.overwrite = overwrite
        self.manifest = None
        self.done = 0  # texts committed
        self.tokens = 0  # counted positions committed
        self.counts = None

    def open(self, info):
        """Start or resume; returns the number of texts already done."""
        paths = self.paths
        old = read_manifest(paths["manifest"])
        if old is not None and old.get("kind") != KIND:  # never replaced by a corpus run, not even with --overwrite
            raise RunRefused(f"{paths['manifest']} is a generation run (make infer), not a corpus run: a corpus run "
                             "never replaces it; give the corpus run another FILE (FILE=corpus-<lang>), or move that "
                             "run away")
        if self.overwrite:
            self._remove()
        elif old is not None and old.get("status") == "finished":
            raise RunRefused(f"{paths['index']} is a finished corpus run; pass --overwrite to run it again")
        elif old is not None:
            differ = [f"{k}: {old['settings'].get(k)!r} then, {v!r} now" for k, v in self.settings.items()
                      if old["settings"].get(k) != v]
            if differ:
                raise RunRefused(f"{paths['manifest']} was started with other settings:\n  " + "\n  ".join(differ)
                                 + "\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
            if paths["progress"].is_file():
                with np.load(paths["progress"]) as progress:
                    self.done, self.tokens = int(progress["done"]), int(progress["tokens"])
                    self.counts = progress["counts"] if progress["counts"].size else None
                self.manifest = {**old, "resumed": old.get("resumed", []) + [{"at": now(), "lines_done": self.done}]}
                write_manifest(paths["manifest"], self.manifest)
                return self.done
        elif paths["index"].exists():
            raise RunRefused(f"{paths['index']} exists but is not an unfinished corpus run; move it away or pass "
                             "--overwrite")
        paths["index"].parent.mkdir(parents=True, exist_ok=True)
        self.manifest = {"kind": KIND, "positions": "all", "status": "running", "settings": self.settings, **info,
                         "started": now(), "resumed": []}
        self._commit_progress()
        return 0

    def commit(self, lines, tokens, counts):
        """Add one batch: its number of texts, counted tokens and index counts [layers, width]; durable on return."""
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts.copy() if self.counts is None else self.counts + counts
        self.done += int(lines)
        self.tokens += int(tokens)
        self._commit_progress()

    def _commit_progress(self):
        tmp = self.paths["progress"].with_name(f".{self.paths['progress'].name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, done=self.done, tokens=self.tokens,
                     counts=self.counts if self.counts is not None else np.zeros(0, dtype=np.int64))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.paths["progress"])
        self.manifest.update(lines_done=self.done, tokens=self.tokens, updated=now())
        write_manifest(self.paths["manifest"], self.manifest)

    def finish(self):
        if self.counts is None:
            raise RunRefused("no text was counted, so there is no index file to write")
        write_atomic(self.paths["index"], index_line(self.counts))
        self.manifest.update(status="finished", finished=now(), lines_done=self.done, tokens=self.tokens)
        write_manifest(self.paths["manifest"], self.manifest)
        self.paths["progress"].unlink()

    def _remove(self):
        for path in self.paths.values():
            path.unlink(missing_ok=True)
