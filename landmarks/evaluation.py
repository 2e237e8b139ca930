"""Metrics for landmark classifiers: pure functions on numpy arrays.

Conventions used throughout:
- `probs` is [N, C] (rows sum to 1), `labels` is [N] class indices; a label < 0 marks an image
  with no landmark among the classes (a "non-landmark" image, GLDv2-style distractor).
- Predictions are the arg-max of `probs` (the first class wins an exact tie, as np.argmax does).
- Ranked lists are sorted by confidence, descending, with a STABLE sort: images with equal
  confidence keep their input order. GAP depends on that order when tied; the rule is fixed here
  so the number is reproducible.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

ECE_BINS = 15


@torch.no_grad()
def embed_dataset(net: nn.Module, loader: DataLoader, device: torch.device | str, *, desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]), float32, of an EmbeddingNet over `loader`, in loader order."""
    outputs = _run(net, loader, device, desc)
    return np.concatenate([o[0].float().numpy() for o in outputs]), np.concatenate([o[1].float().numpy() for o in outputs])


def _run(model: nn.Module, loader: DataLoader, device: torch.device | str, desc: str) -> list[Any]:
    """model(images) for every batch, moved to the CPU."""
    model.eval().to(device)
    out = []
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        y = model(batch[0].to(device))
        out.append(tuple(t.cpu() for t in y) if isinstance(y, tuple) else y.cpu())
    if not out:
        raise ValueError("the loader yielded no batches: nothing to evaluate")
    return out


def _labels(labels: Any) -> np.ndarray:
    """Labels as int64 with None (no landmark) mapped to -1."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    return np.array([-1 if v is None else v for v in labels], dtype=np.int64)


def topk_accuracy(probs: np.ndarray, labels: Any, k: int) -> float:
    """Fraction of images whose true class is among the k most probable (k is capped at C).

    Ties are broken as np.argmax breaks them (the lower class index ranks first), so top-1 is
    exactly the accuracy of the arg-max prediction and a constant output earns no credit.
    Non-landmark images (label < 0) are never correct.
    """
    probs = np.asarray(probs)
    labels = _labels(labels)
    if len(labels) == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    k = min(k, probs.shape[1])
    valid = labels >= 0
    safe = np.clip(labels, 0, None)
    true_p = probs[np.arange(len(labels)), safe][:, None]
    earlier = np.arange(probs.shape[1])[None, :] < safe[:, None]
    rank = ((probs > true_p) | ((probs == true_p) & earlier)).sum(axis=1)
    return float(np.mean(valid & (rank < k)))


def global_average_precision(predicted: Any, confidences: Any, labels: Any) -> float:
    """Global Average Precision (Kaggle Google Landmark Recognition, micro-AP over images).

    Each image contributes at most one (predicted class, confidence) pair. All pairs are sorted
    by confidence, descending (stable: ties keep input order), and

        GAP = (1/M) * sum_i P(i) * rel(i)

    where P(i) is the precision of the first i pairs, rel(i) = 1 if pair i is correct, and M is
    the number of images that have a true landmark (label >= 0 / not None). Non-landmark images
    are ranked like the others (their prediction is always wrong) but do not count in M. An image
    with predicted class < 0 (or None) made no prediction: it is left out of the ranking, and
    still counts in M if it has a landmark.
    """
    pred = _labels(predicted)
    conf = np.asarray(confidences, dtype=np.float64)
    true = _labels(labels)
    if not (len(pred) == len(conf) == len(true)):
        raise ValueError(f"lengths differ: {len(pred)} predictions, {len(conf)} confidences, {len(true)} labels")
    m = int((true >= 0).sum())
    if m == 0:
        raise ValueError("GAP is undefined when no image has a landmark (M = 0)")
    made = pred >= 0
    pred, conf, true = pred[made], conf[made], true[made]
    order = np.argsort(-conf, kind="stable")
    rel = (pred[order] == true[order]) & (true[order] >= 0)
    precision_at_i = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision_at_i * rel).sum() / m)


def expected_calibration_error(confidences: Any, correct: Any, n_bins: int = ECE_BINS) -> float:
    """ECE over `n_bins` equal-width bins of the top-1 confidence.

    Bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 goes to the first bin.
    ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|, empty bins contributing nothing.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0 or len(conf) != len(hit):
        raise ValueError(f"need equally many confidences and outcomes, got {len(conf)} and {len(hit)}")
    if np.any((conf < 0) | (conf > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.abs(np.bincount(bins, weights=hit, minlength=n_bins) - np.bincount(bins, weights=conf, minlength=n_bins))
    # |sum(hit) - sum(conf)| / N per bin == (n_b / N) * |acc_b - conf_b|
    return float(gap.sum() / len(conf))


def confusion_matrix(labels: Any, predicted: Any, num_classes: int) -> np.ndarray:
    """[C, C] counts: rows are the actual class, columns the predicted one. Labels < 0 are left out."""
    true = _labels(labels)
    pred = _labels(predicted)
    keep = (true >= 0) & (pred >= 0)
    if np.any(true[keep] >= num_classes) or np.any(pred[keep] >= num_classes):
        raise ValueError(f"class index out of range for num_classes={num_classes}")
    flat = true[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(labels: Any, predicted: Any, num_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1, support (actual count) and predicted count of each class (arrays of length C).

    A ratio with a zero denominator (a class never predicted, or never present) is 0, as in
    scikit-learn's zero_division=0.
    """
    cm = confusion_matrix(labels, predicted, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted_count = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted_count, out=np.zeros(num_classes), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted_count}


def macro_f1(labels: Any, predicted: Any, num_classes: int) -> float:
    """Mean F1 over the classes that occur as actual or predicted (scikit-learn's macro average)."""
    stats = per_class_metrics(labels, predicted, num_classes)
    seen = (stats["support"] + stats["predicted"]) > 0
    return float(stats["f1"][seen].mean()) if seen.any() else 0.0


def summarize(probs: np.ndarray, labels: Any) -> dict[str, float | int]:
    """The headline numbers of one model on one split (fractions in 0..1, unrounded)."""
    probs = np.asarray(probs)
    true = _labels(labels)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = pred == true
    return {
        "top1": topk_accuracy(probs, true, 1),
        "top5": topk_accuracy(probs, true, 5),
        "gap": global_average_precision(pred, conf, true),
        "ece": expected_calibration_error(conf, correct),
        "macro_f1": macro_f1(true, pred, probs.shape[1]),
        "num_test": int(len(true)),
    }
