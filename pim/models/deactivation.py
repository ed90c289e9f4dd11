"""Switching language-specific neurons off: the neurons of a language-neurons JSON file as {layer: [ids]}.

A deactivation is given as FILE.json (every language's neurons) or FILE.json:LANG (one language's),
FILE the output of analysis/language_neurons.py (results/neurons/<MODEL>-language-neurons.json, docs/lape.md).
The recorder (transformers.activation_recorder.start_recording(..., deactivate=)) sets their activation
to 0 at the recorded site. Runs made with a deactivation get a MODEL name with a suffix (run_suffix),
so that they sit beside the model's plain runs: <MODEL>-off-<lang>, or <MODEL>-off-all.
"""
import hashlib
import json
from pathlib import Path


class DeactivationError(ValueError):
    """A neuron file that cannot be used with this model; the message names the file."""


def split_spec(spec):
    """(path, language or None) of FILE.json[:LANG]."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".json") and tail and "/" not in tail:
        return Path(head), tail
    return Path(text), None


def run_suffix(spec):
    """The suffix of the MODEL part of a run's file names: -off-<lang>, -off-all; '' without a deactivation."""
    if not spec:
        return ""
    return f"-off-{split_spec(spec)[1] or 'all'}"


def mlp_shape(config):
    """(layers, neurons per layer) of a model config: intermediate_size, or 4 x hidden_size (BLOOM)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    width = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    return text.num_hidden_layers, width


def read_neurons(path):
    """The JSON object of a language-neurons file, checked for its shape."""
    path = Path(path)
    if not path.is_file():
        raise DeactivationError(f"{path}: no such file (write it with `make lape MODEL=...`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DeactivationError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("neurons"), dict):
        raise DeactivationError(f"{path}: not a language-neurons file (no \"neurons\": {{language: [[layer, neuron], ...]}})")
    for lang, pairs in data["neurons"].items():
        problem = _pairs_problem(pairs)
        if problem:
            raise DeactivationError(f"{path}: language {lang!r}: {problem}; write the file again with `make lape`")
    for key, want in (("layers", "a whole number"), ("width", "a whole number"), ("model_identity", "an object")):
        value = data.get(key)
        if key in data and not (isinstance(value, dict) if key == "model_identity" else type(value) is int):
            raise DeactivationError(f"{path}: \"{key}\" is {json.dumps(value)}, not {want}; write the file again "
                                    "with `make lape`")
    return data


def _pairs_problem(pairs):
    """What is wrong with one language's entry of a neuron file, or None."""
    if not isinstance(pairs, list):
        return f"{json.dumps(pairs)} is not a list of [layer, neuron] pairs"
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
            return f"its entry {json.dumps(pair)} is not a pair [layer, neuron] of whole numbers"
    return None


def load_deactivation(spec, config, allow_empty=False, identity=None, other_model=False):
    """({layer: sorted neuron ids}, what the manifest records) of FILE.json[:LANG] for a model `config`.

    Refused, naming the file: a file made for a model of another shape (its "layers" and "width"), or, unless
    other_model, for another model of this shape (its "model_identity", the config, weights and GGUF hashes of
    the corpus runs it was selected from, differs from `identity`, the model's own; files without one are
    taken), an unknown
    language, a pair that is not [layer, neuron], a layer or a neuron index out of range (the width is the
    config's intermediate_size, 4 x hidden_size for BLOOM), and, unless allow_empty, a selection with no
    neuron (a run "with the neurons off" that switches nothing off)."""
    path, lang = split_spec(spec)
    data = read_neurons(path)
    neurons = data["neurons"]
    if lang is not None and lang not in neurons:
        raise DeactivationError(f"{path}: no language {lang!r}; it has {', '.join(neurons) or 'none'}")
    layers, width = mlp_shape(config)
    made_for = (data.get("layers", layers), data.get("width", width))
    if made_for != (layers, width):
        raise DeactivationError(f"{path}: made for a model with {made_for[0]} layers x {made_for[1]} neurons "
                                f"({data.get('model', 'another model')}), not this one's {layers} x {width}: "
                                "use the neuron file of this model (make lape MODEL=...)")
    made_from = data.get("model_identity") or {}
    differ = sorted(k for k in made_from if identity and k in identity and made_from[k] != identity[k])
    if differ and not other_model:
        raise DeactivationError(f"{path}: made for another model ({data.get('model', '?')}: its {', '.join(differ)} "
                                "differ from this model's): use the neuron file of this model (make lape MODEL=...), "
                                "or pass --deactivate-other-model to switch off that model's neurons here anyway")
    if not allow_empty and not any(neurons[name] for name in ([lang] if lang else neurons)):
        raise DeactivationError(f"{path}: {'language ' + repr(lang) if lang else 'the file'} has no neurons: "
                                "nothing would be switched off")
    off = {}
    for name in [lang] if lang else list(neurons):
        for layer, neuron in neurons[name]:  # pairs of whole numbers (read_neurons)
            if not 0 <= layer < layers:
                raise DeactivationError(f"{path}: {name}: layer {layer} does not exist (the model has {layers} layers)")
            if not 0 <= neuron < width:
                raise DeactivationError(f"{path}: {name}: neuron {neuron} of layer {layer} is out of range (the "
                                        f"model's MLP has {width} neurons per layer)")
            off.setdefault(layer, set()).add(neuron)
    off = {layer: sorted(ids) for layer, ids in sorted(off.items())}
    info = {"file": str(path), "language": lang or "all", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "neurons": sum(map(len, off.values())), "model": data.get("model"),
            **({"other_model": True} if differ else {})}
    return off, info
