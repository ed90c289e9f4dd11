"""The recorder in the patched transformers, checked against forward hooks and the pristine code."""
import importlib.util
import json
import sys

import pytest
import torch
from conftest import ARCHS, PROMPTS, ROOT
from hook_reference import HookReference, choose_early_eos
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from pim.activation_files import index_line, ratio_lines

MAX_NEW_TOKENS = 8


def load(folder, **kwargs):
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def early_eos(model, tok):
    """A token id that, used as EOS, ends some of PROMPTS' greedy continuations early but not all."""
    eos = choose_early_eos(model, tok, PROMPTS, MAX_NEW_TOKENS)
    if eos is None:
        pytest.skip("no token ends only some continuations of this random model")
    return eos


def run(model, tok, prompts, batch_size, **gen):
    outputs = []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **gen)
        outputs += out[:, enc.input_ids.shape[1]:].tolist()
    return outputs


def expected_counts(reference, new_tokens, eos):
    """Integer (eq, le) counts per counted step and the index counts, from the hook reference."""
    rows, counts, counted = reference.expected(new_tokens, {eos})
    width = len(counts[0])
    zero_counts = [[[round(eq * width), round(le * width)] for eq, le in row] for row in rows]
    return rows, zero_counts, counts, counted, width


@pytest.mark.parametrize("arch", ARCHS)
def test_files_equal_hook_reference(arch, tiny_model_dirs, tmp_path):
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model, tok = load(tiny_model_dirs[arch], activate_file=[ratio, index])
    eos = early_eos(model, tok)
    ratio.unlink()  # early_eos ran one recorded call; start the files afresh
    model.activation_recorder.reset()
    reference = HookReference(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos)
    reference.remove()
    rows, zero_counts, counts, counted, width = expected_counts(reference, out[:, enc.input_ids.shape[1]:], eos)

    assert min(counted) < MAX_NEW_TOKENS, "a sequence stops early"
    assert [json.loads(line) for line in ratio.read_text().splitlines()] == [
        {str(layer): pair for layer, pair in enumerate(row)} for row in rows]
    assert json.loads(index.read_text()) == {str(layer): c for layer, c in enumerate(counts)}
    # byte for byte what the project's writers make of the same numbers
    assert ratio.read_text() == ratio_lines(zero_counts, width)
    assert index.read_text() == index_line(counts)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_does_not_change_the_files(arch, tiny_model_dirs, tmp_path):
    texts = {}
    for batch_size in (1, 4):
        files = [tmp_path / f"ratio-{batch_size}.jsonl", tmp_path / f"index-{batch_size}.jsonl"]
        model, tok = load(tiny_model_dirs[arch])
        eos = early_eos(model, tok)
        model.start_activation_recording(files)
        tokens = run(model, tok, PROMPTS, batch_size, eos_token_id=eos)
        tokens = [row[:row.index(eos) + 1] if eos in row else row for row in tokens]  # batch 4 pads after EOS
        texts[batch_size] = (tokens, files[0].read_text(), files[1].read_text())
    assert texts[1] == texts[4]


def pristine_class(arch):
    """The *ForCausalLM class of the unpatched source in third_party/ (imported beside the patched one)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import patch_transformers

    pristine = ROOT / "third_party" / f"transformers-{patch_transformers.pinned_version()}"
    if not pristine.is_dir():
        pytest.skip("no pristine transformers source in third_party/ (run `make patch`)")
    name = f"transformers.models.{arch}.pristine_modeling_{arch}"
    spec = importlib.util.spec_from_file_location(name, pristine / f"src/transformers/models/{arch}/modeling_{arch}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cls = {"bloom": "BloomForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]
    assert not hasattr(getattr(module, cls), "start_activation_recording")
    return getattr(module, cls)


@pytest.mark.parametrize("arch", ARCHS)
def test_recording_changes_nothing_the_model_computes(arch, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    stock = pristine_class(arch).from_pretrained(folder).eval()
    model, tok = load(folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits_stock = stock(**enc).logits
        logits_off = model(**enc).logits
        model.start_activation_recording()
        logits_on = model(**enc).logits
    assert model.activation_recorder.take().zero_counts.shape[0] == len(PROMPTS)  # the forward call was recorded
    assert torch.equal(logits_stock, logits_off) and torch.equal(logits_stock, logits_on)

    tokens_on = run(model, tok, PROMPTS, 4)
    model.stop_activation_recording()
    assert run(model, tok, PROMPTS, 4) == tokens_on == run(stock, tok, PROMPTS, 4)


def test_programmatic_interface(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["qwen2"])
    recorder = model.start_activation_recording()
    tokens = run(model, tok, PROMPTS[:2], 2) + run(model, tok, PROMPTS[2:], 2)
    stats = recorder.take()
    eos = model.generation_config.eos_token_id
    steps = [row.index(eos) + 1 if eos in row else len(row) for row in tokens]
    width = model.config.intermediate_size
    assert stats.width == width and stats.active_counts.shape == (3, width)
    assert stats.steps.tolist() == steps
    assert stats.zero_counts.shape == (sum(steps), 3, 2)
    assert torch.equal(stats.active_counts, recorder.active_counts)
    assert torch.equal(stats.ratios(), stats.zero_counts.double() / width)
    # every counted step adds at most 1 per neuron, and > 0 excludes <= 0
    assert int(stats.active_counts.max()) <= 4 * MAX_NEW_TOKENS
    assert int(stats.active_counts.sum()) == int((width - stats.zero_counts[:, :, 1]).sum())
    assert recorder.take() is None
    recorder.reset()
    assert int(recorder.active_counts.sum()) == 0
    assert model.stop_activation_recording() is recorder and model.activation_recorder is None
    assert all(m.record_activation is None for m in model.modules() if hasattr(type(m), "record_activation"))


def test_static_cache_records_the_same(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["bloom"])
    results = []
    for gen in ({}, {"cache_implementation": "static"}):
        recorder = model.start_activation_recording()
        tokens = run(model, tok, PROMPTS, 4, **gen)
        stats = recorder.take()
        model.stop_activation_recording()
        results.append((tokens, stats.zero_counts.tolist(), stats.active_counts.tolist()))
    assert results[0] == results[1]


def test_offloaded_layers_record_the_same(tiny_model_dirs, tmp_path):
    folder = tiny_model_dirs["qwen2"]
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    results = []
    for kwargs in ({}, {"device_map": device_map, "offload_folder": str(tmp_path)}):
        model, tok = load(folder, **kwargs)
        if kwargs:
            assert set(model.hf_device_map.values()) == {"cpu", "disk"}
        recorder = model.start_activation_recording()
        tokens = run(model, tok, PROMPTS, 4)
        stats = recorder.take()
        results.append((tokens, stats.zero_counts.tolist(), stats.active_counts.tolist()))
    assert results[0] == results[1]


def test_refusals(tiny_model_dirs, tmp_path):
    model, tok = load(tiny_model_dirs["bloom"])
    model.start_activation_recording()
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    with pytest.raises(ValueError, match="beam search"):
        model.generate(**enc, num_beams=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="stop string"):
        model.generate(**enc, stop_strings=["x"], tokenizer=tok, max_new_tokens=2)
    tok.padding_side = "right"
    with pytest.raises(ValueError, match="padding_side='left'"):
        model.generate(**tok(PROMPTS[:2], return_tensors="pt", padding=True), max_new_tokens=2)

    taken = tmp_path / "ratio.jsonl"
    taken.write_text("{}\n")
    with pytest.raises(FileExistsError, match="ratio.jsonl already exists"):
        load(tiny_model_dirs["bloom"], activate_file=[taken, tmp_path / "index.jsonl"])
    assert taken.read_text() == "{}\n"

    moe = tmp_path / "mixtral"
    config = AutoConfig.for_model("mixtral", hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, vocab_size=50)
    AutoModelForCausalLM.from_config(config).save_pretrained(moe)
    with pytest.raises(ValueError, match="MixtralForCausalLM .* has a mixture-of-experts MLP"):
        AutoModelForCausalLM.from_pretrained(moe, activate_file=[tmp_path / "r", tmp_path / "i"])


@pytest.mark.parametrize("arch", ["bloom", "qwen2"])
def test_several_eos_ids_equal_hook_reference(arch, tiny_model_dirs):
    model, tok = load(tiny_model_dirs[arch])
    eos = [early_eos(model, tok), model.config.vocab_size - 1]  # several ids: the recorder's isin path
    recorder = model.start_activation_recording()
    reference = HookReference(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos)
    reference.remove()
    new_tokens = out[:, enc.input_ids.shape[1]:]
    rows, counts, counted = reference.expected(new_tokens, set(eos))
    stats = recorder.take()
    assert min(counted) < MAX_NEW_TOKENS and stats.steps.tolist() == counted
    assert stats.ratios().tolist() == rows and stats.active_counts.tolist() == counts


def test_many_forward_calls_outside_generate_grow_the_buffers(tiny_model_dirs):
    """More steps than the first capacity (64), with grad enabled: every call is one counted step."""
    model, tok = load(tiny_model_dirs["qwen2"])
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    recorder = model.start_activation_recording()
    reference = HookReference(model)
    calls = 66  # the first capacity is 64
    for _ in range(calls):
        model(**enc)
    reference.remove()
    stats = recorder.take()
    assert stats.steps.tolist() == [calls] * len(PROMPTS)
    new_tokens = torch.zeros((len(PROMPTS), calls), dtype=torch.long)  # no EOS: every step counts
    rows, counts, _ = reference.expected(new_tokens, set())
    assert stats.ratios().tolist() == rows and stats.active_counts.tolist() == counts


def test_calls_inside_and_outside_inference_mode(tiny_model_dirs):
    """Buffers made under torch.inference_mode() cannot be updated outside it: the recorder makes new ones."""
    model, tok = load(tiny_model_dirs["qwen2"])
    recorder = model.start_activation_recording()
    with torch.inference_mode():
        inside = run(model, tok, PROMPTS, 4)
    outside = run(model, tok, PROMPTS, 4)
    stats = recorder.take()
    steps = stats.steps.tolist()
    assert inside == outside and len(steps) == 2 * len(PROMPTS) and steps[:len(PROMPTS)] == steps[len(PROMPTS):]
    half = sum(steps[:len(PROMPTS)])
    assert torch.equal(stats.zero_counts[:half], stats.zero_counts[half:])
