"""Metrics checked against cases worked out by hand, and the evaluate stage end to end."""
from __future__ import annotations

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

from landmarks.checkpoint import load_checkpoint
from landmarks.data import read_classes, read_split
from landmarks.evaluation import (
    NEVER, confusion_matrix, expected_calibration_error, global_average_precision, macro_f1, most_confident_mistakes,
    per_class_metrics, precision_coverage, predict_dataset, select_threshold, summarize, topk_accuracy,
)
from landmarks.imageio import sha256_file
from landmarks.transforms import eval_transform, preprocess_config
from tests.test_export import one_thread, tiny_checkpoint  # noqa: F401 (one_thread: autouse fixture)

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


# ----------------------------------------------------------------------------- threshold


def test_threshold_is_the_lowest_reaching_the_target_precision() -> None:
    conf, correct = [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1]
    assert select_threshold(conf, correct, 1.0) == (0.8, 1.0, 0.5)
    # precision is not monotonic: 0.7 gives 2/3 but 0.6 gives 3/4 again
    assert select_threshold(conf, correct, 0.7) == (0.6, 0.75, 1.0)
    assert select_threshold(conf, correct, 0.75) == (0.6, 0.75, 1.0)
    assert select_threshold(conf, correct, 0.76) == (0.8, 1.0, 0.5)


def test_threshold_keeps_equal_confidences_together() -> None:
    # the first 0.8 alone would be 100% precise, but no threshold separates it from the second
    t = select_threshold([0.8, 0.8, 0.5], [1, 0, 1], 1.0)
    assert t.threshold == NEVER and t.coverage == 0.0 and math.isnan(t.precision)
    assert select_threshold([0.8, 0.8, 0.5], [1, 0, 1], 0.5) == (0.5, 2 / 3, 1.0)


def test_unreachable_precision_tags_nothing() -> None:
    t = select_threshold([0.9, 0.5], [0, 1], 0.9)
    assert t.threshold > 1.0 and t.coverage == 0.0 and math.isnan(t.precision)
    precision, coverage = precision_coverage([0.9, 1.0, 0.5], [1, 1, 1], t.threshold)
    assert coverage == 0.0 and math.isnan(precision)  # even a confidence of exactly 1.0 is not tagged
    assert select_threshold([], [], 0.9).coverage == 0.0
    with pytest.raises(ValueError, match="target_precision"):
        select_threshold([0.5], [1], 0.0)


def test_precision_coverage_at_a_threshold() -> None:
    assert precision_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1], 0.7) == (2 / 3, 0.75)  # >= keeps 0.7


# ----------------------------------------------------------------------------- summary, predictions


def test_summary_numbers_follow_from_the_probabilities() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 2])
    s = summarize(probs, labels)
    assert s["num_test"] == 4
    assert s["top1"] == 0.75 and s["top5"] == 1.0
    # ranking by confidence: 0.7 ok, 0.6 wrong, 0.5 ok, 0.4 ok -> (1 + 2/3 + 3/4) / 4
    assert s["gap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 4)
    assert s["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))
    assert most_confident_mistakes(probs, labels, 5).tolist() == [2]


def test_predict_dataset_returns_softmax_in_loader_order() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(12, 4))
    x = torch.randn(10, 3, 2, 2)
    loader = DataLoader(TensorDataset(x, torch.zeros(10, dtype=torch.long)), batch_size=3)
    probs = predict_dataset(model.train(), loader, "cpu")  # eval mode is forced: dropout off
    expected = torch.softmax(model.eval()(x), -1).detach().numpy()
    assert probs.shape == (10, 4)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


# ----------------------------------------------------------------------------- the stage


def test_evaluate_stage_writes_honest_metrics_reports_and_threshold(tmp_path: Path, image_tree: dict[str, Any]) -> None:
    from stages import evaluate

    classes = read_classes(image_tree["splits"])
    stats = image_tree["stats"]
    pre = preprocess_config(image_size=32, mean=stats["mean"], std=stats["std"])
    scratch = tiny_checkpoint(tmp_path / "scratch.pt", classes, seed=1, preprocess=pre, augment="paper")
    transfer = tiny_checkpoint(tmp_path / "transfer.pt", classes, seed=2, preprocess=pre)
    # one unreadable test image: counted and left out, not fatal
    test = read_split(image_tree["splits"], "test")
    images = tmp_path / "images"
    shutil.copytree(image_tree["images"], images)
    bad = images / str(test["landmark_id"].iloc[0]) / f"{test['id'].iloc[0]}.jpg"
    bad.write_bytes(b"")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"batch_size": 4}, "tagging": {"precision": 0.5}}))
    r = tmp_path / "reports"
    evaluate.main(["--models", str(scratch), str(transfer), "--names", "scratch", "transfer",
                   "--splits", str(image_tree["splits"]), "--images", str(images), "--metrics", str(r / "metrics.json"),
                   "--tagging", str(r / "tagging.json"), "--confusion", str(r / "confusion"),
                   "--figures", str(r / "figures"), "--out", str(r / "eval"), "--params", str(params)])

    metrics = json.loads((r / "metrics.json").read_text())
    assert set(metrics) == {"scratch", "transfer"}
    readable = test.iloc[1:]
    for name, path in (("scratch", scratch), ("transfer", transfer)):
        m = metrics[name]
        assert {"top1", "top5", "gap", "ece", "macro_f1", "num_test"} <= set(m)
        assert m["num_test"] == len(readable) and m["num_unreadable"] == 1
        # recompute top-1 independently, straight from the checkpoint and the images
        probs, truth = independent_predictions(path, readable, images)
        pred = probs.argmax(1)
        assert m["top1"] == round(float(np.mean(pred == truth)), 5)
        assert 0 <= m["gap"] <= m["top1"] + 1e-5  # one prediction per image: GAP <= accuracy
        ids = [c["landmark_id"] for c in classes]
        records = json.loads((r / "confusion" / f"{name}.json").read_text())
        assert len(records) == len(readable) and set(records[0]) == {"actual", "predicted"}
        names = {c["landmark_id"]: c["name"] for c in classes}
        assert [rec["actual"] for rec in records] == [names[l] for l in readable["landmark_id"]]
        assert [rec["predicted"] for rec in records] == [names[ids[p]] for p in pred]
        per_class = pd.read_csv(r / "eval" / f"per_class_{name}.csv")
        assert list(per_class.columns) == ["landmark_id", "name", "precision", "recall", "f1", "support"]
        assert per_class["support"].sum() == len(readable)
        for fig in (f"confusion_{name}.png", f"mistakes_{name}.png"):
            assert Image.open(r / "figures" / fig).format == "PNG"
    assert Image.open(r / "figures" / "train_batch.png").format == "PNG"

    tagging = json.loads((r / "tagging.json").read_text())
    assert tagging["model"] == "transfer" and tagging["target_precision"] == 0.5
    assert tagging["model_sha256"] == sha256_file(transfer)
    # the record agrees with the transfer model's own predictions on the validation split
    val = read_split(image_tree["splits"], "val")
    probs, truth = independent_predictions(transfer, val, images)
    tagged = probs.max(1) >= tagging["threshold"]
    assert tagging["num_val"] == len(val)
    assert tagging["val_coverage"] == pytest.approx(tagged.mean(), abs=1e-5)
    if tagged.any():
        assert tagging["val_precision"] == pytest.approx((probs.argmax(1) == truth)[tagged].mean(), abs=1e-5)
        assert tagging["val_precision"] >= 0.5
    else:
        assert tagging["threshold"] > 1.0 and tagging["val_precision"] is None and not tagging["reached"]


def independent_predictions(checkpoint: Path, frame: pd.DataFrame, images: Path) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true class indices computed here, without the evaluation module."""
    model, ckpt = load_checkpoint(checkpoint)
    tf = eval_transform(**ckpt["preprocess"])
    ids = [c["landmark_id"] for c in ckpt["classes"]]
    with torch.no_grad():
        x = torch.stack([tf(Image.open(images / str(l) / f"{i}.jpg").convert("RGB"))
                         for l, i in zip(frame["landmark_id"], frame["id"])])
        probs = torch.softmax(model(x), -1).numpy()
    return probs, np.array([ids.index(l) for l in frame["landmark_id"]])
