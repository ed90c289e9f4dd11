"""Scale out: several processes (accelerate launch, gloo on the CPU), separate shard jobs, merging, device maps."""
import json
import subprocess
import sys

import pytest
from conftest import ROOT, command, files, infer

MERGE = [sys.executable, str(ROOT / "scripts" / "merge_results.py"), "--file", "prompts", "--model", "tiny-bloom-eos"]


@pytest.fixture(scope="module")
def single(eos_model_dir, tmp_path_factory):
    """The files of one process, batch 3: what every split must reproduce."""
    folder = tmp_path_factory.mktemp("single")
    data = folder / "data"
    data.mkdir()
    from conftest import INPUT

    from pim.activation_files import escape_newlines

    (data / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT))
    res = infer(eos_model_dir, data, folder / "results", "--batch-size", "3")
    assert res.returncode == 0, res.stderr
    return files(folder / "results")


def test_two_processes_merge_to_the_files_of_one(eos_model_dir, data_dir, tmp_path, single):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    res = subprocess.run(launch + command(eos_model_dir, data_dir, tmp_path / "results", "--batch-size", "3")[1:],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "merged 2 shards" in res.stderr
    assert files(tmp_path / "results") == single
    manifest = json.loads((tmp_path / "results" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["status"] == "finished" and [s["shard"] for s in manifest["shards"]] == ["0/2", "1/2"]
    assert [s["prompt_range"] for s in manifest["shards"]] == [[0, 7], [7, 14]]


def run_shards(model_dir, data_dir, results, count, *extra, only=None):
    for i in range(count) if only is None else only:
        res = infer(model_dir, data_dir, results, "--batch-size", "3", "--shard", f"{i}/{count}", *extra)
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
    res = subprocess.run(command(eos_model_dir, data_dir, results, "--batch-size", "3", "--shard", "0/3")[:5]
                         + ["other"] + command(eos_model_dir, data_dir, results, "--batch-size", "3",
                                               "--shard", "0/3")[6:], capture_output=True, text=True)
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
    res = infer(eos_model_dir, data_dir, tmp_path / "results", "--batch-size", "3",
                "--device-map", json.dumps(device_map), "--offload-folder", str(tmp_path / "offload"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "results" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert set(manifest["devices"].values()) == {"cpu", "disk"}
    assert files(tmp_path / "results") == single
