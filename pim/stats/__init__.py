"""Statistics of finished runs: the numbers, tables and figures of the analyses (docs/measures.md).

Holds: perplexity_table (the matrix of make ppl: CSV, ratios, shown cells), neuron_stats (layer means, the Summary of a ratio file, loading runs, top neurons, concentration,
overlap, binning), ratio_table, heatmap, peaks and comparison (the analyses' tables and figures), lape
(language activation probability entropy and the selection of language-specific neurons).

May import: the base modules of pim, pim.data, pim.models, pim.runs and itself (layer order:
docs/README.md). Never runs a model.
"""
