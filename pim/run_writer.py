"""The files of one inference run, committed batch by batch so that a killed run resumes exactly.

Per batch: the result lines and ratio rows are appended (flushed to disk), then the progress file
(<FILE>-progress-<MODEL>.npz: prompts done, committed byte sizes, index counts) is replaced
atomically. A run killed at any moment restarts from the last progress file: the result and ratio
files are cut back to the committed sizes, so the finished files are byte-identical to an
uninterrupted run. At the end the index file is written and the manifest says "finished".
"""
import datetime
import json
import os
from pathlib import Path

import numpy as np

from pim.activation_files import index_line, write_atomic
from pim.runs import run_paths, write_manifest


class RunRefused(RuntimeError):
    """The run cannot start without destroying or mixing results; the message says what to do."""


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunWriter:
    def __init__(self, results_dir, file, model, settings, overwrite=False):
        self.paths = run_paths(results_dir, file, model)
        self.settings = settings  # must be equal to resume a run
        self.overwrite = overwrite
        self.manifest = None
        self.done = 0  # prompts committed
        self.steps = 0  # counted steps committed
        self.counts = None  # int64 [layers, width], running index

    def open(self, info):
        """Start or resume; `info` is stored in the manifest. Returns the number of prompts already done."""
        paths = self.paths
        old = json.loads(paths["manifest"].read_text()) if paths["manifest"].is_file() else None
        existing = [p for k, p in paths.items() if k in ("result", "ratio", "index") and p.exists()]
        if self.overwrite:
            self._remove()
        elif old is not None and old.get("status") == "finished":
            paths["progress"].unlink(missing_ok=True)  # left if killed between finishing and cleaning up
            raise RunRefused(f"{paths['result']} is a finished run ({paths['manifest'].name}); "
                             "pass --overwrite to run it again")
        elif old is not None:
            differ = [f"{k}: {old['settings'].get(k)!r} then, {v!r} now" for k, v in self.settings.items()
                      if old["settings"].get(k) != v]
            if differ:
                raise RunRefused(f"{paths['manifest']} was started with other settings:\n  " + "\n  ".join(differ)
                                 + "\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
            if paths["progress"].is_file():
                self._resume(old)
                return self.done
            self._remove()  # killed before its first commit: nothing to keep
        elif existing:
            raise RunRefused(f"{existing[0]} exists but is not an unfinished run of this project; "
                             "move it away or pass --overwrite")
        paths["result"].parent.mkdir(parents=True, exist_ok=True)
        self.manifest = {"status": "running", "settings": self.settings, **info, "started": now(), "resumed": []}
        write_manifest(paths["manifest"], self.manifest)
        for kind in ("result", "ratio"):
            paths[kind].write_bytes(b"")
        self._commit_progress({"result": 0, "ratio": 0})
        return 0

    def _resume(self, old):
        with np.load(self.paths["progress"]) as progress:
            self.done, self.steps = int(progress["done"]), int(progress["steps"])
            self.counts = progress["counts"] if progress["counts"].size else None
            sizes = {"result": int(progress["result_bytes"]), "ratio": int(progress["ratio_bytes"])}
        for kind, size in sizes.items():  # drop what a killed batch appended after its last commit
            with open(self.paths[kind], "r+b") as f:
                f.truncate(size)
        self.manifest = {**old, "resumed": old.get("resumed", []) + [{"at": now(), "prompts_done": self.done}]}
        write_manifest(self.paths["manifest"], self.manifest)

    def commit(self, result_lines, ratio_text, counts, steps):
        """Append one batch's results and ratio rows, add its index counts, and make it durable."""
        sizes = {}
        for kind, text in (("result", "".join(line + "\n" for line in result_lines)), ("ratio", ratio_text)):
            with open(self.paths[kind], "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
                sizes[kind] = f.tell()
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts.copy() if self.counts is None else self.counts + counts
        self.done += len(result_lines)
        self.steps += int(steps)
        self._commit_progress(sizes)

    def _commit_progress(self, sizes):
        tmp = self.paths["progress"].with_name(f".{self.paths['progress'].name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, done=self.done, steps=self.steps, result_bytes=sizes["result"], ratio_bytes=sizes["ratio"],
                     counts=self.counts if self.counts is not None else np.zeros(0, dtype=np.int64))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.paths["progress"])
        self.manifest.update(prompts_done=self.done, counted_steps=self.steps, updated=now())
        write_manifest(self.paths["manifest"], self.manifest)

    def finish(self):
        """Write the index file and mark the run finished."""
        if self.counts is None:
            raise RunRefused("no step was recorded, so there is no index file to write")
        write_atomic(self.paths["index"], index_line(self.counts))
        self.manifest.update(status="finished", finished=now(), prompts_done=self.done, counted_steps=self.steps)
        write_manifest(self.paths["manifest"], self.manifest)
        self.paths["progress"].unlink()

    def _remove(self):
        for path in self.paths.values():
            if Path(path).exists():
                Path(path).unlink()
