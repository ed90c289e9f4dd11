"""The report's first section: a model's runs, finished or not, with their provenance from the manifests."""
import json

from pim.activation_files import FormatError
from pim.report.html import details, esc, key_values, note, table
from pim.runs.checks import check_run

# the manifest's facts, in groups (docs/formats.md, "The manifest"); what no group names is shown last
MODEL_KEYS = ("model", "model_argument", "found_as", "model_source", "revision", "config_sha256", "weights_sha256",
              "gguf_sha256", "attach", "layers", "width")
DATA_KEYS = ("file", "input", "input_sha256", "prompts", "prompts_done", "prompts_in_files", "input_lines",
             "lines", "lines_done", "cut_lines", "empty_lines", "line_range", "counted_steps", "tokens")
VERSION_KEYS = ("transformers", "patches_sha256", "torch")
TIME_KEYS = ("started", "updated", "finished", "resumed")


def status_of(info):
    """What the run is: finished, running (or killed), merging, or a note for the paper's files."""
    if info.manifest_problem:
        return "damaged manifest"
    if info.manifest is None:
        return "finished (no manifest)" if info.run.index is not None else "not finished (no manifest)"
    status = info.manifest.get("status", "?")
    if status == "running" and info.progress is not None:
        return "running or stopped (progress file)"
    return status


def check_text(info, loaded):
    """'ok', or the one line of pim.runs.checks.check_run saying what is wrong (finished runs only): on the
    files as read (loaded: pim.report.analyses_section.Loaded) for generation runs, scanned for corpus runs."""
    if not info.finished:
        return "–"
    if info.kind == "generation":
        return "ok" if loaded(info.run) is not None else loaded.problem(info.run)
    try:
        check_run(info.run)
    except (FormatError, OSError) as e:
        return str(e)
    return "ok"


def steps_of(info):
    m = info.manifest or {}
    value = m.get("tokens") if info.kind == "corpus" else m.get("counted_steps")
    return f"{value:,}" if isinstance(value, int) else "–"


def runs_table(infos, loaded):
    header = ["FILE", "condition", "MODEL", "kind", "counted steps / tokens", "status", "neurons off", "check"]
    rows = []
    for info in infos:
        c = info.run.condition if info.kind == "generation" else None  # corpus-deu is no condition
        condition = c.label + (f" ({', '.join(c.aux)})" if c.aux else "") if c is not None else "–"
        rows.append([info.run.file, condition, info.run.model, info.kind, steps_of(info), status_of(info),
                     info.deactivated or "", check_text(info, loaded)])
    return table(header, rows)


def provenance(info):
    """Key-value lists of one run's manifest: model and weights, data, settings, versions, command, times."""
    m = dict(info.manifest or {})
    settings = dict(m.pop("settings", None) or {})
    merged = {**settings, **{k: v for k, v in m.items() if k not in settings}}

    def pick(keys):
        return [(k, shown(merged.pop(k))) for k in keys if k in merged]

    groups = [("model and weights", pick(MODEL_KEYS)), ("data", pick(DATA_KEYS)), ("versions", pick(VERSION_KEYS)),
              ("times", pick(TIME_KEYS)), ("command", pick(("command",)))]
    rest = [(k, shown(v)) for k, v in merged.items()]
    groups.insert(2, ("settings and the rest", rest))
    return "".join(f"<h4>{esc(title)}</h4>{key_values(pairs)}" for title, pairs in groups if pairs)


def shown(value):
    """A manifest's value as its JSON reads: null, true, {"": "cpu"}."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


IDENTITY_KEYS = ("model_source", "revision", "config_sha256", "weights_sha256", "gguf_sha256", "dtype", "transformers",
                 "patches_sha256", "torch")  # what makes runs comparable: the model, its weights, the software


def identity_of(manifest):
    merged = {**manifest, **(manifest.get("settings") or {})}
    return tuple((k, shown(merged.get(k))) for k in IDENTITY_KEYS)


def identities(infos):
    """The model and software the runs were made with: once where all manifests agree, else a table."""
    found = {}
    for info in infos:
        if info.manifest is not None:
            found.setdefault(identity_of(info.manifest), []).append(f"{info.run.file} · {info.run.model}")
    if not found:
        return ""
    if len(found) == 1:
        ((pairs, runs),) = found.items()
        return f"<h3>Model, weights and software (the same in all {len(runs)} manifests)</h3>" + key_values(pairs)
    header = ["runs"] + list(IDENTITY_KEYS)
    rows = [[", ".join(runs)] + [v for _, v in pairs] for pairs, runs in found.items()]
    return ("<h3>Model, weights and software</h3>"
            + note(f"the runs were made with {len(found)} different models, weights or software versions")
            + table(header, rows, sortable=False))


def section(infos, loaded):
    """HTML of the runs section: the table, then each run's provenance (collapsed)."""
    parts = [f"<p>{len(infos)} runs: {sum(i.finished for i in infos)} finished. Counted steps: generation runs "
             "count one step per prompt and generated token; corpus runs (LAPE's) count every token.</p>",
             runs_table(infos, loaded), identities(infos), "<h3>Each run's manifest</h3>"]
    for info in infos:
        title = f"provenance of {info.run.file} · {info.run.model}"
        if info.manifest_problem:
            parts.append(details(title, note(info.manifest_problem, "error")))
        elif info.manifest is None:
            parts.append(details(title, note("no manifest: the paper's own files, or copied without it; "
                                             "nothing is known about how they were made")))
        else:
            parts.append(details(title, provenance(info)))
    return "\n".join(parts)
