"""The identity of a local model's weights, for a run's resume settings (docs/runs.md).

A config hash says nothing of the weights: a model rebuilt with the same config has the same config and
other weights. `weights_settings` hashes the weight files themselves: the top-level files of the folder
named `*.safetensors`, `*.bin`, `*.pt`, `*.gguf` and `*.index.json`, as the sha256 of the UTF-8 JSON of
the list `[[name, size in bytes, sha256 of the file], ...]` sorted by name (compact separators).

Hashing a 100 GB model takes minutes, so each file's sha256 is kept in `<folder>/.pim-weights-sha256.json`,
`{name: {"size", "mtime_ns", "sha256"}}`, and reused only while the file's size and mtime_ns are unchanged.
A file modified in the 2 s before it is hashed is not cached (its mtime could survive a rewrite). The cache
is written atomically; a folder that cannot be written is hashed every time.

`source_sha256` does the same for a GGUF file outside the folder converted from it, keyed also on the
file's inode and ctime (docs/gguf.md). `weights_problem` says in one line what the loading info of a
from_pretrained says is wrong; `load_report_held` keeps transformers' LOAD REPORT table from printing above it.
"""
import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from pim.activation_files import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".index.json")
CACHE = ".pim-weights-sha256.json"
PROGRESS_BYTES = 1 << 30  # a progress bar when more than this is hashed
SETTLED_NS = 2 * 10**9  # a file modified less than this before it was hashed is not cached: a rewrite
#                         within the file system's timestamp granularity (up to 2 s) can keep the old mtime


def weights_settings(source):
    """{"weights_sha256": hex} of a local model folder; {} for a hub id (its revision is in the settings)."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return {}
    hashes = file_hashes(folder, weight_files(folder))
    listing = [[name, size, digest] for name, (size, digest) in sorted(hashes.items())]
    text = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    return {"weights_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def weight_files(folder):
    """The weight files at the top of `folder` (hidden files left out), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith(".") and p.is_file())


def file_hashes(folder, files):
    """{name: (size, sha256)} of `files`, from the folder's cache where size and mtime_ns are unchanged."""
    cache, stats = read_cache(folder), {p.name: p.stat() for p in files}
    keep = {name: e for name, e in cache.items()
            if name in stats and [e["size"], e["mtime_ns"]] == [stats[name].st_size, stats[name].st_mtime_ns]}
    todo = [p for p in files if p.name not in keep]
    hashes = {name: (e["size"], e["sha256"]) for name, e in keep.items()}
    total = sum(stats[p.name].st_size for p in todo)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"sha256 of {Path(folder).name}",
              disable=total <= PROGRESS_BYTES) as bar:
        for path in todo:
            before, started = stats[path.name], time.time_ns()
            digest = sha256_file(path, progress=bar.update)
            after = path.stat()
            hashes[path.name] = (after.st_size, digest)
            unchanged = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
            if unchanged and after.st_mtime_ns < started - SETTLED_NS:
                keep[path.name] = {"size": after.st_size, "mtime_ns": after.st_mtime_ns, "sha256": digest}
    if keep != cache:
        write_cache(folder, keep)
    return hashes


def read_cache(folder):
    """The cache's entries that have the expected form; {} for a missing or damaged cache."""
    try:
        said = json.loads((Path(folder) / CACHE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(said, dict):
        return {}
    return {name: e for name, e in said.items() if isinstance(e, dict) and isinstance(e.get("size"), int)
            and isinstance(e.get("mtime_ns"), int) and isinstance(e.get("sha256"), str)}


def write_cache(folder, entries):
    """Write the cache atomically (a temporary file, then os.replace); nothing where the folder is read-only."""
    write_json_quietly(Path(folder) / CACHE, dict(sorted(entries.items())))


def write_json_quietly(path, data):
    """Write a cache file atomically; nothing (and no temporary left) where it cannot be written."""
    path = Path(path)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from the folder's other users
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def source_sha256(path, cache_file):
    """The sha256 of the file `path` (a GGUF source outside the model folder), kept in `cache_file` with the
    file's identity: resolved path, device, inode, size, mtime_ns and ctime_ns. The cached value is used only
    while all six are unchanged; ctime cannot be set by a user (a file copied, moved or rewritten into the
    place gets a new one), so another file in the same place is hashed again."""
    path = Path(path)
    before, started = path.stat(), time.time_ns()
    key = file_identity(path, before)
    try:
        said = json.loads(Path(cache_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        said = None
    if isinstance(said, dict) and said.get("identity") == key and isinstance(said.get("sha256"), str):
        return said["sha256"]
    with tqdm(total=before.st_size, unit="B", unit_scale=True, desc=f"sha256 of {path.name}",
              disable=before.st_size <= PROGRESS_BYTES) as bar:
        digest = sha256_file(path, progress=bar.update)
    if file_identity(path) == key and before.st_ctime_ns < started - SETTLED_NS:
        write_json_quietly(cache_file, {"identity": key, "sha256": digest})
    return digest


def file_identity(path, st=None):
    """[resolved path, device, inode, size, mtime_ns, ctime_ns] of a file: what changes when another file takes
    its place or it is written to."""
    st = st or Path(path).stat()
    return [str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def weights_problem(info, source, shown=4):
    """A one-line description of what from_pretrained's loading info says is wrong with the weights in `source`
    (tensors the model needs that the checkpoint lacks, tensors it has that the model does not know, tensors of
    another shape), or None. transformers fills missing tensors with random numbers and goes on; a recording
    of such a model would be silently wrong."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"), ("mismatched_keys", "of another shape")):
        names = sorted(k if isinstance(k, str) else k[0] for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            problems.append(f"{len(names)} {what} ({', '.join(names[:shown])}{more})")
    if not problems:
        return None
    return (f"the weights in {source} do not fit its config: tensors {'; '.join(problems)}; transformers would fill "
            "missing tensors with random numbers. Check that config.json and the weight files belong together "
            "(a changed num_hidden_layers? an incomplete download or conversion?)")


@contextmanager
def load_report_held():
    """Hold back transformers' LOAD REPORT (a table it logs as a warning when weights do not fit their config)
    during a from_pretrained whose loading info is checked by `weights_problem`. Yields a function: call it
    when the load is not refused, and the report is logged as transformers would have; a refusal is one line."""
    logger = logging.getLogger("transformers.modeling_utils")
    held = []

    def hold(record):
        if "LOAD REPORT" in str(record.msg):
            held.append(record)
            return False
        return True

    def release():
        logger.removeFilter(hold)
        for record in held:
            logger.handle(record)
        held.clear()

    logger.addFilter(hold)
    try:
        yield release
    finally:
        logger.removeFilter(hold)
