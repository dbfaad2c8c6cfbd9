"""The package's import structure (issue 18): no import cycle at import time, the checkpoint module
sits above the model factory (never the other way), and nothing in the package imports the
checkout's tools/. Read from the source with `ast`, so nothing heavy is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpacam"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, top_level_only: bool) -> set[str]:
    """Every module name a file imports (`from a.b import c` counts a.b and a.b.c)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {dep for dep in imported_names(path, top_level_only) if dep in modules and dep != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of module names, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_at_import_time():
    assert find_cycle(import_graph(top_level_only=True)) is None


def test_the_model_factory_never_imports_the_checkpoint_module():
    graph = import_graph(top_level_only=False)
    assert "hpacam.cam.models" in graph["hpacam.cam.checkpoint"]
    assert "hpacam.cam.checkpoint" not in graph["hpacam.cam.models"]


def test_the_package_imports_nothing_from_tools():
    """tools/ (the demo, the ablation, the stage commands) depends on the checkout; the package must not."""
    tools = {path.stem for path in (PACKAGE.parent / "tools").glob("*.py")}
    assert {"demo", "ablation"} <= tools
    for path in PACKAGE.rglob("*.py"):
        imported = {name.split(".")[0] for name in imported_names(path, top_level_only=False)}
        assert not imported & tools, f"{path} imports {sorted(imported & tools)} from tools/"
