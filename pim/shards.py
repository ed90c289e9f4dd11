"""Runs split into contiguous shards of the prompts, one process or job each, merged into one run.

Shard i of n covers prompts [N*i//n, N*(i+1)//n) and writes its own run files under
<results>/shards/, named <FILE>-<kind>-<MODEL>-shard<i>of<n>.<ext>. Merging concatenates the result
lines and ratio rows in shard order and sums the index counts, which gives exactly the files of one
process (the per-prompt results do not depend on the batch a prompt is in).
"""
import json
import re
import shutil
from pathlib import Path

import numpy as np

from pim.activation_files import index_line, read_index, write_atomic
from pim.runs import run_paths, write_manifest
from pim.run_writer import RunRefused, now


def parse_shard(text):
    """'i/n' -> (i, n), with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not m or not int(m[1]) < int(m[2]):
        raise ValueError(f"--shard must be i/n with 0 <= i < n (for example 0/4), got {text!r}")
    return int(m[1]), int(m[2])


def shard_range(total, index, count):
    return total * index // count, total * (index + 1) // count


def shard_dir(results_dir):
    return Path(results_dir) / "shards"


def shard_model_name(model, index, count):
    return f"{model}-shard{index}of{count}"


def find_shard_manifests(results_dir, file, model):
    pattern = re.compile(re.escape(f"{file}-manifest-{model}-shard") + r"(\d+)of(\d+)\.json$")
    return sorted(p for p in shard_dir(results_dir).glob(f"{file}-manifest-{model}-shard*of*.json")
                  if pattern.match(p.name))


def merge_shards(results_dir, file, model, manifests=None, overwrite=False, command=None):
    """Merge the finished shards of one run into <results>/<FILE>-*-<MODEL>.*; returns the merged paths.

    `manifests` are shard manifest paths (default: every shard of FILE and MODEL under <results>/shards/).
    Refuses shards that do not fit together, naming what differs (check_shards), then writes (write_merged).
    """
    shards = check_shards(results_dir, file, model, manifests)
    check_target(results_dir, file, model, overwrite)
    return write_merged(results_dir, file, model, shards, command)


def read_shard_manifests(results_dir, file, model, manifests=None):
    """[(path, manifest)] of the finished shards named (default: all of FILE and MODEL); refuses others."""
    manifests = [Path(p) for p in (manifests or find_shard_manifests(results_dir, file, model))]
    if not manifests:
        raise RunRefused(f"no shards of {file} with {model} in {shard_dir(results_dir)}")
    shards = []
    for path in manifests:
        m = json.loads(path.read_text())
        if "shard" not in m:
            raise RunRefused(f"{path} is not the manifest of a shard")
        if m.get("status") != "finished":
            raise RunRefused(f"{path}: shard {m['shard']} is not finished; start it again with the same "
                             "command to resume it")
        shards.append((path, m))
    return shards


def check_shards(results_dir, file, model, manifests=None):
    """[(path, manifest)] of the shards in order, when they fit together: one file, model and settings,
    one split, every shard once, each covering its range of the prompts. Refuses them otherwise."""
    shards = read_shard_manifests(results_dir, file, model, manifests)
    for key in ("file", "model"):
        values = {m[key] for _, m in shards}
        if len(values) > 1:
            raise RunRefused(f"the shards are of different {key}s: {', '.join(sorted(values))}")
    first_path, first = shards[0]
    for path, m in shards[1:]:
        differ = [k for k in set(first["settings"]) | set(m["settings"])
                  if k != "shard" and first["settings"].get(k) != m["settings"].get(k)]
        if differ:
            raise RunRefused("shards made with other settings: " + "; ".join(
                f"{k}: {first['settings'].get(k)!r} in {first_path.name}, {m['settings'].get(k)!r} in {path.name}"
                for k in sorted(differ)))
    counts = {m["shard"][1] for _, m in shards}
    if len(counts) > 1:
        raise RunRefused(f"shards of different splits ({', '.join(f'of {n}' for n in sorted(counts))}) overlap: "
                         "remove the shards of the old split, or name the ones to merge (--manifests)")
    return ordered_shards(shards, counts.pop(), file, model, results_dir)


def ordered_shards(shards, count, file, model, results_dir):
    """The shards in order 0..count-1; refuses a shard given twice, a missing one, or one of other prompts."""
    by_index = {}
    for path, m in shards:
        index = m["shard"][0]
        if index in by_index:
            raise RunRefused(f"shard {index}/{count} given twice: {by_index[index][0]} and {path}")
        by_index[index] = (path, m)
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise RunRefused(f"shards {', '.join(f'{i}/{count}' for i in missing)} of {file} with {model} are missing "
                         f"(expected in {shard_dir(results_dir)})")
    ordered = [by_index[i] for i in range(count)]
    total = ordered[0][1]["prompts_total"]
    for i, (path, m) in enumerate(ordered):
        if tuple(m["prompt_range"]) != shard_range(total, i, count) or m["prompts_done"] != len(range(*m["prompt_range"])):
            raise RunRefused(f"{path}: covers prompts {m['prompt_range']}, expected {list(shard_range(total, i, count))}")
    return ordered


def check_target(results_dir, file, model, overwrite):
    """Refuses to merge over a finished run or over files that are no run of this project, unless overwrite."""
    target = run_paths(results_dir, file, model)
    if target["manifest"].is_file() and not overwrite:
        status = json.loads(target["manifest"].read_text()).get("status")
        if status != "merging":
            raise RunRefused(f"{target['manifest']} exists ({status} run); pass --overwrite to replace it")
    elif not target["manifest"].is_file() and target["result"].exists() and not overwrite:
        raise RunRefused(f"{target['result']} exists; move it away or pass --overwrite")


def merged_manifest(ordered, command):
    """The manifest of the merged run, from the shards' manifests in order (status "merging")."""
    first, count = ordered[0][1], len(ordered)
    return {"status": "merging", "settings": {k: v for k, v in first["settings"].items() if k != "shard"},
            **{k: first[k] for k in ("model", "file", "found_as", "torch", "layers", "generation_config")
               if k in first},
            "prompts": first["prompts_total"], "prompts_done": sum(m["prompts_done"] for _, m in ordered),
            "counted_steps": sum(m["counted_steps"] for _, m in ordered),
            "started": min(m["started"] for _, m in ordered),
            "shards": [{"shard": f"{m['shard'][0]}/{count}", "prompt_range": m["prompt_range"],
                        "manifest": str(path), "devices": m.get("devices"), "started": m["started"],
                        "finished": m["finished"], "resumed": m.get("resumed", [])} for path, m in ordered],
            "command": command}


def write_merged(results_dir, file, model, ordered, command=None):
    """Write the merged run of checked shards (check_shards): the manifest first (merging), then the
    result and ratio files concatenated, the index summed, and the manifest again (finished)."""
    target, count = run_paths(results_dir, file, model), len(ordered)
    manifest = merged_manifest(ordered, command)
    write_manifest(target["manifest"], manifest)
    shard_files = [run_paths(path.parent, file, shard_model_name(model, m["shard"][0], count)) for path, m in ordered]
    for kind in ("result", "ratio"):
        tmp = target[kind].with_name(f".{target[kind].name}.tmp")
        with open(tmp, "wb") as out:
            for paths in shard_files:
                with open(paths[kind], "rb") as part:
                    shutil.copyfileobj(part, out)
        tmp.replace(target[kind])
    total_counts = None
    for paths in shard_files:
        counts = read_index(paths["index"])
        total_counts = counts if total_counts is None else total_counts + counts
    write_atomic(target["index"], index_line(np.asarray(total_counts)))
    manifest.update(status="finished", finished=now())
    write_manifest(target["manifest"], manifest)
    return target
