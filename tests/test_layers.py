"""The import graph of jitlab/ goes one way: base -> core -> training -> scoring -> experiments -> commands.

Every module is parsed with ``ast`` (nothing is imported); each ``import`` and ``from ... import`` counts, at
module level and inside functions (a lazy import is still a dependency). A module imports only its own layer
and the layers before it; module-level imports form no cycle, and no import at all (lazy ones included) closes a
circle between parts (``part_of``: a package or module inside a layer's folder); no file is over 400 lines (nor
one of tests/), no function over 80. The layer of a module is read from its folder (``FOLDERS``): jitlab/core,
train, score, experiments, commands, and jitlab/ itself for base; a module in any other folder fails, so a new
module's place is a decision, and every layer folder must exist.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jitlab"
TESTS = Path(__file__).resolve().parent
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

LAYERS = ("base", "core", "training", "scoring", "experiments", "commands")
# a layer's folder under jitlab/; a module directly in jitlab/ is base (errors, atomic, identity, lock, rows, ...:
# it imports no jitlab module but base ones). A module is in its folder's layer: moving it is changing its layer.
FOLDERS: dict[str, str] = {"core": "core", "train": "training", "score": "scoring", "experiments": "experiments",
                           "commands": "commands"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function (imported when it runs)
    typing: bool = False  # under ``if TYPE_CHECKING:`` (never imported: annotations only)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(name: str, folders: dict[str, str]) -> str | None:
    """The layer of module ``name``: its folder's under jitlab/, base directly in jitlab/, None in another folder."""
    parts = name.split(".")
    if len(parts) > 2 or parts[-1] in folders:
        return folders.get(parts[1])
    return "base"


def _resolve(node: ast.ImportFrom, source: str, is_package: bool, known: set[str]) -> list[str]:
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        package = ".".join(base + ([node.module] if node.module else []))
    else:
        package = node.module or ""
    if not package.startswith("jitlab"):
        return []
    # `from jitlab.core.data import prepare` depends on the module jitlab.core.data.prepare,
    # `from jitlab.x import f` on x
    return sorted({f"{package}.{a.name}" if f"{package}.{a.name}" in known else package for a in node.names})


def edges_of(name: str, path: Path, known: set[str]) -> list[Edge]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Edge] = []

    def visit(node: ast.AST, lazy: bool, typing: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Edge(name, a.name, child.lineno, lazy, typing)
                             for a in child.names if a.name.startswith("jitlab"))
            elif isinstance(child, ast.ImportFrom):
                found.extend(Edge(name, t, child.lineno, lazy, typing)
                             for t in _resolve(child, name, path.name == "__init__.py", known))
            visit(child, inner, typing or _is_type_checking(child))

    visit(tree, False, False)
    return [e for e in found if e.target != name]


def import_graph(root: Path) -> tuple[dict[str, Path], list[Edge]]:
    found = modules(root)
    known = set(found)
    return found, [e for name, path in found.items() for e in edges_of(name, path, known)]


def unplaced(root: Path, folders: dict[str, str]) -> list[str]:
    """Modules in a folder of jitlab/ that is no layer's (a package directly in jitlab/ included)."""
    return [name for name, path in modules(root).items()
            if len(path.relative_to(root).parts) > 1 and path.relative_to(root).parts[0] not in folders]


def upward_imports(root: Path, folders: dict[str, str]) -> list[str]:
    """``a -> b (layer X -> Y)`` for every import of a higher layer's module."""
    _, edges = import_graph(root)
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for e in edges:
        source, target = layer_of(e.source, folders), layer_of(e.target, folders)
        if source and target and rank[target] > rank[source]:
            where = "inside a function, " if e.lazy else ""
            bad.append(f"{e.source} -> {e.target} (layer {source} -> {target}; {where}line {e.line})")
    return sorted(set(bad))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def stale_names(root: Path, folders: dict[str, str]) -> list[str]:
    """The layer folders that are not a package of ``root``."""
    return sorted(f for f in folders if not (root / f / "__init__.py").is_file())


def part_of(name: str, folders: dict[str, str] = FOLDERS) -> str:
    """``jitlab.experiments.grid.runner`` -> ``jitlab.experiments.grid``, ``jitlab.core.flow`` -> itself,
    ``jitlab.errors`` -> itself: the package or module a module belongs to, inside its layer's folder."""
    parts = name.split(".")
    return ".".join(parts[:3] if len(parts) > 2 and parts[1] in folders else parts[:2])


def import_cycles(root: Path) -> list[list[str]]:
    """The strongly connected groups (Tarjan) of the module-level import graph with more than one module."""
    found, edges = import_graph(root)
    graph: dict[str, set[str]] = {name: set() for name in found}
    for e in edges:
        if not e.lazy and e.target in graph:
            graph[e.source].add(e.target)
    return strong_groups(graph)


def part_cycles(root: Path) -> list[list[str]]:
    """The circles between parts (``part_of``), every import counted, lazy ones too (not ``TYPE_CHECKING`` ones)."""
    found, edges = import_graph(root)
    graph: dict[str, set[str]] = {part_of(name): set() for name in found}
    for e in edges:
        if not e.typing and e.target in found and part_of(e.source) != part_of(e.target):
            graph[part_of(e.source)].add(part_of(e.target))
    return strong_groups(graph)


def strong_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups (Tarjan) of ``graph`` with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(groups)


def long_files(root: Path, limit: int = MAX_FILE_LINES) -> list[str]:
    return [f"{p.relative_to(root.parent)}: {n} lines" for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    bad.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {length} lines")
    return bad


def _listing(items: list) -> str:
    return "\n  " + "\n  ".join(map(str, items))


# -- the rules on jitlab/ ---------------------------------------------------------------------------


def test_every_module_has_a_layer():
    missing = unplaced(PACKAGE, FOLDERS)
    assert not missing, f"modules outside the layer folders ({', '.join(FOLDERS)}):{_listing(missing)}"


def test_imports_go_down_the_layers_only():
    bad = upward_imports(PACKAGE, FOLDERS)
    assert not bad, f"imports from a lower layer to a higher one ({' -> '.join(LAYERS)}):{_listing(bad)}"


def test_no_module_level_import_cycle():
    cycles = import_cycles(PACKAGE)
    assert not cycles, f"module-level import cycles:{_listing(cycles)}"


def test_no_import_circle_between_parts():
    cycles = part_cycles(PACKAGE)
    assert not cycles, f"import circles between parts (lazy imports included):{_listing(cycles)}"


def test_every_name_in_the_layer_table_exists():
    stale = stale_names(PACKAGE, FOLDERS)
    assert not stale, f"layer folders missing from jitlab/:{_listing(stale)}"


def test_no_file_over_400_lines():
    bad = long_files(PACKAGE)
    assert not bad, f"files over {MAX_FILE_LINES} lines:{_listing(bad)}"


def test_no_function_over_80_lines():
    bad = long_functions(PACKAGE)
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:{_listing(bad)}"


def test_no_test_file_over_400_lines():
    bad = long_files(TESTS)
    assert not bad, f"test files over {MAX_FILE_LINES} lines:{_listing(bad)}"


# -- the checker itself finds what it is for ------------------------------------------------------


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    """A jitlab/ of layer folders with one upward import, one lazy, one cycle and a stray folder."""
    root = tmp_path / "jitlab"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "core/__init__.py": "",
        "core/flow.py": "from jitlab.experiments.grid.run import go\n",  # core -> experiments, at module level
        "core/models/__init__.py": "def build():\n    from jitlab.commands import cli  # lazy, still upward\n",
        "experiments/__init__.py": "",
        "experiments/grid/__init__.py": "",
        "experiments/grid/run.py": "from . import spec\n\ndef go():\n    pass\n",
        "experiments/grid/spec.py": "import jitlab.experiments.grid.run\n" + "x = 1\n" * 5,
        "commands/__init__.py": "",
        "commands/cli.py": ("from jitlab.experiments.grid.run import go\nfrom jitlab.core import flow\n"
                            "from jitlab import errors\n"),
        "stray/__init__.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_layer_is_the_folder():
    assert layer_of("jitlab.errors", FOLDERS) == "base"
    assert layer_of("jitlab", FOLDERS) == "base"
    assert layer_of("jitlab.core.models.jit", FOLDERS) == "core"
    assert layer_of("jitlab.train.module", FOLDERS) == "training"
    assert layer_of("jitlab.score", FOLDERS) == "scoring"
    assert layer_of("jitlab.stray.x", FOLDERS) is None
    assert part_of("jitlab.experiments.grid.runner") == "jitlab.experiments.grid"
    assert part_of("jitlab.core.flow") == "jitlab.core.flow"
    assert part_of("jitlab.errors") == "jitlab.errors"


def test_the_checker_finds_upward_imports_cycles_strays_and_long_code(toy_package):
    assert unplaced(toy_package, FOLDERS) == ["jitlab.stray"]
    bad = upward_imports(toy_package, FOLDERS)
    assert bad == ["jitlab.core.flow -> jitlab.experiments.grid.run (layer core -> experiments; line 1)",
                   "jitlab.core.models -> jitlab.commands.cli (layer core -> commands; inside a function, line 2)"]
    assert import_cycles(toy_package) == [["jitlab.experiments.grid.run", "jitlab.experiments.grid.spec"]]
    assert long_files(toy_package, limit=5) == ["jitlab/experiments/grid/spec.py: 6 lines"]
    tests = toy_package.parent / "tests"
    tests.mkdir()
    (tests / "test_ok.py").write_text("x = 1\n" * MAX_FILE_LINES)
    (tests / "test_long.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert long_files(tests) == ["tests/test_long.py: 401 lines"]
    assert long_functions(toy_package, limit=1) == ["jitlab/core/models/__init__.py:1 build: 2 lines",
                                                    "jitlab/experiments/grid/run.py:3 go: 2 lines"]


def test_the_checker_finds_missing_folders_and_circles_between_parts_through_lazy_imports(toy_package):
    assert stale_names(toy_package, FOLDERS) == ["score", "train"]
    assert part_cycles(toy_package) == []  # grid.run <-> grid.spec is inside one part
    (toy_package / "experiments" / "grid" / "plan.py").write_text(
        "def f():\n    from jitlab.core.models import build\n")
    assert part_cycles(toy_package) == [["jitlab.commands.cli", "jitlab.core.flow", "jitlab.core.models",
                                         "jitlab.experiments.grid"]]  # models -> cli
    (toy_package / "core" / "models" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from jitlab.commands import cli\n")
    assert part_cycles(toy_package) == []  # an annotation-only import runs nothing
