"""pim/runs/checks.py: a run's files checked against each other and its manifest, by merge, analyses and eval;
and the user mistakes of issue 14 as one-line errors that touch no file."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from pim.activation_files import index_line, ratio_lines
from pim.runs.checks import RunMismatch, check_run, count_lines, scan_index, scan_ratio
from pim.runs.names import run_of, run_paths
from pim.runs.shards import shard_dir, shard_model_name, shard_range

LAYERS, WIDTH = 4, 8


def write_files(paths, prompts, steps, layers=LAYERS, width=WIDTH, seed=0):
    """Consistent result, ratio and index files: `prompts` lines, `steps` ratio rows."""
    rng = np.random.default_rng(seed)
    paths["result"].parent.mkdir(parents=True, exist_ok=True)
    paths["result"].write_text("".join(f"continuation {i}\n" for i in range(prompts)))
    le = rng.integers(0, width + 1, size=(steps, layers))
    paths["ratio"].write_text(ratio_lines(np.stack([le // 2, le], axis=-1), width))
    paths["index"].write_text(index_line(rng.integers(0, steps + 1, size=(layers, width))))


def manifest_of(file, model, prompts, steps, layers=LAYERS, **extra):
    return {"status": "finished", "settings": {"dtype": "float32"}, "file": file, "model": model, "layers": layers,
            "prompts": prompts, "prompts_done": prompts, "counted_steps": steps, "started": "t0", "finished": "t1",
            **extra}


def write_run(results, file, model, prompts=20, steps=60, manifest=True, **kw):
    paths = run_paths(results, file, model)
    write_files(paths, prompts, steps, **kw)
    if manifest:
        paths["manifest"].write_text(json.dumps(manifest_of(file, model, prompts, steps, kw.get("layers", LAYERS))))
    return paths


def write_shards(results, file="prompts", model="m", total=20, count=2, steps_per_prompt=3):
    """`count` finished shards of `total` prompts, as separate jobs leave them in <results>/shards/."""
    out = []
    for i in range(count):
        lo, hi = shard_range(total, i, count)
        paths = run_paths(shard_dir(results), file, shard_model_name(model, i, count))
        write_files(paths, hi - lo, (hi - lo) * steps_per_prompt, seed=i)
        m = manifest_of(file, model, hi - lo, (hi - lo) * steps_per_prompt, shard=[i, count], prompt_range=[lo, hi],
                        prompts_total=total)
        m["settings"] = {"dtype": "float32", "shard": [i, count]}
        paths["manifest"].write_text(json.dumps(m))
        out.append(paths)
    return out


def snapshot(folder):
    """{relative path: sha256} of every file under folder, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cut(path, lines):
    """Drop the last `lines` lines of a file."""
    kept = path.read_text().splitlines(keepends=True)[:-lines]
    path.write_text("".join(kept))


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def merge(results, *extra):
    return run("scripts/merge_results.py", "--file", "prompts", "--model", "m", "--results-dir", results, *extra)


# ----------------------------------------------------------------------------- the scans
def test_scans_count_without_parsing(tmp_path):
    paths = write_run(tmp_path, "f", "m", prompts=5, steps=7)
    assert count_lines(paths["result"]) == 5 and scan_index(paths["index"]) == (LAYERS, WIDTH)
    s = scan_ratio(paths["ratio"])
    assert (s.rows, s.layers) == (7, LAYERS)
    paths["result"].write_text("a\nb")  # a last line without its newline counts
    assert count_lines(paths["result"]) == 2
    with open(paths["ratio"], "a") as f:
        f.write(json.dumps({str(i): [0.0, 0.5] for i in range(LAYERS - 1)}) + "\n")
    with pytest.raises(RunMismatch, match="not every row has the 4 layers of line 1"):
        scan_ratio(paths["ratio"])
    paths["index"].write_text('{"0": [1, 2, 3], "1": [1, 2]}\n')
    with pytest.raises(RunMismatch, match=":1: the layers of the index are not all as wide"):
        scan_index(paths["index"])


# ----------------------------------------------------------------------------- merge (defect 4, 10)
def test_merge_of_consistent_shards(tmp_path):
    results = tmp_path / "results"
    shards = write_shards(results)
    res = merge(results)
    assert res.returncode == 0, res.stderr
    target = run_paths(results, "prompts", "m")
    assert target["result"].read_bytes() == b"".join(p["result"].read_bytes() for p in shards)
    manifest = json.loads(target["manifest"].read_text())
    assert manifest["status"] == "finished" and manifest["counted_steps"] == 60
    assert check_run(run_of(target["index"], "index")) is None
    assert not [p for p in results.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage, message", [
    (lambda s: (cut(s[1]["result"], 1), cut(s[1]["ratio"], 10)),
     "prompts-result-m-shard1of2.txt: 9 lines, but {manifest} says 10 prompts"),
    (lambda s: cut(s[0]["ratio"], 10), "prompts-ratio-m-shard0of2.jsonl: 20 rows, but {manifest} says 30 counted steps"),
    (lambda s: s[1]["index"].write_text(index_line(np.ones((3, WIDTH), dtype=int))),
     "prompts-index-m-shard1of2.jsonl: 3 layers, but {manifest} says 4 layers"),
    (lambda s: s[1]["ratio"].unlink(), "prompts-ratio-m-shard1of2.jsonl: missing (the ratio file of shard 1/2"),
    (lambda s: s[1]["manifest"].write_text('{"status": "finished", '), "not a manifest (not JSON"),
    (lambda s: s[1]["manifest"].write_bytes(b"\xff\xfe"), "not a manifest (not UTF-8 text)"),
    (lambda s: s[1]["manifest"].write_text('{"shard": [1, 2], "status": "finished"}'), "a damaged shard manifest (no "),
])
def test_merge_refuses_shards_that_disagree_with_their_manifests(tmp_path, damage, message):
    results = tmp_path / "results"
    shards = write_shards(results)
    damage(shards)
    before = snapshot(results)
    res = merge(results)
    manifest = shards[1 if "shard1" in message or "shard 1" in message else 0]["manifest"]
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert message.format(manifest=manifest) in res.stderr or message in res.stderr, res.stderr
    assert snapshot(results) == before  # no merging manifest, no partial or temporary files


def test_merge_leaves_nothing_behind_when_writing_fails(tmp_path, monkeypatch):
    from pim.runs import merge as shards_module
    from pim.runs.writer import RunRefused

    results = tmp_path / "results"
    write_shards(results)
    before = snapshot(results)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", "somewhere")
    monkeypatch.setattr(shards_module, "index_line", broken)
    with pytest.raises(RunRefused, match="somewhere: No space left on device"):
        shards_module.merge_shards(results, "prompts", "m")
    assert snapshot(results) == before


# ----------------------------------------------------------------------------- analyses (defect 5)
ANALYSES = {
    "ratio": lambda r, f, m: ["analysis/ratio_analysis.py", "--files", run_paths(r, f, m)["ratio"], "--out-dir", r / "t"],
    "heatmap": lambda r, f, m: ["analysis/heatmap.py", "--files", run_paths(r, f, m)["index"], "--out-dir", r / "t"],
    "peak": lambda r, f, m: ["analysis/peak_analysis.py", "--files", run_paths(r, f, m)["index"], "--out-dir", r / "t"],
    "plots": lambda r, f, m: ["analysis/plot_all.py", "--results-dir", r],
}


@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_every_analysis_refuses_half_the_ratio_rows(tmp_path, analysis):
    results = tmp_path / "results"
    paths = write_run(results, "t-deu2eng", "m", prompts=20, steps=60)
    res = run(*ANALYSES[analysis](results, "t-deu2eng", "m"))
    assert res.returncode == 0, res.stderr
    cut(paths["ratio"], 30)
    before = snapshot(results)
    res = run(*ANALYSES[analysis](results, "t-deu2eng", "m"))
    assert res.returncode == 1 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert f"{paths['ratio']}: 30 rows, but {paths['manifest']} says 60 counted steps" in res.stderr
    assert snapshot(results) == before


def test_index_and_ratio_of_different_layers_without_a_manifest(tmp_path):
    results = tmp_path / "results"
    paths = write_run(results, "t-deu2eng", "m", manifest=False)
    res = run(*ANALYSES["plots"](results, "t-deu2eng", "m"))
    assert res.returncode == 0, res.stderr
    assert "t-deu2eng-index-m.jsonl has no manifest (t-deu2eng-manifest-m.json)" in res.stdout  # the note
    paths["index"].write_text(index_line(np.ones((3, WIDTH), dtype=int)))
    for analysis in ANALYSES:
        res = run(*ANALYSES[analysis](results, "t-deu2eng", "m"))
        assert res.returncode == 1 and "Traceback" not in res.stderr, (analysis, res.stderr)
        assert f"{paths['index']}: 3 layers, but the run's ratio file {paths['ratio']} has 4" in res.stderr


def test_a_5_layer_run_is_not_compared_with_4_layer_runs(tmp_path):
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m")
    write_run(results, "t-GPT4-deu_spa2eng", "m")
    write_run(results, "t-GPT4-deu_spa_rus_fra2eng", "m", layers=5)  # each run agrees with its own manifest
    res = run("analysis/compare_conditions.py", "--results-dir", results, "--model", "m", "--files", "t-deu2eng",
              "t-GPT4-deu_spa_rus_fra2eng")
    assert res.returncode == 1 and "different shapes (layers x neurons: t-deu2eng: 4 x 8, " \
        "t-GPT4-deu_spa_rus_fra2eng: 5 x 8)" in res.stderr
    res = run("analysis/ratio_analysis.py", "--files", results / "t-*-ratio-m.jsonl", "--out-dir", results / "t")
    assert res.returncode == 1 and "ratio files have different shapes (layers:" in res.stderr
    res = run("analysis/peak_analysis.py", "--files", results / "t-*-index-m.jsonl", "--out-dir", results / "t")
    assert res.returncode == 1 and "index files have different shapes" in res.stderr
    res = run("analysis/plot_all.py", "--results-dir", results)
    assert res.returncode == 1 and "could not draw compare-t-deu2eng-m: the runs' index files have different" \
        in res.stderr and "Traceback" not in res.stderr
    assert not (results / "tables" / "compare-t-deu2eng-m.md").exists()
    write_run(results, "t-deu2eng", "other")
    res = run("analysis/ratio_analysis.py", "--files", results / "t-deu2eng-ratio-*.jsonl", "--out-dir", results / "t")
    assert res.returncode == 1 and "ratio files are of different models (m, other)" in res.stderr


def test_a_file_named_with_index_goes_through_make_plots(tmp_path):
    """Defect 11: FILE holding -index- (pim/runs/names.py's rule) drawn by plot_all, with and without a manifest."""
    results = tmp_path / "results"
    write_run(results, "notes-index-v2", "m")
    write_run(results, "a-index-b", "m", manifest=False)
    res = run("analysis/plot_all.py", "--results-dir", results)
    assert res.returncode == 0, res.stderr
    figures = sorted(p.name for p in (results / "figures").iterdir())
    assert figures == ["a-index-b-heatmap-m.png", "a-index-b-peak-m.png",
                       "notes-index-v2-heatmap-m.png", "notes-index-v2-peak-m.png"]
    assert (results / "tables" / "notes-index-v2-ratio-m.md").is_file()


# ----------------------------------------------------------------------------- evaluation
def test_eval_checks_the_run_and_its_manifest(tmp_path):
    results = tmp_path / "results"
    paths = write_run(results, "t-deu2eng", "m", prompts=5, steps=15)
    ref = tmp_path / "ref.eng"
    ref.write_text("".join(f"continuation {i}\n" for i in range(5)))
    args = ["analysis/evaluate.py", "--results-dir", results, "--ref", ref, "--offline", "--release", tmp_path]
    res = run(*args)
    assert res.returncode == 0, res.stderr
    cut(paths["ratio"], 5)
    res = run(*args)
    assert res.returncode == 1 and f"{paths['ratio']}: 10 rows, but {paths['manifest']} says 15" in res.stderr
    paths["manifest"].write_text("{")
    res = run(*args)
    assert res.returncode == 1 and f"{paths['manifest']}: not a manifest (not JSON" in res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- the sweep of user mistakes (10)
def sweep_cases(tmp_path):
    """(name, command, folder that must stay untouched) of each mistake."""
    results = tmp_path / "results"
    write_run(results, "t-deu2eng", "m", prompts=5, steps=15)
    bad = tmp_path / "bad"
    write_run(bad, "t-deu2eng", "m", prompts=5, steps=15)
    run_paths(bad, "t-deu2eng", "m")["manifest"].write_text('{"status": ')  # damaged manifest
    badres = tmp_path / "badres"
    write_run(badres, "t-deu2eng", "m", prompts=5, steps=15)
    run_paths(badres, "t-deu2eng", "m")["result"].write_bytes(b"\xff\xfe\n" * 5)  # not UTF-8
    shards = tmp_path / "shards-missing"
    write_shards(shards)[0]["index"].unlink()
    eval_args = ["--offline", "--release", tmp_path / "none", "--tables-dir", tmp_path / "tables"]
    ev = "analysis/evaluate.py"
    return [
        ("eval REF=<a folder>", [ev, "--results-dir", results, "--ref", tmp_path, *eval_args], results),
        ("eval REF=<test set>=<a folder>", [ev, "--results-dir", results, "--ref", f"t-deu2eng={tmp_path}", *eval_args],
         results),
        ("eval REF=<missing file>", [ev, "--results-dir", results, "--ref", tmp_path / "nope", *eval_args], results),
        ("eval --predictions <a folder>", [ev, "--results-dir", results, "--predictions", f"t-deu2eng:m={tmp_path}",
                                           *eval_args], results),
        ("eval --tables-dir <a file>", [ev, "--results-dir", results, "--ref", run_paths(results, "t-deu2eng", "m")
                                        ["result"], "--tables-dir", run_paths(results, "t-deu2eng", "m")["result"],
                                        "--offline"], results),
        ("eval damaged manifest", [ev, "--results-dir", bad, "--ref", run_paths(bad, "t-deu2eng", "m")["result"],
                                   *eval_args], bad),
        ("eval result not UTF-8", [ev, "--results-dir", badres, *eval_args], badres),
        ("merge with a missing shard file", ["scripts/merge_results.py", "--file", "prompts", "--model", "m",
                                             "--results-dir", shards], shards),
        ("merge of a damaged manifest", ["scripts/merge_results.py", "--file", "prompts", "--model", "m",
                                         "--results-dir", shards, "--manifests", run_paths(bad, "t-deu2eng", "m")
                                         ["manifest"]], shards),
        ("plots damaged manifest", ["analysis/plot_all.py", "--results-dir", bad], bad),
        ("ratio analysis damaged manifest", ["analysis/ratio_analysis.py", "--files", run_paths(bad, "t-deu2eng", "m")
                                             ["ratio"], "--out-dir", bad / "t"], bad),
        ("heatmap damaged manifest", ["analysis/heatmap.py", "--files", run_paths(bad, "t-deu2eng", "m")["index"],
                                      "--out-dir", bad / "t"], bad),
        ("compare damaged manifest", ["analysis/compare_conditions.py", "--results-dir", bad, "--model", "m",
                                      "--files", "t-deu2eng", "t-deu2eng"], bad),
    ]


def test_user_mistakes_are_one_line_errors_that_touch_nothing(tmp_path):
    failures = []
    for name, command, folder in sweep_cases(tmp_path):
        before = snapshot(folder)
        res = run(*command)
        lines = res.stderr.strip().splitlines()
        if res.returncode == 0 or "Traceback" in res.stderr or len(lines) != 1 or "error" not in lines[0] \
                or snapshot(folder) != before:
            failures.append(f"{name}: exit {res.returncode}, stderr {res.stderr!r}")
    assert not failures, "\n".join(failures)
