"""dvc.yaml declares what each stage really uses, so DVC reruns exactly what changed."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


LOCAL_PACKAGES = ("landmarks", "stages")


def module_files(name: str) -> list[str]:
    """The files that importing module `name` runs: the __init__.py of each enclosing sub-package and
    the module's own file (`a/b.py`, or `a/b/__init__.py` for a package). The top-level packages'
    __init__.py files are left out: they hold only a version string and no stage code."""
    parts = name.split(".")
    files = []
    for depth in range(2, len(parts) + 1):
        stem = "/".join(parts[:depth])
        files += [rel for rel in (f"{stem}.py", f"{stem}/__init__.py") if (REPO / rel).exists()][:1]
    return files


def imported_modules(path: Path, tree: ast.AST) -> list[str]:
    """Dotted names of what `path` imports, relative imports resolved; `from pkg import sub` yields pkg.sub too."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def local_imports(path: Path) -> set[str]:
    """Files under landmarks/ and stages/ that `path` imports, transitively."""
    seen: set[str] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        for name in imported_modules(current, ast.parse(current.read_text())):
            if name.split(".")[0] not in LOCAL_PACKAGES:
                continue
            for rel in module_files(name):
                if rel not in seen:
                    seen.add(rel)
                    todo.append(REPO / rel)
    return seen


def test_the_dag_is_the_product_pipeline() -> None:
    assert list(STAGES) == ["fetch_csv", "select_classes", "download", "split", "compute_stats",
                            "train_scratch", "train_transfer", "evaluate", "export"]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_depends_on_every_module_it_imports_and_no_other(name: str) -> None:
    stage = STAGES[name]
    module = re.search(r"python -m stages\.(\w+)", stage["cmd"]).group(1)
    entry = f"stages/{module}.py"
    code = {entry} | local_imports(REPO / entry)
    declared = {d for d in stage["deps"] if isinstance(d, str) and d.endswith(".py")}
    assert declared == code, f"missing: {sorted(code - declared)}, not imported: {sorted(declared - code)}"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_exist_in_params_yaml(name: str) -> None:
    for key in STAGES[name].get("params", []):
        node = PARAMS
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name} declares {key}, which params.yaml lacks"
            node = node[part]


def params_read(source: str) -> set[str]:
    """The params.yaml keys a stage module reads from its `params` object: params.split.val -> split.val;
    a section used whole (passed on, or asdict(params.synthetic)) -> synthetic. Simple aliases are
    followed (`g = params.gldv2`, `dataset, g = params.dataset, params.gldv2`)."""
    tree = ast.parse(source)
    aliases: dict[str, list[str]] = {"params": []}
    defining: set[int] = set()  # attribute nodes that only define an alias

    def chain(node: ast.AST) -> list[str] | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            return aliases[node.id] + parts[::-1]
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t, v = node.targets[0], node.value
            pairs = list(zip(t.elts, v.elts)) if isinstance(t, ast.Tuple) and isinstance(v, ast.Tuple) else [(t, v)]
            for target, value in pairs:
                if isinstance(target, ast.Name) and isinstance(value, ast.Attribute) and (c := chain(value)) \
                        and params_key(c) == ".".join(c) and isinstance(params_node(c), dict):
                    aliases[target.id] = c  # a whole section bound to a name: its reads come through the name
                    defining.add(id(value))
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner and id(node) not in defining:
            c = chain(node)
        elif isinstance(node, ast.Name) and node.id in aliases and node.id != "params" and isinstance(node.ctx, ast.Load) \
                and id(node) not in inner:
            c = aliases[node.id]  # an alias used whole
        else:
            continue
        if c:
            read.add(params_key(c))
    return {k for k in read if k}


def params_node(parts: list[str]):
    node = PARAMS
    for part in parts:
        node = node[part]
    return node


def params_key(parts: list[str]) -> str:
    """The longest prefix of `parts` that is a params.yaml key (params.split.fractions -> split)."""
    node, good = PARAMS, []
    for part in parts:
        if not (isinstance(node, dict) and part in node):
            break
        good.append(part)
        node = node[part]
    return ".".join(good)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_reads_only_the_params_it_declares_and_declares_only_what_it_reads(name: str) -> None:
    """DVC reruns a stage when a declared param changes: an undeclared read would be stale, an unused
    declaration a needless rerun. Reads are found in the stage's own module (library code takes objects)."""
    stage = STAGES[name]
    module = re.search(r"python -m stages\.(\w+)", stage["cmd"]).group(1)
    source = (REPO / f"stages/{module}.py").read_text()
    read = params_read(source)
    declared = set(stage.get("params", []))
    for key in read:
        assert any(key == d or key.startswith(d + ".") for d in declared), f"{name} reads {key} but dvc.yaml does not declare it"
    for d in declared:
        assert any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for k in read), f"{name} declares {d} but never reads it"


def test_stages_read_params_only_through_the_typed_layer() -> None:
    """No stage parses params.yaml itself: stage_params() checks every value once, the same way."""
    for path in (REPO / "stages").glob("*.py"):
        if path.name == "common.py":
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {"yaml", "load_params"} & (names | modules), path


def test_the_params_reader_sees_every_way_a_stage_reads_params() -> None:
    source = """
params = stage_params()
a = params.split.val
g = params.gldv2
x = g.max_classes
dataset, t = params.dataset, params.tagging
use(t)
settings = asdict(params.synthetic)
f = params.split.fractions
"""
    assert params_read(source) == {"split.val", "gldv2.max_classes", "dataset", "tagging", "synthetic", "split"}
