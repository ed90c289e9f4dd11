"""positions="all" (corpus statistics) and deactivation, against hooks on the pristine (unpatched) models."""
import pytest
import torch
from conftest import ARCHS, HOOK_ARCHS, PROMPTS
from hook_reference import activation_modules
from test_recorder import pristine_class
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activation_recorder import start_recording

NEW_TOKENS = 4
OFF = {0: [0, 3, 5], 2: [1, 2]}  # layer: neurons switched off


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def stock(arch, folder):
    return pristine_class(arch).from_pretrained(folder).eval() if arch in ARCHS else load(folder)[0]


class FullActivations:
    """Forward hooks that keep every position of every forward call's activations, per layer."""

    def __init__(self, model):
        self.calls = []  # per forward call: [layers] of [batch, seq, width]
        mods = activation_modules(model)
        self.handles = [m.register_forward_hook(self.hook(i, len(mods))) for i, m in enumerate(mods)]
        self.current = {}

    def hook(self, layer, num_layers):
        def keep(module, args, output):
            self.current[layer] = output.detach().clone()
            if layer == num_layers - 1:
                self.calls.append([self.current[i] for i in range(num_layers)])
                self.current = {}
        return keep

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", ARCHS + HOOK_ARCHS)
def test_all_positions_of_a_teacher_forced_batch_equal_pristine_hooks(arch, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    model, tok = load(folder)
    prompts = PROMPTS + [p + " Danke schön, bis morgen." for p in PROMPTS[:2]]  # several lengths, left-padded
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert (enc.attention_mask == 0).any(), "some positions are padding"
    reference = stock(arch, folder)
    full = FullActivations(reference)
    with torch.no_grad():
        reference(**enc)
    full.remove()
    mask = enc.attention_mask.bool()[..., None]
    expected = torch.stack([((a > 0) & mask).sum((0, 1)) for a in full.calls[0]])

    recorder = start_recording(model, positions="all")
    with torch.no_grad():
        model(**enc)
    stats = recorder.take()
    assert stats.tokens == int(enc.attention_mask.sum())
    assert torch.equal(stats.active_counts, expected)


@pytest.mark.parametrize("arch", ["bloom", "llama"])
def test_all_positions_in_generate_skip_padding_and_finished_rows(arch, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    model, tok = load(folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    reference = stock(arch, folder)
    greedy = reference.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)[:, enc.input_ids.shape[1]:]
    eos = greedy[0, 1].item()  # ends row 0 after 2 tokens (and any row that emits it)
    full = FullActivations(reference)
    out = reference.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos)
    full.remove()
    new = out[:, enc.input_ids.shape[1]:].tolist()
    ends = [row.index(eos) + 1 if eos in row else len(row) for row in new]  # generated tokens that count
    assert min(ends) < NEW_TOKENS
    # prefill: every non-pad prompt position; decode step t feeds token t-1: counted while t < ends[row]
    expected = torch.stack([((a > 0) & enc.attention_mask.bool()[..., None]).sum((0, 1)) for a in full.calls[0]])
    for t, call in enumerate(full.calls[1:], 1):
        rows = torch.tensor([t < e for e in ends])
        expected += torch.stack([(a[rows] > 0).sum((0, 1)) for a in call])

    recorder = start_recording(model, positions="all")
    tokens = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos)
    stats = recorder.take()
    assert torch.equal(tokens, out)
    assert stats.tokens == int(enc.attention_mask.sum()) + sum(e - 1 for e in ends)
    assert torch.equal(stats.active_counts, expected)


def test_all_positions_do_not_depend_on_the_batch(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["bloom"])  # BLOOM is exact under left padding
    totals = []
    for size in (1, 3):
        recorder = start_recording(model, positions="all")
        for first in range(0, len(PROMPTS), size):
            with torch.no_grad():
                model(**tok(PROMPTS[first:first + size], return_tensors="pt", padding=True))
        stats = recorder.take()
        model.stop_activation_recording()
        totals.append((stats.tokens, stats.active_counts))
    assert totals[0][0] == totals[1][0] and torch.equal(totals[0][1], totals[1][1])


def zeroing_hooks(model, off):
    """The reference deactivation: forward hooks that zero the neurons' activation on the pristine model."""
    mods = activation_modules(model)

    def zero(ids):
        def hook(module, args, output):
            output = output.clone()
            output[..., ids] = 0
            return output
        return hook
    return [mods[layer].register_forward_hook(zero(ids)) for layer, ids in off.items()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attach", ["patch", "hooks"])
def test_deactivation_equals_zeroing_hooks_on_the_pristine_model(arch, attach, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    model, tok = load(folder)
    reference = stock(arch, folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    handles = zeroing_hooks(reference, OFF)
    with torch.no_grad():
        logits = reference(**enc).logits
    tokens = reference.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert not torch.equal(reference(**enc).logits, logits), "switching these neurons off changes the logits"

    recorder = start_recording(model, attach=attach, deactivate=OFF)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, logits)
    assert torch.equal(model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False), tokens)
    stats = recorder.take()
    for layer, ids in OFF.items():
        assert (stats.active_counts[layer, ids] == 0).all(), "a switched-off neuron never fires"


def test_an_empty_neuron_list_changes_nothing(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["qwen2"])
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    plain = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                           return_dict_in_generate=True)
    start_recording(model, deactivate={0: [], 1: []})
    off = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    assert torch.equal(plain.sequences, off.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain.logits, off.logits))


def test_out_of_range_neurons_and_layers_are_refused(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["qwen2"])
    width = model.config.intermediate_size
    with pytest.raises(ValueError, match="layer 7 does not exist .* 3 layers"):
        start_recording(model, deactivate={7: [0]})
    start_recording(model, deactivate={1: [2, width]})
    with pytest.raises(ValueError, match=f"layer 1 has {width} neurons, neuron ids 2..{width} are out of range"):
        model.generate(**tok(PROMPTS[:1], return_tensors="pt"), max_new_tokens=1)
