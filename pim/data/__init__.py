"""The paper's data: languages, condition names, prompt templates, the release's test sets, corpora, builders.

Holds: languages (the language table), conditions (condition names: direct, PiM-n, ...), prompts (the
templates), testsets (the release's layout, labels, reference names), builders (planning and writing the
prompt files of `make data`), corpora (the per-language corpora of LAPE).

May import: the base modules of pim (activation_files, cli, tables, figures) and itself. Nothing here
knows of models, runs or statistics (layer order: docs/README.md).
"""
