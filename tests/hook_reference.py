"""An independent reference for the recorder: forward hooks on the activation modules.

The hooks see every forward call of generate; which steps count is decided afterwards from the
generated sequences (a sequence's steps up to and including the one that emitted EOS), not from
anything the recorder computes.
"""
import torch

from pim.models.architectures import by_type


def decoder_layers(model, site):
    """The decoder layers: the one ModuleList of num_hidden_layers modules that each hold `site`
    (model.transformer.h for BLOOM, model.model.layers, model.model.language_model.layers for Gemma 3)."""
    num_layers = model.config.get_text_config().num_hidden_layers
    found = [(name, mods) for name, mods in model.named_modules() if isinstance(mods, torch.nn.ModuleList)
             and len(mods) == num_layers and all(_has(layer, site) for layer in mods)]
    assert len(found) == 1, f"{len(found)} lists of {num_layers} decoder layers hold {site}: {[n for n, _ in found]}"
    return found[0][1]


def _has(module, path):
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def activation_modules(model):
    """The module whose output is the measured site, one per layer (the `activation` path of the registry)."""
    arch = by_type(model.config.model_type)
    site = arch.activation if arch else "mlp.act_fn"
    mods = [layer.get_submodule(site) for layer in decoder_layers(model, site)]
    assert len({id(m) for m in mods}) == len(mods), "activation modules are shared between layers"
    return mods


class HookReference:
    def __init__(self, model):
        self.steps = []  # per forward call: [layers] of [batch, width] float tensors
        self._current = {}
        self.handles = []
        mods = activation_modules(model)
        for layer, mod in enumerate(mods):
            self.handles.append(mod.register_forward_hook(self._hook(layer, len(mods))))

    def _hook(self, layer, num_layers):
        def hook(module, args, output):
            self._current[layer] = output[:, -1].detach().clone()
            if layer == num_layers - 1:
                self.steps.append([self._current[i] for i in range(num_layers)])
                self._current = {}
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()

    def expected(self, new_tokens, eos_ids):
        """(ratio rows as lists of [eq, le] floats per layer, counts [layers][width] ints, steps per sequence)."""
        batch = new_tokens.shape[0]
        assert len(self.steps) == new_tokens.shape[1], "one forward call per generated token"
        counted = []
        for b in range(batch):
            row = new_tokens[b].tolist()
            ends = [i for i, tok in enumerate(row) if tok in eos_ids]
            counted.append(ends[0] + 1 if ends else len(row))
        width = self.steps[0][0].shape[-1]
        counts = torch.zeros(len(self.steps[0]), width, dtype=torch.int64)
        # per step [layers, batch, width], on the CPU (the layers may be on one or several GPUs)
        steps = [torch.stack([a.cpu() for a in step]) for step in self.steps]
        rows = []
        for b in range(batch):
            for t in range(counted[b]):
                acts = steps[t][:, b]  # [layers, width], in the model's dtype
                eq, le = (acts == 0).sum(-1).tolist(), (acts <= 0).sum(-1).tolist()
                rows.append([[e / width, l / width] for e, l in zip(eq, le)])
                counts += (acts > 0).long()
        return rows, counts.tolist(), counted


def choose_early_eos(model, tokenizer, prompts, max_new_tokens):
    """A token id that, used as EOS, ends some greedy continuations of `prompts` early but not all (or None)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    new = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)[:, enc.input_ids.shape[1]:]
    rows = [set(r.tolist()) for r in new]
    for candidate in new[1, 1:5].tolist():
        if any(candidate not in r for r in rows):
            return candidate
    return None
