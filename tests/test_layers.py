"""The import graph of jitlab/ goes one way: base -> core -> training -> scoring -> experiments -> commands.

Every module is parsed with ``ast`` (nothing is imported); each ``import`` and ``from ... import`` counts, at
module level and inside functions (a lazy import is still a dependency). A module imports only its own layer
and the layers before it; module-level imports form no cycle, and no import at all (lazy ones included) closes a
circle between parts (``jitlab.X``: a package or a top-level module); no file is over 400 lines, no function
over 80. A new module must be given a layer in ``LAYER_OF`` (an unplaced module fails), so its place is a
decision, and every name in it must exist (a stale name fails).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jitlab"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

LAYERS = ("base", "core", "training", "scoring", "experiments", "commands")
# module or package (every module under it) -> layer; the longest matching name decides
LAYER_OF: dict[str, str] = {
    # base: no jitlab imports but each other
    "jitlab": "base", "jitlab.errors": "base", "jitlab.atomic": "base", "jitlab.identity": "base",
    "jitlab.lock": "base", "jitlab.classpath": "base",
    "jitlab.rows": "base",  # a metrics row: its sweep point and report columns (evaluation writes, reports read)
    "jitlab.fitview": "base",  # a typed view of a resolved fit config (data, net, trainer) instead of raw lookups
    "jitlab.devices": "base",  # this process's device index on its node (torchrun, SLURM, process group)
    # core: the paper's objects
    "jitlab.flow": "core", "jitlab.precond": "core", "jitlab.sampling": "core", "jitlab.models": "core",
    "jitlab.data": "core", "jitlab.images": "core",
    "jitlab.settings": "core",  # the typed sampler/evaluation knobs: only sampling below them; callbacks use them
    # training: the LightningModule and what a training run keeps
    "jitlab.module": "training", "jitlab.ema": "training", "jitlab.callbacks": "training",
    "jitlab.checkpoint": "training", "jitlab.resume": "training",
    "jitlab.fitplan": "training",  # the memory plan of a fit: fixed bytes per strategy, micro-batch, sharding
    "jitlab.strategy": "training",  # DDP / FSDP2 strategies, sharded checkpoints and their consolidation
    "jitlab.convert": "training",  # release checkpoints -> a JiTModule checkpoint
    # scoring library: metrics, generation, evaluation; what uses them during or before a fit
    "jitlab.metrics": "scoring", "jitlab.generate": "scoring", "jitlab.evaluation": "scoring",
    "jitlab.metrics.shipped": "scoring",  # the shipped reference classifiers' weights and manifest
    "jitlab.shards": "scoring",  # generated images kept as shards (a resumable large sampling)
    "jitlab.periodic_eval": "scoring",  # a training callback that evaluates: above the evaluation library
    "jitlab.preflight": "scoring",  # checks a fit's scoring needs (reference statistics, Inception weights)
    "jitlab.fitconfig": "scoring",  # the fit's LightningCLI: its callbacks include the periodic evaluation
    "jitlab.models.reg_align": "scoring",  # REG's alignment loss: its encoder may be a shipped reference classifier
    # experiments: runs and measures, reports
    "jitlab.grid": "experiments", "jitlab.report": "experiments", "jitlab.toy": "experiments",
    "jitlab.bench": "experiments",
    "jitlab.rundir": "experiments",  # the run-directory format: grid writes it, report reads it
    # commands: the verbs and the dispatcher
    "jitlab.commands": "commands", "jitlab.cli": "commands",
}


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


def layer_of(name: str, layer_map: dict[str, str]) -> str | None:
    if name in layer_map:
        return layer_map[name]
    parts = name.split(".")
    for end in range(len(parts) - 1, 1, -1):  # "jitlab" alone places only the package's own __init__
        prefix = ".".join(parts[:end])
        if prefix in layer_map:
            return layer_map[prefix]
    return None


def _resolve(node: ast.ImportFrom, source: str, is_package: bool, known: set[str]) -> list[str]:
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        package = ".".join(base + ([node.module] if node.module else []))
    else:
        package = node.module or ""
    if not package.startswith("jitlab"):
        return []
    # `from jitlab.data import prepare` depends on the module jitlab.data.prepare, `from jitlab.x import f` on x
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


def unplaced(root: Path, layer_map: dict[str, str]) -> list[str]:
    return [name for name in modules(root) if layer_of(name, layer_map) is None]


def upward_imports(root: Path, layer_map: dict[str, str]) -> list[str]:
    """``a -> b (layer X -> Y)`` for every import of a higher layer's module."""
    _, edges = import_graph(root)
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for e in edges:
        source, target = layer_of(e.source, layer_map), layer_of(e.target, layer_map)
        if source and target and rank[target] > rank[source]:
            where = "inside a function, " if e.lazy else ""
            bad.append(f"{e.source} -> {e.target} (layer {source} -> {target}; {where}line {e.line})")
    return sorted(set(bad))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def stale_names(root: Path, layer_map: dict[str, str]) -> list[str]:
    """The names of ``layer_map`` that are neither a module nor a package of ``root``."""
    found = modules(root)
    return sorted(n for n in layer_map if n not in found and not any(m.startswith(n + ".") for m in found))


def part_of(name: str) -> str:
    """``jitlab.grid.runner`` -> ``jitlab.grid``: the package or top-level module a module belongs to."""
    return ".".join(name.split(".")[:2])


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
    missing = unplaced(PACKAGE, LAYER_OF)
    assert not missing, f"modules without a layer (add them to LAYER_OF in {Path(__file__).name}):{_listing(missing)}"


def test_imports_go_down_the_layers_only():
    bad = upward_imports(PACKAGE, LAYER_OF)
    assert not bad, f"imports from a lower layer to a higher one ({' -> '.join(LAYERS)}):{_listing(bad)}"


def test_no_module_level_import_cycle():
    cycles = import_cycles(PACKAGE)
    assert not cycles, f"module-level import cycles:{_listing(cycles)}"


def test_no_import_circle_between_parts():
    cycles = part_cycles(PACKAGE)
    assert not cycles, f"import circles between parts (lazy imports included):{_listing(cycles)}"


def test_every_name_in_the_layer_table_exists():
    stale = stale_names(PACKAGE, LAYER_OF)
    assert not stale, f"names in LAYER_OF that are no module or package (remove them):{_listing(stale)}"


def test_no_file_over_400_lines():
    bad = long_files(PACKAGE)
    assert not bad, f"files over {MAX_FILE_LINES} lines:{_listing(bad)}"


def test_no_function_over_80_lines():
    bad = long_functions(PACKAGE)
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:{_listing(bad)}"


# -- the checker itself finds what it is for ------------------------------------------------------


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    """jitlab/{flow,models/__init__,grid/run,grid/spec,cli}.py with one upward import, one lazy, one cycle."""
    root = tmp_path / "jitlab"
    files = {
        "__init__.py": "",
        "flow.py": "from jitlab.grid.run import go\n",  # core -> experiments, at module level
        "models/__init__.py": "def build():\n    from jitlab import cli  # lazy, still upward\n",
        "grid/__init__.py": "",
        "grid/run.py": "from . import spec\n\ndef go():\n    pass\n",
        "grid/spec.py": "import jitlab.grid.run\n" + "x = 1\n" * 5,
        "cli.py": "from jitlab.grid.run import go\nfrom jitlab import flow\n",
        "stray.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_finds_upward_imports_cycles_strays_and_long_code(toy_package):
    layers = {"jitlab": "base", "jitlab.flow": "core", "jitlab.models": "core", "jitlab.grid": "experiments",
              "jitlab.cli": "commands"}
    assert unplaced(toy_package, layers) == ["jitlab.stray"]
    bad = upward_imports(toy_package, layers)
    assert bad == ["jitlab.flow -> jitlab.grid.run (layer core -> experiments; line 1)",
                   "jitlab.models -> jitlab.cli (layer core -> commands; inside a function, line 2)"]
    assert import_cycles(toy_package) == [["jitlab.grid.run", "jitlab.grid.spec"]]
    assert long_files(toy_package, limit=5) == ["jitlab/grid/spec.py: 6 lines"]
    assert long_functions(toy_package, limit=1) == ["jitlab/grid/run.py:3 go: 2 lines",
                                                    "jitlab/models/__init__.py:1 build: 2 lines"]


def test_the_checker_finds_stale_names_and_circles_between_parts_through_lazy_imports(toy_package):
    assert stale_names(toy_package, {"jitlab.flow": "core", "jitlab.grid": "experiments", "jitlab.gone": "core",
                                     "jitlab.grid.gone": "experiments"}) == ["jitlab.gone", "jitlab.grid.gone"]
    assert part_cycles(toy_package) == []  # grid.run <-> grid.spec is inside one part
    (toy_package / "grid" / "plan.py").write_text("def f():\n    from jitlab.models import build\n")
    assert part_cycles(toy_package) == [["jitlab.cli", "jitlab.flow", "jitlab.grid", "jitlab.models"]]  # models -> cli
    (toy_package / "models" / "__init__.py").write_text("from typing import TYPE_CHECKING\n\n"
                                                        "if TYPE_CHECKING:\n    from jitlab import cli\n")
    assert part_cycles(toy_package) == []  # an annotation-only import runs nothing
