"""The run engine that generation runs (scripts/infer_activate.py) and corpus runs (scripts/corpus_activate.py)
share: their common flags, the split into shards (--shard i/n, or one shard per process under
`accelerate launch` / torchrun, rank 0 merging at the end), and batches that halve after an
out-of-memory error. Model loading is pim/models/loading.py; committing and resuming are the writers'
(pim/runs/writer.py, pim/runs/corpus_files.py); every run holds its lock (pim/runs/lock.py) while it writes.
"""
import datetime
import os
import sys
from collections import deque
from pathlib import Path

from pim.cli import UserError
from pim.models.loading import DTYPES, is_oom, one_line
from pim.runs.lock import RunLock
from pim.runs.names import name_problem, read_manifest, run_paths
from pim.runs.shards import find_shard_manifests, parse_shard, shard_dir
from pim.runs.writer import staging_dir

# the defaults of the flags below: the scripts' constants override them
DEFAULTS = {"dtype": "auto", "device_map": "auto", "max_memory": None, "offload_folder": "offload", "shard": None,
            "attach": "auto", "deactivate": None, "overwrite": False}


def add_window_flags(p, batch_size, sort, sort_window, window_help):
    """--batch-size, --sort and --sort-window of the runs that read their texts in windows (corpus runs and neuron
    examples); window_help: what else a window is to this run."""
    import argparse

    from pim.cli import positive_int

    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"texts per forward call; halved after an out-of-memory error (default {batch_size})")
    p.add_argument("--sort", default=sort, action=argparse.BooleanOptionalAction,
                   help="batch the texts of a window longest first (--no-sort: file order); the same results up to "
                        "float rounding (docs/measures.md)")
    p.add_argument("--sort-window", type=positive_int, default=sort_window,
                   help=f"lines read, tokenized and sorted together; {window_help} (default {sort_window})")


def add_placement_flags(p, **defaults):
    """The flags of where and in which dtype the model runs: --dtype, --device-map, --max-memory, --offload-folder."""
    d = {**DEFAULTS, **defaults}
    p.add_argument("--dtype", default=d["dtype"], choices=DTYPES, help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--device-map", default=d["device_map"], help="auto (spread over the GPUs; the CPU alone without "
                   "GPUs), none, balanced, sequential, or an explicit map as JSON or a JSON file, "
                   "e.g. '{\"transformer.h.0\": 0, \"transformer.h.1\": \"cpu\", ...}'")
    p.add_argument("--max-memory", default=d["max_memory"], help="memory per device for the device map, "
                   "e.g. 0=70GiB,cpu=200GiB")
    p.add_argument("--offload-folder", default=d["offload_folder"], help="folder for layers mapped to disk")


def add_run_flags(p, **defaults):
    """The flags of both kinds of runs that are not about decoding: placement, shards, recording, overwrite."""
    import argparse

    d = {**DEFAULTS, **defaults}
    add_placement_flags(p, **defaults)
    p.add_argument("--shard", default=d["shard"], help="i/n: run only shard i (0-based) of n, a contiguous part of "
                   "the input (separate jobs; merge with scripts/merge_results.py); under accelerate launch / "
                   "torchrun the shard is the process rank and rank 0 merges at the end")
    p.add_argument("--attach", default=d["attach"], choices=["auto", "patch", "hooks"],
                   help="record through the patched modeling code, or forward hooks on the MLP activation modules "
                        "(same files; auto: the patch where pim/models/architectures.py has one, else hooks with a notice)")
    p.add_argument("--deactivate", default=d["deactivate"], metavar="FILE.json[:LANG]",
                   help="switch off the neurons of a language-neurons file (make lape; all languages, or LANG's): "
                        "the MODEL part of the names becomes <MODEL>-off-<LANG> (or -off-all)")
    p.add_argument("--deactivate-other-model", default=False, action=argparse.BooleanOptionalAction,
                   help="take a neuron file made for another model of the same shape (refused by default)")
    p.add_argument("--overwrite", default=d["overwrite"], action=argparse.BooleanOptionalAction,
                   help="redo a finished run (the old run stays readable until the new one is committed)")


def check_names(file, model, results_dir, data_dir="data"):
    """FILE and MODEL must be names that make unambiguous file names in an existing (or new) results folder."""
    for what, name in (("FILE", file), ("MODEL", model)):
        if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name:
            raise UserError(f"{what} {name!r}: give a name, not a path: the run's files are "
                            f"{results_dir}/<FILE>-<kind>-<MODEL>.* (another input folder: --data-dir)")
    problem = name_problem(file, model, data_dir)
    if problem:
        raise UserError(problem)
    results = Path(results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"--results-dir {results}: not a folder")


def launched():
    """The accelerate PartialState when started by `accelerate launch` or torchrun with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # ranks finish their shards at different times: wait for the slowest up to a week
    return PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(days=7))


def process_shard(shard_flag, state, interactive=False):
    """(i, n) of this process: the rank under accelerate launch / torchrun, --shard, or None."""
    if state and shard_flag:
        raise UserError("--shard is for separate jobs; under accelerate launch / torchrun each rank is a shard")
    try:
        shard = (state.process_index, state.num_processes) if state else parse_shard(shard_flag) if shard_flag else None
    except ValueError as e:
        raise UserError(str(e)) from None
    if shard and interactive:
        raise UserError("--interactive runs in one process, without --shard")
    return shard


def refuse_finished_merge(state, results_dir, file, model, overwrite):
    """Under a launch: the merged run of all ranks is finished already (pass --overwrite to redo it)."""
    merged = read_manifest(run_paths(results_dir, file, model)["manifest"])
    if state and not overwrite and merged and merged.get("status") == "finished":
        raise UserError(f"{run_paths(results_dir, file, model)['manifest']} is a finished run; "
                        "pass --overwrite to run it again")


def kept_shard(state, results_dir, file, model, overwrite, kind=None):
    """Under a launch: whether this rank's shard (results_dir and model: the shard's) is a finished run of this
    kind (None: generation, "corpus"), kept as it is: the same command resumes the ranks that had not
    finished and rank 0 merges (--overwrite redoes every shard)."""
    if not state or overwrite:
        return False
    path = run_paths(results_dir, file, model)["manifest"]
    manifest = read_manifest(path) or {}
    if manifest.get("kind") != kind or manifest.get("status") != "finished":
        return False
    print(f"note: {path}: this shard is finished, kept as it is", file=sys.stderr)
    return True


def refuse_finished(results_dir, file, model, overwrite, kind=None):
    """Before the model is loaded: the run of FILE and MODEL in results_dir (a shard's: its own) is a finished
    run of this kind (None: generation, "corpus") and there is no --overwrite."""
    paths = run_paths(results_dir, file, model)
    path, manifest = paths["manifest"], read_manifest(paths["manifest"])
    if overwrite or not manifest or manifest.get("kind") != kind or manifest.get("status") != "finished":
        return
    paths["progress"].unlink(missing_ok=True)  # left if killed between finishing and cleaning up
    again = " (an --overwrite run of it was interrupted: give --overwrite again to resume that)" \
        if staging_dir(results_dir, file, model).exists() else ""
    what = "a finished corpus run" if kind == "corpus" else "is a finished run"
    raise UserError(f"{path}: {what}; pass --overwrite to run it again{again}")


def check_split(results_dir, file, model, shard, overwrite, state, done_key="prompts_done"):
    """Before the model is loaded: a launch of n processes (or --shard i/n) must fit what is on disk, so that
    the merge at the end cannot fail: no shards of another split of this run (for --shard jobs: no
    unfinished ones), and no unfinished run of one process (which NPROC would silently leave behind)."""
    how = "NPROC" if state else "--shard i/"
    target = run_paths(results_dir, file, model)["manifest"]
    single = read_manifest(target)
    if single and single.get("status") == "running" and "shards" not in single and not overwrite:
        raise UserError(f"{target} is an unfinished run of one process ({single.get(done_key, 0)} done): resume it "
                        "as it was started (without NPROC or --shard), or pass --overwrite")
    for path in find_shard_manifests(results_dir, file, model):
        m = read_manifest(path) or {}
        index, count = (m.get("shard") or [None, None])[:2]
        unfinished = m.get("status") != "finished"
        # separate jobs may name the shards to merge (merge_results.py --manifests); a launch merges all
        if count is not None and count != shard[1] and (state or unfinished):
            raise UserError(f"{path} is a{'n unfinished' if unfinished else ' finished'} shard {index}/{count} of a "
                            f"split into {count}, which the merge of a split into {shard[1]} would refuse: "
                            f"{'resume with ' + how + str(count) if unfinished else 'remove it'}, or remove "
                            f"{shard_dir(results_dir)}/{file}-*-{model}-shard*of{count}.* first")


def merge_ranks(state, results_dir, file, model, merge, count):
    """Launched with several processes: when all are done, rank 0 merges their shards (merge() under the
    run's lock)."""
    state.wait_for_everyone()
    if state.is_main_process:
        with RunLock(results_dir, file, model):
            merged = merge()
        print(f"merged {count} shards into {merged['index'].parent}/{file}-*-{model}.*", file=sys.stderr)
    state.wait_for_everyone()


def halving_batches(batches, batch_size, step, on_halve):
    """(batch, step(batch)) for each batch of `batches` (lists of items, any iterable, read as needed); after
    an out-of-memory error the batch is split and every later batch is at most half as large, and
    on_halve(old size, new size, error) is told. Out of memory with one item is a UserError."""
    size, queue, source = batch_size, deque(), iter(batches)
    while True:
        if not queue:
            nxt = next(source, None)
            if nxt is None:
                return
            queue.append(nxt)
        batch = queue.popleft()
        if len(batch) > size:  # smaller batches since an out-of-memory error
            queue.extendleft(reversed([batch[i:i + size] for i in range(0, len(batch), size)]))
            continue
        try:
            out = step(batch)
        except Exception as e:  # noqa: BLE001 -- only out-of-memory errors are handled
            if not is_oom(e):
                raise
            if len(batch) == 1:
                raise UserError(f"out of memory with a batch of one ({one_line(e)}): what was committed stays; give "
                                "the model more memory (--max-memory, more devices) or a smaller --dtype, then start "
                                "the same command again") from None
            size = len(batch) // 2
            on_halve(len(batch), size, e)
            free_memory()
            queue.appendleft(batch)
            continue
        yield batch, out


def free_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class injected_oom:
    """Testing OOM recovery on any machine: with PIM_FAULT_OOM_AT_BATCH=<n> in the environment, a call of the
    model on n sequences raises torch.OutOfMemoryError at its `at_call`-th forward (after real work)."""

    def __init__(self, model, batch, at_call=1):
        self.handle = None
        if os.environ.get("PIM_FAULT_OOM_AT_BATCH", "") == str(batch):
            import torch

            calls = []

            def hook(module, args, kwargs):
                calls.append(1)
                if len(calls) == at_call:
                    raise torch.OutOfMemoryError(f"CUDA out of memory (fault injected by PIM_FAULT_OOM_AT_BATCH="
                                                 f"{batch})")
            self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
