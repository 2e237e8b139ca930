"""Data-parallel training under torchrun: 2 CPU processes (gloo) train the same model as 1 process.

train.py promises that N processes see, batch for batch, the same global batches as one process
(a DistributedSampler in both cases, per-process batch = batch_size // world_size) and that DDP's
gradient all-reduce then makes every optimiser step the same. These tests run the real stage,
`python -m stages.train_scratch`, once plainly and once under `torch.distributed.run`, and compare.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from landmarks.models import build_model
from landmarks.train import make_loader
from tests.conftest import copy_project, make_image_tree, shrink

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Tolerance, and why the runs are not bit-identical: with 2 processes each gradient is the gloo
# all-reduce of two half-batch means, (g0 + g1) / 2, where one process reduces all per-sample terms
# at once; float32 addition is not associative, so they differ in the last bits, and AdamW (which
# divides by sqrt(v)) can blow those bits up for single weights whose gradient is ~0. So weights are
# compared per tensor by norm, relative to how far training moved them, and metrics relatively.
# Measured here: weights 5e-6, metrics 4e-8; a real bug (halved batches, metrics of one rank only)
# gives 1e-2 and more. Nothing else may differ: the model has no batch norm (per-process batch
# statistics would differ for real; SyncBatchNorm needs CUDA), dropout is 0 and augmentation is off
# (each rank would draw the same random numbers for different images). And the train set divides
# by the world size, else DistributedSampler pads each epoch by repeating its first indices, so the
# 2-process run would see a few images twice per epoch.
WEIGHT_REL_TOL = 1e-3
METRIC_REL_TOL = 1e-5

SEED, EPOCHS, GLOBAL_BATCH = 42, 4, 6  # 3 images per process and step
PER_CLASS, TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 20, 10  # 60 train images: 10 full global batches, no padding
# Validation accuracy rises every epoch with these, so the best-epoch checkpoint holds the final weights.
OPTIM = dict(optimizer="adamw", lr=0.001, weight_decay=0.0, label_smoothing=0.0, scheduler="cosine", warmup_epochs=0.5)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learnable image tree with train/val splits (fixed per class) and stats, as the data stages leave it."""
    root = tmp_path_factory.mktemp("shapes")
    paths = make_image_tree(root, per_class=PER_CLASS, size=48, seed=SEED)
    rows = pd.read_csv(paths["selected"], dtype={"id": str})
    rank = rows.groupby("landmark_id").cumcount()
    (root / "splits").mkdir()
    rows[rank < TRAIN_PER_CLASS].to_csv(root / "splits" / "train.csv", index=False)
    rows[(rank >= TRAIN_PER_CLASS) & (rank < TRAIN_PER_CLASS + VAL_PER_CLASS)].to_csv(root / "splits" / "val.csv", index=False)
    shutil.copy(paths["classes"], root / "splits" / "classes.csv")
    (root / "stats.json").write_text(json.dumps({"mean": [0.3, 0.3, 0.3], "std": [0.25, 0.25, 0.25]}))
    return root


def _project(dest: Path, params: dict, data: Path, *, batch_size: int = GLOBAL_BATCH) -> Path:
    params["seed"] = SEED
    params["train_scratch"].update(arch="paper", augment="none", dropout=0.0, epochs=EPOCHS, batch_size=batch_size, **OPTIM)
    root = copy_project(dest, params)
    for name in ("splits", "images"):
        shutil.copytree(data / name, root / name)
    shutil.copy(data / "stats.json", root / "stats.json")
    return root


def _stage_args(root: Path) -> list[str]:
    return ["-m", "stages.train_scratch", "--splits", str(root / "splits"), "--images", str(root / "images"),
            "--stats", str(root / "stats.json"), "--out", str(root / "scratch.pt"), "--live", str(root / "live"),
            "--resume", str(root / "state.pt")]


def _torchrun(nproc: int) -> list[str]:
    # --standalone: a private rendezvous on a free localhost port, so concurrent runs never collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def _env(root: Path) -> dict[str, str]:
    # One intra-op thread per process (torchrun's default for its workers) in both runs, so the single
    # process does not also differ by how a multi-threaded matmul splits its sums.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return {**env, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}


def _epochs(root: Path) -> pd.DataFrame:
    """The per-epoch curves dvclive wrote, one column per metric."""
    plots = root / "live" / "plots" / "metrics"
    names = ("train/loss", "train/acc", "val/loss", "val/acc")
    return pd.concat([pd.read_csv(plots / f"{n}.tsv", sep="\t").set_index("step")[n.split("/")[1]].rename(n) for n in names], axis=1)


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory: pytest.TempPathFactory, shapes: Path, real_params: dict) -> dict[int, Path]:
    """The same training run by 1 plain process and by 2 torchrun processes (started side by side)."""
    roots = {n: _project(tmp_path_factory.mktemp(f"world{n}") / "project", shrink(real_params), shapes) for n in (1, 2)}
    commands = {1: [sys.executable, *_stage_args(roots[1])], 2: [*_torchrun(2), *_stage_args(roots[2])]}
    procs = {n: subprocess.Popen(cmd, cwd=roots[n], env=_env(roots[n]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n, cmd in commands.items()}
    for n, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        (roots[n] / "log.txt").write_text(out)
        assert proc.returncode == 0, f"world {n} exited {proc.returncode}\n{out[-4000:]}"
    return roots


def test_two_processes_end_with_the_weights_of_one(one_and_two_processes: dict[int, Path]) -> None:
    one, two = (torch.load(one_and_two_processes[n] / "scratch.pt", weights_only=False) for n in (1, 2))
    # The checkpoint holds the best epoch; when that is the last one, it holds the final weights.
    assert one["metrics"]["best_epoch"] == EPOCHS, "pick OPTIM so that val/acc rises every epoch"
    assert two["metrics"]["best_epoch"] == EPOCHS
    torch.manual_seed(SEED)  # train_classifier's initial weights, to measure how far training moved them
    start = build_model("paper", num_classes=3, dropout=0.0, image_size=32).state_dict()
    assert one["state_dict"].keys() == two["state_dict"].keys() == start.keys()
    for key, a in one["state_dict"].items():
        moved = (a - start[key]).norm()
        assert moved > 1e-3, f"{key} did not train, so comparing it proves nothing"
        assert (two["state_dict"][key] - a).norm() <= WEIGHT_REL_TOL * moved, key


def test_two_processes_log_the_per_epoch_metrics_of_one(one_and_two_processes: dict[int, Path]) -> None:
    one, two = (_epochs(one_and_two_processes[n]) for n in (1, 2))
    assert len(one) == len(two) == EPOCHS
    assert one["train/loss"].iloc[-1] < one["train/loss"].iloc[0] and one["val/acc"].iloc[-1] > one["val/acc"].iloc[0]
    for col in one.columns:
        assert two[col].tolist() == pytest.approx(one[col].tolist(), rel=METRIC_REL_TOL), col


def test_only_rank_zero_writes_the_checkpoint_and_the_logs(one_and_two_processes: dict[int, Path]) -> None:
    root = one_and_two_processes[2]
    log = (root / "log.txt").read_text()
    assert all(log.count(f"epoch={e} ") == 1 for e in range(1, EPOCHS + 1)), "per-epoch records must come from rank 0 only"
    assert json.loads((root / "live" / "metrics.json").read_text())["step"] == EPOCHS - 1
    assert len((root / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()) == EPOCHS + 1
    # The run is complete: the checkpoint is there and the resume state was removed.
    assert (root / "scratch.pt").exists() and not (root / "state.pt").exists()
    assert "destroy_process_group" not in log and "Traceback" not in log


def test_batch_size_not_divisible_by_the_world_size_is_a_one_line_error(tmp_path: Path, real_params: dict, shapes: Path) -> None:
    root = _project(tmp_path / "project", shrink(real_params), shapes, batch_size=7)
    proc = subprocess.run([*_torchrun(2), *_stage_args(root)], cwd=root, env=_env(root), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    expected = "error: train_scratch.batch_size=7 is not valid; it must be divisible by the number of processes (2)"
    # One line per rank that got to print it (torchrun may stop the other rank first) ...
    assert errors and set(errors) == {expected}, proc.stderr[-3000:]
    # ... and no traceback through our code (torchrun's own report of the failed child follows them).
    assert "landmarks/" not in proc.stderr and "stages/" not in proc.stderr
    assert not (root / "scratch.pt").exists()


def test_loader_refuses_a_batch_that_does_not_split_evenly_over_the_processes() -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    with pytest.raises(ValueError, match=r"^batch_size=7 must be divisible by the number of processes \(2\)$"):
        make_loader(data, batch_size=7, train=True, seed=0, num_workers=0, device=torch.device("cpu"), rank=0, world_size=2)
    assert len(make_loader(data, batch_size=4, train=True, seed=0, num_workers=0, device=torch.device("cpu"), rank=1, world_size=2)) == 2
