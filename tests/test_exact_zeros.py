"""The tiny models put exact zeros at the site (pim/models/tiny.py), so == 0, <= 0 and > 0 are all exercised."""
import pytest
import torch
from conftest import ARCHS, HOOK_ARCHS, PROMPTS
from hook_reference import HookReference
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activation_recorder import start_recording

from pim.models.tiny import ZERO_EVERY

NEW_TOKENS = 4


@pytest.mark.parametrize("arch", ARCHS + HOOK_ARCHS)
def test_zeros_and_the_sign_boundary_are_counted_as_the_reference_counts_them(arch, tiny_model_dirs):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[arch]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dirs[arch])
    recorder = start_recording(model)
    reference = HookReference(model)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1)
    reference.remove()
    stats = recorder.take()
    acts = torch.stack([torch.stack(step) for step in reference.steps])  # [steps, layers, batch, width]

    exact = (acts == 0).sum().item()
    steep_zeros = (acts[..., 1::ZERO_EVERY] == 0).sum().item()
    negative = (acts < 0).sum().item()
    assert exact > 0 and steep_zeros > 0 and negative > 0, "the site shows exact zeros, underflows and negatives"
    assert (acts[..., 0::ZERO_EVERY] == 0).all(), "zero gate rows give an activation of exactly 0"

    # per step (sequence by sequence, as the ratio file orders them) the counts of == 0 and <= 0
    by_sequence = acts.permute(2, 0, 1, 3)  # [batch, steps, layers, width]
    expected = torch.stack([(by_sequence == 0).sum(-1), (by_sequence <= 0).sum(-1)], -1).flatten(0, 1)
    assert torch.equal(stats.zero_counts, expected)
    assert torch.equal(stats.active_counts, (acts > 0).sum((0, 2)))
    # exact zeros are neither active nor missing: a `>= 0` would count the zero rows at every step
    assert (stats.active_counts[:, 0::ZERO_EVERY] == 0).all()
    assert stats.zero_counts[..., 0].sum() == exact < stats.zero_counts[..., 1].sum()
    assert out.shape[1] - enc.input_ids.shape[1] == NEW_TOKENS
