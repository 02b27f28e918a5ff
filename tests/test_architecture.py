"""The package's shape: no import cycles (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import mpv_srunet

ROOT = Path(mpv_srunet.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """mpv_srunet modules that ``name`` imports anywhere (TYPE_CHECKING blocks too: they
    are cycles for a reader even where Python never runs them)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:  # relative: drop level-1 trailing parts of the package
                base = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else []))
            else:
                base = n.module or ""
            for a in n.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
    return {m for m in out if m in mods and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert graph["mpv_srunet.filter"] >= {"mpv_srunet.colour"}  # the walk sees imports
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_trt_holds_only_tensorrt_parts():
    """GPU code shared by torch-CUDA and TensorRT lives in mpv_srunet/gpu, not under trt/."""
    mods = _modules()
    for name, path in mods.items():
        if name.startswith("mpv_srunet.backends.torch_cuda"):
            assert not any(m.startswith("mpv_srunet.trt") for m in _imports(name, path, mods)), name
