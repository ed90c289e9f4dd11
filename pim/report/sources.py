"""What a report is built from: the runs of a model in the results folder (finished or not), their
manifests, and the files the analyses wrote (results/figures, results/tables, results/neurons).

A model's runs are its own and those made with neurons switched off: MODEL `<m>-off-<lang>` (or `-off-all`,
pim/models/deactivation.run_suffix) belongs to model `<m>`. Nothing here runs a model or writes a file.
"""
import re
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import FormatError
from pim.runs.checks import load_manifest
from pim.runs.corpus_files import KIND as CORPUS_KIND
from pim.runs.names import (
    KINDS,
    Run,
    condition_order,
    find_runs,
    split_name,
    with_files,
)
from pim.tables import read_csv

OFF = re.compile(r"-off-[A-Za-z0-9_]+$")  # the MODEL suffix of a run with neurons switched off


@dataclass
class RunInfo:
    run: Run
    manifest: dict | None  # None: no manifest, or a damaged one (manifest_problem says which)
    manifest_problem: str | None
    progress: Path | None  # the progress file of a run that is going (or was killed)

    @property
    def kind(self):
        return "corpus" if (self.manifest or {}).get("kind") == CORPUS_KIND else "generation"

    @property
    def finished(self):
        """Finished: an index file and a manifest that says so (or, for the paper's files, no manifest at all)."""
        if self.run.index is None or self.manifest_problem:
            return False
        return self.manifest is None or self.manifest.get("status") == "finished"

    @property
    def base_model(self):
        return base_model(self.run.model, self.manifest)

    @property
    def deactivated(self):
        """The language whose neurons were off (or 'all'), None for a plain run."""
        spec = ((self.manifest or {}).get("settings") or {}).get("deactivate")
        if isinstance(spec, dict):
            return spec.get("language") or "all"
        return OFF.search(self.run.model)[0][len("-off-"):] if self.manifest is None and OFF.search(self.run.model) else None


def base_model(name, manifest=None):
    """The model a run's MODEL name belongs to: the name less its -off-<lang> suffix where the run switched
    neurons off (its manifest says so; without a manifest, the suffix alone decides)."""
    if manifest is not None and not ((manifest.get("settings") or {}).get("deactivate")):
        return name
    return OFF.sub("", name)


def all_runs(results_dir):
    """Every run in results_dir with any of its files (index, ratio, result, manifest, progress), by name."""
    results = Path(results_dir)
    found = {}
    for kind in ("index", "ratio", "result"):
        for run in find_runs(results, kind):
            found.setdefault((run.file, run.model), run)
    for kind in ("manifest", "progress"):
        for path in sorted(results.glob(f"*-{kind}-*.{KINDS[kind]}")) if results.is_dir() else []:
            split = None if path.name.startswith(".") else split_name(path.name, kind, results)
            if split and split not in found:
                found[split] = with_files(Run(*split), results)
    infos = []
    for (file, model), run in sorted(found.items()):
        manifest, problem = None, None
        try:
            manifest = load_manifest(results / f"{file}-manifest-{model}.json")
        except FormatError as e:
            problem = str(e)
        progress = results / f"{file}-progress-{model}.npz"
        infos.append(RunInfo(run, manifest, problem, progress if progress.is_file() else None))
    return infos


def models_found(results_dir):
    """The models with anything in results_dir: runs, a language-neurons file, a perplexity table."""
    results = Path(results_dir)
    names = {info.base_model for info in all_runs(results)}
    names |= {p.name[:-len("-language-neurons.json")] for p in (results / "neurons").glob("*-language-neurons.json")}
    names |= {p.name[:-len("-perplexity.csv")] for p in (results / "tables").glob("*-perplexity.csv")}
    return sorted(n for n in names if n)


def runs_of(results_dir, model):
    """The RunInfo of every run of `model` (and of its runs with neurons off)."""
    mine = [info for info in all_runs(results_dir) if info.base_model == model]
    return sorted(mine, key=lambda i: (i.kind != "generation", i.run.model, condition_order(i.run)))


def eval_tables(results_dir, model, runs):
    """The evaluation tables (results/tables/eval-*.csv) with a row of `model` or of its runs with neurons off."""
    known = {info.run.model: info.base_model for info in runs}
    out = []
    for path in sorted((Path(results_dir) / "tables").glob("eval-*.csv")):
        try:
            header, rows = read_csv(path)
        except FormatError:
            if OFF.sub("", path.stem).endswith(f"-{model}"):
                out.append((path, None, None))
            continue
        col = header.index("model") if "model" in header else None
        if col is not None and any(len(r) > col and known.get(r[col], base_model(r[col])) == model for r in rows):
            out.append((path, header, rows))
        elif col is None and path.stem.endswith(f"-{model}"):
            out.append((path, header, rows))
    return sorted(out, key=lambda t: (t[0].stem.endswith(f"-{model}") is False, t[0].name))
