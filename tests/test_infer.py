"""scripts/infer_activate.py end to end on tiny models, through the command line."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import INPUT, MAX_NEW_TOKENS, ROOT, SCRIPT, command, ctrl_c_after, files, infer
from hook_reference import HookReference
from transformers import AutoModelForCausalLM, AutoTokenizer

from pim.activation_files import escape_newlines, index_line, ratio_lines, unescape_newlines


@pytest.fixture
def model_dir(eos_model_dir):
    return eos_model_dir


def test_files_equal_hook_reference(model_dir, data_dir, tmp_path):
    res = infer(model_dir, data_dir, tmp_path / "results", "--batch-size", "4")
    assert res.returncode == 0, res.stderr
    got = files(tmp_path / "results")

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos = model.generation_config.eos_token_id
    texts, zero_counts, counts, prompt_steps = [], [], 0, []
    for first in range(0, len(INPUT), 4):
        reference = HookReference(model)
        enc = tok(INPUT[first:first + 4], return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        reference.remove()
        new = out[:, enc.input_ids.shape[1]:]
        rows, batch_counts, counted = reference.expected(new, {eos})
        width = len(batch_counts[0])
        zero_counts += [[[round(eq * width), round(le * width)] for eq, le in row] for row in rows]
        counts = counts + np.array(batch_counts)
        texts += [tok.decode(row[:n], skip_special_tokens=True) for row, n in zip(new.tolist(), counted)]
        prompt_steps += counted

    assert any(len(t) for t in texts) and sum(1 for _ in zero_counts) < len(INPUT) * MAX_NEW_TOKENS, "some stop early"
    assert got["result"].decode() == "".join(escape_newlines(t) + "\n" for t in texts)
    assert got["ratio"].decode() == ratio_lines(zero_counts, width)
    assert got["index"].decode() == index_line(counts)
    manifest = json.loads((tmp_path / "results" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["status"] == "finished" and manifest["prompts_done"] == len(INPUT)
    assert manifest["counted_steps"] == len(zero_counts) and manifest["batch_size"] == 4
    assert manifest["prompt_steps"] == prompt_steps and len(set(prompt_steps)) > 1  # the ratio rows of each prompt
    assert not (tmp_path / "results" / "prompts-progress-tiny-bloom-eos.npz").exists()


def test_batch_size_does_not_change_the_files(model_dir, data_dir, tmp_path):
    for batch in ("1", "5"):
        assert infer(model_dir, data_dir, tmp_path / batch, "--batch-size", batch).returncode == 0
    assert files(tmp_path / "1") == files(tmp_path / "5")


def test_resume_after_kill_9_gives_the_same_files(model_dir, data_dir, tmp_path):
    args = ("--batch-size", "2", "--max-new-tokens", "40")
    assert infer(model_dir, data_dir, tmp_path / "whole", *args).returncode == 0
    results = tmp_path / "killed"
    manifest = results / "prompts-manifest-tiny-bloom-eos.json"

    def status():
        return json.loads(manifest.read_text()) if manifest.exists() else {}

    kills = 0
    # the first kill lands once 4 prompts are committed; the next ones at fixed times after the start
    # (while importing, loading the model or generating: wherever they land), then a last run finishes
    for delay in (None, 0.2, 1.5, 3.0, 4.5, "finish"):
        proc = subprocess.Popen(command(model_dir, data_dir, results, *args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if delay == "finish":
            assert proc.wait(timeout=600) == 0, proc.stderr.read()
            break
        if delay is None:
            while proc.poll() is None and status().get("prompts_done", 0) < 4:
                time.sleep(0.02)
        else:
            time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        else:
            assert proc.returncode == 0, proc.stderr.read()
        if status().get("status") == "finished":
            break
    assert kills >= 1 and status()["status"] == "finished"
    assert len(status()["resumed"]) >= 1
    assert files(results) == files(tmp_path / "whole")


def test_resume_drops_a_half_written_batch(model_dir, data_dir, tmp_path):
    """The state of a kill between appending a batch and committing it: the partial batch is dropped."""
    results = tmp_path / "results"
    assert infer(model_dir, data_dir, tmp_path / "whole", "--batch-size", "4").returncode == 0
    sys.path.insert(0, str(ROOT / "scripts"))
    import infer_activate

    from pim.runs import generation as generation_runs

    with ctrl_c_after(generation_runs.Generator, 1):
        infer_activate.main(command(model_dir, data_dir, results, "--batch-size", "4")[2:])
    for kind in ("result-tiny-bloom-eos.txt", "ratio-tiny-bloom-eos.jsonl"):
        with open(results / f"prompts-{kind}", "a") as f:
            f.write("half a line of a batch that was never committed")

    res = infer(model_dir, data_dir, results, "--batch-size", "3")  # another batch size may resume: same files
    assert res.returncode == 0 and "resuming" in res.stderr and "4 of 14 prompts are done" in res.stderr
    assert files(results) == files(tmp_path / "whole")
    manifest = json.loads((results / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["batch_size"] == 3 and manifest["batch_size_changes"][0]["from"] == 4


def test_a_finished_run_is_not_overwritten(model_dir, data_dir, tmp_path):
    results = tmp_path / "results"
    assert infer(model_dir, data_dir, results).returncode == 0
    before = files(results)
    res = infer(model_dir, data_dir, results, "--batch-size", "2")
    assert res.returncode != 0 and "is a finished run" in res.stderr and "--overwrite" in res.stderr
    assert files(results) == before
    assert infer(model_dir, data_dir, results, "--batch-size", "2", "--overwrite").returncode == 0
    (results / "other-result-tiny-bloom-eos.txt").write_text("from the paper's scripts\n")
    (data_dir / "other.txt").write_text("Hallo\n")
    res = subprocess.run(command(model_dir, data_dir, results)[:5] + ["other"] + command(model_dir, data_dir,
                         results)[6:], capture_output=True, text=True)
    assert res.returncode != 0 and "is not an unfinished run of this project" in res.stderr


@pytest.mark.parametrize("content, message", [
    (b"Hallo\n\nWelt\n", "prompts.txt:2: empty line"),
    (b"Hallo\nWelt \xff\n", "prompts.txt:2: not UTF-8"),
    (None, "prompts.txt: no such file"),
])
def test_bad_input_is_reported_before_a_model_is_loaded(content, message, data_dir, tmp_path):
    if content is None:
        (data_dir / "prompts.txt").unlink()
    else:
        (data_dir / "prompts.txt").write_bytes(content)
    res = infer("no-such-model-anywhere", data_dir, tmp_path / "results")
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_and_unsupported_models(data_dir, tmp_path):
    res = infer(tmp_path / "no-such-model", data_dir, tmp_path / "results")
    assert res.returncode != 0 and "not an alias" in res.stderr and "Traceback" not in res.stderr
    from transformers import AutoConfig

    moe = tmp_path / "mixtral"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "mixtral", hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=50)).save_pretrained(moe)
    res = infer(moe, data_dir, tmp_path / "results")
    assert res.returncode != 0 and "has a mixture-of-experts MLP" in res.stderr and "Traceback" not in res.stderr
    qwen1 = tmp_path / "qwen-7b"  # a Qwen v1 folder as downloaded: its config alone decides
    qwen1.mkdir()
    (qwen1 / "config.json").write_text(json.dumps({"model_type": "qwen", "architectures": ["QWenLMHeadModel"]}))
    res = infer(qwen1, data_dir, tmp_path / "results")
    assert res.returncode != 0 and "make convert-qwen1 SRC=" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


def test_interactive_prints_and_records(model_dir, tmp_path):
    cmd = [sys.executable, SCRIPT, "--model", str(model_dir), "--interactive", "--results-dir", str(tmp_path),
           "--max-new-tokens", "3"]
    res = subprocess.run(cmd, input="Hallo Welt\n\nGerman: Die Ware\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    result = (tmp_path / "interactive-result-tiny-bloom-eos.txt").read_text().splitlines()
    assert len(result) == 2  # the empty line is skipped
    assert res.stdout == "".join(unescape_newlines(line) + "\n" for line in result)
    manifest = json.loads((tmp_path / "interactive-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["status"] == "finished" and manifest["prompts_done"] == 2


def test_ctrl_c_prints_one_line_and_the_run_resumes_to_the_same_files(model_dir, data_dir, tmp_path):
    args = ("--batch-size", "2", "--max-new-tokens", "40")
    assert infer(model_dir, data_dir, tmp_path / "whole", *args).returncode == 0
    results = tmp_path / "interrupted"
    manifest = results / "prompts-manifest-tiny-bloom-eos.json"
    proc = subprocess.Popen(command(model_dir, data_dir, results, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and (json.loads(manifest.read_text()) if manifest.exists() else {}).get(
            "prompts_done", 0) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C landed")
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: the batches committed so far are kept")
    assert infer(model_dir, data_dir, results, *args).returncode == 0
    assert files(results) == files(tmp_path / "whole")
