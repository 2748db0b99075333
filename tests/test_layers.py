"""The package's layers (docs/contributing.md#layout): a module imports only from its own folder,
the folders below it and the shared leaves, and no two modules import each other, directly or
in a circle. Every import counts, the lazy ones inside functions included."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nondet"
LEAVES = {"nondet.seeds", "nondet.methods", "nondet.schema"}
#: folder -> the folders (besides itself and the leaves) its modules may import from
ALLOWED = {
    "io": set(),
    "training": {"io"},
    "analysis": {"io"},
    "workflow": {"io", "training", "analysis"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known) -> set[str]:
    """The nondet modules ``name`` imports (``from nondet.x import y`` counts y when y is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nondet")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("nondet"):
                continue
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else module


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer(m) in ALLOWED))
def test_a_module_imports_only_its_folder_the_folders_below_and_the_leaves(module):
    own = layer(module)
    bad = sorted(
        m
        for m in GRAPH[module]
        if m not in LEAVES and m != "nondet" and layer(m) != own and layer(m) not in ALLOWED[own]
    )
    assert not bad, f"{module} ({own}/) imports {bad}: only {sorted(ALLOWED[own] | {own})} and the leaves"


def test_the_shared_leaves_import_nothing_of_nondet():
    for leaf in LEAVES:
        assert not GRAPH[leaf], f"{leaf} imports {GRAPH[leaf]}"


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph: all of size one."""
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"modules importing each other: {cycles}"


def test_the_checker_sees_a_violation():
    """The graph is real: the torch stages import the training loop, the plan imports seeds."""
    assert "nondet.training.vectorized" in GRAPH["nondet.workflow.torch_stages"]
    assert "nondet.seeds" in GRAPH["nondet.workflow.plan"]
    assert layer("nondet.workflow.plan") == "workflow" and "workflow" not in ALLOWED["training"]
