"""Metrics checked against cases worked out by hand (GAP with distractors included), the assessment of a
tagger on hand-built splits, and the evaluate stage end to end on a split holding distractors."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_fscore_support
from torch.utils.data import DataLoader, TensorDataset

from landmarks import eval_reports
from landmarks import assessment  # (its test_metrics, imported by name, would be collected as a test)
from landmarks.assessment import DISTRACTORS, UNKNOWN_LANDMARKS, choose, negatives, tagging_record
from landmarks.params import TaggingParams
from landmarks.checkpoint import load_checkpoint
from landmarks.data import known_rows, read_classes, read_split
from landmarks.evaluation import (
    confusion_matrix, embed_dataset, expected_calibration_error, global_average_precision, macro_f1,
    per_class_metrics, summarize, topk_accuracy,
)
from landmarks.files import sha256_file
from landmarks.inference import SplitResult
from landmarks.models import EmbeddingNet
from landmarks.openset import Tagger
from landmarks.tagging import NEVER
from landmarks.transforms import eval_transform, preprocess_config
from tests.conftest import REPO
from tests.test_export import one_thread, tiny_checkpoint  # noqa: F401 (one_thread: autouse fixture)
from tests.test_tagging import brute_force

# ----------------------------------------------------------------------------- GAP


@pytest.mark.parametrize(
    "predicted, confidences, labels, expected",
    [
        # all correct
        ([0, 1, 2], [0.9, 0.5, 0.7], [0, 1, 2], 1.0),
        # rel = 1,0,1,1 -> (1 + 2/3 + 3/4) / 4
        ([0, 1, 2, 0], [0.9, 0.8, 0.7, 0.6], [0, 0, 2, 0], (1 + 2 / 3 + 3 / 4) / 4),
        # the same pairs given in another order: GAP only depends on the confidence ranking
        ([0, 2, 0, 1], [0.6, 0.7, 0.9, 0.8], [0, 2, 0, 0], (1 + 2 / 3 + 3 / 4) / 4),
        # a confident mistake on top hurts every later precision: rel = 0,1,1 -> (1/2 + 2/3) / 3
        ([1, 0, 1], [0.99, 0.5, 0.4], [0, 0, 1], (1 / 2 + 2 / 3) / 3),
        # non-landmark images (-1 or None) rank but are not in M: rel = 0,1,1 -> (1/2 + 2/3) / 2
        ([0, 0, 1], [0.5, 0.9, 0.4], [0, -1, 1], (1 / 2 + 2 / 3) / 2),
        ([0, 0, 1], [0.5, 0.9, 0.4], [0, None, 1], (1 / 2 + 2 / 3) / 2),
        # no prediction for the second image: it is not ranked but counts in M
        ([0, -1], [0.9, 0.0], [0, 1], 1 / 2),
        # all wrong
        ([1, 0], [0.9, 0.8], [0, 1], 0.0),
        # ties keep input order (stable): wrong first -> P(2) = 1/2 -> (1/2) / 2
        ([0, 1], [0.5, 0.5], [1, 1], 0.25),
        # same tie, correct first -> P(1) = 1 -> 1 / 2
        ([1, 0], [0.5, 0.5], [1, 1], 0.5),
    ],
)
def test_gap_matches_hand_computed_cases(predicted: list, confidences: list, labels: list, expected: float) -> None:
    assert global_average_precision(predicted, confidences, labels) == pytest.approx(expected, abs=1e-12)


def test_gap_equals_a_plain_loop_reference() -> None:
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(-1, 5, n)
    pred = np.where(rng.random(n) < 0.6, labels.clip(0), rng.integers(0, 5, n))
    conf = rng.random(n).round(2)  # rounding creates many ties
    order = sorted(range(n), key=lambda i: -conf[i])  # Python's sort is stable too
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if labels[i] >= 0 and pred[i] == labels[i]:
            hits += 1
            total += hits / rank
    assert global_average_precision(pred, conf, labels) == pytest.approx(total / (labels >= 0).sum(), abs=1e-12)


def test_gap_rejects_inputs_without_landmarks_or_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="M = 0"):
        global_average_precision([0], [0.5], [-1])
    with pytest.raises(ValueError, match="lengths differ"):
        global_average_precision([0, 1], [0.5], [0, 1])


# ----------------------------------------------------------------------------- top-k


def test_topk_accuracy_counts_true_class_among_k_most_probable() -> None:
    probs = np.array([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.4, 0.1]])
    labels = [0, 1, 1]
    assert topk_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(probs, labels, 2) == pytest.approx(1 / 3)  # row 2: class 1 ties class 0 for 2nd; 0 ranks first
    assert topk_accuracy(probs, labels, 3) == pytest.approx(3 / 3)
    assert topk_accuracy(probs, labels, 5) == 1.0  # k is capped at C = 4
    assert topk_accuracy(probs, [0, -1, 2], 4) == pytest.approx(2 / 3)  # a non-landmark image is never correct


def test_top1_of_a_constant_output_is_only_the_first_class() -> None:
    probs = np.full((4, 4), 0.25)
    assert topk_accuracy(probs, [0, 1, 2, 3], 1) == 0.25  # ties do not count as hits
    assert topk_accuracy(probs, [0, 1, 2, 3], 1) == np.mean(probs.argmax(1) == [0, 1, 2, 3])


# ----------------------------------------------------------------------------- per class, confusion


def test_confusion_rows_are_actual_and_per_class_metrics_by_hand() -> None:
    labels, pred = [0, 0, 1, 2], [0, 1, 1, 1]
    cm = confusion_matrix(labels, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]  # row 0: actual 0 once predicted 1
    stats = per_class_metrics(labels, pred, 3)
    assert stats["precision"] == pytest.approx([1.0, 1 / 3, 0.0])  # class 2 never predicted: 0
    assert stats["recall"] == pytest.approx([0.5, 1.0, 0.0])
    assert stats["f1"] == pytest.approx([2 / 3, 0.5, 0.0])
    assert stats["support"].tolist() == [2, 1, 1]
    assert macro_f1(labels, pred, 3) == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_per_class_and_macro_f1_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 300)
    pred = np.where(rng.random(300) < 0.5, labels, rng.integers(0, 7, 300))  # class 6 is predicted, never actual
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=range(7), zero_division=0)
    stats = per_class_metrics(labels, pred, 7)
    np.testing.assert_allclose(stats["precision"], p)
    np.testing.assert_allclose(stats["recall"], r)
    np.testing.assert_allclose(stats["f1"], f)
    np.testing.assert_array_equal(stats["support"], s)
    assert macro_f1(labels, pred, 7) == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))


# ----------------------------------------------------------------------------- ECE


@pytest.mark.parametrize(
    "confidences, correct, expected",
    [
        ([0.9, 0.9], [1, 0], 0.4),  # one bin: |0.5 - 0.9|
        ([1.0, 0.5], [1, 1], 0.25),  # bins 15 and 8: 1/2 * 0 + 1/2 * |1 - 0.5|
        ([0.95, 0.99], [1, 0], 0.47),  # same bin: |0.5 - 0.97|
        ([0.0, 0.05], [1, 0], 0.475),  # confidence 0 joins the first bin (0, 1/15]: |0.5 - 0.025|
        ([0.7] * 10, [1] * 7 + [0] * 3, 0.0),  # perfectly calibrated
        ([0.3, 0.9, 0.9, 0.9], [0, 1, 1, 0], 1 / 4 * 0.3 + 3 / 4 * abs(2 / 3 - 0.9)),
    ],
)
def test_ece_matches_hand_computed_cases(confidences: list, correct: list, expected: float) -> None:
    assert expected_calibration_error(confidences, correct) == pytest.approx(expected, abs=1e-12)


def test_ece_uses_fifteen_equal_width_bins() -> None:
    # 0.50 and 0.53 share the bin (7/15, 8/15]; 0.54 is in the next one
    assert expected_calibration_error([0.50, 0.53], [1, 0]) == pytest.approx(abs(0.5 - 0.515))
    assert expected_calibration_error([0.50, 0.54], [1, 0]) == pytest.approx((0.5 + 0.54) / 2)


# ----------------------------------------------------------------------------- GAP with distractors


@pytest.mark.parametrize(
    "predicted, confidences, labels, expected",
    [
        # a distractor ranked above two correct predictions: rel = 0,1,1 -> (1/2 + 2/3) / 2
        ([0, 1, 1], [0.9, 0.8, 0.7], [-1, 1, 1], (1 / 2 + 2 / 3) / 2),
        # the same distractor ranked below them costs nothing: (1 + 1) / 2
        ([0, 1, 1], [0.1, 0.8, 0.7], [-1, 1, 1], 1.0),
        # known correct, distractor, known wrong, known correct, distractor: rel = 1,0,0,1,0; M = 3 known photos
        ([0, 1, 0, 2, 2], [0.9, 0.8, 0.7, 0.6, 0.5], [0, -1, 1, 2, -1], (1 + 2 / 4) / 3),
        # a distractor predicted as "class 0" is still wrong, and many distractors do not change M
        ([0, 0, 0, 0], [0.9, 0.8, 0.7, 0.6], [-1, -1, -1, 0], (1 / 4) / 1),
    ],
)
def test_gap_ranks_distractors_but_counts_only_known_photos(predicted: list, confidences: list, labels: list,
                                                             expected: float) -> None:
    assert global_average_precision(predicted, confidences, labels) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- assessment on a hand-built split

# Gallery: class 0 at (1, 0), class 1 at (0, 1); knn with one neighbour: the score of a photo predicted as
# class c is its cosine with class c's direction.
GALLERY = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def hand_tagger() -> Tagger:
    return Tagger(EmbeddingNet(torch.nn.Identity(), torch.nn.Linear(2, 2)), GALLERY, torch.tensor([0, 1]),
                  score="knn", k=1).eval()


def hand_split() -> SplitResult:
    """Five photos: p0 class 0 (predicted 0), p1 distractor (predicted 1), p2 class 1 (predicted 1),
    p3 class 0 (predicted 1: wrong), p4 distractor (predicted 0). The scores are given, ranked p0..p4."""
    labels = np.array([0, -1, 1, 0, -1])
    emb = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.6, 0.8], [1, 0]], dtype=np.float32)
    logits = np.array([[2, 0], [0, 1], [0, 3], [0, 1], [1, 0]], dtype=np.float32)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3], dtype=np.float32)
    return SplitResult([Path(f"p{i}.jpg") for i in range(5)], labels, logits, emb, probs, scores)


def test_negatives_are_the_distractors_and_the_known_photos_with_their_class_hidden() -> None:
    found = negatives(hand_split(), hand_tagger(), TaggingParams(held_out_classes=True))
    assert set(found) == {DISTRACTORS, UNKNOWN_LANDMARKS}
    assert found[DISTRACTORS].tolist() == pytest.approx([0.8, 0.3])
    # p0 (class 0 hidden) -> class 1: cos((1,0),(0,1)) = 0; p2 -> class 0: 0; p3 -> class 1: 0.8
    assert found[UNKNOWN_LANDMARKS].tolist() == pytest.approx([0.0, 0.0, 0.8], abs=1e-6)
    assert set(negatives(hand_split(), hand_tagger(), TaggingParams(held_out_classes=False))) == {DISTRACTORS}
    no_distractors = hand_split().subset(hand_split().known)
    assert set(negatives(no_distractors, hand_tagger(), TaggingParams(held_out_classes=False))) == set()


def test_choose_counts_simulated_unknown_landmarks_as_negatives() -> None:
    # known: p0 0.9 right, p2 0.7 right, p3 0.6 wrong; distractors 0.8, 0.3; unknown landmarks 0, 0, 0.8
    # with them: t=0.7 tags p0, p2, a distractor and an unknown landmark: 2/4 < 0.6, so only t=0.9 remains
    c = choose(hand_split(), hand_tagger(), TaggingParams(precision=0.6, max_false_tag_rate=0.5))
    assert (c.threshold, c.precision, c.coverage) == (pytest.approx(0.9), 1.0, pytest.approx(1 / 3))
    assert c.false_tag_rates == {DISTRACTORS: 0.0, UNKNOWN_LANDMARKS: 0.0}
    # distractors alone: t=0.7 gives 2/3 with one distractor of two (0.5 allowed); t=0.6 gives 2/4
    c = choose(hand_split(), hand_tagger(), TaggingParams(precision=0.6, max_false_tag_rate=0.5, held_out_classes=False))
    assert (c.threshold, c.precision, c.coverage) == (pytest.approx(0.7), pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert c.false_tag_rates == {DISTRACTORS: 0.5}
    # a tighter rate: no distractor may be tagged
    c = choose(hand_split(), hand_tagger(), TaggingParams(precision=0.6, max_false_tag_rate=0.0, held_out_classes=False))
    assert c.threshold == pytest.approx(0.9)


def test_test_metrics_rank_every_photo_by_its_score_glr_style() -> None:
    m = assessment.test_metrics(hand_split(), hand_tagger(), TaggingParams(), 0.65)
    # ranking p0 (right), p1 (distractor), p2 (right), p3 (wrong), p4 (distractor); M = 3 known photos
    assert m["gap"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["gap_known"] == pytest.approx((1 + 2 / 2) / 3)  # the distractors left out
    assert m["top1"] == pytest.approx(2 / 3) and m["num_test"] == 3 and m["num_distractors"] == 2
    # t=0.65 tags p0, p1, p2: 2 of 3 known photos, 2 correct of 3 tags, 1 of 2 distractors
    assert m["threshold"] == 0.65 and m["num_tagged"] == 3
    assert m["coverage"] == pytest.approx(2 / 3) and m["tag_precision"] == pytest.approx(2 / 3)
    assert m["distractor_tag_rate"] == 0.5
    assert m["unknown_landmark_tag_rate"] == pytest.approx(1 / 3)  # p3 hidden scores 0.8
    assert {"top5", "ece", "macro_f1"} <= set(m)
    m = assessment.test_metrics(hand_split(), hand_tagger(), TaggingParams(held_out_classes=False), 0.95)
    assert math.isnan(m["unknown_landmark_tag_rate"]) and m["num_tagged"] == 0 and m["coverage"] == 0.0


def test_tagging_record_schema() -> None:
    params = TaggingParams(precision=0.6, max_false_tag_rate=0.5, score="knn", neighbours=1)
    c = choose(hand_split(), hand_tagger(), params)
    found = assessment.test_metrics(hand_split(), hand_tagger(), params, c.threshold)
    record = tagging_record(c, found, params, num_val=5)
    assert record == {
        "score": "knn", "neighbours": 1, "threshold": c.threshold, "reached": True,
        "target_precision": 0.6, "max_false_tag_rate": 0.5,
        "val": {"precision": 1.0, "coverage": 0.33333, "distractors_tag_rate": 0.0,
                "unknown_landmarks_tag_rate": 0.0, "num_photos": 5},
        "test": {"tag_precision": 1.0, "coverage": 0.33333, "distractor_tag_rate": 0.0,
                 "unknown_landmark_tag_rate": 0.0, "num_test": 3, "num_distractors": 2},
    }
    assert record["threshold"] == float(np.float32(0.9))  # exact, not rounded: the predictor compares with it
    # a validation split whose only known photo is wrong: nothing can be tagged
    unreachable = choose(hand_split().subset(np.array([False, True, False, True, True])), hand_tagger(), params)
    record = tagging_record(unreachable, assessment.test_metrics(hand_split(), hand_tagger(), params, NEVER), params,
                            num_val=3)
    assert record["threshold"] == NEVER and not record["reached"]
    assert record["val"]["precision"] is None and record["test"]["tag_precision"] is None
    assert record["val"]["coverage"] == 0.0 and record["test"]["coverage"] == 0.0


def test_tag_decisions_have_a_no_landmark_row_and_column() -> None:
    actual, tagged = eval_reports.tag_decisions(hand_split(), 0.65, 2)
    assert actual.tolist() == [0, 2, 1, 0, 2]  # 2 = "no landmark": the distractors
    assert tagged.tolist() == [0, 1, 1, 2, 2]  # 2 = no tag: scores below 0.65
    assert confusion_matrix(actual, tagged, 3).tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_mistakes_figure_shows_the_highest_scoring_wrong_predictions(tmp_path: Path, monkeypatch) -> None:
    split = hand_split()
    split.paths = [tmp_path / p.name for p in split.paths]
    for p in split.paths:
        Image.new("RGB", (20, 20)).save(p)
    shown: dict[str, Any] = {}
    monkeypatch.setattr(eval_reports, "plot_gallery", lambda images, captions, path, **kw: shown.update(captions=captions))
    eval_reports.plot_mistakes("m", split, ["Zero", "One"], 0.65, tmp_path / "mistakes.png")
    # wrong: p1 (distractor, 0.8, tagged), p3 (0.6, not tagged), p4 (distractor, 0.3); by score
    assert shown["captions"] == ["true: no landmark\npred: One\nscore 0.80: TAGGED",
                                 "true: Zero\npred: One\nscore 0.60: not tagged",
                                 "true: no landmark\npred: Zero\nscore 0.30: not tagged"]


# ----------------------------------------------------------------------------- summary, embeddings


def test_summary_numbers_follow_from_the_probabilities() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 2])
    s = summarize(probs, labels)
    assert s["num_test"] == 4
    assert s["top1"] == 0.75 and s["top5"] == 1.0
    # ranking by confidence: 0.7 ok, 0.6 wrong, 0.5 ok, 0.4 ok -> (1 + 2/3 + 3/4) / 4
    assert s["gap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 4)
    assert s["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))


def test_embed_dataset_returns_logits_and_embeddings_in_loader_order() -> None:
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(12, 5))
    net = EmbeddingNet(body, torch.nn.Linear(5, 4))
    x = torch.randn(10, 3, 2, 2)
    loader = DataLoader(TensorDataset(x, torch.zeros(10, dtype=torch.long)), batch_size=3)
    logits, emb = embed_dataset(net.train(), loader, "cpu")  # eval mode is forced: dropout off
    net.eval()
    with torch.no_grad():
        expected_emb = body(x)
        expected_logits = net.last(expected_emb)
    assert logits.shape == (10, 4) and emb.shape == (10, 5) and logits.dtype == emb.dtype == np.float32
    np.testing.assert_allclose(emb, expected_emb.numpy(), atol=1e-6)
    np.testing.assert_allclose(logits, expected_logits.numpy(), atol=1e-6)
    empty = DataLoader(TensorDataset(x[:0], torch.zeros(0, dtype=torch.long)), batch_size=3)
    with pytest.raises(ValueError, match="no batches"):
        embed_dataset(net, empty, "cpu")


# ----------------------------------------------------------------------------- the stage

NEIGHBOURS = 2
TARGET_PRECISION = 0.5
MAX_FALSE_TAG_RATE = 0.25
EPS = 1e-6  # scores recomputed here differ from the stage's by float rounding


def with_distractors(tmp_path: Path, image_tree: dict[str, Any], n_val: int = 4, n_test: int = 4) -> tuple[Path, Path]:
    """A copy of image_tree whose val and test splits also hold distractors: landmark_id -1 rows, their
    photos under images/no_landmark/. Returns (images, splits)."""
    images, splits = tmp_path / "images", tmp_path / "splits"
    shutil.copytree(image_tree["images"], images)
    shutil.copytree(image_tree["splits"], splits)
    (images / "no_landmark").mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("val", n_val), ("test", n_test)):
        ids = [hashlib.sha256(f"distractor-{name}-{i}".encode()).hexdigest()[:16] for i in range(n)]
        for i in ids:
            y, x = np.mgrid[0:48, 0:48]
            stripes = (np.sin(x / rng.uniform(1, 4) + y / rng.uniform(1, 4)) * 100 + 128)[..., None]
            arr = np.clip(stripes + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(images / "no_landmark" / f"{i}.jpg", quality=92)
        frame = pd.concat([read_split(splits, name), pd.DataFrame({"id": ids, "landmark_id": -1})], ignore_index=True)
        frame.to_csv(splits / f"{name}.csv", index=False)
    return images, splits


def photo_path(images: Path, landmark_id: int, image_id: str) -> Path:
    return images / ("no_landmark" if landmark_id == -1 else str(landmark_id)) / f"{image_id}.jpg"


def independent_outputs(checkpoint: Path, frame: pd.DataFrame, images: Path) -> dict[str, Any]:
    """Logits, embeddings (what the last Linear reads, caught by a hook), knn scores and the true class index
    (-1: a distractor) computed here, without the evaluation, inference and openset modules."""
    model, ckpt = load_checkpoint(checkpoint)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    tf = eval_transform(**ckpt["preprocess"])
    ids = [c["landmark_id"] for c in ckpt["classes"]]
    with torch.no_grad():
        x = torch.stack([tf(Image.open(photo_path(images, l, i)).convert("RGB")) for l, i in zip(frame["landmark_id"], frame["id"])])
        logits = model(x).double().numpy()
    hook.remove()
    gallery = ckpt["gallery"]["embeddings"].double().numpy()
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery_labels = ckpt["gallery"]["labels"].numpy()
    emb = seen[0].double().numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    def knn(e: np.ndarray, c: int) -> float:
        return float(np.sort(gallery[gallery_labels == c] @ e)[::-1][:NEIGHBOURS].mean())

    truth = np.array([ids.index(l) if l != -1 else -1 for l in frame["landmark_id"]])
    pred = logits.argmax(1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    hidden = logits.copy()
    hidden[np.arange(len(truth)), np.clip(truth, 0, None)] = -np.inf  # each known photo with its own class hidden
    return {"probs": probs, "pred": pred, "truth": truth, "known": truth >= 0,
            "scores": np.array([knn(e, p) for e, p in zip(emb, pred)]),
            "unknown": np.array([knn(e, p) for e, p, t in zip(emb, hidden.argmax(1), truth) if t >= 0])}


def reference_gap(pred: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> float:
    hits, total = 0, 0.0
    for rank, i in enumerate(sorted(range(len(pred)), key=lambda i: -scores[i]), start=1):
        if truth[i] >= 0 and pred[i] == truth[i]:
            hits += 1
            total += hits / rank
    return total / (truth >= 0).sum()


def test_evaluate_stage_chooses_the_threshold_with_distractors_and_reports_honestly(
    tmp_path: Path, image_tree: dict[str, Any]
) -> None:
    from stages import evaluate

    classes = read_classes(image_tree["splits"])
    class_ids = [c["landmark_id"] for c in classes]
    stats = image_tree["stats"]
    pre = preprocess_config(image_size=32, mean=stats["mean"], std=stats["std"])
    images, splits = with_distractors(tmp_path, image_tree)
    # Random-weight models know nothing, so every photo would look like every class. These have seen the
    # training and validation photos (their heads are fitted to them, their galleries hold them): on the
    # validation split, photos they classify right look like their gallery; wrong ones and negatives less so.
    seen = pd.concat([read_split(splits, "train"), known_rows(read_split(splits, "val"))])
    seen_images = [torch.from_numpy(np.array(Image.open(photo_path(images, l, i)).convert("RGB"))).permute(2, 0, 1)
                   for l, i in zip(seen["landmark_id"], seen["id"])]
    seen_labels = [class_ids.index(l) for l in seen["landmark_id"]]
    scratch, transfer = (
        tiny_checkpoint(tmp_path / f"{name}.pt", classes, seed=seed, preprocess=pre, augment=augment,
                        gallery_images=seen_images, gallery_labels=seen_labels, head_fitted_to_gallery=True)
        for name, seed, augment in (("scratch", 1, "paper"), ("transfer", 2, "strong")))
    # one unreadable test image: counted and left out, not fatal
    test = read_split(splits, "test")
    photo_path(images, test["landmark_id"].iloc[0], test["id"].iloc[0]).write_bytes(b"")
    readable = test.iloc[1:].reset_index(drop=True)
    params = tmp_path / "params.yaml"
    real = yaml.safe_load((REPO / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({**real, "evaluate": {"batch_size": 4}, "tagging": {
        "precision": TARGET_PRECISION, "max_false_tag_rate": MAX_FALSE_TAG_RATE, "score": "knn",
        "neighbours": NEIGHBOURS, "held_out_classes": True}}))
    r = tmp_path / "reports"
    evaluate.main(["--models", str(scratch), str(transfer), "--names", "scratch", "transfer",
                   "--splits", str(splits), "--images", str(images), "--metrics", str(r / "metrics.json"),
                   "--tagging", str(r / "tagging.json"), "--confusion", str(r / "confusion"),
                   "--figures", str(r / "figures"), "--out", str(r / "eval"), "--params", str(params)])

    metrics = json.loads((r / "metrics.json").read_text())
    assert set(metrics) == {"scratch", "transfer"}
    val = read_split(splits, "val")
    names = {c["landmark_id"]: c["name"] for c in classes}
    thresholds = {}
    for name, path in (("scratch", scratch), ("transfer", transfer)):
        m = metrics[name]
        assert {"top1", "top5", "gap", "gap_known", "ece", "macro_f1", "num_test", "num_distractors", "threshold",
                "coverage", "tag_precision", "distractor_tag_rate", "unknown_landmark_tag_rate", "num_tagged",
                "num_unreadable"} <= set(m)
        # the threshold: the best coverage on the validation split, recomputed here by brute force
        v = independent_outputs(path, val, images)
        correct = (v["pred"] == v["truth"])[v["known"]]
        coverage, t = brute_force(v["scores"][v["known"]], correct,
                                  {"distractors": v["scores"][~v["known"]], "unknown_landmarks": v["unknown"]},
                                  TARGET_PRECISION, MAX_FALSE_TAG_RATE)
        thresholds[name] = (t, coverage)
        assert m["threshold"] == pytest.approx(round(t, 5), abs=1e-5)

        # the test metrics, recomputed from the checkpoint and the images
        o = independent_outputs(path, readable, images)
        known, tagged = o["known"], o["scores"] >= t - EPS
        assert m["num_test"] == known.sum() == len(readable) - 4 and m["num_distractors"] == 4
        assert m["num_unreadable"] == 1
        assert m["top1"] == pytest.approx(np.mean(o["pred"][known] == o["truth"][known]), abs=1e-5)
        assert m["gap"] == pytest.approx(reference_gap(o["pred"], o["scores"], o["truth"]), abs=1e-5)
        assert m["gap_known"] == pytest.approx(reference_gap(o["pred"][known], o["scores"][known], o["truth"][known]), abs=1e-5)
        assert 0 <= m["gap"] <= m["gap_known"] <= m["top1"] + 1e-5  # distractors only push correct answers down
        assert m["coverage"] == pytest.approx(tagged[known].mean(), abs=1e-5)
        assert m["distractor_tag_rate"] == pytest.approx(tagged[~known].mean(), abs=1e-5)
        assert m["unknown_landmark_tag_rate"] == pytest.approx((o["unknown"] >= t - EPS).mean(), abs=1e-5)
        assert m["num_tagged"] == tagged.sum()
        if tagged.any():
            assert m["tag_precision"] == pytest.approx((tagged & (o["pred"] == o["truth"])).sum() / tagged.sum(), abs=1e-5)
        else:
            assert m["tag_precision"] is None

        # confusion records: the tags users get; "no landmark" for distractors and for untagged photos
        records = json.loads((r / "confusion" / f"{name}.json").read_text())
        assert len(records) == len(readable) and set(records[0]) == {"actual", "predicted"}
        assert [rec["actual"] for rec in records] == [names.get(l, "no landmark") for l in readable["landmark_id"]]
        assert [rec["actual"] for rec in records].count("no landmark") == 4
        assert [rec["predicted"] for rec in records] == [
            names[class_ids[p]] if g else "no landmark" for p, g in zip(o["pred"], tagged)]
        per_class = pd.read_csv(r / "eval" / f"per_class_{name}.csv")
        assert list(per_class.columns) == ["landmark_id", "name", "precision", "recall", "f1", "support"]
        assert per_class["support"].sum() == known.sum()
        photos = pd.read_csv(r / "eval" / f"predictions_{name}.csv", dtype=str, keep_default_na=False)
        assert len(photos) == len(readable) and (photos["landmark_id"] == "").sum() == 4
        assert photos["tagged_landmark_id"].tolist() == [
            str(class_ids[p]) if g else "" for p, g in zip(o["pred"], tagged)]
        for fig in (f"confusion_{name}.png", f"mistakes_{name}.png"):
            assert Image.open(r / "figures" / fig).format == "PNG"
    assert Image.open(r / "figures" / "train_batch.png").format == "PNG"

    tagging = json.loads((r / "tagging.json").read_text())
    assert tagging["model"] == "transfer" and tagging["model_sha256"] == sha256_file(transfer)
    assert tagging["score"] == "knn" and tagging["neighbours"] == NEIGHBOURS
    assert tagging["target_precision"] == TARGET_PRECISION and tagging["max_false_tag_rate"] == MAX_FALSE_TAG_RATE
    t, coverage = thresholds["transfer"]
    assert tagging["reached"] and 0 < coverage < 1, "the test needs a threshold that tags some photos, not all"
    assert tagging["threshold"] == pytest.approx(t, abs=1e-6)
    assert tagging["threshold"] == metrics["transfer"]["threshold"]  # exact in both: rounded, "tag nothing" would read 1.0
    # what the record claims for the validation split holds on scores recomputed here. The threshold is a
    # known photo's score; a misclassified photo's simulated twin (its class hidden, the same prediction)
    # has that very score too, up to float rounding, so negatives within EPS may fall either side.
    v = independent_outputs(transfer, val, images)
    known = v["known"]
    tagged_known = v["scores"][known] >= t  # exact: t is one of these very numbers
    correct = (tagged_known & (v["pred"] == v["truth"])[known]).sum()
    neg_lo = {kind: s > t + EPS for kind, s in (("distractors", v["scores"][~known]), ("unknown_landmarks", v["unknown"]))}
    neg_hi = {kind: s >= t - EPS for kind, s in (("distractors", v["scores"][~known]), ("unknown_landmarks", v["unknown"]))}
    assert tagging["val"]["num_photos"] == len(val)
    assert tagging["val"]["coverage"] == pytest.approx(tagged_known.mean(), abs=1e-5) == pytest.approx(coverage)
    for kind in neg_lo:
        assert neg_lo[kind].mean() - 1e-5 <= tagging["val"][f"{kind}_tag_rate"] <= neg_hi[kind].mean() + 1e-5
        assert tagging["val"][f"{kind}_tag_rate"] <= MAX_FALSE_TAG_RATE
    assert neg_hi["distractors"].mean() <= MAX_FALSE_TAG_RATE
    fewest, most = (tagged_known.sum() + sum(x.sum() for x in neg.values()) for neg in (neg_lo, neg_hi))
    assert correct / most - 1e-5 <= tagging["val"]["precision"] <= correct / fewest + 1e-5
    assert tagging["val"]["precision"] >= TARGET_PRECISION
    # tag precision over the real val photos (distractors included) reaches the target
    assert correct / (tagged_known.sum() + neg_hi["distractors"].sum()) >= TARGET_PRECISION
    m = metrics["transfer"]
    assert tagging["test"] == {k: m[k] for k in ("tag_precision", "coverage", "distractor_tag_rate",
                                                  "unknown_landmark_tag_rate", "num_test", "num_distractors")}
