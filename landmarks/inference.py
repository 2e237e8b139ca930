"""Running a tagger over one split of the dataset: what evaluation and export measure."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from landmarks.data import LandmarkDataset
from landmarks.devices import make_loader, resolve_num_workers
from landmarks.evaluation import embed_dataset
from landmarks.imageio import ImageError
from landmarks.openset import Tagger, open_set_scores
from landmarks.transforms import eval_transform


class ReadableDataset(LandmarkDataset):
    """LandmarkDataset that yields (image, label, error) and a blank image for an unreadable photo,
    instead of stopping the evaluation. The error travels with the batch (it is "" for a readable
    photo), so the record is complete with loader worker processes too."""

    def __init__(self, *args: Any, image_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_size = image_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            return (*super().__getitem__(i), "")
        except (ImageError, OSError) as e:
            return torch.zeros(3, self.image_size, self.image_size), self.labels[i], str(e) or type(e).__name__


class _Errors:
    """The loader, passed through unchanged, noting each batch's per-photo errors on the way."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.errors: list[str] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list]:
        for batch in self.loader:
            self.errors.extend(batch[2])
            yield batch


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
    *, batch_size: int, device: torch.device | str, desc: str = "predict", num_workers: int | str = "auto",
) -> SplitResult:
    """Classify and score every photo of `frame` (id, landmark_id) exactly as the exported predictor would.

    Decoding runs in the training loader's worker processes (num_workers `auto`: as many as the
    cores allow on a GPU machine, none on a CPU-only one), so evaluation keeps a GPU as busy as training does."""
    device = torch.device(device)
    dataset = ReadableDataset(frame, images_dir, class_ids, eval_transform(**preprocess), image_size=preprocess["image_size"])
    loader = _Errors(make_loader(dataset, batch_size=batch_size, train=False, seed=0, device=device,
                                 num_workers=resolve_num_workers(num_workers, device)))
    logits, embeddings = embed_dataset(tagger.net, loader, device, desc=desc)
    tagger.cpu()
    probs, scores = open_set_scores(torch.from_numpy(logits), torch.from_numpy(embeddings), tagger.gallery,
                                    tagger.gallery_labels, tagger.score, tagger.k)
    keep = np.array([not e for e in loader.errors], dtype=bool)
    unreadable = {str(p): e for p, e in zip(dataset.paths, loader.errors) if e}
    result = SplitResult(list(dataset.paths), np.asarray(dataset.labels, dtype=np.int64), logits, embeddings,
                         probs.numpy(), scores.numpy(), unreadable)
    return result.subset(keep)
