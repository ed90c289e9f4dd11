"""A checkpoint whose tensors do not fit its config is refused before anything runs (issue: silently wrong
results): transformers would fill missing tensors with random numbers, and drop unexpected ones, and go on."""
import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("change, what", [(+2, "24 missing (transformer.h.3."), (-1, "unexpected (transformer.h.2.")])
@pytest.mark.parametrize("script", ["infer_activate.py", "corpus_activate.py"])
def test_a_checkpoint_that_does_not_fit_its_config_is_refused(tiny_model_dirs, data_dir, tmp_path, change, what, script):
    folder = tmp_path / "bloom"
    shutil.copytree(tiny_model_dirs["bloom"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] += change  # 3 layers in the weights, 5 or 2 in the config
    (folder / "config.json").write_text(json.dumps(config))
    (data_dir / "corpus-deu.txt").write_text("Das Wetter ist schön.\nHallo\n", encoding="utf-8")
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--model", str(folder), "--file",
                           "prompts" if script == "infer_activate.py" else "corpus-deu", "--data-dir", str(data_dir),
                           "--results-dir", str(results)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-500:]
    last = done.stderr.strip().splitlines()[-1]
    assert "do not fit its config" in last and what in last and "Traceback" not in done.stderr
    assert "LOAD REPORT" not in done.stderr, done.stderr[-2000:]  # the one line, without transformers' table above
    assert not results.exists() or not any(p for p in results.iterdir() if not p.name.startswith(".")), \
        "nothing is written"
