"""Shared fixtures: the real params.yaml, shrunk to something a 2-core CPU runs in seconds."""
from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's python, dvc and landmarks
# What a temp copy of the project needs to run the pipeline (data, models and reports are produced).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "pyproject.toml", "landmarks", "stages", "photos", ".dvc/config", ".dvcignore")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def shrink(params: dict[str, Any]) -> dict[str, Any]:
    """The real params with tiny data, one epoch, CPU and no workers: the real code, in seconds."""
    p = copy.deepcopy(params)
    p["synthetic"].update(num_classes=3, images_per_class=10, image_size=64)
    p["download"].update(workers=4, image_size=64, max_retries=1, backoff=0.01)
    p["split"]["min_images_per_class"] = 3
    p["compute_stats"]["image_size"] = 32
    for stage in ("train_scratch", "train_transfer"):
        p[stage].update(epochs=1, batch_size=8, image_size=32, device="cpu", num_workers=0, warmup_epochs=0)
    p["evaluate"]["batch_size"] = 16
    return p


@pytest.fixture(scope="session")
def real_params() -> dict[str, Any]:
    """params.yaml exactly as committed."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def tiny_params(real_params: dict[str, Any]) -> dict[str, Any]:
    """The real params, shrunk (a fresh copy per test, safe to modify)."""
    return shrink(real_params)


@pytest.fixture
def in_project(tmp_path: Path, tiny_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp copy of the project with the tiny params.yaml, as the current directory."""
    root = copy_project(tmp_path / "project", tiny_params)
    monkeypatch.chdir(root)
    return root


def copy_project(dest: Path, params: dict[str, Any]) -> Path:
    """Copy the project's code and pipeline into `dest` and write `params` as its params.yaml."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def make_spec(stats: dict[str, Any], **overrides: Any):
    """A small TrainSpec for tests: vgg at 32 px on the CPU, two epochs; `overrides` replace any field."""
    from landmarks.train_spec import TrainSpec

    fields = dict(arch="vgg", pretrained=False, freeze="none", dropout=0.3, image_size=32, crop_fraction=0.875,
                  mean=tuple(stats["mean"]), std=tuple(stats["std"]), augment="strong", epochs=2, batch_size=8,
                  optimizer="adamw", lr=3e-3, backbone_lr=None, momentum=0.9, weight_decay=0.0, scheduler="cosine",
                  warmup_epochs=0.5, step_size=7, gamma=0.1, label_smoothing=0.0, device="cpu", num_workers=0, seed=3)
    return TrainSpec(**{**fields, **overrides})


def download_params(**overrides: Any):
    """The real params.yaml's download section with `overrides`, checked as the stage checks it."""
    from landmarks.params import DownloadParams, parse

    return parse(DownloadParams, "download", {**yaml.safe_load((REPO / "params.yaml").read_text())["download"], **overrides})


def draw_shape(kind: int, rng: np.random.Generator, size: int) -> Image.Image:
    """A simple, learnable image for class `kind`: a shape at a random place on a random background."""
    img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 120, 3)))
    draw = ImageDraw.Draw(img)
    s = int(rng.integers(size // 3, size // 2))
    x, y = (int(v) for v in rng.integers(0, size - s, 2))
    color = tuple(int(c) for c in rng.integers(140, 256, 3))
    if kind % 3 == 0:
        draw.ellipse([x, y, x + s, y + s], fill=color)
    elif kind % 3 == 1:
        draw.rectangle([x, y, x + s, y + s], fill=color)
    else:
        draw.polygon([(x, y + s), (x + s // 2, y), (x + s, y + s)], fill=color)
    return img


def make_image_tree(root: Path, *, num_classes: int = 3, per_class: int = 12, size: int = 48, seed: int = 0) -> dict[str, Path]:
    """Images at <root>/images/<landmark_id>/<id>.jpg plus selected.csv and classes.csv, as the data stages write them."""
    rng = np.random.default_rng(seed)
    rows, classes = [], []
    for k in range(num_classes):
        landmark_id = 1000 + 7 * k
        classes.append({"landmark_id": landmark_id, "name": f"Shape {k}",
                        "category": f"http://commons.wikimedia.org/wiki/Category:Shape_{k}"})
        for i in range(per_class):
            image_id = hashlib.sha256(f"{seed}-{k}-{i}".encode()).hexdigest()[:16]
            path = root / "images" / str(landmark_id) / f"{image_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_shape(k, rng, size).save(path, quality=92)
            rows.append({"id": image_id, "url": path.resolve().as_uri(), "landmark_id": landmark_id})
    pd.DataFrame(rows).to_csv(root / "selected.csv", index=False)
    pd.DataFrame(classes).to_csv(root / "classes.csv", index=False)
    return {"images": root / "images", "selected": root / "selected.csv", "classes": root / "classes.csv"}


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small learnable dataset already split, with stats: the inputs of the training stages."""
    from landmarks.split import class_table, stratified_split, available_rows
    from landmarks.stats import channel_stats
    from landmarks.data import image_path

    root = tmp_path_factory.mktemp("tree")
    paths = make_image_tree(root)
    rows = available_rows(pd.read_csv(paths["selected"], dtype={"id": str}), paths["images"])
    splits, _ = stratified_split(rows, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=0, min_images_per_class=3)
    out = root / "splits"
    out.mkdir()
    for name, frame in splits.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    class_table(pd.read_csv(paths["classes"]), splits).to_csv(out / "classes.csv", index=False)
    train = splits["train"]
    stats = channel_stats([image_path(paths["images"], l, i) for l, i in zip(train["landmark_id"], train["id"])], image_size=32)
    return {**paths, "splits": out, "stats": stats}


def run(cmd: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc_env(root: Path) -> dict[str, str]:
    """The environment of a `dvc` (or `git`) command in a temp project: the venv first on PATH, a HOME of its
    own (so no global DVC or git config, and no shared cache dir, leaks in), the project importable, a git identity."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "HOME": str(root.parent), "PYTHONPATH": str(root),
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def dvc(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd=root, env=dvc_env(root), **kw)


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["git", *args], cwd=root, env=dvc_env(root))


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


ALL_STAGES = ["fetch_csv", "select_classes", "download", "split", "compute_stats",
              "train_scratch", "train_transfer", "evaluate", "export"]


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp git+DVC project after one full `dvc repro` on tiny params, everything committed.

    The slow end-to-end modules share this one run: each takes its own `copy_built` copy and never
    changes this one."""
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    root = copy_project(tmp_path_factory.mktemp("built") / "project", params)
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    out = dvc(root, "repro")
    assert ran_stages(out.stdout) == ALL_STAGES, out.stdout
    git(root, "add", "-A")
    git(root, "commit", "-qm", "repro")
    return root


def copy_built(src: Path, dest: Path) -> Path:
    """A copy of a built project (git history, workspace and DVC cache; not DVC's locks and temp files)."""
    shutil.copytree(src, dest, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d) == src / ".dvc" else [])
    return dest
