"""The package's import structure: layers import only downwards, and no module imports itself round a cycle.

Read from the source with ``ast`` (every ``import`` anywhere in a module counts, function-level ones too),
so the test needs nothing installed. The layers, lowest first (docs/ARCHITECTURE.md draws them):

0. ``config`` (typed configuration)
1. ``audio``, ``io``, ``data``, ``sound``, ``photo`` (decoding and resampling, media files and bags, synthetic
   data, sound-card I/O, the photo-avatar rig)
2. ``model`` (networks, losses, checkpoints)
3. ``runtime`` (streaming session, backends, scheduler, engine, settings, bench), ``official`` (the released
   DyStream networks and their converter)
4. ``eval`` (metrics, mouth readers, reports)
5. ``train``
6. ``commands``, ``cli``, ``nodes`` (replay, render, demo, make-bag; the command line; the ROS nodes)

One exception is allowed and named: ``model/__init__.py`` re-exports the streaming ``Pipeline`` / ``Session``
of ``runtime.session`` lazily, as the public API of DESIGN.md §4 for scripts outside the project.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dystream_ros"
RANK = {"config": 0, "audio": 1, "io": 1, "data": 1, "sound": 1, "photo": 1, "model": 2, "runtime": 3,
        "official": 3, "eval": 4, "train": 5, "commands": 6, "cli": 6, "nodes": 6}
GENERATED = {"msg", "srv"}  # rosidl-generated message packages
ALLOWED_UP = {("model/__init__.py", "dystream_ros.runtime"),  # `from dystream_ros.runtime import session`
              ("model/__init__.py", "dystream_ros.runtime.session")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Fully qualified dystream_ros modules (or packages) ``path`` imports."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}"))
    return {m for m in out if m == "dystream_ros" or m.startswith("dystream_ros.")}


def _is_module(name: str) -> bool:
    """``name`` is a module or package of the source tree (`from pkg import submodule`)."""
    rel = Path(*name.split("."))
    return (PKG.parent / rel).with_suffix(".py").is_file() or (PKG.parent / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_only_downwards():
    bad = []
    for path in PKG.rglob("*.py"):
        src = _layer(_module_name(path))
        if src is None or src in GENERATED:
            continue
        assert src in RANK, f"{src}: a new package needs a place in RANK (and in docs/ARCHITECTURE.md)"
        rel = str(path.relative_to(PKG))
        for target in _imports(path):
            dst = _layer(target)
            if dst is None or dst in GENERATED or dst == src or (rel, target) in ALLOWED_UP:
                continue
            assert dst in RANK, f"{rel} imports {target}: not a known layer"
            if RANK[dst] > RANK[src]:
                bad.append(f"{rel} -> {target}")
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of the modules themselves
    edges = defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            if not (a == b.rsplit(".", 1)[0] or b == a.rsplit(".", 1)[0]):
                edges[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import():
    """The parser resolves relative imports and `from package import module` (so a violation could fail)."""
    nodes = PKG / "nodes" / "dystream_node.py"
    assert "dystream_ros.runtime.engine" in _imports(nodes)
    assert "dystream_ros.nodes.support" in _imports(nodes)  # `from .support import ...`
    assert "dystream_ros.runtime.session" in _imports(PKG / "model" / "__init__.py")
