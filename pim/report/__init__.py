"""The report of a model's runs: one self-contained HTML page (make report). To be written."""
