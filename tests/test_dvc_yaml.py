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
                            "train_scratch", "train_transfer", "evaluate", "export_torchscript"]


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


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_reads_only_the_params_it_declares(name: str) -> None:
    """Every params.yaml key the stage's own module reads is declared (or covered by a declared section)."""
    stage = STAGES[name]
    module = re.search(r"python -m stages\.(\w+)", stage["cmd"]).group(1)
    source = (REPO / f"stages/{module}.py").read_text()
    declared = set(stage.get("params", []))
    read = set()
    for top in PARAMS:
        if re.search(rf"params(?:\.get\()?\[?[\"']{top}[\"']", source):
            read.add(top)
    for top in read:
        covered = top in declared or any(d.startswith(top + ".") for d in declared)
        assert covered, f"stage {name} reads params[{top!r}] but dvc.yaml does not declare it"
