"""Second, independent tests of README promises that had one test each (docs/testing.md lists them all)."""
import json

import numpy as np
import pytest
import torch
from conftest import PROMPTS
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationMixin, MaxLengthCriteria, StoppingCriteriaList

NEW_TOKENS = 4


def load(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval(), AutoTokenizer.from_pretrained(folder)


def test_the_index_file_equals_the_sum_of_the_calls_taken_from_a_second_recorder(tiny_model_dirs, tmp_path):
    """activate_file's index after three calls == the sum of what take() gives for the same calls on another
    copy of the model (no hook reference involved); the ratio file == the rows of all calls, in order."""
    folder = tiny_model_dirs["qwen2"]
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    with_files, tok = load(folder, activate_file=[ratio, index])
    plain, _ = load(folder)
    recorder = plain.start_activation_recording()
    taken = []
    for prompts in (PROMPTS[:1], PROMPTS[1:3], PROMPTS):
        enc = tok(prompts, return_tensors="pt", padding=True)
        for model in (with_files, plain):
            model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1)
        taken.append(recorder.take())
        total = sum(t.active_counts.numpy() for t in taken)
        assert json.loads(index.read_text()) == {str(layer): row for layer, row in enumerate(total.tolist())}
    assert not np.array_equal(total, taken[-1].active_counts.numpy())
    rows = [json.loads(line) for line in ratio.read_text().splitlines()]
    want = torch.cat([t.ratios() for t in taken]).tolist()
    assert [[row[str(layer)] for layer in range(len(row))] for row in rows] == want


@pytest.mark.parametrize("option, value, words", [
    ("num_beams", 2, "beam search"),
    ("prompt_lookup_num_tokens", 2, "prompt-lookup"),
    ("prefill_chunk_size", 2, "chunked prefill"),
    ("stopping_criteria", "custom", "custom criterion"),
    ("assistant_model", "self", "assisted decoding"),
])
def test_what_cannot_be_measured_is_refused_before_anything_is_written(option, value, words, tiny_model_dirs,
                                                                       tmp_path):
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model, tok = load(tiny_model_dirs["bloom"], activate_file=[ratio, index])
    value = {"custom": StoppingCriteriaList([MaxLengthCriteria(max_length=100)]), "self": model}.get(value, value)
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    with pytest.raises(ValueError, match=words):
        model.generate(**enc, max_new_tokens=2, **{option: value})
    assert not ratio.exists() and not index.exists()
    model.generate(**enc, max_new_tokens=2, do_sample=False, eos_token_id=-1)  # the recorder is still usable
    assert len(ratio.read_text().splitlines()) == 4


def test_generate_runs_eagerly_while_recording(tiny_model_dirs, monkeypatch):
    """The recording generate asks for no compilation (disable_compile=True); without recording it asks nothing."""
    seen = []
    stock_generate = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("disable_compile"))
        return stock_generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    model, tok = load(tiny_model_dirs["llama"])
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    model.generate(**enc, max_new_tokens=2, do_sample=False)
    model.start_activation_recording()
    model.generate(**enc, max_new_tokens=2, do_sample=False, cache_implementation="static")
    assert seen == [None, True]
    assert model.activation_recorder.take().steps.tolist() == [2, 2]


def test_a_run_started_again_with_other_settings_is_refused_and_a_finished_one_kept(tmp_path):
    """RunWriter alone (tests/test_infer.py does it end to end): other settings name what differs, a finished
    run is kept unless overwrite, and nothing is changed by a refusal."""
    from pim.runs.writer import RunRefused, RunWriter

    settings = {"model_source": "x", "batch_size": 2, "dtype": "float32"}
    writer = RunWriter(tmp_path, "f", "m", settings)
    writer.open({})
    writer.commit(["a", "b"], '{"0": [0.5, 0.5]}\n', np.array([[1, 2]]), 1)
    before = {k: writer.paths[k].read_bytes() for k in ("result", "ratio", "progress")}
    with pytest.raises(RunRefused) as refused:
        RunWriter(tmp_path, "f", "m", {**settings, "batch_size": 4, "dtype": "bfloat16"}).open({})
    # the batch size is no setting: the files do not depend on it (a resume may change it, and records it)
    assert "dtype: 'float32' then, 'bfloat16' now" in str(refused.value)
    assert "model_source" not in str(refused.value) and "batch_size" not in str(refused.value)
    assert {k: writer.paths[k].read_bytes() for k in before} == before
    writer.finish()
    finished = {k: writer.paths[k].read_bytes() for k in ("result", "ratio", "index", "manifest")}
    with pytest.raises(RunRefused, match="is a finished run.*--overwrite"):
        RunWriter(tmp_path, "f", "m", settings).open({})
    assert {k: writer.paths[k].read_bytes() for k in finished} == finished
    again = RunWriter(tmp_path, "f", "m", settings, overwrite=True)
    assert again.open({}) == 0 and again.paths["result"].read_bytes() == b"" and not again.paths["index"].exists()
