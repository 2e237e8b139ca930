"""The training loop: options, determinism, resume after SIGKILL and the feature cache."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from landmarks.checkpoint import load_checkpoint
from landmarks.models import build_model
from landmarks.optim import build_optimizer, build_scheduler, param_groups
from landmarks.params import OPTIMIZERS
from landmarks.train import train_classifier
from tests.conftest import REPO, copy_project, make_spec, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(image_tree: dict, tmp_path: Path, **spec) -> tuple[dict, Path]:
    out = tmp_path / "model.pt"
    result = train_classifier(make_spec(image_tree["stats"], **spec), splits_dir=image_tree["splits"],
                              images_dir=image_tree["images"], out_path=out, live_dir=tmp_path / "live")
    return result, out


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_the_model(name: str, image_tree: dict, tmp_path: Path) -> None:
    result, out = _train(image_tree, tmp_path, optimizer=name, epochs=1, lr=0.01 if name != "sgd" else 0.05)
    assert math.isfinite(result["history"][0]["train/loss"])
    model, ckpt = load_checkpoint(out)
    assert ckpt["params"]["augment"] == "strong"


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name="cosine", epochs=10, steps_per_epoch=10, warmup_epochs=1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


def test_step_schedule_decays_by_gamma_every_step_size_epochs() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, name="step", epochs=20, steps_per_epoch=3, step_size=7, gamma=0.1)
    lrs = []
    for _ in range(20 * 3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[7 * 3 - 1] == pytest.approx(1.0) and lrs[7 * 3] == pytest.approx(0.1) and lrs[14 * 3] == pytest.approx(0.01)


def test_head_and_backbone_get_separate_learning_rates() -> None:
    model = build_model("resnet18", num_classes=3, freeze="early")
    groups = param_groups(model, lr=0.1, backbone_lr=0.01)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    opt = build_optimizer(groups, name="sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    frozen = {id(p) for p in model.layer1.parameters()}
    assert not frozen & {id(p) for g in groups for p in g["params"]}


def test_same_params_on_cpu_give_identical_results(image_tree: dict, tmp_path: Path) -> None:
    first, out1 = _train(image_tree, tmp_path / "a")
    second, out2 = _train(image_tree, tmp_path / "b")
    assert first["history"] == second["history"]
    assert (tmp_path / "a/live/metrics.json").read_text() == (tmp_path / "b/live/metrics.json").read_text()
    s1, s2 = torch.load(out1, weights_only=False)["state_dict"], torch.load(out2, weights_only=False)["state_dict"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_best_validation_epoch_is_the_one_saved(image_tree: dict, tmp_path: Path) -> None:
    result, out = _train(image_tree, tmp_path, epochs=3)
    accs = [r["val/acc"] for r in result["history"]]
    assert result["best_epoch"] == accs.index(max(accs)) + 1
    assert load_checkpoint(out)[1]["metrics"]["val_acc"] == max(accs)


def test_dvclive_logs_train_and_val_curves_per_epoch(image_tree: dict, tmp_path: Path) -> None:
    _train(image_tree, tmp_path, epochs=2)
    plots = tmp_path / "live" / "plots" / "metrics"
    for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
        rows = (plots / f"{name}.tsv").read_text().strip().splitlines()
        assert rows[0].split("\t")[:2] == ["step", name.split("/")[1]] and len(rows) == 3
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["step"] == 1 and "best" in summary


def test_feature_cache_trains_the_head_like_the_uncached_frozen_model(image_tree: dict, tmp_path: Path) -> None:
    kwargs = dict(arch="efficientnet_lite0", pretrained=True, freeze="all", dropout=0.0, epochs=2, scheduler="none",
                  optimizer="sgd", lr=0.05, warmup_epochs=0.0)
    cached, _ = _train(image_tree, tmp_path / "cached", cache_features=True, **kwargs)
    # Same run without the cache, and without augmentation (the cache sees un-augmented images).
    plain, _ = _train(image_tree, tmp_path / "plain", cache_features=False, augment="none", **kwargs)
    for a, b in zip(cached["history"], plain["history"]):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
        assert a["val/acc"] == pytest.approx(b["val/acc"])


def _stage_project(tmp_path: Path, tiny_params: dict, image_tree: dict, epochs: int) -> Path:
    tiny_params["train_scratch"].update(epochs=epochs, arch="vgg", augment="strong")
    root = copy_project(tmp_path, tiny_params)
    (root / "stats.json").write_text(json.dumps(image_tree["stats"]))
    return root


def _stage_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "stages.train_scratch",
        "--splits", str(root / "splits"), "--images", str(root / "images"), "--stats", str(root / "stats.json"),
        "--out", str(root / "scratch.pt"), "--live", str(root / "live"), "--resume", str(root / "state.pt")]


def test_training_killed_with_sigkill_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path, tiny_params: dict, image_tree: dict) -> None:
    import shutil

    results = {}
    for name in ("straight", "killed"):
        root = _stage_project(tmp_path / name, dict(tiny_params), image_tree, epochs=4)
        shutil.copytree(image_tree["splits"], root / "splits")
        shutil.copytree(image_tree["images"], root / "images")
        env = {**os.environ, "PYTHONPATH": str(root)}
        if name == "killed":
            proc = subprocess.Popen(_stage_cmd(root), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            # Kill once two epochs are safely stored, in the middle of the third.
            while time.time() < deadline:
                state = root / "state.pt"
                if state.exists() and torch.load(state, weights_only=False)["epoch"] >= 2:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert not (root / "scratch.pt").exists()
            assert torch.load(root / "state.pt", weights_only=False)["epoch"] in (2, 3)
        out = run(_stage_cmd(root), cwd=root, env=env)
        if name == "killed":
            assert "resuming after epoch" in out.stderr + out.stdout
            assert not (root / "state.pt").exists()
        results[name] = root
    a, b = (torch.load(results[n] / "scratch.pt", weights_only=False) for n in ("straight", "killed"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["metrics"] == b["metrics"]
    for f in ("metrics.json", "plots/metrics/val/acc.tsv", "plots/metrics/train/loss.tsv"):
        assert (results["straight"] / "live" / f).read_text() == (results["killed"] / "live" / f).read_text()


def test_resume_state_from_a_different_run_is_ignored(tmp_path: Path, image_tree: dict) -> None:
    state = tmp_path / "state.pt"
    torch.save({"fingerprint": "something-else", "epoch": 1}, state)
    result = train_classifier(make_spec(image_tree["stats"], epochs=1, augment="none"), splits_dir=image_tree["splits"],
                              images_dir=image_tree["images"], out_path=tmp_path / "m.pt", resume_path=state)
    assert len(result["history"]) == 1 and not state.exists()


def test_offline_torchvision_backbone_stops_the_stage_with_one_line(in_project: Path, tiny_params: dict, image_tree: dict,
                                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch.hub
    from stages import train_transfer

    tiny_params["model"] = "resnet18"
    tiny_params["train_transfer"]["pretrained"] = True
    (in_project / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    (in_project / "stats.json").write_text(json.dumps(image_tree["stats"]))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SystemExit) as e:
        train_transfer.main(["--splits", str(image_tree["splits"]), "--images", str(image_tree["images"]), "--stats", "stats.json",
                             "--out", "m.pt", "--live", "live"])
    message = str(e.value.code)
    assert message.startswith("error: could not get pretrained weights for resnet18") and "\n" not in message
    assert "train_transfer.pretrained=false" in message


def test_a_resume_state_holding_a_pickled_object_is_refused(tmp_path: Path, image_tree: dict) -> None:
    """Resume states load with weights_only=True: a planted object must not be unpickled (it would run code)."""
    state = tmp_path / "state.pt"
    torch.save({"fingerprint": "x", "epoch": 1, "payload": Path("/planted")}, state)  # any non-tensor object
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        train_classifier(make_spec(image_tree["stats"], epochs=1, augment="none"), splits_dir=image_tree["splits"],
                         images_dir=image_tree["images"], out_path=tmp_path / "m.pt", resume_path=state)
