"""The package's layering rule (docs/architecture.md): a module imports only from its own
room or rooms below it, and the module-level imports form no cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "harness"

# Rooms from the bottom up; a module may import from its own room and any room before it.
LAYERS = [
    {"harness", "harness.errors", "harness.config", "harness.timing", "harness.resources"},
    {"harness.store"},
    {"harness.conv"},
    {"harness.machine"},
    {"harness.kernels"},
    {"harness.sweep"},
    {"harness.models"},
    {"harness.report"},
    {"harness.networks"},
    {"harness.gsl"},
    {"harness.cli", "harness.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for rank, rooms in enumerate(LAYERS):
        for room in rooms:
            if module == room or (room != "harness" and module.startswith(room + ".")):
                return rank
    raise AssertionError(f"{module} belongs to no room of LAYERS: add it")


def imports(path: Path, module: str, top_level_only: bool):
    """The harness modules ``path`` imports (all of them, or only at module level)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "harness" or name.startswith("harness."):
                yield name


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The module a dotted import name refers to (``harness.kernels.prepare`` -> the kernels
    package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    rank = layer_of(module)
    # The package itself is the front door: its functions may hand over to any room
    # (harness.sparsify), lazily, so importing harness still loads nothing above layer 0.
    front_door = module == "harness"
    upward = sorted({target for name in imports(MODULES[module], module, front_door)
                     if (target := resolve(name)) and layer_of(target) > rank})
    assert not upward, f"{module} (layer {rank}) imports upward: {upward}"


def test_no_import_cycle():
    graph = {m: {t for n in imports(p, m, True) if (t := resolve(n)) and t != m}
             for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is how packages export; a cycle is a
    # path from a module back to itself through other modules
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1 and not m.startswith(t + "."):
                cycle = stack[stack.index(t):] + [t]
                if not all(a.startswith(b + ".") or b.startswith(a + ".")
                           for a, b in zip(cycle, cycle[1:])):
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_subpackage_ships():
    """pyproject.toml lists each package explicitly (the data directories are mapped in):
    a new subpackage missing there would be left out of the wheel."""
    import tomllib
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
