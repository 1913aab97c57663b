"""The project's imports point one way: down the layers of docs/architecture.md, and never round
in a cycle.

Every import counts: at the top of a file, inside a function (which hides a cycle rather than
removing it), ``importlib.import_module("literal")``, and a package that imports each of its own
modules by scanning its folder (the registries: methods, backends, judges, CLI commands). A
package's ``__init__`` counts as one module of its own (a facade placed in the layer of what it
re-exports); importing ``a.b`` is not read as an import of ``a``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sarft_core", "app", "pages")

# layer -> the modules (or packages: a prefix covers every module under it) in it, lowest first; a
# module belongs to its longest matching prefix
LAYERS: dict[str, tuple[str, ...]] = {
    "foundations": ("sarft_core.errors", "sarft_core.validation", "sarft_core.store", "sarft_core.paths", "sarft_core.chat",
                    "sarft_core.data", "sarft_core.stats", "sarft_core.flags", "sarft_core.figure_theme", "sarft_core.resources",
                    "sarft_core.templating", "sarft_core.trait_labels"),
    "model access": ("sarft_core.models", "sarft_core.embeddings"),
    "engines": ("sarft_core.scoring", "sarft_core.backends", "sarft_core.evaluation", "sarft_core.training.losses",
                "sarft_core.training.methods", "sarft_core.training.selection", "sarft_core.training.config",
                "sarft_core.training.trainer", "sarft_core.training.sppft", "sarft_core.vllm_backend", "sarft_core.trait_rater"),
    "workflows": ("sarft_core.scoring.run", "sarft_core.scoring.validate", "sarft_core.training",
                  "sarft_core.evaluation.runner", "sarft_core.evaluation.panel", "sarft_core.evaluation.review",
                  "sarft_core.alignment", "sarft_core.reproduce", "sarft_core.survey", "sarft_core.traits", "sarft_core.trait_model",
                  "sarft_core.runconfig", "sarft_core.audit"),
    "views": ("sarft_core.runview", "sarft_core.gridview", "sarft_core.report", "sarft_core.report_sources", "sarft_core.plots", "sarft_core.surveyview",
              ),
    "interfaces": ("sarft_core.cli", "sarft_core.jobs", "sarft_core.experiment", "sarft_core.__main__", "app", "pages"),
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _owner(name: str, known) -> str | None:
    """The module of ours that an imported name lives in (``a.b.c`` -> ``a.b`` when c is a name in it)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _source(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` reads from, its relative dots resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _called(node: ast.Call) -> str:
    """The name a call calls (``f`` of ``f(...)`` and of ``x.f(...)``)."""
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def import_edges(known: dict[str, Path] | None = None) -> dict[str, dict[str, int]]:
    """{module: {module it imports: line}} over every module of ours, every kind of import counted."""
    known = known or modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        found: dict[str, int] = {}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _source(module, is_package, node)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                if _called(node) == "import_module" and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            if isinstance(node, ast.Call) and is_package:
                if _called(node) == "iter_modules":
                    names = [m for m in known if m.rpartition(".")[0] == module]  # a registry loading its own modules
            for name in names:
                owner = _owner(name, known)
                if owner and owner != module:
                    found.setdefault(owner, node.lineno)
        edges[module] = found
    return edges


# package facades: an __init__ that re-exports a workflow sits in the workflow's layer (its modules keep theirs)
FACADES = {"sarft_core": "foundations", "sarft_core.scoring": "workflows"}


def layer_of(module: str) -> int | None:
    if module in FACADES:
        return list(LAYERS).index(FACADES[module])
    best = None
    for rank, prefixes in enumerate(LAYERS.values()):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_walker_sees_imports_inside_functions_dynamic_ones_and_registries(tmp_path):
    edges = import_edges()
    assert "sarft_core.models" in edges["sarft_core.scoring.run"]  # a top-level import
    assert "sarft_core.evaluation.panel" in edges["sarft_core.reproduce"]  # one inside a function
    assert "sarft_core.training.methods.sarft" in edges["sarft_core.training.methods"]  # the registry's folder scan
    assert "sarft_core.cli.train" in edges["sarft_core.cli"]
    # and the cycle finder finds a planted cycle, whatever its length
    planted = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(planted) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"give these modules a layer in LAYERS (and docs/architecture.md): {missing}"


def test_no_import_cycles():
    found = cycles(import_edges())
    edges = import_edges()
    detail = ["; ".join(f"{a} -> {b} (line {edges[a][b]})" for a in cycle for b in edges[a] if b in cycle) for cycle in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_imports_point_down_the_layers():
    names = list(LAYERS)
    upward = [f"{a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]}), line {line}"
              for a, targets in import_edges().items() for b, line in targets.items() if layer_of(b) > layer_of(a)]
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_every_dynamic_import_is_one_the_walker_reads():
    """``import_module`` of a computed name hides an edge from the walker: only a registry package
    loading its own folder (``iter_modules(__path__)``) may compute the name."""
    hidden = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scans = any(isinstance(n, ast.Call) and _called(n) == "iter_modules" for n in ast.walk(tree))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and _called(node) == "import_module"
                    and not (node.args and isinstance(node.args[0], ast.Constant)) and not (scans and path.name == "__init__.py")):
                hidden.append(f"{module}, line {node.lineno}")
    assert not hidden, "imports by a computed name (name the module, or make it a registry package):\n" + "\n".join(hidden)


def test_every_name_imported_from_our_modules_exists():
    """A name moved to another module leaves no import behind, those inside functions and in the
    pages (which only run in the app) included."""
    import importlib

    known = modules()
    missing = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _source(module, is_package, node)
            if source not in known:
                continue
            imported = importlib.import_module(source)
            for alias in node.names:
                if alias.name != "*" and not hasattr(imported, alias.name) and f"{source}.{alias.name}" not in known:
                    missing.append(f"{module}, line {node.lineno}: {source} has no {alias.name}")
    assert not missing, "\n".join(missing)
