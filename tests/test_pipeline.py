"""End to end: the real dvc.yaml on a tiny override of the real params, in a temporary git+DVC copy."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from landmarks.export import check_in_fresh_process
from landmarks.predictor_file import load_predictor
from tests.conftest import copy_built, dvc, ran_stages, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp project after one full `dvc repro` on tiny params (`built_project` checks that every stage ran),
    copied: the tests below change it."""
    return copy_built(built_project, tmp_path_factory.mktemp("e2e") / "project")


def test_repro_writes_the_data_contract(pipeline: Path) -> None:
    images = sorted((pipeline / "data/images").glob("*/*.jpg"))
    landmarks = [p for p in images if p.parent.name.isdigit()]
    distractors = [p for p in images if p.parent.name == "no_landmark"]
    assert len(landmarks) == 30 and len(distractors) == 20 and len(images) == 50  # 3 x 10, and 40% distractors
    for path in images:
        assert re.fullmatch(r"[0-9a-f]{16}", path.stem)
    split = json.loads((pipeline / "reports/split.json").read_text())
    assert split["distractors_train"] == 0 and split["distractors_val"] + split["distractors_test"] == 20
    failures = pd.read_csv(pipeline / "data/download_failures.csv")
    assert list(failures.columns) == ["id", "url", "landmark_id", "reason"]
    for name in ("train", "val", "test"):
        assert {"id", "landmark_id"} <= set(pd.read_csv(pipeline / f"data/splits/{name}.csv").columns)
    stats = json.loads((pipeline / "data/stats.json").read_text())
    assert len(stats["mean"]) == 3 and len(stats["std"]) == 3


def test_repro_writes_test_metrics_for_both_models(pipeline: Path) -> None:
    metrics = json.loads((pipeline / "reports/metrics.json").read_text())
    for model in ("scratch", "transfer"):
        assert 0 <= metrics[model]["top1"] <= metrics[model]["top5"] <= 1


@pytest.mark.filterwarnings("ignore:TorchScript is deprecated:FutureWarning")  # the .pt's note: test_cli_formats checks it
@pytest.mark.parametrize("name", ["predictor.pt", "predictor.pt2", "predictor.onnx"])
def test_each_predictor_file_runs_in_a_process_that_imports_only_its_runtime(pipeline: Path, name: str) -> None:
    path = pipeline / "models" / name
    # A bare interpreter: 3 classes, batches of any size; torch alone, and for ONNX not even torch.
    check_in_fresh_process(path, 3)
    predictor = load_predictor(path)
    assert all("landmark_id" in c and "name" in c for c in predictor.classes)
    probs, scores = predictor(torch.randint(0, 256, (2, 3, 71, 97), dtype=torch.uint8))
    assert probs.shape == (2, 3) and scores.shape == (2,)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_second_repro_runs_no_stage_quickly(pipeline: Path) -> None:
    start = time.monotonic()
    out = dvc(pipeline, "repro")
    elapsed = time.monotonic() - start
    assert ran_stages(out.stdout) == [] and elapsed <= 10, (elapsed, out.stdout)


def test_changing_a_train_transfer_param_reruns_only_what_depends_on_it(pipeline: Path) -> None:
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["train_transfer"]["lr"] = params["train_transfer"]["lr"] / 2
    (pipeline / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(pipeline, "repro")
    assert ran_stages(out.stdout) == ["train_transfer", "evaluate", "export"], out.stdout
    run(["git", "checkout", "params.yaml"], cwd=pipeline)
    dvc(pipeline, "checkout")


def test_experiment_with_resnext_without_pretrained_weights_compares_with_metrics_diff(pipeline: Path) -> None:
    out = dvc(pipeline, "exp", "run", "-S", "model=resnext", "-S", "train_transfer.pretrained=false")
    assert ran_stages(out.stdout) == ["train_transfer", "evaluate", "export"], out.stdout
    ckpt_params = yaml.safe_load((pipeline / "params.yaml").read_text())
    assert ckpt_params["model"] == "resnext"
    diff = dvc(pipeline, "metrics", "diff", "--json")
    changed = json.loads(diff.stdout)
    assert "reports/metrics.json" in changed
    shown = dvc(pipeline, "plots", "show", "--json")
    names = " ".join(json.loads(shown.stdout)["data"]).replace("\\", "/")
    assert "reports/confusion/transfer.json" in names and "reports/train/transfer/plots/metrics/val/acc.tsv" in names, names
