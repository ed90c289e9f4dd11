"""Merging shards (pim/runs/shards.py) without a model: shards written by RunWriter from made-up batches,
merged, against the files of one writer fed the same prompts (results and ratio rows in input order,
index counts summed). Fast; tests/test_scale.py does the same end to end with inference."""
import json

import numpy as np
import pytest

from pim.activation_files import index_line, ratio_lines, read_index
from pim.runs.merge import merge_shards
from pim.runs.shards import shard_dir, shard_model_name, shard_range
from pim.runs.writer import RunRefused, RunWriter

PROMPTS, LAYERS, WIDTH = 11, 2, 5


def made_up(prompt):
    """(result line, int (eq, le) counts of its steps [steps, layers, 2], index counts [layers, width])."""
    steps = 1 + prompt % 3
    zero = [[[(prompt + s + layer) % 3, (prompt + s + layer) % 3 + 1 + layer] for layer in range(LAYERS)]
            for s in range(steps)]
    counts = [[(prompt * 7 + layer * 3 + n) % 5 for n in range(WIDTH)] for layer in range(LAYERS)]
    return f"continuation of prompt {prompt}", zero, counts


def write(results, model, prompts, batch, info):
    writer = RunWriter(results, "f", model, {"model_source": "x", "batch_size": batch, **info.get("settings", {})})
    writer.open({k: v for k, v in info.items() if k != "settings"})
    for first in range(prompts[0], prompts[-1] + 1, batch):
        items = [made_up(p) for p in range(first, min(first + batch, prompts[-1] + 1))]
        writer.commit([line for line, _, _ in items], "".join(ratio_lines(z, WIDTH) for _, z, _ in items),
                      np.sum([c for _, _, c in items], axis=0), [len(z) for _, z, _ in items])
    writer.finish()
    return writer.paths


def write_shards(results, count, batch=2):
    for i in range(count):
        first, last = shard_range(PROMPTS, i, count)
        write(shard_dir(results), shard_model_name("m", i, count), list(range(first, last)), batch,
              {"file": "f", "model": "m", "shard": [i, count], "prompt_range": [first, last],
               "prompts_total": PROMPTS, "settings": {"shard": [i, count]}})


@pytest.mark.parametrize("count", [2, 3, 4])
def test_merged_shards_are_the_files_of_one_writer(tmp_path, count):
    single = write(tmp_path / "single", "m", list(range(PROMPTS)), 2, {"file": "f", "model": "m"})
    results = tmp_path / "results"
    write_shards(results, count)
    merged = merge_shards(results, "f", "m")
    for kind in ("result", "ratio", "index"):
        assert merged[kind].read_bytes() == single[kind].read_bytes(), kind
    # and by hand: lines in input order, the counts summed over all prompts
    items = [made_up(p) for p in range(PROMPTS)]
    assert merged["result"].read_text().splitlines() == [line for line, _, _ in items]
    assert merged["ratio"].read_text() == "".join(ratio_lines(z, WIDTH) for _, z, _ in items)
    total = [[sum(c[layer][n] for _, _, c in items) for n in range(WIDTH)] for layer in range(LAYERS)]
    assert read_index(merged["index"]).tolist() == total and merged["index"].read_text() == index_line(np.array(total))
    manifest = json.loads(merged["manifest"].read_text())
    assert manifest["status"] == "finished" and manifest["prompts_done"] == PROMPTS
    assert manifest["counted_steps"] == sum(len(z) for _, z, _ in items)
    assert manifest["prompt_steps"] == [1 + p % 3 for p in range(PROMPTS)]  # the steps of made_up
    assert [s["shard"] for s in manifest["shards"]] == [f"{i}/{count}" for i in range(count)]


def test_a_missing_shard_is_refused(tmp_path):
    results = tmp_path / "results"
    write_shards(results, 3)
    for path in shard_dir(results).glob("f-*-m-shard1of3.*"):
        path.unlink()
    with pytest.raises(RunRefused, match="shards 1/3 of f with m are missing"):
        merge_shards(results, "f", "m")
