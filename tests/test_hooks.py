"""Hook mode: any dense causal LM is recorded by forward hooks, giving the same files as a patch."""
import json

import pytest
import torch
from conftest import ARCHS, HOOK_ARCHS, PROMPTS, data_dir, files, infer  # noqa: F401 (data_dir is a fixture)
from hook_reference import HookReference, choose_early_eos
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.activation_recorder import start_recording

MAX_NEW_TOKENS = 8


def load(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval(), AutoTokenizer.from_pretrained(folder)


def recorded_files(folder, tmp_path, attach, eos):
    """The ratio and index bytes of one batched generate call recorded with `attach`."""
    model, tok = load(folder)
    paths = [tmp_path / f"ratio-{attach}.jsonl", tmp_path / f"index-{attach}.jsonl"]
    start_recording(model, files=paths, attach=attach)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    tokens = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos)
    model.stop_activation_recording()
    return paths[0].read_bytes(), paths[1].read_bytes(), tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_give_the_files_of_the_patch(arch, tiny_model_dirs, tmp_path):
    model, tok = load(tiny_model_dirs[arch])
    eos = choose_early_eos(model, tok, PROMPTS, MAX_NEW_TOKENS)
    patched = recorded_files(tiny_model_dirs[arch], tmp_path, "patch", eos)
    hooked = recorded_files(tiny_model_dirs[arch], tmp_path, "hooks", eos)
    assert patched[0] == hooked[0] and patched[1] == hooked[1]
    assert torch.equal(patched[2], hooked[2])
    assert len(patched[0].splitlines()) > len(PROMPTS), "several steps were recorded"


@pytest.mark.parametrize("arch", HOOK_ARCHS)
def test_an_unpatched_architecture_is_recorded_by_hooks(arch, tiny_model_dirs, tmp_path):
    ratio, index = tmp_path / "ratio.jsonl", tmp_path / "index.jsonl"
    model, tok = load(tiny_model_dirs[arch], activate_file=[ratio, index])  # the paper's switch falls back to hooks
    assert model.activation_recorder is not None
    assert not any(hasattr(type(m), "record_activation") for m in model.modules()), "no patch: hooks record"
    reference = HookReference(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=-1)
    reference.remove()
    rows, counts, counted = reference.expected(out[:, enc.input_ids.shape[1]:], set())
    assert counted == [MAX_NEW_TOKENS] * len(PROMPTS)
    assert [json.loads(line) for line in ratio.read_text().splitlines()] == [
        {str(layer): pair for layer, pair in enumerate(row)} for row in rows]
    assert json.loads(index.read_text()) == {str(layer): c for layer, c in enumerate(counts)}


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_mixture_of_experts_is_refused(model_type):
    config = AutoConfig.for_model(model_type, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=f"model type {model_type}.*mixture-of-experts"):
        start_recording(model)


def functional_mlp(mlp):
    """An MLP forward that computes the activation without calling its module (as a fused kernel would)."""
    return lambda x: mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))


def twice_mlp(mlp):
    """An MLP forward that calls its activation module twice."""
    return lambda x: mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.act_fn(mlp.up_proj(x)))


@pytest.mark.parametrize("change, times", [(functional_mlp, 0), (twice_mlp, 2)])
def test_a_layer_that_does_not_fire_exactly_once_is_refused(change, times, tiny_model_dirs):
    model, tok = load(tiny_model_dirs["qwen2"])
    mlp = model.model.layers[1].mlp
    mlp.forward = change(mlp)
    start_recording(model, attach="hooks")
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    with pytest.raises(RuntimeError, match=rf"layers \[1\] ran \[{times}\] times in one forward call"):
        model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert model.activation_recorder.take() is None, "nothing of the failed call is kept"


def test_a_model_without_an_activation_module_is_refused(tiny_model_dirs):
    model, _ = load(tiny_model_dirs["qwen2"])
    del model.model.layers[2].mlp.act_fn
    with pytest.raises(ValueError, match="layer 2's MLP .* has no activation module"):
        start_recording(model, attach="hooks")


def test_infer_attach_hooks_writes_the_files_of_the_patch(eos_model_dir, data_dir, tmp_path):
    for attach in ("patch", "hooks"):
        res = infer(eos_model_dir, data_dir, tmp_path / attach, "--batch-size", "4", "--attach", attach)
        assert res.returncode == 0, res.stderr
    assert files(tmp_path / "patch") == files(tmp_path / "hooks")
    manifest = json.loads((tmp_path / "hooks" / "prompts-manifest-tiny-bloom-eos.json").read_text())
    assert manifest["attach"] == "hooks"


def test_infer_records_an_unpatched_architecture_with_a_notice(tiny_model_dirs, data_dir, tmp_path):
    folder = tiny_model_dirs[HOOK_ARCHS[0]]
    res = infer(folder, data_dir, tmp_path, "--batch-size", "4")
    assert res.returncode == 0, res.stderr
    assert f"note: {HOOK_ARCHS[0]} has no patch in this project: recording by forward hooks" in res.stderr
    assert files(tmp_path, model=folder.name)["index"]
    refused = infer(folder, data_dir, tmp_path / "refused", "--attach", "patch")
    assert refused.returncode != 0 and "has no patch: use --attach hooks" in refused.stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
