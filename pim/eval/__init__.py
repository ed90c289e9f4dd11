"""Evaluation of the generated continuations: labels, accuracy, BLEU/chrF, the evaluation tables.

Holds: scoring (parsing labels, accuracy, BLEU and chrF), evaluation (finding references and
predictions, the tables of `make eval`).

May import: the base modules of pim, pim.data, pim.models, pim.runs, pim.stats and itself (layer order:
docs/README.md).
"""
