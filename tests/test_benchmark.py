"""CI smoke of scripts/benchmark.py on a tiny model: the table, the JSON and the profile; never a timing."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402


@pytest.fixture
def run_benchmark(capsys):
    """benchmark.main(argv) in this process (no second start of torch); returns its standard output."""
    threads = torch.get_num_threads()

    def run(*argv):
        try:
            assert benchmark.main(list(argv)) == 0
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out
    return run


def test_table_and_json(run_benchmark, tmp_path):
    out = tmp_path / "benchmark.json"
    text = run_benchmark("--preset", "tiny", "--reps", "1", "--warmup", "0", "--new-tokens", "3", "--out", str(out))
    cases = json.loads(out.read_text())
    assert [(c["arch"], c["batch"]) for c in cases] == [("bloom", 1), ("bloom", 2), ("qwen2", 1), ("qwen2", 2)]
    for c in cases:
        assert c["device"] == "cpu" and c["dtype"] == "float32" and len(c["stock_samples"]) == 1
        for arm in ("patch", "hooks"):
            r = c[arm]
            assert len(r["samples"]) == 1 and r["tok_per_s"] == r["samples"][0] > 0
            # recording / stock, not the other way round: with one sample each, the quotient of the samples
            assert r["ratio"] == pytest.approx(r["samples"][0] / c["stock_samples"][0], rel=1e-12)
            assert r["paired_ratio_min"] <= r["paired_ratio"] <= r["paired_ratio_max"]
        assert c["same_tokens"], "recording changed the generated tokens"
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch "))
    assert "machine:" in lines[header - 1] and "torch" in lines[header - 1] and "float32" in lines[header - 1]
    assert "stock tok/s" in lines[header] and "recording tok/s" in lines[header] and "ratio" in lines[header]
    assert "attach" in lines[header]
    assert [[line.split()[i] for i in (0, 2, 5)] for line in lines[header + 1:header + 9]] == [
        [arch, batch, arm] for arch in ("bloom", "qwen2") for batch in ("1", "2") for arm in ("patch", "hooks")]


def test_profile_finds_no_added_host_sync(run_benchmark, tmp_path):
    out = tmp_path / "profile.json"
    text = run_benchmark("--preset", "tiny", "--arch", "qwen2", "--batch-sizes", "2", "--profile",
                         "--profile-steps", "2", "--profile-out", str(out))
    [row] = json.loads(out.read_text())
    assert "ops added per step" in text and "host syncs/step" in text
    # counts of dispatched ops, not timings: the recorder's per-step update is a handful of ops for all
    # layers together, and it never makes the host wait for the device
    assert row["syncs_per_step_on"] == row["syncs_per_step_off"]
    assert 0 < row["ops_per_step_on"] - row["ops_per_step_off"] <= 12


def test_user_errors_exit_nonzero():
    script = str(ROOT / "scripts/benchmark.py")
    res = subprocess.run([sys.executable, script, "--no-such-flag"], capture_output=True, text=True)
    assert res.returncode == 2 and "unrecognized arguments: --no-such-flag" in res.stderr
    res = subprocess.run([sys.executable, script, "--reps", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and "--reps must be at least 1" in res.stderr
    if not torch.cuda.is_available():
        res = subprocess.run([sys.executable, script, "--preset", "7b"], capture_output=True, text=True)
        assert res.returncode == 1 and "runs on a CUDA GPU" in res.stderr
