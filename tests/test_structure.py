"""The import structure of pim/: no circle anywhere (not even through an import inside a function), and no
import from a lower layer to a higher one. The layer order is the table "Layers" of docs/README.md, which
this test reads, so that the page and the code cannot disagree."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIM = ROOT / "pim"


def layer_table(text):
    """[(layer number, [module or package prefixes])] from the docs' table rows `| 1 | `pim/a.py`, `pim/b/` | ...|`."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            rows.append((int(m[1]), re.findall(r"`(pim/[\w/]*(?:\.py)?)`", m[2])))
    return rows


def module_name(path):
    if not path.is_relative_to(ROOT):  # a file of the checker's own test
        return path.stem
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in sorted(PIM.rglob("*.py"))}


def imports_of(path, known):
    """The pim modules a file imports, anywhere in it (top level or inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pim.x import y`: the module pim.x.y where there is one, else pim.x
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `from pim.x import f`: the module pim.x
                name = name.rpartition(".")[0]
            if name and name != own and name.startswith("pim"):
                found.add(name)
    return found


def layer_of(module, table):
    """The layer of the longest entry of the table that names the module's file or a folder above it."""
    file = modules().get(module)
    file = str(file.relative_to(ROOT)) if file else module.replace(".", "/") + ".py"
    best = None
    for number, entries in table:
        for entry in entries:
            if (file == entry or (entry.endswith("/") and file.startswith(entry))) and \
                    (best is None or len(entry) > best[1]):
                best = (number, len(entry))
    return None if best is None else best[0]


def cycles(graph):
    """The strongly connected components of more than one module, and modules that import themselves."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(graph, table):
    """(modules without a layer, upward imports, circles)."""
    layers = {m: layer_of(m, table) for m in graph}
    unplaced = sorted(m for m, n in layers.items() if n is None)
    upward = sorted(f"{a} (layer {layers[a]}) imports {b} (layer {layers[b]})" for a in graph for b in graph[a]
                    if layers[a] is not None and layers.get(b) is not None and layers[b] > layers[a])
    return unplaced, upward, cycles(graph)


@pytest.fixture(scope="module")
def table():
    rows = layer_table((ROOT / "docs" / "README.md").read_text(encoding="utf-8"))
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1)), "docs/README.md: the layers must be numbered 1, 2, ..."
    return rows


def test_every_module_has_a_layer_and_imports_only_down_without_circles(table):
    known = modules()
    graph = {m: imports_of(p, known) for m, p in known.items()}
    unplaced, upward, circles = check(graph, table)
    assert not unplaced, f"modules in no layer of docs/README.md's table: {unplaced}"
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_layer_table_names_only_what_exists(table):
    for _, prefixes in table:
        for prefix in prefixes:
            assert (ROOT / prefix).exists(), f"docs/README.md's layer table names {prefix}, which does not exist"


def test_the_checker_sees_circles_upward_and_function_level_imports(tmp_path, table):
    """The checks themselves: an import inside a function counts, a circle and an upward import are found."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pim.runs.names import Run\n    from pim.stats import lape\n", encoding="utf-8")
    known = modules()
    src_imports = imports_of(src, known)
    assert src_imports == {"pim.runs.names", "pim.stats.lape"}
    graph = {"pim.cli": {"pim.runs.names"}, "pim.runs.names": {"pim.cli"}, "pim.stats.lape": set()}
    unplaced, upward, circles = check(graph, table)
    assert circles == [["pim.cli", "pim.runs.names"]]
    assert upward == [f"pim.cli (layer 1) imports pim.runs.names (layer {layer_of('pim.runs.names', table)})"]
    assert check({"pim.nowhere": set()}, table)[0] == ["pim.nowhere"]


def test_the_repository_folders_are_found_from_the_subpackages():
    """Modules one folder deeper than before find the repository's models/ and data/ (not pim/models/)."""
    from pim.data import builders
    from pim.models import loading

    assert loading.ROOT == builders.ROOT == ROOT
    assert builders.RELEASE == ROOT / "data" / "release"
