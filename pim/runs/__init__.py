"""Runs: a model over a prompt file (generation) or a corpus (teacher-forced), committed, resumed, merged.

Holds: names (a run's files and their names, the manifest, finding runs), checks (a run's files checked
against each other and its manifest), writer and lock (committing batch by batch, resume, one process per
run), shards and merge (splitting a run, checking and merging the shards), engine and launch (what both
kinds of runs share: flags, name checks, launches, batches that halve after out-of-memory), generation
(a generation run), corpus, corpus_input and corpus_files (a corpus run: its input, loop and files),
examples, example_topk and example_files (neuron examples: the top-k activations of LAPE's neurons over its
corpora, and their files), teacher_forcing (teacher-forced passes: perplexity).

May import: the base modules of pim, pim.data, pim.models and itself (layer order: docs/README.md).
"""
