"""Second, independent tests of the README's promises: the index running total, resume cuts, refusals."""
import json

import numpy as np
import pytest
import torch
from conftest import PROMPTS
from hook_reference import HookReference
from transformers import AutoModelForCausalLM, AutoTokenizer

from pim.runs.writer import RunWriter

NEW_TOKENS = 5


def load(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval(), AutoTokenizer.from_pretrained(folder)


def generate_with_reference(model, tok, prompts):
    """One recorded generate call; the hook reference's (ratio rows, counts) of it."""
    reference = HookReference(model)
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1)
    reference.remove()
    rows, counts, _ = reference.expected(out[:, enc.input_ids.shape[1]:], set())
    return rows, np.array(counts)


@pytest.mark.parametrize("arch", ["bloom", "llama"])
def test_the_index_file_is_the_running_total_of_all_generate_calls(arch, tiny_model_dirs, tmp_path):
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model, tok = load(tiny_model_dirs[arch], activate_file=[ratio, index])
    total, lines = 0, 0
    for prompts in (PROMPTS[:1], PROMPTS[1:3], PROMPTS):  # calls of 1, 2 and 4 prompts
        rows, counts = generate_with_reference(model, tok, prompts)
        total, lines = total + counts, lines + len(rows)
        on_disk = json.loads(index.read_text())
        assert len(index.read_text().splitlines()) == 1, "the index is rewritten, not appended to"
        assert on_disk == {str(layer): c for layer, c in enumerate(total.tolist())}
        assert len(ratio.read_text().splitlines()) == lines, "ratio rows are appended per call"
    assert (total > counts).any(), "the total differs from the last call's counts"


def test_the_recorder_total_survives_take_and_starts_again_at_reset(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["qwen2"])
    recorder = model.start_activation_recording()
    _, first = generate_with_reference(model, tok, PROMPTS[:2])
    taken = recorder.take()
    _, second = generate_with_reference(model, tok, PROMPTS[2:])
    assert np.array_equal(taken.active_counts.numpy(), first)
    assert np.array_equal(recorder.active_counts.numpy(), first + second), "take() does not reset the total"
    assert np.array_equal(recorder.take().active_counts.numpy(), second)
    recorder.reset()
    _, third = generate_with_reference(model, tok, PROMPTS[:1])
    assert np.array_equal(recorder.active_counts.numpy(), third)


def test_a_resumed_writer_cuts_the_files_back_to_the_committed_bytes(tmp_path):
    settings = {"model_source": "x", "batch_size": 2}
    counts = [np.array([[1, 0, 2]]), np.array([[0, 3, 1]]), np.array([[5, 5, 5]])]
    writer = RunWriter(tmp_path, "f", "m", settings)
    assert writer.open({}) == 0
    writer.commit(["first", "second"], '{"0": [0.5, 0.5]}\n{"0": [0.0, 1.0]}\n', counts[0], 2)
    writer.commit(["third"], '{"0": [1.0, 1.0]}\n', counts[1], 1)
    for kind, junk in (("result", "a batch that was never"), ("ratio", '{"0": [0.25,')):
        with open(writer.paths[kind], "a") as f:
            f.write(junk)

    resumed = RunWriter(tmp_path, "f", "m", settings)
    assert resumed.open({}) == 3
    assert resumed.paths["result"].read_text() == "first\nsecond\nthird\n"
    resumed.commit(["fourth"], '{"0": [0.0, 0.0]}\n', counts[2], 1)
    resumed.finish()
    assert resumed.paths["result"].read_text() == "first\nsecond\nthird\nfourth\n"
    assert resumed.paths["ratio"].read_text() == \
        '{"0": [0.5, 0.5]}\n{"0": [0.0, 1.0]}\n{"0": [1.0, 1.0]}\n{"0": [0.0, 0.0]}\n'
    assert json.loads(resumed.paths["index"].read_text()) == {"0": [6, 8, 8]}
    manifest = json.loads(resumed.paths["manifest"].read_text())
    assert manifest["prompts_done"] == 4 and manifest["counted_steps"] == 4 and len(manifest["resumed"]) == 1


def test_right_padding_is_refused_and_writes_nothing(tiny_model_dirs, tmp_path):
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model, tok = load(tiny_model_dirs["qwen2"], activate_file=[ratio, index])
    tok.padding_side = "right"
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    assert not bool(enc.attention_mask[:, -1].all()), "the batch is right-padded"
    with pytest.raises(ValueError, match="right-padded"):
        model.generate(**enc, max_new_tokens=2)
    assert not ratio.exists() and not index.exists()
    one = tok(PROMPTS[2:3], return_tensors="pt")  # a single prompt has no padding: recorded
    model.generate(**one, max_new_tokens=2, do_sample=False, eos_token_id=-1)
    assert len(ratio.read_text().splitlines()) == 2
    tok.padding_side = "left"
    left = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    model.generate(**left, max_new_tokens=2, do_sample=False, eos_token_id=-1)
    assert len(ratio.read_text().splitlines()) == 6


def test_a_recording_cannot_start_twice_and_stops_cleanly(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["bloom"])
    model.start_activation_recording()
    with pytest.raises(RuntimeError, match="already on"):
        model.start_activation_recording(attach="hooks")
    recorder = model.stop_activation_recording()
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert recorder.take() is None, "a stopped recorder records nothing"
    assert not any(m.__dict__.get("record_activation") for m in model.modules())
    assert torch.equal(model.generate(**enc, max_new_tokens=2, do_sample=False),
                       load(tiny_model_dirs["bloom"])[0].generate(**enc, max_new_tokens=2, do_sample=False))
