"""The package's floors: every import runs down a floor (or stays on its floor), no circles.

Read from the source with :mod:`ast` (the code is not run): every ``import`` of
an earthstream module, at module level or inside a function, outside
``if TYPE_CHECKING:``.  A *room* is a top-level module or a subpackage.  The
floors are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import earthstream

ROOT = Path(earthstream.__file__).parent

#: Rooms by floor, bottom first (docs/architecture.md, "Floors").
FLOORS: dict[str, int] = {
    **dict.fromkeys(["errors.py", "protocols.py", "_names.py", "_units.py", "_validate.py"], 0),
    **dict.fromkeys(["_records.py", "_batch.py"], 0),
    **dict.fromkeys(["storage/", "sampling/"], 1),
    "geo/": 2,
    **dict.fromkeys(["sources/", "vector/", "stac/"], 3),
    **dict.fromkeys(["engine/", "stats/"], 4),
    **dict.fromkeys(["_sharding.py", "_stream.py", "chips/"], 5),
    **dict.fromkeys(["multimodal/", "experiment/", "writeback/"], 6),
    **dict.fromkeys(["delivery/", "xbatcher/", "lightning/"], 7),
    **dict.fromkeys(["__init__.py", "datasets/", "testing/", "benchmarks/", "cli/"], 8),
    "__main__.py": 9,
}

#: Imports that run up a floor on purpose, only inside a function: ``stream.to_torch()``
#: and ``stream.to_jax()`` forward to the framework delivery when called (streams never
#: import torch or JAX).
ALLOWED_UP = {("_sharding.py", "delivery/")}

#: What the library's core (floors up to delivery) never imports.
APART = ("datasets/", "testing/", "benchmarks/", "cli/")


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] + "/" if (ROOT / parts[1]).is_dir() else parts[1] + ".py"


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def _imports() -> dict[tuple[str, str], list[tuple[int, bool]]]:
    """``(importer, imported)`` module pairs -> ``(line, at module level)`` each."""
    found: dict[tuple[str, str], list[tuple[int, bool]]] = defaultdict(list)
    for file in sorted(ROOT.rglob("*.py")):
        parts = file.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        tree = ast.parse(file.read_text())
        typing_only: set[int] = set()
        top_level: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(n) for n in ast.walk(node))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                top_level.add(id(node))
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    name = f"{source}.{alias.name}"
                    targets.append(name if _is_module(name) else source)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target.startswith("earthstream") and target != module:
                    found[(module, target)].append((node.lineno, id(node) in top_level))
    return found


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


IMPORTS = _imports()


def test_every_room_has_a_floor() -> None:
    rooms = {_room(m) for pair in IMPORTS for m in pair}
    assert rooms <= set(FLOORS), sorted(rooms - set(FLOORS))


def test_imports_run_down() -> None:
    """No import runs up a floor (but the named forwarders, inside functions)."""
    up = []
    for (a, b), where in IMPORTS.items():
        ra, rb = _room(a), _room(b)
        if FLOORS[ra] >= FLOORS[rb]:
            continue
        if (ra, rb) in ALLOWED_UP and not any(top for _, top in where):
            continue
        up.append(f"{a}:{where[0][0]} imports {b} ({ra} floor {FLOORS[ra]} -> {FLOORS[rb]})")
    assert not up, "\n".join(up)


def test_no_import_circles() -> None:
    """Modules import each other in no circle (a package's ``__init__`` importing its
    own modules is how it re-exports them); nor do rooms, but for the forwarders."""
    modules: dict[str, set[str]] = defaultdict(set)
    rooms: dict[str, set[str]] = defaultdict(set)
    for (a, b), where in IMPORTS.items():
        ra, rb = _room(a), _room(b)
        if (ra, rb) in ALLOWED_UP and not any(top for _, top in where):
            continue  # a forwarder, importing when called: no circle at import time
        if not b.startswith(a + "."):
            modules[a].add(b)
        if ra != rb:
            rooms[ra].add(rb)
    assert _circles(modules) == []
    assert _circles(rooms) == []


def test_core_does_not_import_the_rooms_apart() -> None:
    """``benchmarks/``, ``testing/``, ``datasets/`` and ``cli/`` stay importable, but the
    library's core never imports them."""
    bad = [
        f"{a} imports {b}"
        for (a, b) in IMPORTS
        if FLOORS[_room(a)] < FLOORS["__init__.py"] and _room(b) in APART
    ]
    assert not bad, bad
