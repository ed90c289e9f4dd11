"""scripts/gpu_check.py (make gpu-check) on the CPU with tiny configs (--tiny): the check against the hook reference,
the table, the JSON; that the check fails when recording is wrong; the drop-in installation it is meant for."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


@pytest.fixture
def run_check(capsys):
    """gpu_check.main(argv) in this process; returns (exit status, standard output); torch's threads restored."""
    threads = torch.get_num_threads()

    def run(*argv):
        try:
            status = gpu_check.main(list(argv))
        finally:
            torch.set_num_threads(threads)
        return status, capsys.readouterr().out
    return run


def test_tiny_check_table_and_json(run_check, tmp_path):
    out = tmp_path / "gpu-check.json"
    status, text = run_check("--tiny", "--out", str(out))
    result = json.loads(out.read_text())
    assert status == 0 and result["passed"]
    assert result["dtype"] == "bfloat16" and result["device"] == "cpu" and result["preset"] == "tiny"
    assert [r["arch"] for r in result["archs"]] == gpu_check.ARCHS == ["bloom", "qwen2", "llama"]
    for row in result["archs"]:
        assert "error" not in row and row["dtype"] == "bfloat16"
        assert [c["attach"] for c in row["checks"]] == ["patch", "hooks"]
        for c in row["checks"]:
            assert c["tokens_equal"] and c["steps_equal"] and c["ratios_equal"] and c["counts_equal"]
            # the finished rows' threshold is used: some rows end early, at least one runs to the end
            assert 1 <= c["rows_ended_early"] < c["prompts"] and c["counted_steps"] < c["prompts"] * 16
        assert [c["batch"] for c in row["cases"]] == [1, 16]
        for case in row["cases"]:
            assert case["same_tokens"] and case["tok_per_s_stock"] > 0
            for arm in ("patch", "hooks"):  # recording / stock, one sample each
                assert case[arm]["ratio"] == pytest.approx(case[arm]["samples"][0] / case["stock_samples"][0])
        assert row["profile"]["batch"] == 1 and row["profile"]["syncs_per_step_on"] == row["profile"]["syncs_per_step_off"]
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| arch |"))
    assert "bfloat16" in lines[header - 1] and "torch" in lines[header - 1]
    assert "stock tok/s" in lines[header] and "patch / stock" in lines[header] and "hooks / stock" in lines[header]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[header + 2:header + 8]]
    assert [r[0] for r in rows] == ["bloom", "", "qwen2", "", "llama", ""] and [r[3] for r in rows] == ["1", "16"] * 3
    assert all(r[2] == "patch equal, hooks equal" for r in rows if r[0])
    assert any(line.startswith("passed:") for line in lines)


def wrong_counts(take):
    """A recorder whose index counts are off by one in one neuron: the model generates the same tokens."""
    def wrapped(self):
        stats = take(self)
        stats.active_counts[0, 0] += 1
        return stats
    return wrapped


def changed_model(record):
    """A recorder that changes what the model computes (one neuron of every layer set to 0)."""
    def wrapped(self, layer, activation):
        return record(self, layer, activation.index_fill(-1, torch.tensor([0]), 0))
    return wrapped


@pytest.mark.parametrize("bug", ["counts", "model"])
def test_a_wrong_recording_fails_the_check(bug, run_check, tmp_path, monkeypatch):
    from transformers.activation_recorder import ActivationRecorder

    if bug == "counts":
        monkeypatch.setattr(ActivationRecorder, "take", wrong_counts(ActivationRecorder.take))
    else:
        monkeypatch.setattr(ActivationRecorder, "record", changed_model(ActivationRecorder.record))
    out = tmp_path / "gpu-check.json"
    status, text = run_check("--tiny", "--arch", "qwen2", "--batch-sizes", "1", "--no-profile", "--out", str(out))
    result = json.loads(out.read_text())
    [check_patch, check_hooks] = result["archs"][0]["checks"]
    assert status == 1 and not result["passed"] and "FAILED" in text and "DIFFERENT" in text
    assert not check_patch["passed"] and not check_hooks["passed"]
    if bug == "counts":
        assert check_patch["tokens_equal"] and check_patch["ratios_equal"] and not check_patch["counts_equal"]


def test_flags():
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(["--no-such-flag"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(["--tin"])  # abbreviations are unknown flags too
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(["--check-prompts", "1"])
    assert e.value.code == 2
    tiny = gpu_check.parse_args(["--tiny", "--reps", "2"])
    assert (tiny.preset, tiny.dtype, tiny.reps, tiny.new_tokens) == ("tiny", "bfloat16", 2, gpu_check.TINY["new_tokens"])
    gpu = gpu_check.parse_args([])
    assert (gpu.preset, gpu.dtype, gpu.reps, gpu.batch_sizes) == ("7b", None, gpu_check.REPS, [1, 16])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="sees none.*--tiny"):
            gpu_check.main([])
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check: patch ## " in makefile and "\t$(PY) scripts/gpu_check.py $(ARGS)\n" in makefile


def test_runs_with_the_patched_files_dropped_into_an_installed_transformers(tmp_path):
    """The GPU machine's way (docs/gpu.md): a pristine transformers package, `patch_transformers.py dropin`, then
    the check imports that package (first on PYTHONPATH) and passes."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import patch_transformers

    pristine = ROOT / "third_party" / f"transformers-{patch_transformers.pinned_version()}" / "src" / "transformers"
    if not pristine.is_dir():
        pytest.skip("no pristine transformers source in third_party/ (run `make patch`)")
    site = tmp_path / "site"
    shutil.copytree(pristine, site / "transformers", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (site / "transformers" / "activation_recorder.py").exists()
    patch_transformers.main(["dropin", "--into", str(site / "transformers")])
    out = tmp_path / "gpu-check.json"
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--arch", "bloom",
                          "--batch-sizes", "2", "--no-profile", "--out", str(out)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["transformers_path"] == str(site / "transformers")
    assert result["patches"] == patch_transformers.patches_sha256(patch_transformers.default_patch_dir(
        patch_transformers.pinned_version()))
