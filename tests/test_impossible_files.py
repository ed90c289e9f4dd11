"""Analyses refuse index files that cannot belong to their run (issue 19: an index copied from another model,
or a duplicated row, was plotted without complaint): counts above the counted steps, another width."""
import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, infer


@pytest.fixture(scope="module")
def two_runs(tiny_model_dirs, tmp_path_factory):
    """A finished run of the tiny BLOOM and one of the tiny Qwen2 (another MLP width) on the same prompts."""
    from conftest import INPUT

    from pim.activation_files import escape_newlines

    base = tmp_path_factory.mktemp("impossible")
    data = base / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT), encoding="utf-8")
    for arch in ("bloom", "qwen2"):
        done = infer(tiny_model_dirs[arch], data, base / arch)
        assert done.returncode == 0, done.stderr[-800:]
    return base


def analysis(script, results, model):
    return subprocess.run([sys.executable, str(ROOT / "analysis" / script), "--files",
                           str(results / f"prompts-index-{model}.jsonl"), "--out-dir", str(results / "figures")],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["heatmap.py", "peak_analysis.py"])
def test_a_duplicated_index_row_is_refused(two_runs, tmp_path, script):
    results = tmp_path / "results"
    shutil.copytree(two_runs / "bloom", results)
    index = results / "prompts-index-bloom.jsonl"
    manifest = json.loads((results / "prompts-manifest-bloom.json").read_text())
    assert manifest["width"] == 4 * 64 and manifest["layers"] == 3
    row = index.read_text()
    assert max(max(v) for v in json.loads(row).values()) > manifest["counted_steps"] // 2, "doubling must overflow"
    assert analysis(script, results, "bloom").returncode == 0
    index.write_text(row + row)  # readers sum the rows: every count doubled
    done = analysis(script, results, "bloom")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "prompts-index-bloom.jsonl: a neuron fired" in done.stderr
    assert f"says {manifest['counted_steps']} counted steps" in done.stderr


def test_an_index_of_another_model_is_refused(two_runs, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(two_runs / "bloom", results)
    shutil.copy(two_runs / "qwen2" / "prompts-index-qwen2.jsonl", results / "prompts-index-bloom.jsonl")
    done = analysis("heatmap.py", results, "bloom")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "prompts-index-bloom.jsonl: 96 neurons per layer, but" in done.stderr and "says 256 neurons" in done.stderr
