"""Runs split into contiguous shards of the prompts, one process or job each, merged into one run.

Shard i of n covers prompts [N*i//n, N*(i+1)//n) and writes its own run files under
<results>/shards/, named <FILE>-<kind>-<MODEL>-shard<i>of<n>.<ext>. Merging concatenates the result
lines and ratio rows in shard order and sums the index counts, which gives exactly the files of one
process (the per-prompt results do not depend on the batch a prompt is in).
"""
import re
from pathlib import Path

from pim.runs.checks import load_manifest
from pim.runs.names import run_paths
from pim.runs.writer import RunRefused

# what a shard's manifest must hold to be merged, by the manifest's "kind" (None: generation runs,
# pim/generation_runs.run_manifest; "corpus": pim/corpus_counting.run_facts)
SHARD_KEYS = {None: ("status", "settings", "file", "model", "shard", "prompt_range", "prompts_total", "prompts_done",
                     "counted_steps", "started", "finished"),
              "corpus": ("status", "settings", "file", "model", "shard", "line_range", "lines_total", "tokens",
                         "lines", "started", "finished")}
RANGE_KEYS = {None: ("prompt_range", "prompts_total", "prompts"), "corpus": ("line_range", "lines_total", "lines")}


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


def read_shard_manifests(results_dir, file, model, manifests=None):
    """[(path, manifest)] of the finished shards named (default: all of FILE and MODEL); refuses others."""
    manifests = [Path(p) for p in (manifests or find_shard_manifests(results_dir, file, model))]
    if not manifests:
        raise RunRefused(f"no shards of {file} with {model} in {shard_dir(results_dir)}")
    shards = []
    for path in manifests:
        m = load_manifest(path)
        if m is None:
            raise RunRefused(f"{path}: no such shard manifest")
        if "shard" not in m:
            raise RunRefused(f"{path} is not the manifest of a shard")
        missing = [k for k in SHARD_KEYS.get(m.get("kind"), SHARD_KEYS[None]) if k not in m]
        if missing:
            raise RunRefused(f"{path}: a damaged shard manifest (no {', '.join(missing)})")
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
    kinds = {m.get("kind") or "generation" for _, m in shards}
    if len(kinds) > 1:
        raise RunRefused(f"the shards are of different kinds of runs: {', '.join(sorted(kinds))}")
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
    range_key, total_key, unit = RANGE_KEYS[ordered[0][1].get("kind")]
    total = ordered[0][1][total_key]
    end = 0  # the shards must cover [0, total) in order, each its range whole
    for i, (path, m) in enumerate(ordered):
        complete = m["prompts_done"] == len(range(*m["prompt_range"])) if range_key == "prompt_range" else True
        first, last = m[range_key]
        if m[total_key] != total or first != end or last < first or (i == count - 1 and last != total) or not complete:
            raise RunRefused(f"{path}: covers {unit} {m[range_key]} of {m[total_key]}, but the shards before it end at "
                             f"{end} of {total}")
        end = last
    return ordered


def shard_files(file, model, ordered):
    """The paths of each shard's files, beside its manifest."""
    count = len(ordered)
    return [run_paths(path.parent, file, shard_model_name(model, m["shard"][0], count)) for path, m in ordered]
