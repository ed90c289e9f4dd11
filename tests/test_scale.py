"""Scale out: several processes (accelerate launch, gloo on the CPU), separate shard jobs, merging, device maps.

Every split is compared byte for byte with one process, so the batches must be the same in both: left
padding and the batch's shape change the last bits of activations (BLOOM included: up to ~1e-3 relative
at the tiny models' steep rows, on values down to ~1e-7), and a value at the == 0 / > 0 boundary could
then flip. With batches that differ (batch 3 from prompt 0 in one process, batch 3 from each shard's
first prompt in the shards) the comparison held only while no such value happened to lie near a boundary
(it failed once). Here N_PROMPTS and BATCH make every shard boundary of 2 and 3 shards a batch boundary
of the single run, so each prompt is generated in the same batch, with the same padding, in both; a run
with the same batches gives the same bits from process to process (checked under load).
"""
import json
import subprocess
import sys

import pytest
from conftest import INPUT, MAX_NEW_TOKENS, ROOT, command, files, infer

from pim.activation_files import escape_newlines
from pim.runs.shards import shard_range

MERGE = [sys.executable, str(ROOT / "scripts" / "merge_results.py"), "--file", "prompts", "--model", "tiny-bloom-eos"]
N_PROMPTS = 12  # 2 shards: [0, 6), [6, 12); 3 shards: [0, 4), [4, 8), [8, 12)
BATCH = "2"  # divides every shard boundary: the shards' batches are the single run's batches (input order)
SHARD_COUNTS = (2, 3)


def test_every_shard_boundary_is_a_batch_boundary():
    for count in SHARD_COUNTS:
        for index in range(count):
            first, last = shard_range(N_PROMPTS, index, count)
            assert first % int(BATCH) == 0 and last - first >= int(BATCH), (count, index, first, last)


@pytest.fixture
def data_dir(tmp_path):
    """A data folder with prompts.txt holding the first N_PROMPTS of INPUT (overrides conftest's)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT[:N_PROMPTS]),
                                        encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def single(eos_model_dir, tmp_path_factory):
    """The files of one process, batch BATCH: what every split must reproduce."""
    folder = tmp_path_factory.mktemp("single")
    data = folder / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT[:N_PROMPTS]),
                                      encoding="utf-8")
    res = infer(eos_model_dir, data, folder / "results", "--batch-size", BATCH, "--no-sort")
    assert res.returncode == 0, res.stderr
    result = files(folder / "results")
    assert len(result["ratio"].splitlines()) < N_PROMPTS * MAX_NEW_TOKENS, "EOS ends some continuations early"
    return result


def test_two_processes_merge_to_the_files_of_one(eos_model_dir, data_dir, tmp_path, single):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    res = subprocess.run(launch + command(eos_model_dir, data_dir, tmp_path / "results", "--batch-size", BATCH,
                                          "--no-sort")[1:],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "merged 2 shards" in res.stderr
    assert files(tmp_path / "results") == single
    manifest = json.loads((tmp_path / "results" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["status"] == "finished" and [s["shard"] for s in manifest["shards"]] == ["0/2", "1/2"]
    assert [s["prompt_range"] for s in manifest["shards"]] == [[0, 6], [6, 12]]


def run_shards(model_dir, data_dir, results, count, *extra, only=None):
    for i in range(count) if only is None else only:
        res = infer(model_dir, data_dir, results, "--batch-size", BATCH, "--no-sort", "--shard", f"{i}/{count}",
                    *extra)
        assert res.returncode == 0, res.stderr


def merge(results, *extra):
    return subprocess.run(MERGE + ["--results-dir", str(results), *extra], capture_output=True, text=True)


def test_separate_shard_jobs_merge_to_the_files_of_one(eos_model_dir, data_dir, tmp_path, single):
    results = tmp_path / "results"
    run_shards(eos_model_dir, data_dir, results, 3)
    assert not (results / "prompts-result-tiny-bloom-eos.txt").exists()
    res = merge(results)
    assert res.returncode == 0, res.stderr
    assert files(results) == single
    res = merge(results)
    assert res.returncode != 0 and "pass --overwrite" in res.stderr


def test_merge_refuses_shards_that_do_not_fit(eos_model_dir, data_dir, tmp_path):
    results = tmp_path / "results"
    run_shards(eos_model_dir, data_dir, results, 3, only=[0, 2])
    res = merge(results)
    assert res.returncode != 0 and "shards 1/3 of prompts with tiny-bloom-eos are missing" in res.stderr

    run_shards(eos_model_dir, data_dir, results, 3, "--max-new-tokens", "5", only=[1])
    res = merge(results)
    assert res.returncode != 0 and "max_new_tokens: 8 in" in res.stderr and ", 5 in" in res.stderr

    shards = results / "shards"
    run_shards(eos_model_dir, data_dir, results, 3, "--overwrite", only=[1])
    manifest = shards / "prompts-manifest-tiny-bloom-eos-shard1of3.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"status": "finished"', '"status": "running"'))
    res = merge(results)
    assert res.returncode != 0 and "shard [1, 3] is not finished" in res.stderr
    manifest.write_text(text)

    run_shards(eos_model_dir, data_dir, results, 2, only=[0])
    overlapping = [str(p) for p in sorted(shards.glob("prompts-manifest-*.json"))]
    res = merge(results, "--manifests", *overlapping)
    assert res.returncode != 0 and "overlap" in res.stderr

    (data_dir / "other.txt").write_text((data_dir / "prompts.txt").read_text())
    shard0 = command(eos_model_dir, data_dir, results, "--batch-size", BATCH, "--no-sort", "--shard", "0/3")
    res = subprocess.run(shard0[:5] + ["other"] + shard0[6:], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    others = [str(shards / f"prompts-manifest-tiny-bloom-eos-shard{i}of3.json") for i in (1, 2)]
    res = merge(results, "--manifests", str(shards / "other-manifest-tiny-bloom-eos-shard0of3.json"), *others)
    assert res.returncode != 0 and "different files: other, prompts" in res.stderr
    assert not (results / "prompts-result-tiny-bloom-eos.txt").exists()
    res = merge(results)
    assert res.returncode != 0 and "remove the shards of the old split" in res.stderr
    for old in shards.glob("prompts-*-shard0of2.*"):
        old.unlink()
    res = merge(results)  # the shards of one split and one file fit
    assert res.returncode == 0, res.stderr


def test_an_explicit_device_map_with_disk_offload_records_the_same(eos_model_dir, data_dir, tmp_path, single):
    device_map = {"transformer.word_embeddings": "cpu", "transformer.word_embeddings_layernorm": "cpu",
                  "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.h.2": "disk",
                  "transformer.ln_f": "cpu", "lm_head": "cpu"}
    res = infer(eos_model_dir, data_dir, tmp_path / "results", "--batch-size", BATCH, "--no-sort",
                "--device-map", json.dumps(device_map), "--offload-folder", str(tmp_path / "offload"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "results" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert set(manifest["devices"].values()) == {"cpu", "disk"}
    assert files(tmp_path / "results") == single
