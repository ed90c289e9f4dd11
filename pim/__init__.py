"""pim: records and analyses the MLP neurons of multilingual LLMs while they generate (README.md).

The notebook API (docs/api.md, pim/api.py): pim.open_run, pim.open_neurons, pim.list_runs. They are
imported on first use (PEP 562), so that `import pim.cli` in the scripts does not import pandas.
"""
API = ("open_run", "open_neurons", "list_runs")  # the functions of pim/api.py that `pim.` offers


def __getattr__(name):
    if name in API:
        from pim import api

        return getattr(api, name)
    raise AttributeError(f"module 'pim' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(API))


__all__ = list(API)
