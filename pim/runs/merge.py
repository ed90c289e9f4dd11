"""Merging the finished shards of a run into one run (pim/runs/shards.py checks that they fit together).

A generation run's result and ratio files are concatenated in shard order and its index counts summed,
which gives exactly the files of one process (the per-prompt results do not depend on the batch a prompt
is in). A corpus run's counts and counted tokens are summed (pim/runs/corpus_files.py).
"""
import os
import shutil

import numpy as np

from pim.activation_files import FormatError, index_line, read_index, remove_stale_temps, temp_path, write_atomic
from pim.runs.checks import RunMismatch, facts_of, load_manifest, verify
from pim.runs.corpus_files import FILES, KIND
from pim.runs.names import Run, read_manifest, run_paths, write_manifest
from pim.runs.shards import check_shards, shard_files, shard_model_name
from pim.runs.writer import RunRefused, now


def merge_shards(results_dir, file, model, manifests=None, overwrite=False, command=None):
    """Merge the finished shards of one run into <results>/<FILE>-*-<MODEL>.*; returns the merged paths.

    `manifests` are shard manifest paths (default: every shard of FILE and MODEL under <results>/shards/).
    Refuses shards that do not fit together, naming what differs (check_shards), or whose files do not
    match their manifests (check_shard_files), then writes (write_merged). Every refusal is a RunRefused.
    """
    try:
        shards = check_shards(results_dir, file, model, manifests)
        if shards[0][1].get("kind") == "corpus":  # counts and tokens summed (pim/runs/corpus_files.py)
            return merge_corpus_shards(results_dir, file, model, manifests, overwrite, command)
        check_target(results_dir, file, model, overwrite)
        check_shard_files(file, model, shards)
        return write_merged(results_dir, file, model, shards, command)
    except FormatError as e:  # a damaged manifest, files that disagree with theirs
        raise RunRefused(str(e)) from None
    except OSError as e:  # an unreadable shard file, a full disk, ...
        raise RunRefused(": ".join(str(x) for x in (e.filename, e.strerror or e) if x)) from None


def check_shard_files(file, model, ordered):
    """Refuses shards whose files are missing or do not match their manifests (pim/runs/checks.py: result
    lines, ratio rows and layers, index layers and width), or whose layers or widths differ."""
    shapes = []
    for (path, m), paths in zip(ordered, shard_files(file, model, ordered)):
        for kind in ("result", "ratio", "index"):
            if not paths[kind].is_file():
                raise RunRefused(f"{paths[kind]}: missing (the {kind} file of shard {m['shard'][0]}/{len(ordered)}, "
                                 f"whose manifest is {path})")
        run = Run(file, shard_model_name(model, m["shard"][0], len(ordered)), paths["index"], paths["ratio"],
                  paths["result"])
        facts = facts_of(run)
        verify(facts, m, paths, str(path))
        shapes.append((facts.index_layers, facts.index_width))
    if len(set(shapes)) > 1:
        raise RunMismatch("the shards' index files differ in shape (layers x neurons: " + ", ".join(
            f"{paths['index'].name}: {a} x {b}" for paths, (a, b) in zip(shard_files(file, model, ordered), shapes))
            + ")")


def check_target(results_dir, file, model, overwrite):
    """Refuses to merge over a finished run or over files that are no run of this project, unless overwrite."""
    target = run_paths(results_dir, file, model)
    if target["manifest"].is_file() and not overwrite:
        status = load_manifest(target["manifest"]).get("status")
        if status != "merging":
            raise RunRefused(f"{target['manifest']} exists ({status} run); pass --overwrite to replace it")
    elif not target["manifest"].is_file() and target["result"].exists() and not overwrite:
        raise RunRefused(f"{target['result']} exists; move it away or pass --overwrite")


def merged_manifest(ordered, command):
    """The manifest of the merged run, from the shards' manifests in order (status "merging")."""
    first, count = ordered[0][1], len(ordered)
    return {"status": "merging", "settings": {k: v for k, v in first["settings"].items() if k != "shard"},
            **{k: first[k] for k in ("model", "file", "found_as", "torch", "layers", "width", "generation_config")
               if k in first},
            "prompts": first["prompts_total"], "prompts_done": sum(m["prompts_done"] for _, m in ordered),
            "counted_steps": sum(m["counted_steps"] for _, m in ordered),
            **({"prompt_steps": [n for _, m in ordered for n in m["prompt_steps"]]}
               if all("prompt_steps" in m for _, m in ordered) else {}),
            "started": min(m["started"] for _, m in ordered),
            "shards": [{"shard": f"{m['shard'][0]}/{count}", "prompt_range": m["prompt_range"],
                        "manifest": str(path), "devices": m.get("devices"), "started": m["started"],
                        "finished": m["finished"], "resumed": m.get("resumed", [])} for path, m in ordered],
            "command": command}


def write_merged(results_dir, file, model, ordered, command=None):
    """Write the merged run of checked shards (check_shards, check_shard_files): the result and ratio files
    concatenated and the index summed into hidden temporaries (temp_path), then the manifest (merging), the three
    renamed into place, and the manifest again (finished). A failure before the renames leaves nothing
    behind; a merging manifest is only seen when the process dies during the renames."""
    target = run_paths(results_dir, file, model)
    remove_stale_temps(target.values())  # a killed merge's
    temps = {kind: temp_path(target[kind]) for kind in ("result", "ratio", "index")}
    parts = shard_files(file, model, ordered)
    try:
        for kind in ("result", "ratio"):
            with open(temps[kind], "wb") as out:
                for paths in parts:
                    with open(paths[kind], "rb") as part:
                        shutil.copyfileobj(part, out, 1 << 24)
                out.flush()
                os.fsync(out.fileno())
        total_counts = None
        for paths in parts:
            counts = read_index(paths["index"])
            total_counts = counts if total_counts is None else total_counts + counts
        with open(temps["index"], "w", encoding="utf-8") as out:
            out.write(index_line(np.asarray(total_counts)))
            out.flush()
            os.fsync(out.fileno())
        manifest = merged_manifest(ordered, command)
        write_manifest(target["manifest"], manifest)
        for kind, tmp in temps.items():
            os.replace(tmp, target[kind])
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    manifest.update(status="finished", finished=now())
    write_manifest(target["manifest"], manifest)
    return target


def merge_corpus_shards(results_dir, file, model, manifests=None, overwrite=False, command=None):
    """Merge the finished shards of one corpus run (pim/shards.check_shards: one file, model and settings,
    one split, each shard once, covering [0, lines_total) in order) into <results>/<FILE>-index-<MODEL>.jsonl
    and its manifest: the counts and counted tokens summed, the index byte for byte that of one process.
    Returns the merged paths; every refusal is a RunRefused."""
    ordered = check_shards(results_dir, file, model, manifests)
    if ordered[0][1].get("kind") != KIND:
        raise RunRefused(f"the shards of {file} with {model} are not corpus runs")
    target = {k: v for k, v in run_paths(results_dir, file, model).items() if k in FILES}
    remove_stale_temps(target.values())  # a killed merge's
    old = read_manifest(target["manifest"])
    if old is not None and old.get("kind") != KIND:
        raise RunRefused(f"{target['manifest']} is a generation run: merged corpus shards never replace it")
    if (old is not None or target["index"].exists()) and not overwrite:
        raise RunRefused(f"{target['index']} exists ({(old or {}).get('status', 'no manifest')}); pass --overwrite "
                         "to replace it")
    total = None
    for path, m in ordered:
        index = path.with_name(run_paths(path.parent, file, shard_model_name(model, *m["shard"]))["index"].name)
        if not index.is_file():
            raise RunRefused(f"{index}: missing (the index of shard {m['shard'][0]}/{m['shard'][1]}, whose manifest "
                             f"is {path})")
        counts = read_index(index)
        fits = counts.shape == (m.get("layers"), m.get("width"))
        if not fits or counts.max(initial=0) > m["tokens"]:
            raise RunRefused(f"{index}: counts of shape {counts.shape} up to {counts.max(initial=0)} do not fit its "
                             f"manifest ({m.get('layers')} layers x {m.get('width')} neurons, {m['tokens']} tokens)")
        total = counts if total is None else total + counts
    manifest = merged_corpus_manifest(ordered, command)
    target["manifest"].unlink(missing_ok=True)  # no moment with the new index and the old manifest
    write_atomic(target["index"], index_line(total))
    write_manifest(target["manifest"], manifest)
    return target


def merged_corpus_manifest(ordered, command):
    first, count = ordered[0][1], len(ordered)
    keep = ("kind", "positions", "model", "model_argument", "file", "dtype", "max_length", "deactivated", "layers",
            "width", "torch", "input_lines")
    tokens = sum(m["tokens"] for _, m in ordered)
    manifest = {"status": "finished", "settings": {k: v for k, v in first["settings"].items() if k != "shard"},
                **{k: first[k] for k in keep if k in first},
                "lines": sum(m["lines"] for _, m in ordered), "lines_done": sum(m["lines"] for _, m in ordered),
                "tokens": tokens, "cut_lines": sum(m.get("cut_lines", 0) for _, m in ordered),
                "empty_lines": sum(m.get("empty_lines", 0) for _, m in ordered),
                "line_range": [0, first["lines_total"]],
                "started": min(m["started"] for _, m in ordered), "finished": now(),
                "shards": [{"shard": f"{m['shard'][0]}/{count}", "line_range": m["line_range"], "manifest": str(path),
                            "devices": m.get("devices"), "tokens": m["tokens"], "started": m["started"],
                            "finished": m["finished"], "resumed": m.get("resumed", [])} for path, m in ordered],
                "command": command}
    budget = first["settings"].get("max_tokens")
    if budget is not None:
        reached = tokens >= budget
        manifest["stopped"] = {"max_tokens": budget, "budget_reached": reached,
                               "last_line": first["lines_total"] if reached else None}
    return manifest
