"""The files of one inference run, committed batch by batch so that a killed run resumes exactly.

Per batch: the finished prompts are added to the committed state. The result and ratio files only ever
hold a prefix of the prompts in input order: a prompt whose predecessors are not all done yet (batches
are sorted by length) waits in the progress file (`pending`) until they are. The result lines and ratio
rows of the new prefix are appended (flushed to disk), then the progress file
(<FILE>-progress-<MODEL>.npz: prompts in the files, their committed byte sizes and CRC-32 checksums
(running, so a commit costs only what it appends), the pending prompts'
results, counted steps, index counts of all of them, the counted steps of each prompt in the files) is
replaced atomically. A run killed at any moment
restarts from the last progress file: the result and ratio files are checked against it (never shorter,
the committed part holding the committed number of lines and bytes of the committed checksum: a file
edited in place is refused) and cut back to the committed sizes, so the
finished files are byte-identical to an uninterrupted run. At the end the index file is written and the
manifest says "finished", with the counted steps of each prompt (`prompt_steps`: how many ratio rows each
prompt has). --overwrite writes the new run into a hidden folder beside the old one
(.overwrite-<FILE>-<MODEL>/) and moves it over the old run only when it is finished: until then the old
run stays as it was, readable. A killed --overwrite run resumes there when started again with --overwrite
and the same settings.
"""
import datetime
import json
import os
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

from pim.activation_files import index_line, remove_stale_temps, save_npz_atomic, write_atomic, writing_temp
from pim.cli import UserError
from pim.runs.names import read_manifest, run_paths, write_manifest

NOT_SETTINGS = ("batch_size",)  # were settings of older manifests; the files do not depend on them


class RunRefused(UserError):
    """The run cannot start without destroying or mixing results; the message says what to do (a UserError:
    scripts print it as one line and exit 1)."""


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def staging_dir(results_dir, file, model):
    return Path(results_dir) / f".overwrite-{file}-{model}"


def earlier_manifest(paths, staging, staged=False):
    """The manifest of an earlier process of a corpus or examples run (its files `paths`; staged: the paths of an
    --overwrite run in the folder `staging`), or None where it never wrote one. A manifest that is damaged (not the
    JSON object of a run), or missing beside a progress file, is refused: starting afresh would delete the
    committed progress."""
    afresh = f"remove {staging} to start the --overwrite run afresh" if staged else "pass --overwrite to start afresh"
    path = paths["manifest"]
    if not path.exists():
        if paths["progress"].exists():
            raise RunRefused(f"{path} is missing, but {paths['progress'].name} holds committed progress of the "
                             f"run: restore the manifest to resume, or {afresh}")
        return None
    manifest = read_manifest(path)
    if manifest is None or not isinstance(manifest.get("settings"), dict):
        raise RunRefused(f"{path}: damaged manifest (not the JSON object of a run): restore it to resume, or {afresh}")
    return manifest


def replace_run(final, staged, kinds, staging):
    """--overwrite: the finished run in the folder `staging` (its files `staged`, {kind: path}) replaces the old
    one (`final`). The old manifest goes first and the new one comes last, so that a crash in between leaves
    files without a manifest (refused by every reader; the same --overwrite command completes the move: a data
    file that is no longer staged was moved already), never a mixed run. kinds: the kinds of the data files,
    moved before the manifest."""
    final["manifest"].unlink(missing_ok=True)
    final["progress"].unlink(missing_ok=True)
    for kind in (*kinds, "manifest"):
        if kind == "manifest" or staged[kind].exists() or not final[kind].exists():
            os.replace(staged[kind], final[kind])
    shutil.rmtree(staging, ignore_errors=True)


class RunWriter:
    def __init__(self, results_dir, file, model, settings, overwrite=False):
        self.final = run_paths(results_dir, file, model)
        self.staging = staging_dir(results_dir, file, model)
        self.paths = self.final  # the staged paths while an --overwrite run has not committed yet
        self.file, self.model = file, model
        self.settings = settings  # must be equal to resume a run
        self.overwrite = overwrite
        self.manifest = None
        self.done = 0  # prompts in the result file (a prefix in input order)
        self.pending = {}  # prompt index -> (result line, ratio text, steps): committed, not yet in the files
        self.steps = 0  # counted steps committed (in the files and pending)
        self.prompt_steps = []  # counted steps of each prompt in the files, in input order; None: not known
        self.counts = None  # int64 [layers, width], running index of every committed prompt
        self.sizes = {"result": 0, "ratio": 0}
        self.crcs = {"result": 0, "ratio": 0}  # zlib.crc32 of the committed bytes of each file
        self.fresh = False  # this process started the run (nothing committed before it)
        self.commits = 0  # commits made by this process

    @property
    def completed(self):
        """The indices of the committed prompts."""
        return set(range(self.done)) | set(self.pending)

    def _old_manifest(self):
        path = self.final["manifest"]
        if not path.is_file():
            return None
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            old = e
        if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
            raise RunRefused(f"{path}: damaged manifest (not the JSON of a run{f': {old}' if isinstance(old, Exception) else ''}); "
                             "move the run's files away, or pass --overwrite to start afresh")
        return old

    def open(self, info):
        """Start or resume; `info` is stored in the manifest. Returns the number of prompts already done. Call
        it holding the run's lock: it removes the temporaries a killed process of the run left."""
        paths = self.final
        remove_stale_temps([*paths.values(), *run_paths(self.staging, self.file, self.model).values()])
        if _manifest_kind(paths["manifest"]) == "corpus":  # never replaced by a generation run, even with --overwrite
            raise RunRefused(f"{paths['manifest']} is a corpus run (make corpus), not a generation run: a generation "
                             "run never replaces it; give this run another FILE, or move that run away")
        old = None if self.overwrite else self._old_manifest()
        existing = [p for k, p in paths.items() if k in ("result", "ratio", "index", "progress") and p.exists()]
        if self.overwrite:
            resumed = self._open_staged(info)
            if resumed is not None:
                return resumed
        elif old is not None and old.get("status") == "finished":
            paths["progress"].unlink(missing_ok=True)  # left if killed between finishing and cleaning up
            again = " (an --overwrite run of it was interrupted: give --overwrite again to resume that)" \
                if self.staging.exists() else ""
            raise RunRefused(f"{paths['result']} is a finished run ({paths['manifest'].name}); "
                             f"pass --overwrite to run it again{again}")
        elif old is not None:
            differ = [f"{k}: {old['settings'].get(k)!r} then, {v!r} now" for k, v in self.settings.items()
                      if old["settings"].get(k) != v and k not in NOT_SETTINGS]
            if differ:
                raise RunRefused(f"{paths['manifest']} was started with other settings:\n  " + "\n  ".join(differ)
                                 + "\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
            if paths["progress"].is_file():
                self._resume(old, info)
                return len(self.completed)
            sizes = [p.stat().st_size for k, p in paths.items() if k in ("result", "ratio") and p.is_file()]
            if old.get("prompts_done") or any(sizes):
                raise RunRefused(f"{paths['progress']} is missing, but {paths['manifest'].name} says "
                                 f"{old.get('prompts_done', 'some')} prompts were committed: without it the run cannot "
                                 "resume exactly (it holds the index counts). Restore it, or pass --overwrite to start afresh.")
            self._remove()  # killed before its first commit: nothing to keep
        elif existing:
            raise RunRefused(f"{existing[0]} exists but is not an unfinished run of this project; "
                             "move it away or pass --overwrite")
        self.fresh = True
        self.paths["result"].parent.mkdir(parents=True, exist_ok=True)
        self.manifest = {"status": "running", "settings": self.settings, **info, "started": now(), "resumed": []}
        write_manifest(self.paths["manifest"], self.manifest)
        for kind in ("result", "ratio"):
            self.paths[kind].write_bytes(b"")
        self._commit_progress()
        return 0

    def _open_staged(self, info):
        """--overwrite: resume a killed --overwrite run of the same settings (returns the prompts done), or
        prepare an empty staging folder (returns None)."""
        self.paths = run_paths(self.staging, self.file, self.model)
        staged = _read_json(self.paths["manifest"])
        if self.paths["progress"].is_file() and not isinstance((staged or {}).get("settings"), dict):
            raise RunRefused(f"{self.paths['manifest']}: {'damaged' if self.paths['manifest'].exists() else 'missing'}"
                             f" manifest of an interrupted --overwrite run, whose {self.paths['progress'].name} holds "
                             f"committed progress: restore it to resume, or remove {self.staging} to start the "
                             "--overwrite run afresh")
        if staged is not None and staged.get("status") == "finished":  # killed while moving it into place
            self._swap()
            raise RunRefused(f"{self.final['manifest']}: the --overwrite run had finished; it is in place now")
        same = staged is not None and all(staged.get("settings", {}).get(k) == v for k, v in self.settings.items()
                                          if k not in NOT_SETTINGS)
        if same and self.paths["progress"].is_file():
            self._resume(staged, info)
            return len(self.completed)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        return None

    def _resume(self, old, info):
        path = self.paths["progress"]
        try:
            with np.load(path) as progress:
                done, steps = int(progress["done"]), int(progress["steps"])
                counts = progress["counts"]
                sizes = {"result": int(progress["result_bytes"]), "ratio": int(progress["ratio_bytes"])}
                pending = json.loads(str(progress["pending"])) if "pending" in progress.files else []
                crcs = {k: int(progress[f"{k}_crc32"]) for k in sizes} if "result_crc32" in progress.files else None
                prompt_steps = progress["prompt_steps"].tolist() if "prompt_steps" in progress.files else None
        except Exception as e:  # noqa: BLE001 -- any damage: a zip, npy or JSON error
            raise RunRefused(f"{path}: damaged progress file ({type(e).__name__}: {e}); the run cannot resume "
                             "exactly: pass --overwrite to start afresh") from None
        self.done, self.steps = done, steps
        self.counts = counts if counts.size else None
        self.pending = {int(i): (line, ratio, int(n)) for i, line, ratio, n in pending}
        in_files = self.steps - sum(n for _, _, n in self.pending.values())
        # progress files of older runs have no steps per prompt: the finished manifest then has none either
        self.prompt_steps = prompt_steps if prompt_steps is not None and len(prompt_steps) == done and \
            sum(prompt_steps) == in_files else None
        self.sizes = sizes
        self._verify(old, info, crcs)
        self.crcs = crcs if crcs is not None else self._crcs_of_committed()
        for kind, size in sizes.items():  # drop what a killed batch appended after its last commit
            with open(self.paths[kind], "r+b") as f:
                f.truncate(size)
        self.manifest = {**old, "batch_size": info.get("batch_size"),
                         "resumed": old.get("resumed", []) + [{"at": now(), "prompts_done": len(self.completed),
                                                               "command": info.get("command")}]}
        if old.get("batch_size", old["settings"].get("batch_size")) not in (None, info.get("batch_size")):
            print(f"note: resumed with batch size {info.get('batch_size')} (started with "
                  f"{old.get('batch_size', old['settings'].get('batch_size'))}): the files are those of any batching "
                  "up to float rounding (docs/measures.md); the manifest records the change", file=sys.stderr)
            self.manifest.setdefault("batch_size_changes", []).append(
                {"at": now(), "prompts_done": len(self.completed), "from": old.get("batch_size",
                 old["settings"].get("batch_size")), "to": info.get("batch_size"), "why": "resumed with another batch size"})
        write_manifest(self.paths["manifest"], self.manifest)

    def _verify(self, old, info, crcs=None):
        """Refuse to resume from files that do not hold what the progress file says was committed: their
        committed bytes, lines and (progress files since checksums were kept) CRC-32."""
        pending_steps = sum(n for _, _, n in self.pending.values())
        expected = {"result": self.done, "ratio": self.steps - pending_steps}
        for kind, size in self.sizes.items():
            path = self.paths[kind]
            have = path.stat().st_size if path.is_file() else None
            if have is None or have < size:
                raise RunRefused(f"{path} is {'missing' if have is None else f'shorter ({have} bytes)'} than its "
                                 f"committed {size} bytes: it was changed after the run wrote it, so the run cannot "
                                 "resume. Restore it, or pass --overwrite to start afresh.")
            lines, crc = self._scan_committed(kind)
            if lines != expected[kind]:
                raise RunRefused(f"{path}: its committed {size} bytes hold {lines} lines, the progress file says "
                                 f"{expected[kind]}: the file was changed; restore it, or pass --overwrite to start afresh.")
            if crcs is not None and crc != crcs[kind]:
                raise RunRefused(f"{path}: its committed {size} bytes do not have the checksum the progress file "
                                 "holds: the file was edited after the run wrote it; restore it, or pass --overwrite "
                                 "to start afresh.")
        layers = info.get("layers")
        if self.counts is not None and (self.counts.ndim != 2 or (layers and self.counts.shape[0] != layers)):
            raise RunRefused(f"{self.paths['progress']}: index counts of shape {self.counts.shape} do not fit the "
                             f"model's {layers} layers; pass --overwrite to start afresh")
        total = info.get("prompts")
        if total is not None and (self.done > total or any(i >= total for i in self.pending)):
            raise RunRefused(f"{self.paths['progress']}: more prompts committed than the input has; "
                             "pass --overwrite to start afresh")

    def _scan_committed(self, kind):
        """(lines, CRC-32) of the committed bytes of the result or ratio file."""
        lines, crc, size = 0, 0, self.sizes[kind]
        with open(self.paths[kind], "rb") as f:
            for chunk in iter(lambda: f.read(min(1 << 24, size - f.tell())), b""):
                lines += chunk.count(b"\n")
                crc = zlib.crc32(chunk, crc)
        return lines, crc

    def _crcs_of_committed(self):
        return {kind: self._scan_committed(kind)[1] for kind in self.sizes}

    def note(self, key, entry):
        """Add an entry to a list in the manifest (e.g. batch_size_changes), written at the next commit."""
        self.manifest.setdefault(key, []).append({"at": now(), "prompts_done": len(self.completed), **entry})

    def commit(self, result_lines, ratio_text, counts, steps):
        """Commit the next prompts in input order: their result lines and ratio rows, index counts, steps (the
        total, or a list: the steps of each prompt; a total of several prompts leaves the steps per prompt unknown)."""
        if self.pending:
            raise RuntimeError("commit() appends in input order; with pending prompts use commit_prompts()")
        self._add_counts(counts)
        per_prompt = list(map(int, steps)) if isinstance(steps, (list, tuple)) else \
            [int(steps)] if len(result_lines) == 1 else None
        self.steps += sum(per_prompt) if per_prompt is not None else int(steps)
        self.prompt_steps = None if per_prompt is None or self.prompt_steps is None else self.prompt_steps + per_prompt
        self.done += len(result_lines)
        self._append("".join(line + "\n" for line in result_lines), ratio_text)

    def commit_prompts(self, records, counts):
        """Commit one batch in any order: records are (prompt index, result line, ratio text, counted steps),
        counts its index counts. The prompts that complete the prefix in input order go to the files; the
        others wait in the progress file."""
        for index, line, ratio, steps in records:
            self.pending[index] = (line, ratio, int(steps))
            self.steps += int(steps)
        self._add_counts(counts)
        result, ratio_rows = [], []
        while self.done in self.pending:
            line, ratio, steps = self.pending.pop(self.done)
            if self.prompt_steps is not None:
                self.prompt_steps.append(steps)
            result.append(line + "\n")
            ratio_rows.append(ratio)
            self.done += 1
        self._append("".join(result), "".join(ratio_rows))

    def _add_counts(self, counts):
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts.copy() if self.counts is None else self.counts + counts

    def _append(self, result_text, ratio_text):
        """Append to the files (flushed to disk), then replace the progress file."""
        for kind, text in (("result", result_text), ("ratio", ratio_text)):
            if text:
                data = text.encode("utf-8")
                with open(self.paths[kind], "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                    self.sizes[kind] = f.tell()
                self.crcs[kind] = zlib.crc32(data, self.crcs[kind])
        self._commit_progress()
        self.commits += 1

    def _commit_progress(self):
        pending = [[i, line, ratio, n] for i, (line, ratio, n) in sorted(self.pending.items())]
        known = {} if self.prompt_steps is None else {"prompt_steps": np.asarray(self.prompt_steps, dtype=np.int64)}
        save_npz_atomic(self.paths["progress"], done=self.done, steps=self.steps, result_bytes=self.sizes["result"],
                        ratio_bytes=self.sizes["ratio"], result_crc32=self.crcs["result"],
                        ratio_crc32=self.crcs["ratio"], pending=np.array(json.dumps(pending, ensure_ascii=False)),
                        counts=self.counts if self.counts is not None else np.zeros(0, dtype=np.int64), **known)
        self.manifest.update(prompts_done=len(self.completed), prompts_in_files=self.done, counted_steps=self.steps,
                             updated=now())
        write_manifest(self.paths["manifest"], self.manifest)

    def _swap(self):
        """--overwrite: the new run is finished; it replaces the old run (replace_run)."""
        replace_run(self.final, run_paths(self.staging, self.file, self.model), ("result", "ratio", "index"),
                    self.staging)
        self.paths = self.final

    def abandon(self):
        """The run failed in this process before it committed anything it started: leave no trace of it
        (an --overwrite run leaves the old run as it was)."""
        if self.paths is not self.final:
            if self.fresh and self.commits == 0:  # a resumed --overwrite run keeps what it has
                shutil.rmtree(self.staging, ignore_errors=True)
            self.paths = self.final
        elif self.fresh and self.commits == 0 and self.manifest is not None:
            self._remove()

    def finish(self):
        """Write the index file and mark the run finished."""
        if self.counts is None:
            raise RunRefused("no step was recorded, so there is no index file to write")
        if self.pending:
            raise RuntimeError(f"prompts {sorted(self.pending)[:5]} are not in the files: a bug, please report it")
        write_atomic(self.paths["index"], index_line(self.counts))
        self.manifest.update(status="finished", finished=now(), prompts_done=self.done, counted_steps=self.steps)
        if self.prompt_steps is not None:  # the ratio rows of each prompt (pim.api maps rows to prompts with them)
            self.manifest["prompt_steps"] = self.prompt_steps
        write_manifest(self.paths["manifest"], self.manifest)
        self.paths["progress"].unlink()
        if self.paths is not self.final:
            self._swap()

    def _remove(self):
        for path in self.paths.values():
            if Path(path).exists():
                Path(path).unlink()


def _read_json(path):
    """The JSON object at path, or None (none, unreadable, not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_kind(path):
    """The "kind" of the manifest at path ("corpus" for corpus runs), or None (none, a generation run, unreadable)."""
    return (_read_json(path) or {}).get("kind")
