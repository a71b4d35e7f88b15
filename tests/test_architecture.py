"""ARCHITECTURE.md's import levels hold: every import of one blvnb room from another (at module level or
inside a function) goes to the room's own level or an earlier one."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "blvnb"
LEVELS = [("errors", "classes", "io", "devices", "paths", "paper", "__init__"), ("data", "models", "losses", "pseudo"),
          ("engine",), ("experiments", "claims", "viz", "pages"), ("reproduce", "publish", "cli", "__main__")]
LEVEL = {room: i for i, rooms in enumerate(LEVELS) for room in rooms}
#: (importing room, imported room): exceptions ARCHITECTURE.md would list (none today)
ALLOWED: set[tuple[str, str]] = set()


def room_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("blvnb"):
            if node.module == "blvnb":  # from blvnb import data, ...
                yield from (f"blvnb.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("blvnb"))


def test_every_room_of_the_package_has_a_level():
    rooms = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert rooms <= set(LEVEL), f"rooms without a level in ARCHITECTURE.md: {sorted(rooms - set(LEVEL))}"


def test_imports_go_to_the_same_level_or_an_earlier_one():
    wrong = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        src = room_of(".".join(rel.parts))
        for mod in imports(path):
            dst = room_of(mod)
            if dst in LEVEL and LEVEL[dst] > LEVEL[src] and (src, dst) not in ALLOWED:
                wrong.append(f"{rel}: {src} (level {LEVEL[src] + 1}) imports {mod} (level {LEVEL[dst] + 1})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The check is not vacuous: a data module importing the engine is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from blvnb.engine import loop\n")
    assert list(imports(bad)) == ["blvnb.engine"] and LEVEL["engine"] > LEVEL["data"]


def import_graph() -> dict[str, set[str]]:
    """module → the blvnb modules it imports (``from blvnb.x import y`` counts as ``blvnb.x.y`` where that is
    a module), at module level or inside functions."""
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph = {}
    for m, p in mods.items():
        out = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("blvnb"):
                out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                        for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("blvnb")}
        graph[m] = {t for t in out if t in mods and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles (ARCHITECTURE.md: one way down): " + "; ".join(" ↔ ".join(c) for c in found)


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
