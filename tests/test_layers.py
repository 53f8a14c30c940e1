"""The package's layering (issue 17): every module under mlip/ belongs to one layer, may import only
from its own layer or below, and no two modules import each other, directly or through others.

Layers, bottom to top (README "Layout"; a module not listed here fails the test, so a new module
has to be placed deliberately):

    0 mlip (package __init__: version), mlip._core (compiled)
    1 data: mlip.data, mlip.io, mlip.datagen, mlip.metrics, mlip.plots (error reports and their pictures)
    2 neighbours/graph: mlip.neighbors, mlip.graph
    3 models: mlip.models
    4 training: mlip.train
    5 export: mlip.export
    6 engine (the compiled Engine lives in mlip._core; no Python module so far)
    7 front-ends: mlip.calculator, mlip.md, mlip.lammps_support
    8 active learning: mlip.active
    9 CLI: mlip.cli, mlip.__main__

Every `import` / `from ... import` counts, wherever it is (module level, inside functions, under
`if TYPE_CHECKING`), relative ones resolved against the importing module's package. The one allowed
exception is `mlip/__init__.py`'s lazy `MLIPCalculator` re-export (`from mlip.calculator import ...`
inside `__getattr__`), which exists so that `from mlip import MLIPCalculator` works without making
`import mlip` load torch.

The checker is plain functions over a source tree, so the self-tests below run it on small synthetic
packages in tmp_path and check that it really fails on an upward import and on a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

REPO = Path(__file__).resolve().parents[1]

LAYERS: Dict[str, int] = {
    "mlip": 0,
    "mlip._core": 0,
    "mlip.data": 1,
    "mlip.io": 1,
    "mlip.datagen": 1,
    "mlip.metrics": 1,
    "mlip.checks": 1,
    "mlip.plots": 1,
    "mlip.neighbors": 2,
    "mlip.graph": 2,
    "mlip.models": 3,
    "mlip.train": 4,
    "mlip.export": 5,
    "mlip.calculator": 7,
    "mlip.md": 7,
    "mlip.lammps_support": 7,
    "mlip.active": 8,
    "mlip.cli": 9,
    "mlip.__main__": 9,
}

# (importing module, imported module): the only edges allowed to point upward (and left out of the
# cycle search: every module importing `mlip` would otherwise close a loop through it).
ALLOWED: Set[Tuple[str, str]] = {("mlip", "mlip.calculator")}

Import = Tuple[Path, int, str]  # (file, line, imported module)


def module_files(root: Path, package: str) -> Dict[str, List[Path]]:
    """Dotted module name -> its file(s), for every .py file of `package` under `root` (two files
    when both `x.py` and `x/__init__.py` exist: both are read, whichever Python picks)."""
    out: Dict[str, List[Path]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.setdefault(".".join(parts), []).append(path)
    return out


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """Absolute name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path, known: Iterable[str], package: str, root: Path) -> List[Import]:
    """Every import of `package` modules in one file. `from X import Y` names module X.Y when that
    is a module (a file of the tree, or a known compiled one), else X."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out: List[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            targets = []
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append(sub if sub in known else base)
        else:
            continue
        for t in targets:
            if t == package or t.startswith(package + "."):
                out.append((path.relative_to(root), node.lineno, t))
    return sorted(out)


def collect(root: Path, package: str, extra_modules: Sequence[str] = ()) -> Tuple[Dict[str, List[Path]],
                                                                                   Dict[str, List[Import]]]:
    files = module_files(root, package)
    known = set(files) | set(extra_modules)
    return files, {m: [imp for p in paths for imp in imports_of(m, p, known, package, root)]
                   for m, paths in files.items()}


def layer_of(module: str, layers: Mapping[str, int]) -> Optional[int]:
    """Layer of the longest prefix of `module` in `layers` (None: not placed). The top-level
    package's entry covers only its `__init__`, so a new module directly under it is unplaced."""
    if module in layers:
        return layers[module]
    parts = module.split(".")
    for k in range(len(parts) - 1, 1, -1):
        key = ".".join(parts[:k])
        if key in layers:
            return layers[key]
    return None


def layer_violations(files: Mapping[str, List[Path]], imports: Mapping[str, List[Import]],
                     layers: Mapping[str, int], allowed: Set[Tuple[str, str]], root: Path) -> List[str]:
    """One line per unplaced module and per import from a higher layer."""
    problems: List[str] = []
    for mod, paths in files.items():
        own = layer_of(mod, layers)
        if own is None:
            problems.append(f"{paths[0].relative_to(root)}: module {mod} is not in the layer map "
                            "(tests/test_layers.py LAYERS)")
            continue
        for rel, line, target in imports[mod]:
            theirs = layer_of(target, layers)
            if theirs is None:
                problems.append(f"{rel}:{line}: imports {target}, which is not in the layer map")
            elif theirs > own and (mod, target) not in allowed:
                problems.append(f"{rel}:{line}: {mod} (layer {own}) imports {target} (layer {theirs})")
    return problems


def find_cycles(imports: Mapping[str, List[Import]], allowed: Set[Tuple[str, str]]) -> List[List[str]]:
    """One cycle (a → … → a) per strongly connected group of modules (Tarjan), self-imports included."""
    graph: Dict[str, Set[str]] = {m: set() for m in imports}
    for mod, targets in imports.items():
        for _, _, t in targets:
            if t in graph and (mod, t) not in allowed:
                graph[mod].add(t)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def strongconnect(v: str) -> None:  # recursion depth = module count: fine for this tree
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                groups.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in groups:
        members = set(comp)
        start = comp[0]
        # breadth-first path start → … → start inside the group: the shortest cycle through start
        prev: Dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = prev.get(v)
        cycles.append([start] + path[1:][::-1] + [start])
    return cycles


def check_tree(root: Path, package: str, layers: Mapping[str, int], allowed: Set[Tuple[str, str]],
               extra_modules: Sequence[str] = ()) -> List[str]:
    files, imports = collect(root, package, extra_modules)
    problems = layer_violations(files, imports, layers, allowed, root)
    problems += ["import cycle: " + " -> ".join(c) for c in find_cycles(imports, allowed)]
    return problems


# ------------------------------------------------------------------------------------ the real tree
def test_mlip_respects_its_layers():
    files, _ = collect(REPO, "mlip")
    assert len(files) > 30, f"found only {len(files)} modules under {REPO / 'mlip'}"
    problems = check_tree(REPO, "mlip", LAYERS, ALLOWED, extra_modules=["mlip._core"])
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_the_one_exception_is_still_needed():
    """If mlip/__init__.py stops importing the calculator, drop the exception too."""
    files, imports = collect(REPO, "mlip")
    assert ("mlip", "mlip.calculator") in {("mlip", t) for _, _, t in imports["mlip"]}


# ------------------------------------------------------------------------------------ self-tests
def _tree(tmp_path: Path, sources: Dict[str, str]) -> Path:
    for rel, text in sources.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


_TOY_LAYERS = {"toy": 0, "toy.low": 1, "toy.mid": 2, "toy.high": 3}


def test_checker_finds_upward_imports(tmp_path):
    root = _tree(tmp_path, {
        "toy/__init__.py": "",
        "toy/low.py": "import os\n\ndef f():\n    from toy.high import thing\n    return thing\n",
        "toy/mid/__init__.py": "from . import core\n",
        "toy/mid/core.py": "from ..low import f\nfrom .. import high\n",
        "toy/high.py": "from toy.mid.core import f\nthing = 1\n",
    })
    problems = check_tree(root, "toy", _TOY_LAYERS, set())
    upward = [p for p in problems if "imports" in p and "cycle" not in p]
    assert any(p.startswith(str(Path("toy/low.py")) + ":4:") and "toy.high (layer 3)" in p for p in upward), problems
    # relative `from .. import high` inside toy/mid/core.py resolves to the module toy.high
    assert any(p.startswith(str(Path("toy/mid/core.py")) + ":2:") and "toy.high" in p for p in upward), problems
    assert len(upward) == 2, problems
    # allowing exactly those edges silences them
    assert not [p for p in check_tree(root, "toy", _TOY_LAYERS, {("toy.low", "toy.high"),
                                                                 ("toy.mid.core", "toy.high")})
                if "cycle" not in p]


def test_checker_finds_cycles_within_a_layer(tmp_path):
    root = _tree(tmp_path, {
        "toy/__init__.py": "",
        "toy/low/__init__.py": "",
        "toy/low/a.py": "from toy.low.b import x\n",
        "toy/low/b.py": "x = 1\n\ndef g():\n    from toy.low import c\n",
        "toy/low/c.py": "import toy.low.a\n",
    })
    problems = check_tree(root, "toy", _TOY_LAYERS, set())
    assert problems == ["import cycle: toy.low.a -> toy.low.b -> toy.low.c -> toy.low.a"], problems


def test_checker_flags_unplaced_modules(tmp_path):
    root = _tree(tmp_path, {"toy/__init__.py": "", "toy/stray.py": "import toy\n"})
    problems = check_tree(root, "toy", {"toy": 0}, set())
    assert len(problems) == 1 and "toy.stray is not in the layer map" in problems[0], problems


def test_checker_reads_both_files_of_a_doubly_defined_module(tmp_path):
    """`x.py` next to `x/__init__.py` (a transitional shim): an upward import in either is found."""
    root = _tree(tmp_path, {
        "toy/__init__.py": "",
        "toy/high.py": "",
        "toy/low.py": "",
        "toy/low/__init__.py": "from toy import high\n",
    })
    problems = check_tree(root, "toy", _TOY_LAYERS, set())
    assert problems == [f"{Path('toy/low/__init__.py')}:1: toy.low (layer 1) imports toy.high (layer 3)"], problems
