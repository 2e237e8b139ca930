"""The TorchScript predictor: equals the eager tagger (probabilities and open-set scores), takes any image
size, loads with torch alone."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from landmarks.checkpoint import make_checkpoint, save_checkpoint
from landmarks.data import read_classes
from landmarks.export import FORBIDDEN_MODULES, build_predictor, check_in_fresh_process, export_predictor, max_difference
from landmarks.files import sha256_file
from landmarks.models import build_model, split_at_last_linear
from landmarks.openset import Tagger, build_tagger, gallery_record
from landmarks.predictor_file import load_predictor, predictor_bytes
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


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


@torch.no_grad()
def embed(model: nn.Module, images: list[torch.Tensor], preprocess: dict[str, Any] = PREPROCESS) -> torch.Tensor:
    """[N, D] embeddings (what the model's last Linear reads) of uint8 [3, H, W] images, one at a time."""
    net = split_at_last_linear(model).eval()
    return torch.cat([net(preprocess_uint8(img.unsqueeze(0), **preprocess))[1] for img in images])


def tiny_gallery(model: nn.Module, num_classes: int, preprocess: dict[str, Any] = PREPROCESS, *, seed: int = 0,
                 images: list[torch.Tensor] | None = None, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's gallery: the embeddings of `images` (default: three random photos a class) and their labels."""
    if images is None:
        images = random_images([(40, 40)] * (3 * num_classes), seed=100 + seed)
        labels = [i % num_classes for i in range(len(images))]
    return gallery_record(embed(model, images, preprocess), torch.tensor(labels))


def tiny_tagger(num_classes: int, seed: int = 0, *, score: str = "knn", k: int = 3) -> Tagger:
    """The tagger of a tiny checkpoint: tiny_model with a gallery of random photos, as build_tagger makes it."""
    model = tiny_model(num_classes, seed)
    return build_tagger(model, {"gallery": tiny_gallery(model, num_classes, seed=seed)}, score=score, k=k)


def fit_head(model: nn.Module, images: list[torch.Tensor], labels: list[int], preprocess: dict[str, Any]) -> None:
    """Train the model's last Linear on the embeddings of `images` (the rest stays random): a model that has
    seen these photos, deterministically."""
    emb, y = embed(model, images, preprocess), torch.tensor(labels)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    torch.manual_seed(0)
    opt = torch.optim.Adam(last.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(last(emb), y).backward()
        opt.step()


def tiny_checkpoint(path: Path, classes: list[dict[str, Any]] = CLASSES, *, seed: int = 0,
                    preprocess: dict[str, Any] = PREPROCESS, augment: str = "strong",
                    gallery_images: list[torch.Tensor] | None = None, gallery_labels: list[int] | None = None,
                    head_fitted_to_gallery: bool = False) -> Path:
    """Write a tiny vgg checkpoint like the training stages do, gallery of training embeddings included
    (of `gallery_images`, default random photos); optionally with its head trained on the gallery photos."""
    model = tiny_model(len(classes), seed)
    if head_fitted_to_gallery:
        fit_head(model, gallery_images, gallery_labels, preprocess)
    gallery = tiny_gallery(model, len(classes), preprocess, seed=seed, images=gallery_images, labels=gallery_labels)
    ckpt = make_checkpoint(model, arch="vgg", arch_kwargs={"dropout": 0.3, "image_size": preprocess["image_size"]},
                           classes=classes, preprocess=preprocess, params={"augment": augment, "seed": seed},
                           gallery=gallery)
    save_checkpoint(path, ckpt)
    return path


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tagger]:
    tagger = tiny_tagger(len(CLASSES))
    path = tmp_path_factory.mktemp("export") / "predictor.pt"
    path.write_bytes(predictor_bytes(build_predictor(tagger, PREPROCESS), classes=CLASSES,
                                     tagging={"threshold": 0.4, "target_precision": 0.95, "score": "knn", "neighbours": 3},
                                     preprocess=PREPROCESS))
    return path, tagger


def test_predictor_equals_eager_model_for_any_image_size(predictor_file: tuple[Path, Tagger]) -> None:
    path, tagger = predictor_file
    module = load_predictor(path.read_bytes()).module
    images = random_images([(32, 32), (37, 80), (300, 200), (17, 90), (129, 128)])
    assert max_difference(module, tagger, PREPROCESS, images) <= 1e-5
    # and a batch gives what the images give one at a time, for the probabilities and the open-set scores
    batch = torch.stack(random_images([(50, 70)] * 3, seed=1))
    with torch.no_grad():
        probs, scores = tagger(preprocess_uint8(batch, **PREPROCESS))
        expected = torch.softmax(tagger.net(preprocess_uint8(batch, **PREPROCESS))[0], dim=-1)
        assert (probs - expected).abs().max().item() <= 1e-6  # the tagger's probabilities are the classifier's
        got_probs, got_scores = module.tag(batch)
        assert (got_probs - probs).abs().max().item() <= 1e-5
        assert (got_scores - scores).abs().max().item() <= 1e-5
        assert torch.equal(module(batch), got_probs)  # forward is tag()'s probabilities
        one_by_one = torch.cat([module.tag(x.unsqueeze(0))[1] for x in batch])
        assert (one_by_one - got_scores).abs().max().item() <= 1e-5


def test_max_difference_sees_a_different_model(predictor_file: tuple[Path, Tagger]) -> None:
    path, _ = predictor_file
    module = load_predictor(path.read_bytes()).module
    assert max_difference(module, tiny_tagger(len(CLASSES), seed=1), PREPROCESS, random_images([(40, 40)])) > 1e-3


def test_max_difference_sees_a_different_gallery(predictor_file: tuple[Path, Tagger]) -> None:
    """Same network, same probabilities, other training embeddings: the scores differ, and that counts."""
    path, tagger = predictor_file
    module = load_predictor(path.read_bytes()).module
    flipped = Tagger(tagger.net, -tagger.gallery, tagger.gallery_labels, score=tagger.score, k=tagger.k).eval()
    image = random_images([(40, 40)])
    with torch.no_grad():
        x = preprocess_uint8(image[0].unsqueeze(0), **PREPROCESS)
        assert torch.equal(flipped(x)[0], tagger(x)[0])
    assert max_difference(module, flipped, PREPROCESS, image) > 0.5


def test_predictor_contract_uint8_any_size_to_probabilities(predictor_file: tuple[Path, Tagger]) -> None:
    path, _ = predictor_file
    extra = {"classes.json": "", "tagging.json": "", "preprocess.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["classes.json"]) == CLASSES  # in output order, category info included
    tagging = json.loads(extra["tagging.json"])
    assert tagging["threshold"] == 0.4 and tagging["score"] == "knn" and tagging["neighbours"] == 3
    assert json.loads(extra["preprocess.json"]) == PREPROCESS
    for b, h, w in [(1, 32, 32), (2, 61, 47), (3, 480, 640), (1, 5, 300)]:
        x = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
        with torch.no_grad():
            p = module(x)
            p2, score = module.tag(x)
        assert p.shape == (b, len(CLASSES)) and score.shape == (b,)
        assert torch.allclose(p.sum(-1), torch.ones(b), atol=1e-5)
        assert (p >= 0).all()
        assert torch.equal(p, p2)
        assert ((score >= -1 - 1e-6) & (score <= 1 + 1e-6)).all()  # a mean of cosine similarities
    for method in (module, module.tag):
        with pytest.raises(Exception, match="uint8"):
            method(torch.rand(1, 3, 32, 32))
        with pytest.raises(Exception, match=r"\[B, 3, H, W\]"):
            method(torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_export_writes_a_file_that_loads_in_a_fresh_torch_only_process(tmp_path: Path) -> None:
    out = tmp_path / "models" / "predictor.pt"
    report = export_predictor(tiny_tagger(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS,
                              tagging={"threshold": 0.5, "score": "knn", "neighbours": 3},
                              check_images=random_images([(40, 60), (90, 33)]), out_path=out)
    # export_predictor has loaded and run the file (forward and tag) in a fresh torch-only interpreter, or it would have raised
    assert out.is_file() and report["max_abs_diff"] <= 1e-5 and report["check_images"] == 2
    assert report["num_classes"] == len(CLASSES) and report["bytes"] == out.stat().st_size
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictor.pt"]  # no temp files left behind
    with pytest.raises(ValueError, match="at least one image"):
        export_predictor(tiny_tagger(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS, tagging={"threshold": 0.5},
                         check_images=[], out_path=tmp_path / "other.pt")


def test_fresh_process_check_can_fail(tmp_path: Path, predictor_file: tuple[Path, Tagger]) -> None:
    path, _ = predictor_file
    with pytest.raises(RuntimeError, match="imported"):
        check_in_fresh_process(path, len(CLASSES), forbidden=("torch",))  # torch is always imported: must be caught
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="fresh process"):
        check_in_fresh_process(junk, len(CLASSES))
    assert set(FORBIDDEN_MODULES) == {"landmarks", "torchvision", "timm"}


class BranchyNet(nn.Module):
    """Data-dependent control flow: tracing records one branch, so the export differs from eager.
    An EmbeddingNet-like x -> (logits, embedding), as the tagger needs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x.mean(dim=(2, 3))
        if float(v.mean()) > 0:
            return self.fc(v), v
        return -self.fc(v) * 3, v


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_refuses_a_predictor_that_differs_from_the_model(tmp_path: Path) -> None:
    out = tmp_path / "predictor.pt"
    torch.manual_seed(0)
    tagger = Tagger(BranchyNet(), torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), score="knn", k=2).eval()
    # The trace example is random normal data (mean ~0); bright and dark images take different branches.
    images = [torch.full((3, 40, 40), 250, dtype=torch.uint8), torch.full((3, 40, 40), 5, dtype=torch.uint8)]
    with pytest.raises(RuntimeError, match="differs from the eager model"):
        export_predictor(tagger, classes=CLASSES[:2], preprocess=PREPROCESS, tagging={"threshold": 0.5},
                         check_images=images, out_path=out)
    assert not out.exists()


def test_export_stage_checks_and_writes_the_predictor(tmp_path: Path, image_tree: dict[str, Any]) -> None:
    from landmarks.checkpoint import load_checkpoint
    from stages import export_torchscript

    classes = read_classes(image_tree["splits"])
    preprocess = preprocess_config(image_size=32, mean=image_tree["stats"]["mean"], std=image_tree["stats"]["std"])
    ckpt = tiny_checkpoint(tmp_path / "transfer.pt", classes, preprocess=preprocess)
    tagging = tmp_path / "tagging.json"
    decision = {"model": "transfer", "model_sha256": sha256_file(ckpt), "threshold": 0.42, "score": "knn_msp",
                "neighbours": 2}
    tagging.write_text(json.dumps(decision))
    out = tmp_path / "predictor.pt"
    argv = ["--model", str(ckpt), "--tagging", str(tagging), "--splits", str(image_tree["splits"]),
            "--images", str(image_tree["images"]), "--out", str(out)]
    export_torchscript.main(argv)
    extra = {"classes.json": "", "tagging.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    assert [c["landmark_id"] for c in json.loads(extra["classes.json"])] == [c["landmark_id"] for c in classes]
    assert json.loads(extra["tagging.json"]) == decision
    # the predictor scores with the score and neighbours of tagging.json, against the checkpoint's gallery
    model, loaded = load_checkpoint(ckpt)
    images = random_images([(48, 48), (40, 70)], seed=3)
    for score, k in (("knn_msp", 2), ("knn", 3)):
        tagger = build_tagger(model, loaded, score=score, k=k)
        diff = max_difference(module, tagger, preprocess, images)
        assert (diff <= 1e-5) == (score == "knn_msp" and k == 2), (score, k, diff)

    # a threshold chosen for another checkpoint is refused
    tagging.write_text(json.dumps({**decision, "model_sha256": "0" * 64}))
    out.unlink()
    with pytest.raises(SystemExit, match="another checkpoint"):
        export_torchscript.main(argv)
    # so is a tagging.json without the tagging decision (an old one: threshold only)
    tagging.write_text(json.dumps({"model": "transfer", "model_sha256": sha256_file(ckpt), "threshold": 0.42}))
    with pytest.raises(SystemExit, match="lacks the tagging decision"):
        export_torchscript.main(argv)
    assert not out.exists()
