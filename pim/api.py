"""The runs in a notebook: pim.open_run, pim.open_neurons, pim.list_runs (docs/api.md). To be written."""
