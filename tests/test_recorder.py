"""The recorder in the patched transformers, checked against forward hooks and the pristine code."""
import importlib.util
import json
import sys

import pytest
import torch
import transformers
from conftest import ARCHS, PROMPTS, ROOT
from hook_reference import HookReference, choose_early_eos
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

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


# Left padding changes fp32 sums in the last bits (up to about 6e-6 at the site in the tiny models), which
# could move a value that lies within that distance of zero across 0. The batch test allows a count to
# differ by at most the number of neurons whose batch-1 activation is that close to zero (|a| < NEAR_ZERO,
# from the hooks); a recorder that measured a wrong position or row would differ by far more. Measured on
# x86 CPUs: no flip in any tiny model; the SiLU models (Qwen2/3, Llama, Mistral) have no |a| < 4e-5 at all;
# BLOOM's GELU and Gemma's GELU-tanh have exact zeros and tiny negatives (|a| < 1e-5: 0.3-0.4% of the
# values), whose == 0 could flip; everything else must be equal exactly.
NEAR_ZERO = 1e-5


def _counts(ratio_text, index_text, width):
    rows = [[pair for _, pair in sorted(json.loads(line).items(), key=lambda kv: int(kv[0]))]
            for line in ratio_text.splitlines()]
    return torch.tensor(rows, dtype=torch.float64).mul(width).round().long(), torch.tensor(
        [row for _, row in sorted(json.loads(index_text).items(), key=lambda kv: int(kv[0]))])


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_does_not_change_the_files(arch, tiny_model_dirs, tmp_path):
    results = {}
    for batch_size in (1, 4):
        files = [tmp_path / f"ratio-{batch_size}.jsonl", tmp_path / f"index-{batch_size}.jsonl"]
        model, tok = load(tiny_model_dirs[arch])
        eos = early_eos(model, tok)
        model.start_activation_recording(files)
        reference = HookReference(model) if batch_size == 1 else None
        tokens = run(model, tok, PROMPTS, batch_size, eos_token_id=eos)
        tokens = [row[:row.index(eos) + 1] if eos in row else row for row in tokens]  # batch 4 pads after EOS
        results[batch_size] = (tokens, files[0].read_text(), files[1].read_text())
        if reference is not None:  # batch 1 stops at EOS: one hook step per token, prompt after prompt
            reference.remove()
            near = torch.stack([torch.stack(step)[:, 0] for step in reference.steps]).abs() < NEAR_ZERO
    (tokens_1, *text_1), (tokens_4, *text_4) = results[1], results[4]
    assert tokens_1 == tokens_4 and len(near) == sum(map(len, tokens_1))  # near: [rows, layers, width]
    if text_1 == text_4:
        return
    width = near.shape[-1]
    (rows_1, index_1), (rows_4, index_4) = _counts(*text_1, width), _counts(*text_4, width)
    assert rows_1.shape == rows_4.shape and index_1.shape == index_4.shape
    assert bool(((rows_1 - rows_4).abs() <= near.sum(-1, keepdim=True)).all()), "rows differ beyond near-zero flips"
    assert bool(((index_1 - index_4).abs() <= near.sum(0)).all()), "index counts differ beyond near-zero flips"


def pristine_class(arch):
    """The *ForCausalLM class of the unpatched source in third_party/ (imported beside the patched one)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import patch_transformers

    pristine = ROOT / "third_party" / f"transformers-{patch_transformers.pinned_version()}"
    if not pristine.is_dir():
        pytest.skip("no pristine transformers source in third_party/ (run `make patch`)")
    cls = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[arch]  # e.g. gemma3_text: Gemma3ForCausalLM of modeling_gemma3.py
    package, file = getattr(transformers, cls).__module__.rsplit(".", 1)  # the patched class's module
    name = f"{package}.pristine_{file}"
    spec = importlib.util.spec_from_file_location(name, pristine / "src" / package.replace(".", "/") / f"{file}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
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
    eos = model.generation_config.eos_token_id
    tokens, shares = [], []  # shares: the hook reference's (count == 0 / width, count <= 0 / width) per step
    for batch in (PROMPTS[:2], PROMPTS[2:]):
        reference = HookReference(model)
        new = run(model, tok, batch, 2)
        reference.remove()
        tokens += new
        shares += reference.expected(torch.tensor(new), {eos})[0]
    stats = recorder.take()
    steps = [row.index(eos) + 1 if eos in row else len(row) for row in tokens]
    width = model.config.intermediate_size
    assert stats.width == width and stats.active_counts.shape == (3, width)
    assert stats.steps.tolist() == steps
    assert stats.zero_counts.shape == (sum(steps), 3, 2)
    assert torch.equal(stats.active_counts, recorder.active_counts)
    assert stats.ratios().dtype == torch.float64 and stats.ratios().tolist() == shares
    assert any(0 < eq < le < 1 for row in shares for eq, le in row)  # shares that tell eq from le
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


@pytest.mark.skipif("gemma3" not in ARCHS, reason="no tiny multimodal Gemma 3")
def test_gemma3_multimodal_with_an_image_equals_hook_reference(tiny_model_dirs):
    """Gemma3ForConditionalGeneration: its language model gets embeddings only (no input_ids), so the
    multimodal model calls end_step with the ids; the vision tower's MLPs are not counted."""
    model, tok = load(tiny_model_dirs["gemma3"])
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    config = model.config
    image = [config.image_token_index] * config.mm_tokens_per_image  # one image (out of the tiny vocabulary)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    input_ids = torch.cat([torch.tensor([image] * len(PROMPTS)), enc.input_ids], dim=1)
    mask = torch.cat([torch.ones((len(PROMPTS), len(image)), dtype=torch.long), enc.attention_mask], dim=1)
    size = config.vision_config.image_size
    pixel_values = torch.randn((len(PROMPTS), 3, size, size), generator=torch.Generator().manual_seed(0))
    # an EOS that ends some of these image-conditioned continuations early, but not all
    greedy = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values,
                            max_new_tokens=MAX_NEW_TOKENS, do_sample=False)[:, input_ids.shape[1]:].tolist()
    eos = next((t for row in greedy for t in row[1:5] if any(t not in other for other in greedy)), None)
    assert eos is not None, "no token ends only some continuations"

    recorder = model.start_activation_recording()
    assert model.model.activation_recorder is recorder and model.model.language_model.activation_recorder is None
    reference = HookReference(model)
    out = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values,
                         max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos)
    reference.remove()
    rows, counts, counted = reference.expected(out[:, input_ids.shape[1]:], {eos})
    stats = recorder.take()
    assert min(counted) < MAX_NEW_TOKENS and stats.steps.tolist() == counted
    assert stats.ratios().tolist() == rows and stats.active_counts.tolist() == counts
    model.stop_activation_recording()
    assert model.activation_recorder is None and model.model.activation_recorder is None
