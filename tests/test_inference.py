"""run_split: what evaluation measures, the same with the loader's worker processes as without."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from landmarks.gldv2 import NO_LANDMARK_ID, image_path
from landmarks.inference import run_split
from landmarks.models import EmbeddingNet
from landmarks.openset import Tagger
from tests.faultserver import make_jpeg

PREPROCESS = {"image_size": 32, "resize_size": 36, "mean": [0.5] * 3, "std": [0.25] * 3}


def write_split(images: Path) -> pd.DataFrame:
    """Six photos of two landmarks, two without one, and a corrupt file in the middle."""
    rows = [(f"{i:016x}", lid) for i, lid in enumerate([7, 7, 9, NO_LANDMARK_ID, 9, 7, NO_LANDMARK_ID, 9, 9])]
    for n, (iid, lid) in enumerate(rows):
        path = image_path(images, lid, iid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a jpeg" if n == 4 else make_jpeg(40 + 3 * n, 48, seed=n))
    return pd.DataFrame(rows, columns=["id", "landmark_id"])


def small_tagger() -> Tagger:
    torch.manual_seed(0)
    net = EmbeddingNet(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2))
    return Tagger(net, torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1]), score="knn_msp", k=2).eval()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_run_split_gives_the_same_results_and_unreadable_record_with_loader_workers(tmp_path: Path, batch_size: int) -> None:
    frame = write_split(tmp_path)
    runs = [run_split(small_tagger(), frame, tmp_path, [7, 9], PREPROCESS, batch_size=batch_size, device="cpu",
                      num_workers=workers) for workers in (0, 2)]
    for run in runs:
        assert len(run.paths) == 8 and list(run.unreadable) == [str(image_path(tmp_path, 9, f"{4:016x}"))]
        assert list(run.labels) == [0, 0, 1, -1, 0, -1, 1, 1]
    np.testing.assert_array_equal(runs[0].probs, runs[1].probs)
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
