# Added to transformers by the patches of the PiM neuron project (patches/transformers-<version>/).
"""Record MLP neuron activations while a model generates (Mu et al. 2024, arXiv 2403.09073).

Sites: BLOOM the GELU output `gelu_impl(dense_h_to_4h(x))`; the gated MLPs (Qwen2/3, Llama, Mistral,
Gemma) the activation of the gate alone `act_fn(gate_proj(x))`, before the product with `up_proj(x)`;
(SiLU; GELU-tanh for Gemma); architectures without a patch the output of each decoder layer's MLP
activation module, by forward hooks (`start_activation_recording(attach="hooks")`, `start_recording`).
Only the last position of each forward call (a "step") is measured: at prefill
the last prompt token, then each newly generated position. Per step, sequence and layer the recorder
counts the neurons with activation == 0 (`eq_zero`) and <= 0 (`le_zero`); per layer and neuron it
counts the steps with activation > 0. Inside `generate`, a sequence that has emitted an EOS token is
finished: its later steps are not counted.

    model = AutoModelForCausalLM.from_pretrained(path, activate_file=[ratio_path, index_path])
    model.generate(...)   # appends the call's ratio rows, rewrites the index file (running total)

    recorder = model.start_activation_recording()
    model.generate(...)
    stats = recorder.take()          # ActivationStats of the calls since the last take()
    model.stop_activation_recording()

Cost: the patched MLP keeps a reference to its activation (a copy of the last position at prefill);
after the last layer, one vectorized update per device covers all its layers: 9 kernels per step in
all (8 at batch 1), into buffers allocated once per call. Nothing is copied to the host before the
generate call ends. Recording off is the stock code path behind one `is None` test.
"""

import functools
import json
import os
from dataclasses import dataclass

import torch

from .utils import logging


logger = logging.get_logger(__name__)

POSITIONS = ("last", "all")  # which positions of a forward call are counted (ActivationRecorder)
UNSUPPORTED_GENERATE_OPTIONS = {
    # option: why a recording cannot honour it
    "num_beams": "beam search reorders and prunes rows, so steps do not belong to one sequence",
    "assistant_model": "assisted decoding verifies several positions per forward call",
    "prompt_lookup_num_tokens": "prompt-lookup decoding verifies several positions per forward call",
    "prefill_chunk_size": "chunked prefill makes several forward calls for one prompt",
    "stop_strings": "rows stopped by a stop string are not seen as finished (only EOS is)",
    "stopping_criteria": "rows stopped by a custom criterion are not seen as finished (only EOS is)",
}


@dataclass
class ActivationStats:
    """Statistics of one or more generate calls, on the CPU.

    zero_counts: int64 [rows, layers, 2], per counted step the number of neurons with activation == 0
        and <= 0; rows are grouped by sequence (batch order), each sequence's steps in order.
    steps: int64 [sequences], counted steps per sequence (sums to rows).
    active_counts: int64 [layers, width], per neuron the number of counted steps (positions="all": counted
        positions) with activation > 0.
    width: neurons per layer.
    tokens: the counted positions behind active_counts (positions="last": the counted steps).
    """

    zero_counts: torch.Tensor
    steps: torch.Tensor
    active_counts: torch.Tensor
    width: int
    tokens: int = 0

    def ratios(self):
        """float64 [rows, layers, 2]: the shares eq_zero and le_zero of the paper's ratio file."""
        return self.zero_counts.double() / self.width


class _DeviceGroup:
    """Buffers of the layers that run on one device, for one batch size; `update` is one step's work."""

    def __init__(self, layers, example, batch, capacity):
        self.layers = layers
        self.device = example.device
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        self.span = slice(layers[0], layers[-1] + 1) if contiguous else None
        n, width = len(layers), example.shape[-1]
        self.stash = torch.empty((n * batch, 1, width), dtype=example.dtype, device=self.device)
        self.activations = self.stash.view(n, batch, 1, width)
        # The comparisons write 0/1 in the activations' dtype (vectorized on the CPU, unlike bool), and
        # their sums are exact integers: float32 below 2**24 (the width, the batch), float64 for a call.
        codes = torch.empty((3, n, batch, 1, width), dtype=example.dtype, device=self.device)
        self.positive, self.eq_zero, self.le_zero = codes  # > threshold, == 0, <= 0
        self.zero_codes = codes[1:]
        self.active_counts = torch.zeros((n, 1, width), dtype=torch.float64, device=self.device)  # of this call
        # batch 1 adds the positives directly, a larger batch sums them over the batch first
        self.positive_row = self.positive[:, 0] if batch == 1 else None
        self.step_counts = torch.empty((n, 1, width), dtype=torch.float32, device=self.device)
        self._set_zero_counts(torch.empty((capacity, 2, n, batch, 1), dtype=torch.float32, device=self.device))

    def _set_zero_counts(self, zero_counts):
        self.zero_counts = zero_counts  # [steps, (== 0, <= 0), layers, batch, 1]
        self.zero_counts_at = zero_counts.unbind(0)  # views per step, so that a step indexes nothing

    def grow(self):
        self._set_zero_counts(torch.cat([self.zero_counts, torch.empty_like(self.zero_counts)]))

    def update(self, pending, threshold, t):
        """Seven kernels for all the group's layers (six at batch 1), no allocation, no host sync."""
        torch.cat(pending[self.span] if self.span else [pending[i] for i in self.layers], out=self.stash)
        acts = self.activations
        torch.gt(acts, threshold, out=self.positive)  # a finished row's threshold is inf: never positive
        torch.eq(acts, 0, out=self.eq_zero)
        torch.le(acts, 0, out=self.le_zero)
        torch.sum(self.zero_codes, dim=-1, dtype=torch.float32, out=self.zero_counts_at[t])
        if self.positive_row is not None:
            self.active_counts += self.positive_row
        else:
            torch.sum(self.positive, dim=1, dtype=torch.float32, out=self.step_counts)
            self.active_counts += self.step_counts


class ActivationRecorder:
    """Accumulates the statistics on the devices of the layers; see the module docstring."""

    def __init__(self, num_layers, files=None, positions="last", deactivate=None):
        """positions: "last" (the paper's: the last position of each forward call) or "all" (every non-pad
        position, for corpus statistics); deactivate: {layer: neuron ids} whose activation is set to 0."""
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.num_layers = num_layers
        self.files = _check_files(files) if files is not None else None
        self.positions = positions
        self._off = [None] * num_layers  # per layer: neuron ids to switch off (CPU, then on the layer's device)
        for layer, ids in (deactivate or {}).items():
            if not 0 <= int(layer) < num_layers:
                raise ValueError(f"deactivate: layer {layer} does not exist (the model has {num_layers} layers)")
            ids = torch.as_tensor(ids, dtype=torch.long).flatten()
            self._off[int(layer)] = ids if ids.numel() else None
        self._off_on_device = [None] * num_layers
        self._eos_ids = None
        self._outside = False  # the open call was opened by a forward call outside generate
        self._position_counts = [None] * num_layers  # positions="all": per layer int64 [width], this call
        self._position_mask = None  # positions="all": bool [batch, seq, 1] of this forward call's counted positions
        self._position_thresholds = {}  # positions="all": the mask as comparison thresholds, per device and dtype
        self._tokens = None  # positions="all": counted positions of this call (a device scalar, or an int)
        self._finished = None  # positions="all", in generate: rows that have emitted EOS
        self._positions_eos = None  # positions="all": the open call's EOS ids on the input device
        self.width = None
        self.active_counts = None  # int64 [layers, width] on the CPU, running total since start/reset
        self._pending = [None] * num_layers  # each layer's activation of the current step
        self._calls = []  # ActivationStats of finished calls not yet taken
        self._groups = None
        self._batch = None
        self._step = None  # steps recorded in the open call, None when no call is open
        self._eos = None  # the open call's EOS ids on the device, or None
        self._eos_key = None

    # -- called by the patched modeling code ----------------------------------------------------
    def record(self, layer, activation):
        """Keep the last position of one layer's activation [batch, seq, width] for this step; return the
        activation the model goes on with (its deactivated neurons set to 0)."""
        off = self._off_on_device[layer]
        if off is None and self._off[layer] is not None:  # first use: check on the CPU, then keep on the device
            off = self._off[layer]
            if int(off.max()) >= activation.shape[-1] or int(off.min()) < 0:
                raise ValueError(f"deactivate: layer {layer} has {activation.shape[-1]} neurons, neuron ids "
                                 f"{int(off.min())}..{int(off.max())} are out of range")
            off = self._off_on_device[layer] = off.to(activation.device)
        if off is not None:
            activation = activation.index_fill(-1, off, 0)
        if self.positions == "all":
            self._count_positions(layer, activation)
        if activation.shape[1] == 1:
            self._pending[layer] = activation
        else:  # prefill: copy, so the whole prompt's activations are not kept alive
            self._pending[layer] = activation[:, -1:].detach().clone()
        return activation

    def begin_forward(self, input_ids, attention_mask, length):
        """positions="all": before a forward call of `length` positions, which of them count (no host sync).

        A position counts if its attention mask is 1 and, inside generate, its row has not fed back an EOS
        token yet (the positions after EOS are padding that generate keeps running)."""
        given = attention_mask if attention_mask is not None else input_ids
        self._close_if_batch_changed(given.shape[0] if given is not None else None)
        device = given.device
        if not self._step:  # a new call: no row has finished
            self._finished = None
        mask = (attention_mask[:, -length:] != 0) if attention_mask is not None else None
        if self._step and self._eos_ids and input_ids is not None:  # a decode step of generate
            if self._positions_eos is None or self._positions_eos.device != device:  # once per call
                self._positions_eos = torch.tensor(self._eos_ids, device=device)
            hit = torch.isin(input_ids[:, -1], self._positions_eos)
            self._finished = hit if self._finished is None else self._finished | hit
        if self._finished is not None:
            mask = ~self._finished[:, None] if mask is None else mask & ~self._finished[:, None]
        self._position_mask = None if mask is None else mask[..., None]
        self._position_thresholds = {}  # _count_positions: per (device, dtype) of this forward call
        # every position counts: a Python int (a tensor made from it on a GPU would be a copy that waits for the GPU)
        counted = length * len(input_ids if input_ids is not None else attention_mask) if mask is None else mask.sum()
        self._tokens = counted if self._tokens is None else self._tokens + counted

    def _count_positions(self, layer, activation):
        """Add the layer's positive activations at the counted positions: one comparison with a threshold of
        0 at those positions and inf elsewhere (made once per forward call, device and dtype)."""
        mask = self._position_mask
        if mask is None:
            counts = (activation > 0).sum((0, 1))
        else:
            key = (activation.device, activation.dtype)
            threshold = self._position_thresholds.get(key)
            if threshold is None:
                on_device = mask if mask.device == activation.device else mask.to(activation.device, non_blocking=True)
                threshold = torch.where(on_device, 0.0, float("inf")).to(activation.dtype)
                self._position_thresholds[key] = threshold
            counts = (activation > threshold).sum((0, 1))
        if self._position_counts[layer] is None:
            self._position_counts[layer] = counts
        else:
            self._position_counts[layer] += counts

    def end_step(self, input_ids):
        """After the last layer: update all counters, on the device of each layer; no host sync.

        A step costs 9 kernels for all layers of a device (2 for the finished rows, 7 in `update`; 8
        at batch 1). The finished state is a threshold per row and step, 0 while the row runs and inf
        once it has emitted EOS: `activation > threshold` counts the positives of running rows only,
        and the thresholds of all steps tell at the end of the call which steps count.
        """
        if torch.is_grad_enabled():  # out= does not take tensors that require grad
            with torch.no_grad():
                return self.end_step(input_ids)
        self._close_if_batch_changed(self._pending[0].shape[0] if self._pending[0] is not None else None)
        t = self._step
        if t is None:  # a forward call outside generate opens a call
            self._begin(eos_token_ids=None, capacity=64)
            self._outside = True
            t = 0
        if t == 0:
            self._allocate()
        elif t == len(self._threshold_at):
            self._grow()
        if t == 0 or self._eos is None:
            threshold = self._threshold_at[0]  # all zero: every row runs
        else:
            previous, threshold = self._threshold_at[t - 1], self._threshold_at[t]
            if input_ids is None:
                threshold.copy_(previous)
            else:  # the input of this step is the token emitted by the previous one
                emitted = (input_ids if input_ids.shape[1] == 1 else input_ids[:, -1:]).view(-1, 1, 1)
                if emitted.device != self._hit.device:
                    emitted = emitted.to(self._hit.device, non_blocking=True)
                if self._one_eos:
                    torch.eq(emitted, self._eos, out=self._hit)
                else:
                    torch.isin(emitted, self._eos, out=self._hit)
                torch.where(self._hit, self._inf, previous, out=threshold)
        for group in self._groups:
            group.update(self._pending, threshold if group.device == threshold.device
                         else threshold.to(group.device, non_blocking=True), t)
        self._step = t + 1

    # -- call boundaries (ActivationRecordingMixin.generate) --------------------------------------
    def _close_if_batch_changed(self, batch):
        """Forward calls outside generate form one call while their batch size stays the same."""
        if self._step and self._outside and batch is not None and batch != self._batch:
            self._end()

    def _begin(self, eos_token_ids, capacity):
        self._step = 0
        self._positions_eos = None
        self._outside = False
        self._eos_ids = eos_token_ids
        self._capacity = max(int(capacity), 1)

    # Tensors kept between calls are made outside inference mode: a call under torch.inference_mode()
    # may update them, a later one outside it could not update tensors made inside it.
    @torch.inference_mode(False)
    def _allocate(self):
        missing = [i for i, a in enumerate(self._pending) if a is None]
        if missing:
            raise RuntimeError(f"layers {missing} recorded no activation in the first step: their MLP is not "
                               "the patched one (run `make patch`)")
        first = self._pending[0]
        batch, width = first.shape[0], first.shape[-1]
        if self.width is None:
            self.width = width
            self.active_counts = torch.zeros((self.num_layers, width), dtype=torch.int64)
        layout = [(a.device, a.dtype, a.shape) for a in self._pending]
        if self._groups is None or self._layout != layout or len(self._threshold_at) < self._capacity:
            by_device = {}
            for i, a in enumerate(self._pending):
                by_device.setdefault(a.device, []).append(i)
            self._groups = [_DeviceGroup(layers, self._pending[layers[0]], batch, self._capacity)
                            for layers in by_device.values()]
            self._layout = layout
            device, dtype = first.device, first.dtype
            self._set_thresholds(torch.empty((self._capacity, batch, 1, 1), dtype=dtype, device=device))
            self._hit = torch.empty((batch, 1, 1), dtype=torch.bool, device=device)
            self._inf = torch.full((), float("inf"), dtype=dtype, device=device)
        for group in self._groups:
            group.active_counts.zero_()
        self._threshold_at[0].zero_()
        self._batch = batch
        eos_key = (tuple(self._eos_ids or ()), self._hit.device)
        if self._eos_key != eos_key:  # kept between calls: a copy to the device per call could stall the host
            self._eos = torch.tensor(eos_key[0], dtype=torch.long, device=eos_key[1]) if eos_key[0] else None
            self._eos_key = eos_key
        self._one_eos = len(eos_key[0]) == 1

    def _set_thresholds(self, thresholds):
        self._thresholds = thresholds  # [steps, batch, 1, 1]: 0 while a row runs, inf once it has finished
        self._threshold_at = thresholds.unbind(0)

    @torch.inference_mode(False)
    def _grow(self):
        for group in self._groups:
            group.grow()
        self._set_thresholds(torch.cat([self._thresholds, torch.empty_like(self._thresholds)]))

    @torch.inference_mode(False)
    def _end(self):
        """Close the open call: a few copies to the host per device, then the files if any."""
        steps_run, self._step = self._step, None
        self._pending = [None] * self.num_layers
        if not steps_run:
            return None
        if self._eos is None:
            active = torch.ones((steps_run, self._batch), dtype=torch.bool)
        else:
            active = (self._thresholds[:steps_run, :, 0, 0] == 0).cpu()  # [steps, batch]
        zero_counts = torch.empty((steps_run, self.num_layers, self._batch, 2), dtype=torch.int64)
        counts = torch.empty((self.num_layers, self.width), dtype=torch.int64)
        for group in self._groups:
            zero_counts[:, group.layers] = group.zero_counts[:steps_run, :, :, :, 0].cpu().permute(0, 2, 3, 1).long()
            counts[group.layers] = group.active_counts[:, 0].cpu().long()
        rows = torch.cat([zero_counts[active[:, b], :, b] for b in range(self._batch)])
        tokens = len(rows)
        if self.positions == "all":
            counts = torch.stack([c.cpu() for c in self._position_counts]).long()
            tokens = int(self._tokens)
            self._position_counts, self._tokens, self._finished = [None] * self.num_layers, None, None
        stats = ActivationStats(rows, active.sum(0), counts, self.width, tokens)
        self.active_counts += counts
        if self.files is not None:
            _append_ratio_rows(self.files[0], stats)
            _write_index(self.files[1], self.active_counts)
        else:
            self._calls.append(stats)
        return stats

    def _abort(self):
        self._step = None
        self._pending = [None] * self.num_layers
        self._position_counts, self._tokens, self._finished = [None] * self.num_layers, None, None

    # -- reading ----------------------------------------------------------------------------------
    def take(self):
        """ActivationStats of all calls since the last take() (None if there were none), then forget them."""
        if self._step is not None:  # forward calls outside generate form one open call
            self._end()
        calls, self._calls = self._calls, []
        if not calls:
            return None
        return ActivationStats(torch.cat([c.zero_counts for c in calls]), torch.cat([c.steps for c in calls]),
                               functools.reduce(torch.add, [c.active_counts for c in calls]), calls[0].width,
                               sum(c.tokens for c in calls))

    def reset(self):
        """Forget everything recorded so far (the running total included)."""
        self._step = None
        self._calls = []
        if self.active_counts is not None:
            self.active_counts.zero_()


def _check_files(files):
    if isinstance(files, (str, os.PathLike)) or len(files) != 2:
        raise ValueError(f"activate_file must be [ratio_path, index_path], got {files!r}")
    for path in files:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            raise FileExistsError(f"{path} already exists: recording would mix two runs. Remove it or "
                                  "choose other paths for activate_file.")
    return [os.fspath(p) for p in files]


# The paper's file formats. The project's pim/activation_files.py reads and writes the same bytes,
# tests/test_recorder.py checks that they agree.
def _append_ratio_rows(path, stats):
    lines = [json.dumps({str(layer): pair for layer, pair in enumerate(row)}) + "\n"
             for row in stats.ratios().tolist()]
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))


def _write_index(path, counts):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({str(layer): row for layer, row in enumerate(counts.tolist())}) + "\n")
    os.replace(tmp, path)


class ActivationRecordingMixin:
    """Added to the patched *ForCausalLM classes: start/stop recording, and generate calls as units."""

    activation_recorder = None

    def start_activation_recording(self, files=None, attach="patch", positions="last", deactivate=None):
        """Record from now on; files=[ratio_path, index_path] writes the paper's files after each generate.

        attach="patch": the patched MLPs report their activation (the default); "hooks": forward hooks on
        each decoder layer's activation module, for architectures without a patch (same files).
        positions="all": the index counts every non-pad position of every forward call, not only the last.
        deactivate={layer: [neuron, ...]}: those neurons' activation is set to 0 at the site.
        """
        if self.activation_recorder is not None:
            raise RuntimeError("activation recording is already on; stop_activation_recording() first")
        if attach not in ("patch", "hooks"):
            raise ValueError(f"attach must be 'patch' or 'hooks', got {attach!r}")
        num_layers = self.config.get_text_config().num_hidden_layers
        if attach == "hooks":
            recorder = ActivationRecorder(num_layers, files, positions, deactivate)
            recorder.hooks = _attach_hooks(self, recorder)
            self.activation_recorder = recorder
            return recorder
        mlps = [m for m in self.modules() if hasattr(type(m), "record_activation")]
        if len(mlps) != num_layers:
            raise RuntimeError(f"found {len(mlps)} patched MLPs for {num_layers} layers")
        # the outermost patched models call end_step (Gemma 3's multimodal model, not its language model inside)
        names = [n for n, m in self.named_modules() if n and hasattr(type(m), "activation_recorder")]
        owners = [n for n in names if not any(n.startswith(f"{o}.") for o in names)]
        if not owners:
            raise RuntimeError(f"{type(self).__name__} has no patched model that calls the recorder")
        recorder = ActivationRecorder(len(mlps), files, positions, deactivate)
        for layer, mlp in enumerate(mlps):
            mlp.record_activation = functools.partial(recorder.record, layer)
        for name in owners:
            self.get_submodule(name).activation_recorder = recorder
        if positions == "all":
            recorder.hooks = [self.register_forward_pre_hook(_positions_hook(recorder), with_kwargs=True)]
        self.activation_recorder = recorder
        return recorder

    def stop_activation_recording(self):
        """Stop recording and return the recorder (its statistics stay readable)."""
        recorder = self.activation_recorder
        for handle in getattr(recorder, "hooks", ()):
            handle.remove()
        for m in self.modules():
            m.__dict__.pop("record_activation", None)
            m.__dict__.pop("activation_recorder", None)
        return recorder

    def generate(self, *args, **kwargs):
        recorder = self.activation_recorder
        if recorder is None:
            return super().generate(*args, **kwargs)
        config = kwargs.get("generation_config") or self.generation_config
        for option, why in UNSUPPORTED_GENERATE_OPTIONS.items():
            value = kwargs.get(option, getattr(config, option, None))
            if value not in (None, 1) and not (option == "stopping_criteria" and len(value) == 0):
                raise ValueError(f"generate({option}=...) cannot be recorded: {why}. "
                                 "Stop recording for this call, or drop the option.")
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.shape[0] > 1 and not bool(mask[:, -1].all()):
            raise ValueError("the prompts are right-padded, so the last position is a pad token: "
                             "use a tokenizer with padding_side='left'")
        eos = kwargs.get("eos_token_id", config.eos_token_id)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        capacity = kwargs.get("max_new_tokens", config.max_new_tokens) or 64
        kwargs["disable_compile"] = True  # hooks and host-side state do not survive CUDA graphs
        if recorder._step is not None:
            recorder._end()  # forward calls made before this generate form their own call
        recorder._begin(eos, capacity)
        try:
            out = super().generate(*args, **kwargs)
        except BaseException:
            recorder._abort()
            raise
        recorder._end()
        return out


def _forward_inputs(args, kwargs):
    """(input_ids, attention_mask, length) of a causal LM's forward call."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    return ids, kwargs.get("attention_mask"), (ids if ids is not None else embeds).shape[1]


def _positions_hook(recorder):
    """A forward pre-hook that tells a positions="all" recorder which positions of the call count."""
    def hook(module, args, kwargs):
        recorder.begin_forward(*_forward_inputs(args, kwargs))
    return hook


def start_recording(model, files=None, attach=None, positions="last", deactivate=None):
    """Start recording on any causal LM: by its patch when it has one, else by forward hooks.

    attach=None chooses ("patch" for the patched classes, "hooks" otherwise); "hooks" also works on a
    patched class. A model without the mixin gets it (its class is swapped for a subclass that adds it).
    """
    patched = isinstance(model, ActivationRecordingMixin) and any(
        hasattr(type(m), "record_activation") for m in model.modules())
    if attach is None and not patched:
        logger.warning(f"{type(model).__name__} has no patched recorder: recording by forward hooks on its MLP "
                       "activation modules")
    attach = attach or ("patch" if patched else "hooks")
    if attach == "patch" and not patched:
        raise ValueError(f"{type(model).__name__} has no patched recorder in this transformers: use attach='hooks'")
    if not isinstance(model, ActivationRecordingMixin):
        cls = type(model)
        model.__class__ = type(cls.__name__, (ActivationRecordingMixin, cls), {"__module__": cls.__module__})
    return model.start_activation_recording(files, attach=attach, positions=positions, deactivate=deactivate)


# -- hook mode: any dense causal LM whose decoder layers have an MLP activation module ------------------
ACTIVATION_MODULE_NAMES = ("act_fn", "act", "activation_fn", "gelu_impl", "activation", "act_func", "gelu")
MLP_NAMES = ("mlp", "feed_forward", "ffn")  # the MLP inside a decoder layer; else the layer itself
MOE_CONFIG_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def decoder_layers(model):
    """(the module that holds the decoder layers, the layers): the ModuleList of num_hidden_layers blocks."""
    num_layers = model.config.get_text_config().num_hidden_layers
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)
             and len(m) == num_layers and not any(w in name for w in ("vision", "visual", "audio", "encoder"))]
    if not found:
        raise ValueError(f"{type(model).__name__}: found no list of {num_layers} decoder layers to hook")
    name, layers = found[0]
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return owner, list(layers)


def activation_sites(model):
    """The activation module of each decoder layer's MLP; a clear error for what hooks cannot record."""
    arch = f"{type(model).__name__} (model type {model.config.model_type})"
    text = model.config.get_text_config()
    moe = [f for f in MOE_CONFIG_FIELDS if (getattr(text, f, None) or 0) > 0]
    if moe or any("experts" in name for name, _ in model.named_modules()):
        raise ValueError(f"{arch} has a mixture-of-experts MLP ({', '.join(moe) or 'experts modules'}): each "
                         "expert sees a subset of the tokens, so per-layer neuron counts are not defined")
    owner, layers = decoder_layers(model)
    sites = []
    for i, layer in enumerate(layers):
        mlp = next((getattr(layer, n) for n in MLP_NAMES if isinstance(getattr(layer, n, None), torch.nn.Module)),
                   layer)
        act = next((getattr(mlp, n) for n in ACTIVATION_MODULE_NAMES
                    if isinstance(getattr(mlp, n, None), torch.nn.Module)), None)
        if act is None:
            raise ValueError(f"{arch}: layer {i}'s MLP ({type(mlp).__name__}) has no activation module "
                             f"({', '.join(ACTIVATION_MODULE_NAMES)}): a fused or functional activation cannot "
                             "be hooked")
        sites.append(act)
    if len({id(a) for a in sites}) != len(sites):
        raise ValueError(f"{arch}: one activation module is shared between layers, so a hook cannot tell "
                         "the layers apart")
    return owner, sites


def _attach_hooks(model, recorder):
    """Forward hooks that feed the recorder as the patched code does; returns their handles."""
    owner, sites = activation_sites(model)
    arch = f"{type(model).__name__} (model type {model.config.model_type})"
    fired = [0] * len(sites)  # calls per layer in the current forward call (host-side ints: no sync)

    def on_activation(layer):
        def hook(module, args, output):
            fired[layer] += 1
            return recorder.record(layer, output)  # the output the model goes on with (deactivation)
        return hook

    def on_forward_start(module, args, kwargs):  # the ids of the whole model: an inner text model may get embeddings
        ids, mask, length = _forward_inputs(args, kwargs)
        input_ids[0] = ids
        if recorder.positions == "all":
            recorder.begin_forward(ids, mask, length)

    def on_forward_end(module, args, kwargs, output):
        if fired != [1] * len(sites):
            bad = {i: n for i, n in enumerate(fired) if n != 1}
            fired[:] = [0] * len(sites)
            recorder._abort()
            raise RuntimeError(f"{arch}: the activation modules of layers {sorted(bad)} ran "
                               f"{sorted(set(bad.values()))} times in one forward call instead of once (a fused MLP "
                               "kernel, or a module used twice): hooks cannot record this architecture")
        fired[:] = [0] * len(sites)
        recorder.end_step(input_ids[0])

    input_ids = [None]
    handles = [site.register_forward_hook(on_activation(i)) for i, site in enumerate(sites)]
    handles.append(model.register_forward_pre_hook(on_forward_start, with_kwargs=True))
    handles.append(owner.register_forward_hook(on_forward_end, with_kwargs=True))
    return handles
