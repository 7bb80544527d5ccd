"""The package's layout rules, checked on its source: layers import only downwards, no import
cycle, no optimizer or training loop in ``nn/``, no module over 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sea_pyg"

#: data < nn < models < train < (plot, cli); ``io`` is below everything.
LAYERS = {"io": 0, "data": 1, "nn": 2, "models": 3, "train": 4, "plot": 5, "cli": 6}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """``sea_pyg`` modules imported anywhere in the file (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("sea_pyg"):
                out.add(node.module)
                out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sea_pyg")}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_import_only_downwards():
    upward = [
        (m, i) for m, deps in _graph().items() for i in deps
        if _layer(m) is not None and _layer(i) is not None and _layer(i) > _layer(m)
    ]
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ re-exports its children: drop those edges, keep the rest
    graph = {m: {i for i in d if not i.startswith(m + ".")} for m, d in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_nn_builds_no_optimizer_and_runs_no_loop():
    for path in (PACKAGE / "nn").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "optim":
                raise AssertionError(f"{path}: uses torch.optim")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "step":
                raise AssertionError(f"{path}:{node.lineno}: calls .step()")
        assert "import adam" not in path.read_text(encoding="utf-8"), path


def test_no_module_over_700_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 700}
    assert long == {}


def test_train_does_not_know_the_model_list():
    for path in (PACKAGE / "train").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for name in ("MODELS", "model_names", "register_model", "SEA_PLUGINS"):
            assert name not in text, f"{path} mentions {name}"
