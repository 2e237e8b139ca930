"""Running a tagger over one split of the dataset: what evaluation and export measure."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from landmarks.data import LandmarkDataset
from landmarks.evaluation import embed_dataset
from landmarks.imageio import ImageError
from landmarks.openset import Tagger, open_set_scores
from landmarks.transforms import eval_transform


class ReadableDataset(LandmarkDataset):
    """LandmarkDataset that records unreadable images instead of stopping the evaluation.

    The record lives in this object, so it is only complete with num_workers=0 (as used here).
    """

    def __init__(self, *args: Any, image_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_size = image_size
        self.unreadable: dict[int, str] = {}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            return super().__getitem__(i)
        except (ImageError, OSError) as e:
            self.unreadable[i] = str(e)
            return torch.zeros(3, self.image_size, self.image_size), self.labels[i]


@dataclass
class SplitResult:
    """A tagger's outputs on the readable photos of one split, in split order (unreadable ones left out)."""

    paths: list[Path]
    labels: np.ndarray  # class index, -1 for a distractor
    logits: np.ndarray  # [N, C]
    embeddings: np.ndarray  # [N, D]
    probs: np.ndarray  # [N, C]
    scores: np.ndarray  # [N] open-set score
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> error

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def known(self) -> np.ndarray:
        return self.labels >= 0

    def subset(self, mask: np.ndarray) -> SplitResult:
        """The photos where `mask` is true."""
        return SplitResult([p for p, m in zip(self.paths, mask) if m], self.labels[mask], self.logits[mask],
                           self.embeddings[mask], self.probs[mask], self.scores[mask], self.unreadable)


def run_split(
    tagger: Tagger, frame: pd.DataFrame, images_dir: str | os.PathLike, class_ids: list[int], preprocess: dict[str, Any],
    *, batch_size: int, device: torch.device | str, desc: str = "predict",
) -> SplitResult:
    """Classify and score every photo of `frame` (id, landmark_id) exactly as the exported predictor would."""
    dataset = ReadableDataset(frame, images_dir, class_ids, eval_transform(**preprocess), image_size=preprocess["image_size"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    logits, embeddings = embed_dataset(tagger.net, loader, device, desc=desc)
    tagger.cpu()
    probs, scores = open_set_scores(torch.from_numpy(logits), torch.from_numpy(embeddings), tagger.gallery,
                                    tagger.gallery_labels, tagger.score, tagger.k)
    keep = np.array([i not in dataset.unreadable for i in range(len(dataset))], dtype=bool)
    result = SplitResult(list(dataset.paths), np.asarray(dataset.labels, dtype=np.int64), logits, embeddings,
                         probs.numpy(), scores.numpy(), {str(dataset.paths[i]): e for i, e in dataset.unreadable.items()})
    return result.subset(keep)
