"""What `evaluate` writes for each model: per-class and per-photo CSVs, DVC confusion records, figures.

The confusion matrix is the tagger's, not only the classifier's: it has a "no landmark" row (the
distractors) and a "no landmark" column (photos left untagged), so it shows at a glance what
users get: correct tags on the diagonal, wrong tags off it, and silence in the last column.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from landmarks.data import image_path, known_rows, read_split
from landmarks.evaluation import confusion_matrix, per_class_metrics
from landmarks.files import atomic_write_bytes
from landmarks.imageio import ImageError, decode_image
from landmarks.inference import SplitResult
from landmarks.predictor_file import display_names
from landmarks.reports import denormalize, plot_confusion, plot_gallery
from landmarks.transforms import AUGMENT_PRESETS, train_inputs

NO_LANDMARK = "no landmark"
MISTAKES_SHOWN = 16
BATCH_SHOWN = 16
FIGURE_SEED = 0  # the augmented training batch figure is the same on every run


def tag_decisions(result: SplitResult, threshold: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(actual, tagged) as indices 0..C, where C stands for "no landmark"."""
    actual = np.where(result.known, result.labels, num_classes)
    tagged = np.where(result.scores >= threshold, result.predicted, num_classes)
    return actual, tagged


def write_model_reports(
    name: str, result: SplitResult, classes: list[dict[str, Any]], threshold: float,
    *, out: Path, confusion: Path, figures: Path,
) -> None:
    """Per-class CSV, per-photo predictions, DVC confusion records and the figures of one model on the test split."""
    shown = display_names(classes)
    labels_shown = [*shown, NO_LANDMARK]
    c = len(classes)
    out.mkdir(parents=True, exist_ok=True)
    known = result.subset(result.known)
    stats = per_class_metrics(known.labels, known.predicted, c)
    pd.DataFrame({
        "landmark_id": [k["landmark_id"] for k in classes], "name": [k.get("name", "") for k in classes],
        **{key: stats[key] for key in ("precision", "recall", "f1", "support")},
    }).to_csv(out / f"per_class_{name}.csv", index=False, float_format="%.5f")

    actual, tagged = tag_decisions(result, threshold, c)
    ids = [k["landmark_id"] for k in classes]
    pd.DataFrame({
        "path": [str(p) for p in result.paths],
        "landmark_id": [ids[t] if t < c else "" for t in actual],
        "predicted_landmark_id": [ids[p] for p in result.predicted],
        "confidence": result.probs.max(axis=1),
        "score": result.scores,
        "tagged_landmark_id": [ids[t] if t < c else "" for t in tagged],
        "correct_tag": actual == tagged,
    }).to_csv(out / f"predictions_{name}.csv", index=False, float_format="%.6f")

    records = [{"actual": labels_shown[a], "predicted": labels_shown[t]} for a, t in zip(actual, tagged)]
    atomic_write_bytes(Path(confusion) / f"{name}.json", (json.dumps(records, indent=1) + "\n").encode())
    plot_confusion(confusion_matrix(actual, tagged, c + 1), labels_shown, Path(figures) / f"confusion_{name}.png",
                   title=f"{name}: tags on the test split at threshold {threshold:.3f} "
                         "(rows = actual; last column = no tag; colour = share of the row)")
    plot_mistakes(name, result, shown, threshold, Path(figures) / f"mistakes_{name}.png")


def plot_mistakes(name: str, result: SplitResult, shown: list[str], threshold: float, path: Path) -> None:
    """The highest-scoring wrong predictions (a distractor's prediction is always wrong), tagged or not."""
    wrong = np.flatnonzero(result.predicted != result.labels)
    order = wrong[np.argsort(-result.scores[wrong], kind="stable")][:MISTAKES_SHOWN]
    images, captions = [], []
    for i in order:
        img = decode_image(result.paths[i])
        img.thumbnail((256, 256))
        images.append(img)
        truth = shown[result.labels[i]] if result.labels[i] >= 0 else NO_LANDMARK
        verdict = "TAGGED" if result.scores[i] >= threshold else "not tagged"
        captions.append(f"true: {truth[:30]}\npred: {shown[result.predicted[i]][:30]}\n"
                        f"score {result.scores[i]:.2f}: {verdict}")
    plot_gallery(images, captions, path, title=f"{name}: the {len(images)} highest-scoring mistakes on the test split")


def plot_train_batch(ckpt: dict[str, Any], splits: str | os.PathLike, images: str | os.PathLike, path: Path) -> str:
    """A de-normalised grid of augmented training images, as the model saw them; returns the augmentation shown."""
    pre = ckpt["preprocess"]
    record = ckpt.get("params") or {}
    augment = record.get("augment_used", record.get("augment", "none"))
    if augment not in AUGMENT_PRESETS:
        augment = "none"
    transform, prepare = train_inputs(**pre, augment=augment)
    frame = known_rows(read_split(splits, "train"))
    names = dict(zip((c["landmark_id"] for c in ckpt["classes"]), display_names(ckpt["classes"])))
    rng = np.random.default_rng(FIGURE_SEED)
    torch.manual_seed(FIGURE_SEED)
    rows = frame.iloc[rng.permutation(len(frame))]
    batch, captions = [], []
    for lid, iid in zip(rows["landmark_id"], rows["id"]):
        if len(batch) == BATCH_SHOWN:
            break
        try:
            batch.append(transform(decode_image(image_path(images, lid, iid))))
        except (ImageError, OSError):
            continue
        captions.append(names.get(int(lid), str(lid))[:34])
    x = torch.stack(batch) if batch else torch.zeros(0)
    x = prepare(x) if prepare is not None and len(batch) else x
    shown = [denormalize(t.numpy(), pre["mean"], pre["std"]) for t in x]
    plot_gallery(shown, captions, path, title=f"a training batch (augment={augment})")
    return augment
