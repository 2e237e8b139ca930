"""Open-set scores by hand: knn similarity, the tagger, hidden classes, the exported predictor, checkpoints."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landmarks.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from landmarks.export import build_predictor
from landmarks.models import EmbeddingNet, build_model, split_at_last_linear
from landmarks.openset import (
    SCORES, Tagger, build_tagger, gallery_record, knn_similarity, open_set_scores, simulated_unknown_scores,
)
from landmarks.transforms import preprocess_uint8
from tests.test_export import CLASSES, PREPROCESS, one_thread, random_images, tiny_gallery, tiny_model  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")

S = 1 / math.sqrt(2)


def unit(*rows: tuple[float, ...]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- knn_similarity


# Class 0: three rows at 0, 90 and 180 degrees; class 1: one row at 45 degrees.
GALLERY = unit((1, 0), (0, 1), (-1, 0), (1, 1))
GALLERY_LABELS = torch.tensor([0, 0, 0, 1])


@pytest.mark.parametrize("embedding, predicted, k, expected", [
    ((1, 0), 0, 1, 1.0),  # its own direction
    ((1, 0), 0, 2, (1 + 0) / 2),  # the two nearest of class 0: cos 1 and cos 0
    ((1, 0), 0, 3, (1 + 0 - 1) / 3),
    ((3, 0), 0, 2, 0.5),  # the embedding's length does not matter
    ((1, 0), 0, 9, 0.0),  # k beyond the class: the mean over the rows it has
    ((1, 0), 1, 1, S),  # only rows of the predicted class count, however near the others are
    ((1, 0), 1, 3, S),  # class 1 has a single row: the mean over that row
    ((0, -2), 1, 2, -S),
    ((-1, 1), 0, 2, (S + S) / 2),  # 135 degrees: 45 from (0, 1) and from (-1, 0)
])
def test_knn_similarity_by_hand(embedding: tuple, predicted: int, k: int, expected: float) -> None:
    got = knn_similarity(torch.tensor([embedding], dtype=torch.float32), GALLERY, GALLERY_LABELS,
                         torch.tensor([predicted]), k)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_knn_similarity_scores_each_row_against_its_own_predicted_class() -> None:
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = knn_similarity(emb, GALLERY, GALLERY_LABELS, torch.tensor([0, 1, 0]), 1)
    assert got.tolist() == pytest.approx([1.0, S, 1.0], abs=1e-6)


def test_knn_similarity_lies_in_minus_one_to_one() -> None:
    g = torch.Generator().manual_seed(0)
    gallery = nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    labels = torch.randint(0, 4, (40,), generator=g)
    emb = torch.randn(200, 8, generator=g) * 50
    emb[:3] = gallery[:3] * 7  # exactly aligned with a gallery row: cosine 1 up to rounding
    emb[3:6] = -gallery[3:6]
    for k in (1, 3, 100):
        sim = knn_similarity(emb, gallery, labels, torch.randint(0, 4, (200,), generator=g), k)
        assert ((sim >= -1.0) & (sim <= 1.0)).all()
    aligned = knn_similarity(emb[:3], gallery, labels, labels[:3], 1)
    assert aligned.tolist() == pytest.approx([1.0] * 3, abs=1e-6)


# ----------------------------------------------------------------------------- open_set_scores


def test_open_set_scores_msp_knn_and_their_product() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.5]])
    emb = torch.tensor([[1.0, 0.0], [0.0, -1.0], [2.0, 0.0]])
    probs = torch.softmax(logits, dim=1)
    top = probs.max(dim=1).values
    knn = torch.tensor([1.0, -S, S])  # k=1: row 0 predicts class 0, rows 1 and 2 class 1
    for score, expected in (("msp", top), ("knn", knn), ("knn_msp", knn.clamp(min=0) * top)):
        p, s = open_set_scores(logits, emb, GALLERY, GALLERY_LABELS, score, 1)
        assert torch.allclose(p, probs, atol=1e-7)
        assert s.tolist() == pytest.approx(expected.tolist(), abs=1e-6), score
    _, msp = open_set_scores(logits, emb, GALLERY, GALLERY_LABELS, "msp", 1)
    assert torch.equal(msp, probs.max(dim=1).values)  # msp is exactly the top probability


def test_tagger_rejects_unknown_scores_and_bad_k() -> None:
    net = EmbeddingNet(nn.Identity(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="score='cosine'"):
        Tagger(net, GALLERY, GALLERY_LABELS, score="cosine", k=1)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k="):
            Tagger(net, GALLERY, GALLERY_LABELS, score="knn", k=k)
    assert set(SCORES) == {"knn", "msp", "knn_msp"}


# ----------------------------------------------------------------------------- the Tagger


def small_net(seed: int = 0) -> EmbeddingNet:
    torch.manual_seed(seed)
    return EmbeddingNet(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 3)).eval()


def test_tagger_equals_a_computation_by_hand() -> None:
    net = small_net()
    g = torch.Generator().manual_seed(1)
    gallery = torch.randn(9, 3, generator=g) * 4  # not normalised: the tagger normalises it
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    x = torch.randn(6, 4, generator=g)
    with torch.no_grad():
        emb = torch.relu(x @ net.body[0].weight.t() + net.body[0].bias).numpy().astype(np.float64)
    logits = emb @ net.last.weight.detach().numpy().T + net.last.bias.detach().numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    gal = gallery.numpy() / np.linalg.norm(gallery.numpy(), axis=1, keepdims=True)
    for k in (1, 2, 3):
        expected = []
        for e, p in zip(emb, pred):
            norm = np.linalg.norm(e)
            sims = gal[labels.numpy() == p] @ (e / norm if norm else e)
            expected.append(np.sort(sims)[::-1][:k].mean())
        tagger = Tagger(net, gallery, labels, score="knn", k=k).eval()
        with torch.no_grad():
            got_probs, got = tagger(x)
        np.testing.assert_allclose(got_probs.numpy(), probs, atol=1e-6)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    assert torch.allclose(tagger.gallery.norm(dim=1), torch.ones(9))  # stored normalised


def test_gallery_record_is_normalised_half_precision_with_long_labels() -> None:
    rec = gallery_record(torch.tensor([[3.0, 4.0], [0.0, -2.0]]), torch.tensor([1, 0], dtype=torch.int32))
    assert rec["embeddings"].dtype == torch.float16 and rec["labels"].dtype == torch.long
    assert rec["embeddings"].float().flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, -1.0], abs=1e-3)
    assert rec["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="as many labels"):
        gallery_record(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="as many labels"):
        gallery_record(torch.zeros(0, 2), torch.zeros(0))


def test_build_tagger_needs_a_gallery_except_for_msp() -> None:
    model = tiny_model(len(CLASSES))
    with pytest.raises(ValueError, match="no gallery"):
        build_tagger(model, {}, score="knn", k=3)
    tagger = build_tagger(model, {}, score="msp", k=3)
    x = preprocess_uint8(torch.stack(random_images([(40, 40)] * 2)), **PREPROCESS)
    with torch.no_grad():
        probs, score = tagger(x)
        expected = torch.softmax(model(x), dim=1)
    assert not tagger.training
    assert torch.allclose(probs, expected, atol=1e-6) and torch.equal(score, probs.max(dim=1).values)


# ----------------------------------------------------------------------------- split_at_last_linear


@pytest.mark.parametrize("name, size", [("vgg", 32), ("paper", 32), ("efficientnet_lite0", 32), ("resnet18", 32)])
def test_split_at_last_linear_gives_the_models_logits_and_leaves_it_intact(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, image_size=size, pretrained=False).eval()
    linears_before = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        before = model(x)
        net = split_at_last_linear(model).eval()
        logits, emb = net(x)
        after = model(x)
    assert torch.allclose(logits, before, atol=1e-5)
    last = model.get_submodule(linears_before[-1])
    assert emb.shape == (2, last.in_features)
    assert torch.allclose(last(emb), before, atol=1e-5)  # the embedding is what the last Linear reads
    # the original model keeps its head and answers as before
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == linears_before
    assert torch.equal(after, before)
    # the split shares the weights: no copy of the parameters
    assert net.last is last
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}


# ----------------------------------------------------------------------------- hidden classes


def identity_tagger(gallery: torch.Tensor, labels: torch.Tensor, *, score: str = "knn", k: int = 1) -> Tagger:
    return Tagger(EmbeddingNet(nn.Identity(), nn.Linear(2, int(labels.max()) + 1)), gallery, labels, score=score, k=k)


def test_simulated_unknown_scores_never_use_the_hidden_class() -> None:
    # Every photo's nearest gallery rows are those of its own class (cosine 1); hidden, the photo is
    # predicted as the best other class by logits and scored against that class's rows only.
    gallery = unit((1, 0), (0, 1), (S, S), (-1, 0))
    labels = torch.tensor([0, 1, 2, 2])
    tagger = identity_tagger(gallery, labels)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [S, S]])
    true = torch.tensor([0, 1, 0, 2])
    logits = torch.tensor([[9.0, 1.0, 2.0],  # hide 0 -> class 2 (logit 2 > 1): nearest class-2 row cos(0,45) = S
                           [1.0, 9.0, 0.0],  # hide 1 -> class 0: cos(90) = 0
                           [9.0, 3.0, 2.0],  # hide 0 -> class 1, though class 2 has a nearer row: cos(90) = 0
                           [0.0, 1.0, 9.0]])  # hide 2 -> class 1: cos(45) = S
    got = simulated_unknown_scores(logits, emb, true, tagger)
    assert got.tolist() == pytest.approx([S, 0.0, 0.0, S], abs=1e-6)
    # not hidden, the same photos score 1: each looks exactly like its class
    _, plain = open_set_scores(logits, emb, tagger.gallery, tagger.gallery_labels, "knn", 1)
    assert plain.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0], abs=1e-6)


def test_simulated_unknown_msp_is_the_top_probability_without_the_hidden_class() -> None:
    tagger = identity_tagger(unit((1, 0), (0, 1), (1, 1)), torch.tensor([0, 1, 2]), score="msp")
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 0.0]])
    got = simulated_unknown_scores(logits, torch.ones(2, 2), torch.tensor([0, 1]), tagger)
    e = math.e
    assert got.tolist() == pytest.approx([e**2 / (e + e**2), 0.5], abs=1e-6)


def test_simulating_unknown_landmarks_needs_two_classes() -> None:
    tagger = identity_tagger(unit((1, 0), (0, 1)), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="at least two classes"):
        simulated_unknown_scores(torch.tensor([[1.0]]), torch.ones(1, 2), torch.tensor([0]), tagger)


# ----------------------------------------------------------------------------- the exported predictor


@pytest.mark.parametrize("score, k", [("knn", 3), ("knn", 1), ("msp", 3), ("knn_msp", 2)])
def test_scripted_predictor_tag_equals_the_eager_tagger(score: str, k: int) -> None:
    model = tiny_model(len(CLASSES))
    tagger = build_tagger(model, {"gallery": tiny_gallery(model, len(CLASSES))}, score=score, k=k)
    predictor = build_predictor(tagger, PREPROCESS)
    assert isinstance(predictor, torch.jit.ScriptModule)
    batch = torch.stack(random_images([(45, 61)] * 4, seed=5))
    with torch.no_grad():
        probs, scores = tagger(preprocess_uint8(batch, **PREPROCESS))
        got_probs, got_scores = predictor.tag(batch)
    assert (got_probs - probs).abs().max().item() <= 1e-5
    assert (got_scores - scores).abs().max().item() <= 1e-5
    assert predictor.score == score and predictor.k == k


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_with_a_gallery_round_trips_with_weights_only(tmp_path: Path) -> None:
    model = tiny_model(len(CLASSES))
    gallery = tiny_gallery(model, len(CLASSES))
    ckpt = make_checkpoint(model, arch="vgg", arch_kwargs={"dropout": 0.3}, classes=CLASSES, preprocess=PREPROCESS,
                           params={"seed": 0}, gallery=gallery)
    path = tmp_path / "model.pt"
    save_checkpoint(path, ckpt)
    loaded_model, loaded = load_checkpoint(path)
    assert torch.equal(loaded["gallery"]["embeddings"], gallery["embeddings"])
    assert loaded["gallery"]["embeddings"].dtype == torch.float16
    assert torch.equal(loaded["gallery"]["labels"], gallery["labels"])
    x = preprocess_uint8(torch.stack(random_images([(40, 40)] * 3, seed=2)), **PREPROCESS)
    with torch.no_grad():
        a = build_tagger(model, ckpt, score="knn", k=2)(x)
        b = build_tagger(loaded_model, loaded, score="knn", k=2)(x)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)
    # a checkpoint made without a gallery has no gallery key, and still loads
    save_checkpoint(path, make_checkpoint(model, arch="vgg", arch_kwargs={}, classes=CLASSES, preprocess=PREPROCESS,
                                          params={}))
    assert "gallery" not in load_checkpoint(path)[1]


class Payload:
    """Unpickling this would run code: it opens (creates) a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_load_checkpoint_refuses_pickled_objects(tmp_path: Path) -> None:
    model = tiny_model(len(CLASSES))
    marker = tmp_path / "code-ran"
    ckpt = make_checkpoint(model, arch="vgg", arch_kwargs={}, classes=CLASSES, preprocess=PREPROCESS,
                           params={"payload": Payload(marker)}, gallery=tiny_gallery(model, len(CLASSES)))
    path = tmp_path / "evil.pt"
    save_checkpoint(path, ckpt)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert not marker.exists()
