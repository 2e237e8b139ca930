"""End to end: the real dvc.yaml on a tiny override of the real params, in a temporary git+DVC copy."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

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


def test_exported_predictor_runs_in_a_process_that_imports_only_torch(pipeline: Path) -> None:
    code = (
        "import sys, json, torch\n"
        "extra = {'classes.json': ''}\n"
        "m = torch.jit.load(sys.argv[1], _extra_files=extra)\n"
        "classes = json.loads(extra['classes.json'])\n"
        "x = torch.randint(0, 256, (2, 3, 71, 97), dtype=torch.uint8)\n"
        "p = m(x)\n"
        "assert p.shape == (2, len(classes)), p.shape\n"
        "assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)\n"
        "assert all('landmark_id' in c and 'name' in c for c in classes)\n"
        "assert not any(k.startswith(('landmarks', 'torchvision', 'timm')) for k in sys.modules)\n"
        "print(len(classes))\n"
    )
    out = run([sys.executable, "-c", code, str(pipeline / "models/predictor.pt")], cwd=pipeline)
    assert out.stdout.strip() == "3"


def test_the_onnx_predictor_runs_with_onnxruntime_alone(pipeline: Path) -> None:
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "classes = json.loads(s.get_modelmeta().custom_metadata_map['classes.json'])\n"
        "p, score = s.run(None, {'images': np.zeros((2, 3, 71, 97), dtype=np.uint8)})\n"
        "assert p.shape == (2, len(classes)) and score.shape == (2,), (p.shape, score.shape)\n"
        "print(len(classes))\n"
    )
    out = run([sys.executable, "-c", code, str(pipeline / "models/predictor.onnx")], cwd=pipeline)
    assert out.stdout.strip() == "3"
    assert (pipeline / "models/predictor.pt2").stat().st_size > 0


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
