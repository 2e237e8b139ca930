"""The TorchScript predictor: equals the eager model, takes any image size, loads with torch alone."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from landmarks.checkpoint import make_checkpoint, save_checkpoint
from landmarks.data import read_classes
from landmarks.export import (
    FORBIDDEN_MODULES, build_predictor, check_in_fresh_process, export_predictor,
    load_predictor_bytes, max_difference, predictor_bytes,
)
from landmarks.imageio import sha256_file
from landmarks.models import build_model
from landmarks.transforms import preprocess_config, preprocess_uint8

CLASSES = [
    {"landmark_id": 11, "name": "Eiffel Tower", "category": "http://commons.wikimedia.org/wiki/Category:Eiffel_Tower",
     "wikidata_id": "Q243", "latitude": 48.8583, "longitude": 2.2945},
    {"landmark_id": 22, "name": "Château de Versailles", "category": "http://commons.wikimedia.org/wiki/Category:Ch%C3%A2teau_de_Versailles",
     "wikidata_id": "Q2946", "latitude": 48.8049, "longitude": 2.1204},
    {"landmark_id": 33, "name": "St. Peter's Basilica", "category": "http://commons.wikimedia.org/wiki/Category:St._Peter%27s_Basilica",
     "wikidata_id": "", "latitude": "", "longitude": ""},
]
# torch.jit.* warns that TorchScript is deprecated; it is still the torch-only format the project ships.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")
PREPROCESS = preprocess_config(image_size=32, mean=[0.45, 0.46, 0.40], std=[0.22, 0.21, 0.23])


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box OpenMP's spinning
    threads make them 50x slower; restore the setting for whatever runs next."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(num_classes: int, seed: int = 0) -> nn.Module:
    """A random-weight VGG (fast at 32 px) with BN statistics that are not the identity."""
    torch.manual_seed(seed)
    model = build_model("vgg", num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.classifier[-1].weight.mul_(40)  # confident, input-sensitive outputs instead of near-uniform ones
    return model.eval()


def tiny_checkpoint(path: Path, classes: list[dict[str, Any]] = CLASSES, *, seed: int = 0,
                    preprocess: dict[str, Any] = PREPROCESS, augment: str = "strong") -> Path:
    """Write a tiny vgg checkpoint like the training stages do."""
    model = tiny_model(len(classes), seed)
    ckpt = make_checkpoint(model, arch="vgg", arch_kwargs={"dropout": 0.3, "image_size": preprocess["image_size"]},
                           classes=classes, preprocess=preprocess, params={"augment": augment, "seed": seed})
    save_checkpoint(path, ckpt)
    return path


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    model = tiny_model(len(CLASSES))
    path = tmp_path_factory.mktemp("export") / "predictor.pt"
    path.write_bytes(predictor_bytes(build_predictor(model, PREPROCESS), classes=CLASSES,
                                     tagging={"threshold": 0.4, "target_precision": 0.95}, preprocess=PREPROCESS))
    return path, model


def test_predictor_equals_eager_model_for_any_image_size(predictor_file: tuple[Path, nn.Module]) -> None:
    path, model = predictor_file
    module, _ = load_predictor_bytes(path.read_bytes())
    images = random_images([(32, 32), (37, 80), (300, 200), (17, 90), (129, 128)])
    assert max_difference(module, model, PREPROCESS, images) <= 1e-5
    # and a batch gives what the images give one at a time
    batch = torch.stack(random_images([(50, 70)] * 3, seed=1))
    with torch.no_grad():
        expected = torch.softmax(model(preprocess_uint8(batch, **PREPROCESS)), dim=-1)
        assert (module(batch) - expected).abs().max().item() <= 1e-5


def test_max_difference_sees_a_different_model(predictor_file: tuple[Path, nn.Module]) -> None:
    path, _ = predictor_file
    module, _ = load_predictor_bytes(path.read_bytes())
    assert max_difference(module, tiny_model(len(CLASSES), seed=1), PREPROCESS, random_images([(40, 40)])) > 1e-3


def test_predictor_contract_uint8_any_size_to_probabilities(predictor_file: tuple[Path, nn.Module]) -> None:
    path, _ = predictor_file
    extra = {"classes.json": "", "tagging.json": "", "preprocess.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["classes.json"]) == CLASSES  # in output order, category info included
    assert json.loads(extra["tagging.json"])["threshold"] == 0.4
    assert json.loads(extra["preprocess.json"]) == PREPROCESS
    for b, h, w in [(1, 32, 32), (2, 61, 47), (3, 480, 640), (1, 5, 300)]:
        x = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
        with torch.no_grad():
            p = module(x)
        assert p.shape == (b, len(CLASSES))
        assert torch.allclose(p.sum(-1), torch.ones(b), atol=1e-5)
        assert (p >= 0).all()
    with pytest.raises(Exception, match="uint8"):
        module(torch.rand(1, 3, 32, 32))
    with pytest.raises(Exception, match=r"\[B, 3, H, W\]"):
        module(torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_export_writes_a_file_that_loads_in_a_fresh_torch_only_process(tmp_path: Path) -> None:
    out = tmp_path / "models" / "predictor.pt"
    report = export_predictor(tiny_model(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS,
                              tagging={"threshold": 0.5}, check_images=random_images([(40, 60), (90, 33)]), out_path=out)
    # export_predictor has loaded and run the file in a fresh torch-only interpreter, or it would have raised
    assert out.is_file() and report["max_abs_diff"] <= 1e-5 and report["check_images"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictor.pt"]  # no temp files left behind


def test_fresh_process_check_can_fail(tmp_path: Path, predictor_file: tuple[Path, nn.Module]) -> None:
    path, _ = predictor_file
    with pytest.raises(RuntimeError, match="imported"):
        check_in_fresh_process(path, len(CLASSES), forbidden=("torch",))  # torch is always imported: must be caught
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="fresh process"):
        check_in_fresh_process(junk, len(CLASSES))
    assert set(FORBIDDEN_MODULES) == {"landmarks", "torchvision", "timm"}


class BranchyNet(nn.Module):
    """Data-dependent control flow: tracing records one branch, so the export differs from eager."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean(dim=(2, 3))
        if float(v.mean()) > 0:
            return self.fc(v)
        return -self.fc(v) * 3


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_refuses_a_predictor_that_differs_from_the_model(tmp_path: Path) -> None:
    out = tmp_path / "predictor.pt"
    # The trace example is random normal data (mean ~0); bright and dark images take different branches.
    images = [torch.full((3, 40, 40), 250, dtype=torch.uint8), torch.full((3, 40, 40), 5, dtype=torch.uint8)]
    with pytest.raises(RuntimeError, match="differs from the eager model"):
        export_predictor(BranchyNet().eval(), classes=CLASSES[:2], preprocess=PREPROCESS, tagging={"threshold": 0.5},
                         check_images=images, out_path=out)
    assert not out.exists()


def test_export_stage_checks_and_writes_the_predictor(tmp_path: Path, image_tree: dict[str, Any]) -> None:
    from stages import export_torchscript

    classes = read_classes(image_tree["splits"])
    preprocess = preprocess_config(image_size=32, mean=image_tree["stats"]["mean"], std=image_tree["stats"]["std"])
    ckpt = tiny_checkpoint(tmp_path / "transfer.pt", classes, preprocess=preprocess)
    tagging = tmp_path / "tagging.json"
    tagging.write_text(json.dumps({"model": "transfer", "model_sha256": sha256_file(ckpt), "threshold": 0.42}))
    out = tmp_path / "predictor.pt"
    argv = ["--model", str(ckpt), "--tagging", str(tagging), "--splits", str(image_tree["splits"]),
            "--images", str(image_tree["images"]), "--out", str(out)]
    export_torchscript.main(argv)
    extra = {"classes.json": "", "tagging.json": ""}
    torch.jit.load(str(out), _extra_files=extra)
    assert [c["landmark_id"] for c in json.loads(extra["classes.json"])] == [c["landmark_id"] for c in classes]
    assert json.loads(extra["tagging.json"])["threshold"] == 0.42

    # a threshold chosen for another checkpoint is refused
    tagging.write_text(json.dumps({"model": "transfer", "model_sha256": "0" * 64, "threshold": 0.42}))
    out.unlink()
    with pytest.raises(SystemExit, match="another checkpoint"):
        export_torchscript.main(argv)
    assert not out.exists()
