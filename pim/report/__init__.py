"""The report of a model's runs: one self-contained HTML page (make report, analysis/report.py; docs/analyses.md).

Holds: sources (what a report reads: a model's runs, finished or not, their manifests, the perplexity and
evaluation tables), html (the page with its inline style and script, tables, notes), charts (figures as
data URIs, small inline SVG charts), runs_section, analyses_section (PiM vs direct and the per-run figures,
through pim.stats), tables_section (LAPE, perplexity, evaluation), neurons (one entry per language-specific
neuron; contexts_html renders its top contexts), build (the sections, what is missing, writing the page).

May import: every layer below (layer order: docs/README.md) and itself. Reads results/ only: never runs a
model.
"""
