"""The predictor files (TorchScript, torch.export, ONNX): each equals the eager tagger (probabilities and
open-set scores), takes any batch and image size, and is checked before it is written (the fresh-process
checks: test_export_fresh_process.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from landmarks.checkpoint import make_checkpoint, save_checkpoint
from landmarks.data import read_classes
from landmarks import export
from landmarks.export import TOLERANCES, export_predictors, max_difference
from landmarks.files import sha256_file
from landmarks.models import build_model, split_at_last_linear
from landmarks.openset import Tagger, build_tagger, gallery_record
from landmarks.predictor_file import load_predictor
from landmarks.transforms import preprocess_config, preprocess_uint8
from tests.test_predictor_file import torch_deprecates_jit

CLASSES = [
    {"landmark_id": 11, "name": "Eiffel Tower", "category": "http://commons.wikimedia.org/wiki/Category:Eiffel_Tower",
     "wikidata_id": "Q243", "latitude": 48.8583, "longitude": 2.2945},
    {"landmark_id": 22, "name": "Château de Versailles", "category": "http://commons.wikimedia.org/wiki/Category:Ch%C3%A2teau_de_Versailles",
     "wikidata_id": "Q2946", "latitude": 48.8049, "longitude": 2.1204},
    {"landmark_id": 33, "name": "St. Peter's Basilica", "category": "http://commons.wikimedia.org/wiki/Category:St._Peter%27s_Basilica",
     "wikidata_id": "", "latitude": "", "longitude": ""},
]
# torch.jit.* warns that TorchScript is deprecated; it is still one of the formats the project ships.
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


TAGGING = {"threshold": 0.4, "target_precision": 0.95, "score": "knn", "neighbours": 3}
FORMATS = {"torchscript": "predictor.pt", "torch.export": "predictor.pt2", "onnx": "predictor.onnx"}
# Several sizes and orientations, tiny and large, down- and upscaled, some of them shared (a batch).
CHECK_SIZES = [(32, 32), (37, 80), (300, 200), (17, 90), (129, 128), (5, 300), (1, 1), (50, 70), (50, 70), (50, 70)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Tagger, dict[str, dict[str, Any]]]:
    """The three predictor files of one tiny tagger, as the export stage writes them: ({format: path}, tagger, reports)."""
    tagger = tiny_tagger(len(CLASSES))
    folder = tmp_path_factory.mktemp("export") / "models"
    paths = {kind: folder / name for kind, name in FORMATS.items()}
    reports = export_predictors(tagger, classes=CLASSES, preprocess=PREPROCESS, tagging=TAGGING,
                                check_images=random_images(CHECK_SIZES, seed=5), out_paths=list(paths.values()))
    return paths, tagger, reports


@pytest.fixture(scope="module")
def predictor_file(exported: tuple[dict[str, Path], Tagger, dict]) -> tuple[Path, Tagger]:
    paths, tagger, _ = exported
    return paths["torchscript"], tagger


@pytest.mark.parametrize("kind", list(FORMATS))
def test_every_format_equals_the_eager_model_for_any_image_size_and_in_batches(
        kind: str, exported: tuple[dict[str, Path], Tagger, dict]) -> None:
    paths, tagger, reports = exported
    predictor = load_predictor(paths[kind])
    assert predictor.format == kind
    assert reports[str(paths[kind])]["format"] == kind and reports[str(paths[kind])]["max_abs_diff"] <= TOLERANCES[kind]
    # other images than the export checked, one at a time and the three 50x70 ones as a batch
    assert max_difference(predictor, tagger, PREPROCESS, random_images(CHECK_SIZES)) <= TOLERANCES[kind]
    batch = torch.stack(random_images([(61, 47)] * 4, seed=2))
    probs, scores = predictor(batch)
    one_by_one = [predictor(x.unsqueeze(0)) for x in batch]
    np.testing.assert_allclose(probs, np.concatenate([p for p, _ in one_by_one]), atol=1e-5)
    np.testing.assert_allclose(scores, np.concatenate([s for _, s in one_by_one]), atol=1e-5)


def test_the_tolerances_are_what_the_issue_asks_for() -> None:
    assert TOLERANCES == {"torchscript": 1e-5, "torch.export": 1e-5, "onnx": 1e-4}


def test_predictor_equals_eager_model_for_any_image_size(predictor_file: tuple[Path, Tagger]) -> None:
    path, tagger = predictor_file
    module = load_predictor(path.read_bytes()).module
    images = random_images([(32, 32), (37, 80), (300, 200), (17, 90), (129, 128)])
    assert max_difference(module.tag, tagger, PREPROCESS, images) <= 1e-5
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


@pytest.mark.parametrize("kind", list(FORMATS))
def test_max_difference_sees_a_different_model(kind: str, exported: tuple[dict[str, Path], Tagger, dict]) -> None:
    paths, _, _ = exported
    predictor = load_predictor(paths[kind])
    assert max_difference(predictor, tiny_tagger(len(CLASSES), seed=1), PREPROCESS, random_images([(40, 40)])) > 1e-3


def test_max_difference_sees_a_different_gallery(predictor_file: tuple[Path, Tagger]) -> None:
    """Same network, same probabilities, other training embeddings: the scores differ, and that counts."""
    path, tagger = predictor_file
    module = load_predictor(path.read_bytes()).module
    flipped = Tagger(tagger.net, -tagger.gallery, tagger.gallery_labels, score=tagger.score, k=tagger.k).eval()
    image = random_images([(40, 40)])
    with torch.no_grad():
        x = preprocess_uint8(image[0].unsqueeze(0), **PREPROCESS)
        assert torch.equal(flipped(x)[0], tagger(x)[0])
    assert max_difference(module.tag, flipped, PREPROCESS, image) > 0.5


def test_max_difference_sees_a_batch_that_differs_from_single_images() -> None:
    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # right alone, wrong in a batch
        probs, scores = tagger(preprocess_uint8(x, **PREPROCESS))
        return probs, scores + (len(x) > 1)

    tagger = tiny_tagger(len(CLASSES))
    assert max_difference(predict, tagger, PREPROCESS, random_images([(40, 40), (41, 40)])) == 0.0
    assert max_difference(predict, tagger, PREPROCESS, random_images([(40, 40), (41, 40), (40, 40)])) >= 1.0


def check_contract(run: Any, records: dict[str, str]) -> None:
    """`run(uint8 [B, 3, H, W] numpy) -> (probabilities, scores)` of a predictor file, and its JSON records."""
    assert json.loads(records["classes.json"]) == CLASSES  # in output order, category info included
    assert json.loads(records["tagging.json"]) == TAGGING
    assert json.loads(records["preprocess.json"]) == PREPROCESS
    rng = np.random.default_rng(0)
    for b, h, w in [(1, 32, 32), (2, 61, 47), (3, 480, 640), (1, 5, 300)]:
        p, score = (np.asarray(v) for v in run(rng.integers(0, 256, (b, 3, h, w), dtype=np.uint8)))
        assert p.shape == (b, len(CLASSES)) and score.shape == (b,)
        np.testing.assert_allclose(p.sum(-1), np.ones(b), atol=1e-5)
        assert (p >= 0).all()
        assert ((score >= -1 - 1e-6) & (score <= 1 + 1e-6)).all()  # a mean of cosine similarities


def test_predictor_contract_uint8_any_size_to_probabilities(predictor_file: tuple[Path, Tagger]) -> None:
    path, _ = predictor_file
    extra = {"classes.json": "", "tagging.json": "", "preprocess.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)

    def run(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            probs, score = module.tag(torch.from_numpy(x))
            assert torch.equal(module(torch.from_numpy(x)), probs)
        return probs, score

    check_contract(run, extra)
    for method in (module, module.tag):
        with pytest.raises(Exception, match="uint8"):
            method(torch.rand(1, 3, 32, 32))
        with pytest.raises(Exception, match=r"\[B, 3, H, W\]"):
            method(torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_program_contract_with_torch_export_load(exported: tuple[dict[str, Path], Tagger, dict]) -> None:
    paths, _, _ = exported
    extra = {"classes.json": "", "tagging.json": "", "preprocess.json": ""}
    module = torch.export.load(str(paths["torch.export"]), extra_files=extra).module()

    def run(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return module(torch.from_numpy(x))

    check_contract(run, extra)
    # No trace of where it was exported (the stacks torch.export keeps name this checkout's files): the
    # same model exported in another folder gives the same file.
    assert b"landmarks/export.py" not in paths["torch.export"].read_bytes()


def test_onnx_contract_with_onnxruntime_and_metadata_props(exported: tuple[dict[str, Path], Tagger, dict]) -> None:
    import onnx
    import onnxruntime as ort

    paths, _, _ = exported
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [(i.name, i.type, i.shape) for i in inputs] == [("images", "tensor(uint8)", ["batch", 3, "height", "width"])]
    assert [o.name for o in outputs] == ["probabilities", "scores"]
    check_contract(lambda x: session.run(None, {"images": x}), session.get_modelmeta().custom_metadata_map)
    model = onnx.load(str(paths["onnx"]))
    assert {p.key for p in model.metadata_props} == {"classes.json", "tagging.json", "preprocess.json"}
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1 and {a.name: a.i for a in resize[0].attribute if a.name == "antialias"} == {"antialias": 1}
    # Nothing that varies between exports (the exporter's notes held memory addresses): the same model
    # gives the same file, so dvc sees no change.
    assert b" at 0x" not in paths["onnx"].read_bytes()


def test_export_writes_files_that_load_in_a_fresh_process(exported: tuple[dict[str, Path], Tagger, dict],
                                                          tmp_path: Path) -> None:
    # export_predictors has loaded and run each file in a fresh interpreter with only its runtime, or it would have raised
    paths, _, reports = exported
    for kind, path in paths.items():
        report = reports[str(path)]
        assert path.is_file() and report["check_images"] == len(CHECK_SIZES) and report["num_classes"] == len(CLASSES)
        assert report["bytes"] == path.stat().st_size
        # what torch said about the format is reported, not dropped: TorchScript is deprecated from torch 2.14
        assert bool(report["deprecated"]) == (kind == "torchscript" and torch_deprecates_jit()), report["deprecated"]
    assert sorted(p.name for p in next(iter(paths.values())).parent.iterdir()) == sorted(FORMATS.values())  # no temp files
    with pytest.raises(ValueError, match="at least one image"):
        export_predictors(tiny_tagger(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS, tagging={"threshold": 0.5},
                          check_images=[], out_paths=[tmp_path / "other.pt"])
    with pytest.raises(ValueError, match="at least one file"):
        export_predictors(tiny_tagger(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS, tagging={"threshold": 0.5},
                          check_images=random_images([(40, 40)]), out_paths=[])


def test_export_refuses_torch_export_and_onnx_files_that_differ_from_the_model(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The .pt2 and .onnx files are checked against the eager tagger too, not only the TorchScript one."""
    other = tiny_tagger(len(CLASSES), seed=1)
    for builder, kind in (("build_program", "torch.export"), ("build_onnx", "onnx")):
        with monkeypatch.context() as m:
            m.setattr(export, builder, lambda tagger, preprocess, build=getattr(export, builder): build(other, preprocess))
            with pytest.raises(RuntimeError, match=f"the {kind} predictor differs from the eager model"):
                export_predictors(tiny_tagger(len(CLASSES)), classes=CLASSES, preprocess=PREPROCESS, tagging=TAGGING,
                                  check_images=random_images([(40, 40)]),
                                  out_paths=[tmp_path / FORMATS["torchscript"], tmp_path / FORMATS[kind]])
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the good files


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
    with pytest.raises(RuntimeError, match="the torchscript predictor differs from the eager model"):
        export_predictors(tagger, classes=CLASSES[:2], preprocess=PREPROCESS, tagging={"threshold": 0.5},
                          check_images=images, out_paths=[out])
    assert not out.exists()


def test_export_stage_checks_and_writes_every_predictor_file(tmp_path: Path, image_tree: dict[str, Any],
                                                             capsys: pytest.CaptureFixture) -> None:
    from landmarks.checkpoint import load_checkpoint
    from stages import export as export_stage

    classes = read_classes(image_tree["splits"])
    preprocess = preprocess_config(image_size=32, mean=image_tree["stats"]["mean"], std=image_tree["stats"]["std"])
    ckpt = tiny_checkpoint(tmp_path / "transfer.pt", classes, preprocess=preprocess)
    tagging = tmp_path / "tagging.json"
    decision = {"model": "transfer", "model_sha256": sha256_file(ckpt), "threshold": 0.42, "score": "knn_msp",
                "neighbours": 2}
    tagging.write_text(json.dumps(decision))
    outs = [tmp_path / name for name in FORMATS.values()]
    argv = ["--model", str(ckpt), "--tagging", str(tagging), "--splits", str(image_tree["splits"]),
            "--images", str(image_tree["images"]), "--out", *map(str, outs)]
    export_stage.main(argv)
    err = capsys.readouterr().err
    for out in outs:  # each file's agreement with the eager model is in the log
        assert re.search(rf"wrote {re.escape(str(out))} \(.*max \|predictor - model\| = [0-9.e-]+ on \d+ test images", err)
    # torch's TorchScript deprecation is said once, with what to use instead
    notes = [line for line in err.splitlines() if "TorchScript is deprecated" in line]
    assert len(notes) == int(torch_deprecates_jit()) and all(".pt2 (torch.export) or .onnx" in n for n in notes)
    model, loaded = load_checkpoint(ckpt)
    images = random_images([(48, 48), (40, 70)], seed=3)
    for out in outs:
        predictor = load_predictor(out)
        assert [c["landmark_id"] for c in predictor.classes] == [c["landmark_id"] for c in classes]
        assert predictor.tagging == decision and predictor.preprocess == preprocess
        # the predictor scores with the score and neighbours of tagging.json, against the checkpoint's gallery
        for score, k in (("knn_msp", 2), ("knn", 3)):
            tagger = build_tagger(model, loaded, score=score, k=k)
            diff = max_difference(predictor, tagger, preprocess, images)
            assert (diff <= TOLERANCES[predictor.format]) == (score == "knn_msp" and k == 2), (out, score, k, diff)

    # a threshold chosen for another checkpoint is refused
    tagging.write_text(json.dumps({**decision, "model_sha256": "0" * 64}))
    for out in outs:
        out.unlink()
    with pytest.raises(SystemExit, match="another checkpoint"):
        export_stage.main(argv)
    # so is a tagging.json without the tagging decision (an old one: threshold only)
    tagging.write_text(json.dumps({"model": "transfer", "model_sha256": sha256_file(ckpt), "threshold": 0.42}))
    with pytest.raises(SystemExit, match="lacks the tagging decision"):
        export_stage.main(argv)
    assert not any(out.exists() for out in outs)
